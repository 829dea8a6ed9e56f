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
//
// Every 256 K positions, the block stages all planes of its rows and columns in
// shared memory with coalesced loads (the four warps share the weight tile); rows
// are padded by two words so the eight rows a fragment load touches sit in
// different banks.
#include "gemm_output.cuh"
#include "mma_b1.cuh"

#define MMA_WARPS 4
#define MMA_NSUB 4
#define MMA_ROWS (16 * MMA_WARPS)      // 64 activation rows per block
#define MMA_COLS (8 * MMA_NSUB)        // 32 weight columns per block
#define MMA_KW 4                       // 64-bit words per 256 K positions
#define MMA_STRIDE (8 * MMA_KW + 2)    // words per staged row: 8 planes x 4 words + padding

// 32 bits of a staged row: plane p, bits [32 h, 32 h + 32) of the 256 (h < 8).
__device__ __forceinline__ u32 staged_bits(const u64* row, i32 p, i32 h) {
    return (u32)(row[p * MMA_KW + h / 2] >> (32 * (h % 2)));
}

extern "C" __global__ void __launch_bounds__(32 * MMA_WARPS)
mma_gemm(const u64* __restrict__ a_planes, const i64* __restrict__ row_sums, i32 M, i32 A,
         const u64* __restrict__ w_planes, const u8* __restrict__ w_bits,
         const i32* __restrict__ rows, i32 n_rows, i32 N, i32 words, i32 hw,
         i64* __restrict__ out) {
    __shared__ u64 as[MMA_ROWS][MMA_STRIDE];
    __shared__ u64 ws[MMA_COLS][MMA_STRIDE];
    const i32 tid = threadIdx.x, lane = tid % 32, warp = tid / 32, g = lane / 4, t = lane % 4;
    const i32 mb = blockIdx.x * MMA_ROWS;          // rows on x: grid.x allows 2^31 - 1 tiles
    const i32 c0 = blockIdx.y * MMA_COLS;
    const i32 m0 = mb + 16 * warp;
    u32 jmax = 0;                                   // block-uniform
    for (i32 q = 0; q < MMA_COLS; ++q)
        if (c0 + q < n_rows && w_bits[rows[c0 + q]] > jmax) jmax = w_bits[rows[c0 + q]];
    u32 acc[MMA_NSUB][4];
#pragma unroll
    for (i32 s = 0; s < MMA_NSUB; ++s)
        for (i32 r = 0; r < 4; ++r) acc[s][r] = 0u;
    const i32 zero[4] = {0, 0, 0, 0};
    for (i32 w0 = 0; w0 < words; w0 += MMA_KW) {
        for (i32 e = tid; e < MMA_ROWS * 8 * MMA_KW; e += 32 * MMA_WARPS) {
            const i32 r = e / (8 * MMA_KW), p = e / MMA_KW % 8, w = e % MMA_KW;
            const bool live = mb + r < M && p < A && w0 + w < words;
            as[r][p * MMA_KW + w] = live ? a_planes[((i64)(mb + r) * A + p) * words + w0 + w] : 0ull;
        }
        for (i32 e = tid; e < MMA_COLS * 8 * MMA_KW; e += 32 * MMA_WARPS) {
            const i32 c = e / (8 * MMA_KW), p = e / MMA_KW % 8, w = e % MMA_KW;
            const bool live = c0 + c < n_rows && w0 + w < words;
            ws[c][p * MMA_KW + w] = live ? w_planes[((i64)rows[c0 + c] * 8 + p) * words + w0 + w] : 0ull;
        }
        __syncthreads();
        const u64* a_lo = as[16 * warp + g];
        const u64* a_hi = as[16 * warp + g + 8];
        const i32 warp_planes = m0 < M ? A : 0;    // a warp past the last row skips (warp-uniform)
        for (i32 i = 0; i < warp_planes; ++i) {
            const u32 a[4] = {staged_bits(a_lo, i, t), staged_bits(a_hi, i, t),
                              staged_bits(a_lo, i, 4 + t), staged_bits(a_hi, i, 4 + t)};
            for (u32 j = 0; j < jmax; ++j) {
#pragma unroll
                for (i32 s = 0; s < MMA_NSUB; ++s) {
                    const u64* col = ws[8 * s + g];
                    const u32 b[2] = {staged_bits(col, j, t), staged_bits(col, j, 4 + t)};
                    i32 d[4];
                    mma_b1_m16n8k256(d, a, b, zero);
                    for (i32 r = 0; r < 4; ++r) acc[s][r] += (u32)d[r] << (i + j);
                }
            }
        }
        __syncthreads();
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
