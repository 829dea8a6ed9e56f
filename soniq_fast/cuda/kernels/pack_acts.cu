// Bit-plane packing of activation codes (and of weight codes, with a zero shift).
//
// For GEMM row m (an image patch for conv2d, see act_gather.cuh) and word w,
// plane i of the result holds bit i of code(m, k) for k in [64 w, 64 w + 64),
// LSB first; bits past K are zero:
//
//   out[m, i, w] = sum_{t < 64, 64w + t < K} ((code(m, 64w + t) >> i) & 1) << t
//
// out: u64 [M, planes, words]. One thread builds all planes of one word.
#include "act_gather.cuh"

extern "C" __global__ void __launch_bounds__(128)
pack_planes(const u8* __restrict__ x, const u8* __restrict__ shift, const i32* __restrict__ geom,
            i32 M, i32 K, i32 planes, i32 words, u64* __restrict__ out) {
    const i64 item = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (item >= (i64)M * words) return;
    const ConvGeometry g = load_geometry(geom);
    const i32 m = (i32)(item / words);
    const i32 w = (i32)(item % words);
    u64 acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    const i32 k0 = w * 64;
    const i32 k1 = k0 + 64 < K ? k0 + 64 : K;
    for (i32 k = k0; k < k1; ++k) {
        const u32 v = shifted_code(x, shift, g, m, k);
#pragma unroll
        for (i32 i = 0; i < 8; ++i) acc[i] |= (u64)((v >> i) & 1u) << (k - k0);
    }
#pragma unroll
    for (i32 i = 0; i < 8; ++i)   // constant bounds keep acc[] in registers
        if (i < planes) out[((i64)m * planes + i) * words + w] = acc[i];
}

// Row sums of the shifted codes from their planes: rowsum[m] = sum_i 2^i popcount(plane i).
extern "C" __global__ void __launch_bounds__(128)
plane_row_sums(const u64* __restrict__ planes, i32 M, i32 n_planes, i32 words, i64* __restrict__ out) {
    const i32 m = blockIdx.x * blockDim.x + threadIdx.x;
    if (m >= M) return;
    i64 sum = 0;
    for (i32 i = 0; i < n_planes; ++i) {
        i64 ones = 0;
        for (i32 w = 0; w < words; ++w) ones += __popcll(planes[((i64)m * n_planes + i) * words + w]);
        sum += ones << i;
    }
    out[m] = sum;
}
