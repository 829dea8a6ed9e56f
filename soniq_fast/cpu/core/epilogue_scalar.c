/* Epilogue and requantize of one span, portable path (SSE2 scalar ops: part of every x86-64):
 *   y = s * (float)acc + b;   k = clip(rint(y * r), 0, 2^bits - 1)
 * (float) of an int64 rounds to nearest even, like NumPy's astype(float32). */
#include <emmintrin.h>

#include "soniq_cpu.h"

/* clip(rint(p), 0, top) for top in 1..255, p any float (inf included; never NaN here:
 * scale, bias and ratio are finite). Clipping first is the same (top is an integer), and
 * for 0 <= p <= 255, (p + 2^23) - 2^23 rounds p to an integer half to even in the default
 * rounding mode. Branch-free (max/min select), no libm call. */
static inline uint8_t quantize(float p, float top) {
    const float magic = 8388608.0f;   /* 2^23; the sum is not folded away: no -ffast-math */
    __m128 v = _mm_min_ss(_mm_max_ss(_mm_set_ss(p), _mm_setzero_ps()), _mm_set_ss(top));
    return (uint8_t)(int)((_mm_cvtss_f32(v) + magic) - magic);
}

void soniq_epilogue_span_scalar(const int64_t *acc, int64_t n, const soniq_epi_params *p,
                                float *y) {
    const float *scale = p->scale, *bias = p->bias;
    if (n <= 0)
        return;
    if (p->scale_step) {
        for (int64_t j = 0; j < n; j++) {
            float t = scale[j] * (float)acc[j];
            y[j] = t + bias[j];
        }
        return;
    }
    const float s = scale[0], b = bias[0];
    for (int64_t j = 0; j < n; j++) {
        float t = s * (float)acc[j];
        y[j] = t + b;
    }
}

/* ss, rs: the steps, constant in each specialization. Fixed parameters are read once into
 * locals: the uint8 stores may alias anything, so loads in the loop would be repeated. */
static inline __attribute__((always_inline))
void requantize_span(const int64_t *acc, int64_t n, const soniq_epi_params *p, uint8_t *k,
                     int ss, int rs) {
    const float *scale = p->scale, *bias = p->bias, *ratio = p->ratio;
    const uint8_t *bits = p->bits;
    const float s0 = scale[0], b0 = bias[0], r0 = ratio[0];
    const float top0 = (float)((1 << bits[0]) - 1);
    for (int64_t j = 0; j < n; j++) {
        float t = (ss ? scale[j] : s0) * (float)acc[j];
        float y = t + (ss ? bias[j] : b0);
        k[j] = quantize(y * (rs ? ratio[j] : r0), rs ? (float)((1 << bits[j]) - 1) : top0);
    }
}

void soniq_requantize_span_scalar(const int64_t *acc, int64_t n, const soniq_epi_params *p,
                                  uint8_t *k) {
    if (n <= 0)       /* (the parameters of an empty span may lie past their arrays) */
        return;
    if (p->scale_step)
        requantize_span(acc, n, p, k, 1, 1);
    else if (p->ratio_step)
        requantize_span(acc, n, p, k, 0, 1);
    else
        requantize_span(acc, n, p, k, 0, 0);
}

/* Column o < cols of a column-major block: acc[o * ld + j] -> k[o * ks + j] for j < n, with
 * scale[o], bias[o] and ratio, bits at [o * param_ld] (+ j when ratio_step is 1). */
void soniq_requantize_columns_scalar(const int64_t *acc, int64_t ld, int64_t cols, int64_t n,
                                     const soniq_epi_params *p, int64_t param_ld, uint8_t *k,
                                     int64_t ks, const int32_t *perm) {
    for (int64_t i = 0; i < cols; i++) {
        const int64_t o = perm ? perm[i] : i;
        const soniq_epi_params col = {p->scale + o, p->bias + o, p->ratio + o * param_ld,
                                      p->bits + o * param_ld, 0, p->ratio_step};
        soniq_requantize_span_scalar(acc + i * ld, n, &col, k + o * ks);
    }
}
