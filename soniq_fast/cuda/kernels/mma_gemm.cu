// Bit-serial GEMM on binary tensor cores. A block of MMA_WARPS warps covers
// 16 * MMA_WARPS activation rows and 8 * MMA_NSUB weight columns; each warp owns
// 16 rows and reuses its A fragments across its MMA_NSUB 8-column subtiles.
//
// Same result as bitserial_gemm.cu:
//   dot[m, o] = sum_{i < A} sum_{j < bw} 2^(i + j) popcount(Apl[m, i, :] & Wpl[o, j, :])
//   out[m, o] = 2 dot - (2^bw[o] - 1) * rowsum[m]
// but each popcount over 256 K positions of a 16 x 8 tile is one
// mma.sync m16n8k256 b1 AND+popc (mma_b1.cuh). Planes j >= bw[o] are zero in the
// packing, so a block simply runs j up to the largest bw of its columns.
#include "gemm_output.cuh"
#include "mma_b1.cuh"

#define MMA_WARPS 4
#define MMA_NSUB 4

// 32 bits of one plane starting at bit `bit` (a multiple of 32); zero past the data.
__device__ __forceinline__ u32 plane_bits(const u64* planes, bool live, i64 plane_row, i32 words,
                                          i32 bit) {
    const i32 w = bit / 64;
    if (!live || w >= words) return 0u;
    return (u32)(planes[plane_row * words + w] >> (bit % 64));
}

extern "C" __global__ void __launch_bounds__(32 * MMA_WARPS)
mma_gemm(const u64* __restrict__ a_planes, const i64* __restrict__ row_sums, i32 M, i32 A,
         const u64* __restrict__ w_planes, const u8* __restrict__ w_bits,
         const i32* __restrict__ rows, i32 n_rows, i32 N, i32 words, i32 hw,
         i64* __restrict__ out) {
    const i32 lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    const i32 m0 = (blockIdx.x * MMA_WARPS + threadIdx.x / 32) * 16;
    const i32 c0 = blockIdx.y * 8 * MMA_NSUB;
    u32 jmax = 0;                                   // block-uniform
    for (i32 q = 0; q < 8 * MMA_NSUB; ++q)
        if (c0 + q < n_rows && w_bits[rows[c0 + q]] > jmax) jmax = w_bits[rows[c0 + q]];
    const bool row_lo = m0 + g < M, row_hi = m0 + g + 8 < M;
    bool col[MMA_NSUB];
    i64 w_row[MMA_NSUB];
#pragma unroll
    for (i32 s = 0; s < MMA_NSUB; ++s) {
        col[s] = c0 + 8 * s + g < n_rows;
        w_row[s] = col[s] ? rows[c0 + 8 * s + g] : 0;
    }
    u32 acc[MMA_NSUB][4];
#pragma unroll
    for (i32 s = 0; s < MMA_NSUB; ++s)
        for (i32 r = 0; r < 4; ++r) acc[s][r] = 0u;
    const i32 zero[4] = {0, 0, 0, 0};
    for (i32 k0 = 0; k0 < words * 64; k0 += 256) {
        for (i32 i = 0; i < A; ++i) {
            u32 a[4];
            a[0] = plane_bits(a_planes, row_lo, (i64)(m0 + g) * A + i, words, k0 + 32 * t);
            a[1] = plane_bits(a_planes, row_hi, (i64)(m0 + g + 8) * A + i, words, k0 + 32 * t);
            a[2] = plane_bits(a_planes, row_lo, (i64)(m0 + g) * A + i, words, k0 + 128 + 32 * t);
            a[3] = plane_bits(a_planes, row_hi, (i64)(m0 + g + 8) * A + i, words, k0 + 128 + 32 * t);
            for (u32 j = 0; j < jmax; ++j) {
#pragma unroll
                for (i32 s = 0; s < MMA_NSUB; ++s) {
                    u32 b[2];
                    b[0] = plane_bits(w_planes, col[s], w_row[s] * 8 + j, words, k0 + 32 * t);
                    b[1] = plane_bits(w_planes, col[s], w_row[s] * 8 + j, words, k0 + 128 + 32 * t);
                    i32 d[4];
                    mma_b1_m16n8k256(d, a, b, zero);
                    for (i32 r = 0; r < 4; ++r) acc[s][r] += (u32)d[r] << (i + j);
                }
            }
        }
    }
#pragma unroll
    for (i32 s = 0; s < MMA_NSUB; ++s) {
        for (i32 r = 0; r < 4; ++r) {
            const i32 m = m0 + g + 8 * (r / 2);
            const i32 c = c0 + 8 * s + 2 * t + r % 2;
            if (m < M && c < n_rows)
                out[output_index(m, rows[c], N, hw)] =
                    signed_from_unsigned(acc[s][r], row_sums[m], w_bits[rows[c]]);
        }
    }
}
