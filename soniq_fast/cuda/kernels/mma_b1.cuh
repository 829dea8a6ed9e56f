// One warp-wide binary tensor-core step and its CPU model.
//
//   D[16 x 8] = C + popcount(A[16 x 256] AND B[256 x 8])        (s32)
//
// PTX mma.sync.aligned.m16n8k256.row.col.s32.b1.b1.s32.and.popc (sm_80+).
// Fragments, with g = lane / 4 and t = lane % 4; each .b32 register holds 32
// consecutive K elements, element k0 + e at bit e (LSB first):
//   a[0]: row g,     k in [32 t, 32 t + 32)      a[1]: row g + 8, same k
//   a[2]: row g,     k in [128 + 32 t, ...)      a[3]: row g + 8, same k
//   b[0]: column g,  k in [32 t, 32 t + 32)      b[1]: column g,  k in [128 + 32 t, ...)
//   c/d[0], [1]: row g,     columns 2 t, 2 t + 1
//   c/d[2], [3]: row g + 8, columns 2 t, 2 t + 1
// On sm_80+ the inline PTX runs; elsewhere (the CPU emulation runtime) the model
// below computes the same D from the same fragments by exchanging them through
// shared memory. tests/test_cuda_hardware.py checks model == hardware on a GPU.
#pragma once
#include "types.cuh"

#if !(defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800)
// Model: every lane publishes its fragments, then computes its own four outputs.
__device__ __forceinline__ void mma_b1_model(i32 (&d)[4], const u32 (&a)[4], const u32 (&b)[2],
                                             const i32 (&c)[4]) {
    __shared__ u32 frag_a[32][32][4];   // [warp][lane][register]
    __shared__ u32 frag_b[32][32][2];
    const i32 tid = (threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x;
    const i32 warp = tid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
    for (i32 r = 0; r < 4; ++r) frag_a[warp][lane][r] = a[r];
    for (i32 r = 0; r < 2; ++r) frag_b[warp][lane][r] = b[r];
    __syncwarp();
    for (i32 half = 0; half < 2; ++half) {          // rows g and g + 8
        for (i32 cc = 0; cc < 2; ++cc) {            // columns 2t and 2t + 1
            const i32 col = 2 * t + cc;
            i32 ones = 0;
            for (i32 s = 0; s < 4; ++s) {           // the four lanes holding each row / column
                const u32* ra = frag_a[warp][g * 4 + s];
                const u32* rb = frag_b[warp][col * 4 + s];
                ones += __popc(ra[half] & rb[0]) + __popc(ra[2 + half] & rb[1]);
            }
            d[2 * half + cc] = c[2 * half + cc] + ones;
        }
    }
    __syncwarp();
}
#endif

__device__ __forceinline__ void mma_b1_m16n8k256(i32 (&d)[4], const u32 (&a)[4], const u32 (&b)[2],
                                                 const i32 (&c)[4]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile(
        "mma.sync.aligned.m16n8k256.row.col.s32.b1.b1.s32.and.popc "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%10, %11, %12, %13};\n"
        : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]),
          "r"(c[0]), "r"(c[1]), "r"(c[2]), "r"(c[3]));
#else
    mma_b1_model(d, a, b, c);
#endif
}
