// Byte GEMM with dp4a for the high-precision weight rows (implicit GEMM for conv2d).
//
//   dot[m, o]    = sum_k code(m, k) * w[o, k]            (u8 x u8 -> u32, 4 per dp4a)
//   rowsum[m]    = sum_k code(m, k)
//   out[m, o]    = 2 dot - (2^bw[o] - 1) * rowsum[m]      (int64)
//
// code(m, k) = a' (the shifted activation code, <= 255) gathered by act_gather.cuh;
// w: u8 [N, K] unsigned weight codes. dot <= 255 * 255 * K < 2^31 for K <= 33025.
// Block: 16 x 16 threads over a 64 x 64 output tile; thread (tx, ty) owns rows
// ty + 16 r and columns tx + 16 s (r, s < 4), so a warp reads two A rows (broadcast)
// and sixteen W rows (padded stride: no bank conflicts). K advances 64 bytes at a
// time, staged in shared memory as packed 4-byte words.
#include "act_gather.cuh"
#include "gemm_output.cuh"

#define I8_T 16           // threads per block side
#define I8_R 4            // outputs per thread per side
#define I8_B (I8_T * I8_R)  // 64: tile side
#define I8_KW 16          // 4-byte words per K tile

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

extern "C" __global__ void __launch_bounds__(I8_T * I8_T)
int8_gemm(const u8* __restrict__ x, const u8* __restrict__ shift, const i32* __restrict__ geom,
          i32 M, i32 K, const u8* __restrict__ w_codes, const u8* __restrict__ w_bits,
          const i32* __restrict__ rows, i32 n_rows, i32 N, i32 hw, i64* __restrict__ out) {
    __shared__ u32 as[I8_B][I8_KW + 1];
    __shared__ u32 ws[I8_B][I8_KW + 1];
    const ConvGeometry g = load_geometry(geom);
    const i32 tx = threadIdx.x, ty = threadIdx.y, tid = ty * I8_T + tx;
    const i32 m0 = blockIdx.x * I8_B;   // rows on x: grid.x allows 2^31 - 1 tiles
    const i32 c0 = blockIdx.y * I8_B;
    u32 dot[I8_R][I8_R], row_sum[I8_R];
#pragma unroll
    for (i32 r = 0; r < I8_R; ++r) {
        row_sum[r] = 0u;
#pragma unroll
        for (i32 s = 0; s < I8_R; ++s) dot[r][s] = 0u;
    }
    for (i32 k0 = 0; k0 < K; k0 += 4 * I8_KW) {
        for (i32 e = tid; e < I8_B * I8_KW; e += I8_T * I8_T) {
            const i32 r = e / I8_KW, q = e % I8_KW;
            as[r][q] = pack4_acts(x, shift, g, m0 + r, M, k0 + 4 * q, K);
            ws[r][q] = pack4_weights(w_codes, rows, c0 + r, n_rows, k0 + 4 * q, K);
        }
        __syncthreads();
#pragma unroll 4
        for (i32 q = 0; q < I8_KW; ++q) {
            u32 a[I8_R], b[I8_R];
#pragma unroll
            for (i32 r = 0; r < I8_R; ++r) {
                a[r] = as[ty + I8_T * r][q];
                b[r] = ws[tx + I8_T * r][q];
                row_sum[r] = __dp4a(a[r], 0x01010101u, row_sum[r]);
            }
#pragma unroll
            for (i32 r = 0; r < I8_R; ++r)
#pragma unroll
                for (i32 s = 0; s < I8_R; ++s) dot[r][s] = __dp4a(a[r], b[s], dot[r][s]);
        }
        __syncthreads();
    }
#pragma unroll
    for (i32 r = 0; r < I8_R; ++r) {
        const i32 m = m0 + ty + I8_T * r;
#pragma unroll
        for (i32 s = 0; s < I8_R; ++s) {
            const i32 c = c0 + tx + I8_T * s;
            if (m < M && c < n_rows)
                out[output_index(m, rows[c], N, hw)] =
                    signed_from_unsigned(dot[r][s], row_sum[r], w_bits[rows[c]]);
        }
    }
}
