// Fused epilogue and requantize, with explicitly rounded float ops (no FMA).
//
// Element e of acc (int64, channel o = (e / hw) % O):
//   y = __fadd_rn(__fmul_rn(scale[o], __ll2float_rn(acc[e])), bias[o])
//   k = clip(rint(__fmul_rn(y, ratio[o])), 0, 2^bits[o] - 1)      (round half to even)
// and the residual tail (docs/semantics.md, residual blocks), the skip added to y first:
//   k = clip(rint(__fmul_rn(__fadd_rn(y, skip[e]), ratio[o])), 0, 2^bits[o] - 1)
#include "types.cuh"

__device__ __forceinline__ float affine(i64 acc, float scale, float bias) {
    return __fadd_rn(__fmul_rn(scale, __ll2float_rn(acc)), bias);
}

extern "C" __global__ void __launch_bounds__(256)
epilogue_f32(const i64* __restrict__ acc, const float* __restrict__ scale,
             const float* __restrict__ bias, i64 total, i32 O, i64 hw, float* __restrict__ out) {
    const i64 e = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= total) return;
    const i32 o = (i32)((e / hw) % O);
    out[e] = affine(acc[e], scale[o], bias[o]);
}

__device__ __forceinline__ u8 requantize_one(float y, float ratio, u8 bits) {
    const float t = rintf(__fmul_rn(y, ratio));
    const float top = (float)((1u << bits) - 1u);
    const float k = t < 0.0f ? 0.0f : (t > top ? top : t);
    return (u8)(i32)k;
}

extern "C" __global__ void __launch_bounds__(256)
requantize_u8(const i64* __restrict__ acc, const float* __restrict__ scale,
              const float* __restrict__ bias, const u8* __restrict__ bits,
              const float* __restrict__ ratio, i64 total, i32 O, i64 hw, u8* __restrict__ out) {
    const i64 e = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= total) return;
    const i32 o = (i32)((e / hw) % O);
    out[e] = requantize_one(affine(acc[e], scale[o], bias[o]), ratio[o], bits[o]);
}

extern "C" __global__ void __launch_bounds__(256)
residual_requantize_u8(const i64* __restrict__ acc, const float* __restrict__ scale,
                       const float* __restrict__ bias, const float* __restrict__ skip,
                       const u8* __restrict__ bits, const float* __restrict__ ratio, i64 total,
                       i32 O, i64 hw, u8* __restrict__ out) {
    const i64 e = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= total) return;
    const i32 o = (i32)((e / hw) % O);
    out[e] = requantize_one(__fadd_rn(affine(acc[e], scale[o], bias[o]), skip[e]), ratio[o],
                            bits[o]);
}
