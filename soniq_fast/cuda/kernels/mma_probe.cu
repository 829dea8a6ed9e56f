// One-warp probe of the b1 tensor-core step: lane l passes its fragments
// a[4 l .. 4 l + 3], b[2 l, 2 l + 1] and gets d[4 l .. 4 l + 3] = mma(a, b, c = 0).
// On a GPU this runs the PTX instruction; under emulation, the CPU model. The
// hardware test compares both with a direct popcount over the documented layout.
#include "mma_b1.cuh"

extern "C" __global__ void __launch_bounds__(32)
mma_probe(const u32* __restrict__ a, const u32* __restrict__ b, i32* __restrict__ d) {
    const i32 lane = threadIdx.x;
    const u32 fa[4] = {a[4 * lane], a[4 * lane + 1], a[4 * lane + 2], a[4 * lane + 3]};
    const u32 fb[2] = {b[2 * lane], b[2 * lane + 1]};
    const i32 zero[4] = {0, 0, 0, 0};
    i32 fd[4];
    mma_b1_m16n8k256(fd, fa, fb, zero);
    for (i32 r = 0; r < 4; ++r) d[4 * lane + r] = fd[r];
}
