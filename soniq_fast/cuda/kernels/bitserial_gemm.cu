// Bit-serial GEMM on CUDA cores: AND + popcount over packed bit planes.
//
// For every activation row m and selected weight row o = rows[c]:
//
//   dot[m, o] = sum_{i < A} sum_{j < bw[o]} 2^(i + j) popcount(Apl[m, i, :] & Wpl[o, j, :])
//   out[m, o] = 2 dot - (2^bw[o] - 1) * rowsum[m]            (int64)
//
// which equals sum_c (2 w[o, c] - (2^bw - 1)) a'[m, c] with a' = a << (A - ba[c]).
// dot <= 255 * 255 * K < 2^31 for K <= 33025 (checked by the launcher), so u32 is exact.
//
// Apl: u64 [M, A, words]; Wpl: u64 [N, 8, words] (planes >= bw are zero, so a
// thread runs j up to the larger bw of its columns without masking);
// rows: the weight rows this launch covers (the layer's low-precision group).
// Block: 16 x 16 threads over a 32 x 32 output tile; thread (tx, ty) owns rows
// ty + 16 r and columns tx + 16 s (r, s < 2). The K loop stages WT words of every
// plane of the tile's rows and columns in shared memory.
#include "gemm_output.cuh"

#define BS_T 16             // threads per block side
#define BS_R 2              // outputs per thread per side
#define BS_B (BS_T * BS_R)  // 32: tile side
#define BS_WT 2             // words per plane per K step

extern "C" __global__ void __launch_bounds__(BS_T * BS_T)
bitserial_gemm(const u64* __restrict__ a_planes, const i64* __restrict__ row_sums, i32 M, i32 A,
               const u64* __restrict__ w_planes, const u8* __restrict__ w_bits,
               const i32* __restrict__ rows, i32 n_rows, i32 N, i32 words, i32 hw,
               i64* __restrict__ out) {
    __shared__ u64 as[BS_B][8][BS_WT];
    __shared__ u64 ws[BS_B][8][BS_WT];
    const i32 tx = threadIdx.x, ty = threadIdx.y, tid = ty * BS_T + tx;
    const i32 m0 = blockIdx.x * BS_B;   // rows on x: grid.x allows 2^31 - 1 tiles
    const i32 c0 = blockIdx.y * BS_B;
    u32 bw[BS_R], jmax = 0;
#pragma unroll
    for (i32 s = 0; s < BS_R; ++s) {
        const i32 c = c0 + tx + BS_T * s;
        bw[s] = c < n_rows ? w_bits[rows[c]] : 0u;
        jmax = bw[s] > jmax ? bw[s] : jmax;
    }
    u32 dot[BS_R][BS_R];
#pragma unroll
    for (i32 r = 0; r < BS_R; ++r)
#pragma unroll
        for (i32 s = 0; s < BS_R; ++s) dot[r][s] = 0u;
    for (i32 w0 = 0; w0 < words; w0 += BS_WT) {
        for (i32 e = tid; e < BS_B * 8 * BS_WT; e += BS_T * BS_T) {
            const i32 r = e / (8 * BS_WT), i = e / BS_WT % 8, w = e % BS_WT;
            const bool live = m0 + r < M && i < A && w0 + w < words;
            as[r][i][w] = live ? a_planes[((i64)(m0 + r) * A + i) * words + w0 + w] : 0ull;
            const bool wlive = c0 + r < n_rows && w0 + w < words;
            ws[r][i][w] = wlive ? w_planes[((i64)rows[c0 + r] * 8 + i) * words + w0 + w] : 0ull;
        }
        __syncthreads();
        for (i32 i = 0; i < A; ++i) {
            for (u32 j = 0; j < jmax; ++j) {
#pragma unroll
                for (i32 r = 0; r < BS_R; ++r) {
#pragma unroll
                    for (i32 s = 0; s < BS_R; ++s) {
                        u32 ones = 0;
#pragma unroll
                        for (i32 w = 0; w < BS_WT; ++w)
                            ones += __popcll(as[ty + BS_T * r][i][w] & ws[tx + BS_T * s][j][w]);
                        dot[r][s] += ones << (i + j);
                    }
                }
            }
        }
        __syncthreads();
    }
#pragma unroll
    for (i32 r = 0; r < BS_R; ++r) {
        const i32 m = m0 + ty + BS_T * r;
#pragma unroll
        for (i32 s = 0; s < BS_R; ++s) {
            const i32 c = c0 + tx + BS_T * s;
            if (m < M && c < n_rows)
                out[output_index(m, rows[c], N, hw)] = signed_from_unsigned(dot[r][s], row_sums[m], bw[s]);
        }
    }
}
