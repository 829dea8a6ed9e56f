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
// Apl: u64 [M, A, words]; Wpl: u64 [N, 8, words] (planes >= bw are zero);
// rows: the weight rows this launch covers (the layer's low-precision group).
// Block: TN x TM threads, one output each; the K loop stages WT words of every
// plane of the block's rows and columns in shared memory.
#include "gemm_output.cuh"

#define BS_TM 8
#define BS_TN 8
#define BS_WT 4
#if BS_TM != BS_TN
#error "the tile loader stages A and W rows with one loop: BS_TM must equal BS_TN"
#endif

extern "C" __global__ void __launch_bounds__(BS_TM * BS_TN)
bitserial_gemm(const u64* __restrict__ a_planes, const i64* __restrict__ row_sums, i32 M, i32 A,
               const u64* __restrict__ w_planes, const u8* __restrict__ w_bits,
               const i32* __restrict__ rows, i32 n_rows, i32 N, i32 words, i32 hw,
               i64* __restrict__ out) {
    __shared__ u64 as[BS_TM][8][BS_WT];
    __shared__ u64 ws[BS_TN][8][BS_WT];
    const i32 tid = threadIdx.y * BS_TN + threadIdx.x;
    const i32 m0 = blockIdx.x * BS_TM;   // rows on x: grid.x allows 2^31 - 1 tiles
    const i32 c0 = blockIdx.y * BS_TN;
    const i32 m = m0 + threadIdx.y;
    const i32 c = c0 + threadIdx.x;
    const u32 bw = c < n_rows ? w_bits[rows[c]] : 0u;
    u32 dot = 0;
    for (i32 w0 = 0; w0 < words; w0 += BS_WT) {
        for (i32 e = tid; e < BS_TM * 8 * BS_WT; e += BS_TM * BS_TN) {
            const i32 r = e / (8 * BS_WT), i = e / BS_WT % 8, w = e % BS_WT;
            const bool live = m0 + r < M && i < A && w0 + w < words;
            as[r][i][w] = live ? a_planes[((i64)(m0 + r) * A + i) * words + w0 + w] : 0ull;
            const bool wlive = c0 + r < n_rows && w0 + w < words;
            ws[r][i][w] = wlive ? w_planes[((i64)rows[c0 + r] * 8 + i) * words + w0 + w] : 0ull;
        }
        __syncthreads();
        for (i32 i = 0; i < A; ++i) {
            for (u32 j = 0; j < bw; ++j) {
                u32 ones = 0;
#pragma unroll
                for (i32 w = 0; w < BS_WT; ++w) ones += __popcll(as[threadIdx.y][i][w] & ws[threadIdx.x][j][w]);
                dot += ones << (i + j);
            }
        }
        __syncthreads();
    }
    if (m < M && c < n_rows)
        out[output_index(m, rows[c], N, hw)] = signed_from_unsigned(dot, row_sums[m], bw);
}
