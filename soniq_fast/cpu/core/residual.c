/* The residual tail (residual.h): spans of `inner` elements sharing one channel's
 * parameters, threads over contiguous ranges of spans, each element computed the same way
 * on every path. */
#include <stddef.h>

#include "residual.h"
#include "soniq_cpu.h"

typedef struct {
    const int64_t *acc;
    const float *skip;
    int64_t channels, inner;
    const float *scale, *bias, *ratio;
    const uint8_t *bits;
    const soniq_isa_ops *ops;
    uint8_t *out;
} residual_ctx;

static void residual_range(void *arg, int64_t lo, int64_t hi) {
    const residual_ctx *c = (const residual_ctx *)arg;
    for (int64_t i = lo; i < hi; i++) {
        const int64_t o = i % c->channels, at = i * c->inner;
        const soniq_residual_params p = {c->scale[o], c->bias[o], c->ratio[o],
                                         (float)((1 << c->bits[o]) - 1)};
        c->ops->residual_span(c->acc + at, c->skip + at, c->inner, &p, c->out + at);
    }
}

int soniq_residual_requantize(const int64_t *acc, const float *skip, int64_t total,
                              int64_t channels, int64_t inner, const float *scale,
                              const float *bias, const uint8_t *bits, const float *ratio,
                              uint8_t *out, int isa, int n_threads) {
    residual_ctx c = {acc, skip, channels, inner, scale, bias, ratio, bits,
                      soniq_isa_ops_for(isa), out};
    if (c.ops == NULL)
        return -1;              /* Python checked isa: not reached */
    if (channels <= 0 || inner <= 0)
        return 0;
    return soniq_parallel_for(n_threads, total / inner, residual_range, &c);
}
