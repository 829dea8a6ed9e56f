/* Fused epilogue and requantize, in the reference's float32 order (built with -ffp-contract=off):
 *   y = scale[o] * (float)acc + bias[o]          one multiply, then one add
 *   k = clip(nearbyintf(y * ratio[o]), 0, 2^bits[o] - 1)   round half to even
 * The channel of flat element i is (i / inner) % channels. */
#include <math.h>

#include "soniq_cpu.h"

typedef struct {
    const int64_t *acc;
    int64_t channels, inner;
    const float *scale, *bias, *ratio;
    const uint8_t *bits;
    float *yout;
    uint8_t *kout;
} epi_ctx;

static inline float affine(const epi_ctx *c, int64_t i, int64_t o) {
    float y = c->scale[o] * (float)c->acc[i];
    return y + c->bias[o];
}

static void epilogue_range(void *arg, int64_t lo, int64_t hi) {
    const epi_ctx *c = (const epi_ctx *)arg;
    for (int64_t i = lo; i < hi; i++)
        c->yout[i] = affine(c, i, (i / c->inner) % c->channels);
}

static void requantize_range(void *arg, int64_t lo, int64_t hi) {
    const epi_ctx *c = (const epi_ctx *)arg;
    for (int64_t i = lo; i < hi; i++) {
        int64_t o = (i / c->inner) % c->channels;
        float t = nearbyintf(affine(c, i, o) * c->ratio[o]);
        float top = (float)((1 << c->bits[o]) - 1);
        t = t > top ? top : t;
        c->kout[i] = t > 0.0f ? (uint8_t)t : 0;
    }
}

int soniq_epilogue(const int64_t *acc, int64_t total, int64_t channels, int64_t inner,
                   const float *scale, const float *bias, float *out, int n_threads) {
    epi_ctx c = {acc, channels, inner, scale, bias, 0, 0, out, 0};
    return soniq_parallel_for(n_threads, total, epilogue_range, &c);
}

int soniq_requantize(const int64_t *acc, int64_t total, int64_t channels, int64_t inner,
                     const float *scale, const float *bias, const uint8_t *bits,
                     const float *ratio, uint8_t *out, int n_threads) {
    epi_ctx c = {acc, channels, inner, scale, bias, ratio, bits, 0, out};
    return soniq_parallel_for(n_threads, total, requantize_range, &c);
}
