// Byte GEMM with dp4a for the high-precision weight rows (implicit GEMM for conv2d).
//
//   dot[m, o]    = sum_k code(m, k) * w[o, k]            (u8 x u8 -> u32, 4 per dp4a)
//   rowsum[m]    = sum_k code(m, k)
//   out[m, o]    = 2 dot - (2^bw[o] - 1) * rowsum[m]      (int64)
//
// code(m, k) = a' (the shifted activation code, <= 255) gathered by act_gather.cuh;
// w: u8 [N, K] unsigned weight codes. dot <= 255 * 255 * K < 2^31 for K <= 33025.
// Block: TN x TM threads, one output each; K advances in tiles of KT bytes held
// in shared memory as packed 4-byte words.
#include "act_gather.cuh"
#include "gemm_output.cuh"

#define I8_TM 8
#define I8_TN 8
#define I8_KW 8   // 4-byte words per K tile (32 bytes)

__device__ __forceinline__ u32 pack4_acts(const u8* x, const u8* shift, ConvGeometry g, i32 m,
                                          i32 M, i32 k, i32 K) {
    u32 v = 0;
    for (i32 t = 0; t < 4; ++t)
        if (m < M && k + t < K) v |= shifted_code(x, shift, g, m, k + t) << (8 * t);
    return v;
}

__device__ __forceinline__ u32 pack4_weights(const u8* w, const i32* rows, i32 c, i32 n_rows,
                                             i32 k, i32 K) {
    u32 v = 0;
    if (c >= n_rows) return 0u;
    const u8* row = w + (i64)rows[c] * K;
    for (i32 t = 0; t < 4; ++t)
        if (k + t < K) v |= (u32)row[k + t] << (8 * t);
    return v;
}

extern "C" __global__ void __launch_bounds__(I8_TM * I8_TN)
int8_gemm(const u8* __restrict__ x, const u8* __restrict__ shift, const i32* __restrict__ geom,
          i32 M, i32 K, const u8* __restrict__ w_codes, const u8* __restrict__ w_bits,
          const i32* __restrict__ rows, i32 n_rows, i32 N, i32 hw, i64* __restrict__ out) {
    __shared__ u32 as[I8_TM][I8_KW];
    __shared__ u32 ws[I8_TN][I8_KW];
    const ConvGeometry g = load_geometry(geom);
    const i32 tid = threadIdx.y * I8_TN + threadIdx.x;
    const i32 m0 = blockIdx.x * I8_TM;   // rows on x: grid.x allows 2^31 - 1 tiles
    const i32 c0 = blockIdx.y * I8_TN;
    const i32 m = m0 + threadIdx.y;
    const i32 c = c0 + threadIdx.x;
    u32 dot = 0, row_sum = 0;
    for (i32 k0 = 0; k0 < K; k0 += 4 * I8_KW) {
        // 64 threads fill the 8 x 8 words of each tile, one word each
        const i32 r = tid / I8_KW, q = tid % I8_KW;
        as[r][q] = pack4_acts(x, shift, g, m0 + r, M, k0 + 4 * q, K);
        ws[r][q] = pack4_weights(w_codes, rows, c0 + r, n_rows, k0 + 4 * q, K);
        __syncthreads();
#pragma unroll
        for (i32 t = 0; t < I8_KW; ++t) {
            dot = __dp4a(as[threadIdx.y][t], ws[threadIdx.x][t], dot);
            row_sum = __dp4a(as[threadIdx.y][t], 0x01010101u, row_sum);
        }
        __syncthreads();
    }
    if (m < M && c < n_rows)
        out[output_index(m, rows[c], N, hw)] = signed_from_unsigned(dot, row_sum, w_bits[rows[c]]);
}
