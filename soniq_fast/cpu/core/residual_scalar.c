/* The residual tail (residual.h), portable path: SSE2 scalar operations, part of every
 * x86-64. (float) of an int64 rounds to nearest even, like NumPy's astype(float32). */
#include <emmintrin.h>

#include "residual.h"

/* clip(rint(v), 0, top), top in 1..255: clip first (0 and top are integers, so the order
 * does not matter), then (v + 2^23) - 2^23 rounds half to even in the default rounding
 * mode; the same rule as epilogue_scalar.c. */
static inline uint8_t to_code(float v, float top) {
    const float magic = 8388608.0f;
    __m128 c = _mm_min_ss(_mm_max_ss(_mm_set_ss(v), _mm_setzero_ps()), _mm_set_ss(top));
    return (uint8_t)(int)((_mm_cvtss_f32(c) + magic) - magic);
}

void soniq_residual_span_scalar(const int64_t *acc, const float *skip, int64_t n,
                                const soniq_residual_params *p, uint8_t *k) {
    const float s = p->scale, b = p->bias, r = p->ratio, top = p->top;
    for (int64_t j = 0; j < n; j++) {
        float t = s * (float)acc[j];
        float y = t + b;
        float sum = y + skip[j];
        k[j] = to_code(sum * r, top);
    }
}

void soniq_residual_codes_span_scalar(const int64_t *acc, const uint8_t *codes, float factor,
                                      int64_t n, const soniq_residual_params *p, uint8_t *k) {
    const float s = p->scale, b = p->bias, r = p->ratio, top = p->top;
    for (int64_t j = 0; j < n; j++) {
        float t = s * (float)acc[j];
        float y = t + b;
        float skip = (float)codes[j] * factor;
        float sum = y + skip;
        k[j] = to_code(sum * r, top);
    }
}
