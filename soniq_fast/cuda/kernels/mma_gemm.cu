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
// Staging: each step the block copies, for its rows and columns, the live planes
// (A for activations, the largest bw of its columns for weights) of a span of K
// to shared memory, MMA_STAGE_WORDS 64-bit words per row: with P planes (rounded
// up to a power of two) a step spans 32 / P words, i.e. 8 chunks of 256 K
// positions at one plane and 1 chunk at eight. Few planes -> long steps, so the
// two barriers and the load latency of a step are paid once per 2048 K positions
// where the compute per position is smallest. Rows are padded by two words so the
// eight rows a fragment load touches sit in different banks.
//
// Compute: every chunk of 256 K positions loads each A fragment once and runs one
// independent mma per plane pair and subtile, shifting its counts by 2^(i + j) into
// the u32 accumulators. (Measured on an H200 against chaining the chunks of a step
// through the mma's C operand and shifting once per pair: the independent form was
// faster in 18 of 21 configurations and shapes, by up to 28 %; docs/benchmarks.md.)
// The plane loops are unrolled (MMA_UNROLL), so each shift is an immediate: 18-24 %
// faster at 16 and 64 plane pairs, 2.5-8 % at one, at 4096^3 and 8192^3.
#include "gemm_output.cuh"
#include "mma_b1.cuh"

#define MMA_WARPS 4
#define MMA_NSUB 8
#define MMA_ROWS (16 * MMA_WARPS)           // 64 activation rows per block
#define MMA_COLS (8 * MMA_NSUB)             // 64 weight columns per block
#define MMA_STAGE_WORDS 32                  // 64-bit words per row and step: planes x K words
#define MMA_STRIDE (2 * MMA_STAGE_WORDS + 4) // 32-bit words per staged row, padded
#ifndef MMA_UNROLL
#define MMA_UNROLL 1                        // plane loops unrolled: shifts are immediates
#endif

// Bits [32 h, 32 h + 32) of chunk c of plane p in a staged row of kw words per plane.
__device__ __forceinline__ u32 staged_bits(const u32* row, i32 kw, i32 p, i32 c, i32 h) {
    return row[2 * (p * kw + 4 * c) + h];
}

// n staged u32 rows from ``src_planes`` (u64 [*, planes_per_row, words]): row r is
// rows[r] (or r0 + r without ``rows``), planes p < live, words [w0, w0 + kw); zero
// for rows r >= valid and words past ``words``.
__device__ __forceinline__ void stage(u32 (*dst)[MMA_STRIDE], i32 n,
                                     const u64* __restrict__ src_planes,
                                     const i32* __restrict__ rows, i32 r0, i32 valid,
                                     i32 planes_per_row, i32 live, i32 words, i32 w0, i32 kw,
                                     i32 log_kw, i32 tid) {
    for (i32 e = tid; e < n * kw; e += 32 * MMA_WARPS) {
        const i32 r = e >> log_kw, w = e & (kw - 1);
        const bool ok = r0 + r < valid && w0 + w < words;
        const i64 row = ok ? (rows ? rows[r] : r0 + r) : 0;
        const u64* src = src_planes + row * planes_per_row * words + w0 + w;
        for (i32 p = 0; p < live; ++p) {
            const u64 v = ok ? src[(i64)p * words] : 0ull;
            dst[r][2 * (p * kw + w)] = (u32)v;
            dst[r][2 * (p * kw + w) + 1] = (u32)(v >> 32);
        }
    }
}

extern "C" __global__ void __launch_bounds__(32 * MMA_WARPS)
mma_gemm(const u64* __restrict__ a_planes, const i64* __restrict__ row_sums, i32 M, i32 A,
         const u64* __restrict__ w_planes, const u8* __restrict__ w_bits,
         const i32* __restrict__ rows, i32 n_rows, i32 N, i32 words, i32 hw,
         i64* __restrict__ out) {
    __shared__ u32 as[MMA_ROWS][MMA_STRIDE];
    __shared__ u32 ws[MMA_COLS][MMA_STRIDE];
    const i32 tid = threadIdx.x, lane = tid % 32, warp = tid / 32, g = lane / 4, t = lane % 4;
    const i32 mb = blockIdx.x * MMA_ROWS;          // rows on x: grid.x allows 2^31 - 1 tiles
    const i32 c0 = blockIdx.y * MMA_COLS;
    const i32 m0 = mb + 16 * warp;
    i32 jmax = 0;                                   // block-uniform
    for (i32 q = 0; q < MMA_COLS; ++q)
        if (c0 + q < n_rows && w_bits[rows[c0 + q]] > jmax) jmax = w_bits[rows[c0 + q]];
    i32 log_planes = 0;                             // P = 2^log_planes >= max(A, jmax)
    while ((1 << log_planes) < (A > jmax ? A : jmax)) ++log_planes;
    const i32 log_kw = 5 - log_planes, kw = 1 << log_kw;   // MMA_STAGE_WORDS / P
    u32 acc[MMA_NSUB][4];
#pragma unroll
    for (i32 s = 0; s < MMA_NSUB; ++s)
        for (i32 r = 0; r < 4; ++r) acc[s][r] = 0u;
    const u32* a_lo = as[16 * warp + g];
    const u32* a_hi = as[16 * warp + g + 8];
    const i32 warp_planes = m0 < M ? A : 0;        // a warp past the last row skips (warp-uniform)
    const i32 zero[4] = {0, 0, 0, 0};
    for (i32 w0 = 0; w0 < words; w0 += kw) {
        stage(as, MMA_ROWS, a_planes, 0, mb, M, A, A, words, w0, kw, log_kw, tid);
        stage(ws, MMA_COLS, w_planes, rows + c0, 0, n_rows - c0, 8, jmax, words, w0, kw, log_kw, tid);
        __syncthreads();
        const i32 left = words - w0 < kw ? words - w0 : kw;
        const i32 chunks = (left + 3) / 4;
        for (i32 c = 0; c < chunks; ++c) {
#if MMA_UNROLL
#pragma unroll
#endif
            for (i32 i = 0; i < 8; ++i) {
                if (i >= warp_planes) break;
                const u32 a[4] = {staged_bits(a_lo, kw, i, c, t), staged_bits(a_hi, kw, i, c, t),
                                  staged_bits(a_lo, kw, i, c, 4 + t),
                                  staged_bits(a_hi, kw, i, c, 4 + t)};
#if MMA_UNROLL
#pragma unroll
#endif
                for (i32 j = 0; j < 8; ++j) {
                    if (j >= jmax) break;
#pragma unroll
                    for (i32 s = 0; s < MMA_NSUB; ++s) {
                        const u32* col = ws[8 * s + g];
                        const u32 b[2] = {staged_bits(col, kw, j, c, t),
                                          staged_bits(col, kw, j, c, 4 + t)};
                        i32 d[4];
                        mma_b1_m16n8k256(d, a, b, zero);
                        for (i32 r = 0; r < 4; ++r) acc[s][r] += (u32)d[r] << (i + j);
                    }
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
