/* Fused epilogue and requantize, in the reference's float32 order (built with -ffp-contract=off):
 *   y = scale[o] * (float)acc + bias[o]                    one multiply, then one add
 *   k = clip(rint(y * ratio[o]), 0, 2^bits[o] - 1)          round half to even
 * The flat array is [units][channels][inner]; threads take contiguous ranges of
 * (unit, channel) pairs, so no element needs a division to find its channel. */
#include <emmintrin.h>   /* SSE2: part of every x86-64 */

#include "soniq_cpu.h"

typedef struct {
    const int64_t *acc;
    int64_t channels, inner;
    const float *scale, *bias, *ratio;
    const uint8_t *bits;
    float *yout;
    uint8_t *kout;
} epi_ctx;

/* clip(rint(p), 0, top) for top in 1..255, p any float (inf included; never NaN here:
 * scale, bias and ratio are finite). Clipping first is the same (top is an integer), and
 * for 0 <= p <= 255, (p + 2^23) - 2^23 rounds p to an integer half to even in the default
 * rounding mode. Branch-free (max/min select), no libm call. */
static inline uint8_t quantize(float p, float top) {
    const float magic = 8388608.0f;   /* 2^23; the sum is not folded away: no -ffast-math */
    __m128 v = _mm_min_ss(_mm_max_ss(_mm_set_ss(p), _mm_setzero_ps()), _mm_set_ss(top));
    return (uint8_t)(int)((_mm_cvtss_f32(v) + magic) - magic);
}

static void epilogue_range(void *arg, int64_t lo, int64_t hi) {
    const epi_ctx *c = (const epi_ctx *)arg;
    int64_t o = lo % c->channels;
    for (int64_t pair = lo; pair < hi; pair++) {
        const float s = c->scale[o], b = c->bias[o];
        const int64_t *acc = c->acc + pair * c->inner;
        float *y = c->yout + pair * c->inner;
        for (int64_t j = 0; j < c->inner; j++) {
            float t = s * (float)acc[j];
            y[j] = t + b;
        }
        if (++o == c->channels)
            o = 0;
    }
}

static void requantize_range(void *arg, int64_t lo, int64_t hi) {
    const epi_ctx *c = (const epi_ctx *)arg;
    int64_t o = lo % c->channels;
    const int64_t inner = c->inner;   /* a local: the uint8 stores may alias anything */
    for (int64_t pair = lo; pair < hi; pair++) {
        const float s = c->scale[o], b = c->bias[o], r = c->ratio[o];
        const float top = (float)((1 << c->bits[o]) - 1);
        const int64_t *acc = c->acc + pair * inner;
        uint8_t *k = c->kout + pair * inner;
        for (int64_t j = 0; j < inner; j++) {
            float t = s * (float)acc[j];
            float y = t + b;
            k[j] = quantize(y * r, top);
        }
        if (++o == c->channels)
            o = 0;
    }
}

static int64_t pairs(int64_t total, int64_t inner) {
    return inner > 0 ? total / inner : 0;
}

int soniq_epilogue(const int64_t *acc, int64_t total, int64_t channels, int64_t inner,
                   const float *scale, const float *bias, float *out, int n_threads) {
    epi_ctx c = {acc, channels, inner, scale, bias, 0, 0, out, 0};
    return soniq_parallel_for(n_threads, pairs(total, inner), epilogue_range, &c);
}

int soniq_requantize(const int64_t *acc, int64_t total, int64_t channels, int64_t inner,
                     const float *scale, const float *bias, const uint8_t *bits,
                     const float *ratio, uint8_t *out, int n_threads) {
    epi_ctx c = {acc, channels, inner, scale, bias, ratio, bits, 0, out};
    return soniq_parallel_for(n_threads, pairs(total, inner), requantize_range, &c);
}
