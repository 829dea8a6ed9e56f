/* Fused epilogue and requantize, in the reference's float32 order (built with -ffp-contract=off):
 *   y = scale[o] * (float)acc + bias[o]                    one multiply, then one add
 *   k = clip(rint(y * ratio), 0, 2^bits - 1)                round half to even
 * The flat array is [units][channels][inner], every parameter per channel. The work is cut
 * into spans: one (unit, channel) pair of `inner` elements sharing the parameters, or, when
 * inner == 1, one unit's row of `channels` elements with every parameter stepping along.
 * Threads take contiguous ranges of spans; each element is computed the same way on every
 * path (epilogue_scalar.c, epilogue_avx2.c). */
#include "soniq_cpu.h"

typedef struct {
    const int64_t *acc;
    int64_t channels, inner;
    const float *scale, *bias, *ratio;
    const uint8_t *bits;
    const soniq_isa_ops *ops;
    float *yout;
    uint8_t *kout;
} epi_ctx;

/* Parameters of span `i` (elements acc + i * len, len = inner or channels). */
static int64_t span_params(const epi_ctx *c, int64_t i, soniq_epi_params *p) {
    if (c->inner == 1) {
        *p = (soniq_epi_params){c->scale, c->bias, c->ratio, c->bits, 1, 1};
        return c->channels;
    }
    int64_t o = i % c->channels;
    *p = (soniq_epi_params){c->scale + o, c->bias + o, c->ratio ? c->ratio + o : 0,
                            c->bits ? c->bits + o : 0, 0, 0};
    return c->inner;
}

static void epilogue_range(void *arg, int64_t lo, int64_t hi) {
    const epi_ctx *c = (const epi_ctx *)arg;
    soniq_epi_params p;
    for (int64_t i = lo; i < hi; i++) {
        int64_t len = span_params(c, i, &p);
        c->ops->epilogue_span(c->acc + i * len, len, &p, c->yout + i * len);
    }
}

static void requantize_range(void *arg, int64_t lo, int64_t hi) {
    const epi_ctx *c = (const epi_ctx *)arg;
    soniq_epi_params p;
    for (int64_t i = lo; i < hi; i++) {
        int64_t len = span_params(c, i, &p);
        c->ops->requantize_span(c->acc + i * len, len, &p, c->kout + i * len);
    }
}

static int64_t spans(int64_t total, int64_t channels, int64_t inner) {
    if (inner <= 0 || channels <= 0)
        return 0;
    return inner == 1 ? total / channels : total / inner;
}

int soniq_epilogue(const int64_t *acc, int64_t total, int64_t channels, int64_t inner,
                   const float *scale, const float *bias, float *out, int isa, int n_threads) {
    epi_ctx c = {acc, channels, inner, scale, bias, 0, 0, soniq_isa_ops_for(isa), out, 0};
    if (!c.ops)
        return -3;
    return soniq_parallel_for(n_threads, spans(total, channels, inner),
                              epilogue_range, &c);
}

int soniq_requantize(const int64_t *acc, int64_t total, int64_t channels, int64_t inner,
                     const float *scale, const float *bias, const uint8_t *bits,
                     const float *ratio, uint8_t *out, int isa, int n_threads) {
    epi_ctx c = {acc, channels, inner, scale, bias, ratio, bits, soniq_isa_ops_for(isa), 0,
                 out};
    if (!c.ops)
        return -3;
    return soniq_parallel_for(n_threads, spans(total, channels, inner),
                              requantize_range, &c);
}
