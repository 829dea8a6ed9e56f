// Implicit im2col: the activation code that GEMM row m, column k sees.
//
// A linear layer is the special case of a convolution with a 1x1 kernel over a
// 1x1 image (C = K, H = W = Ho = Wo = 1), so one gather serves both and conv2d
// never materialises its patch matrix.
//
//   m = (b * Ho + oy) * Wo + ox,   k = (c * kh + r) * kw + s
//   y = oy * stride - pad + r,     x = ox * stride - pad + s
//   code(m, k) = x_codes[b, c, y, x] << shift[c]   (0 outside the image: zero padding)
//
// A 1x1 conv over a 1x1 image is exactly x[m, k] << shift[k]: that common case skips the
// index arithmetic (the test is uniform across the grid, so it costs no divergence).
#pragma once
#include "types.cuh"

struct ConvGeometry {
    i32 C, H, W;        // input channels and spatial size
    i32 kh, kw;         // kernel size
    i32 stride, pad;
    i32 Ho, Wo;         // output spatial size
};

// Kernels receive the geometry as 9 int32 in the order of the struct fields.
__device__ __forceinline__ ConvGeometry load_geometry(const i32* __restrict__ g) {
    ConvGeometry r;
    r.C = g[0]; r.H = g[1]; r.W = g[2]; r.kh = g[3]; r.kw = g[4];
    r.stride = g[5]; r.pad = g[6]; r.Ho = g[7]; r.Wo = g[8];
    return r;
}

__device__ __forceinline__ u32 shifted_code(const u8* __restrict__ x, const u8* __restrict__ shift,
                                            ConvGeometry g, i32 m, i32 k) {
    if (g.H == 1 && g.W == 1 && g.kh == 1 && g.kw == 1) {   // linear: row m, channel k, no division
        const u32 code = x[(i64)m * g.C + k];
        return code << shift[k];
    }
    const i32 ox = m % g.Wo;
    const i32 oy = (m / g.Wo) % g.Ho;
    const i32 b = m / (g.Wo * g.Ho);
    const i32 s = k % g.kw;
    const i32 r = (k / g.kw) % g.kh;
    const i32 c = k / (g.kw * g.kh);
    const i32 y = oy * g.stride - g.pad + r;
    const i32 xx = ox * g.stride - g.pad + s;
    if (y < 0 || y >= g.H || xx < 0 || xx >= g.W) return 0u;
    const u32 code = x[((i64)(b * g.C + c) * g.H + y) * g.W + xx];
    return code << shift[c];
}
