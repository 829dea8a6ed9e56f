// Where GEMM element (m, o) lands in the int64 result.
//
// Rows are (b, p) with p in [0, hw): for linear_int hw = 1 and the result is
// [M, N]; for conv2d_int hw = Ho * Wo and the result is [B, N, Ho, Wo], so the
// GEMM writes NCHW directly and no transpose follows.
#pragma once
#include "types.cuh"

__device__ __forceinline__ i64 output_index(i32 m, i32 o, i32 N, i32 hw) {
    const i64 b = m / hw;
    const i64 p = m % hw;
    return (b * N + o) * hw + p;
}

// sum_c q a' from the unsigned dot product: q = 2 k - (2^bw - 1), so
// sum_c q a' = 2 sum_c k a' - (2^bw - 1) sum_c a'.
__device__ __forceinline__ i64 signed_from_unsigned(u32 dot, i64 row_sum, u32 bw) {
    return 2 * (i64)dot - (i64)((1u << bw) - 1u) * row_sum;
}
