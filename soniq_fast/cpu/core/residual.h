/* The residual tail of a residual block (soniq_ref.stages.residual), fused: for each element
 * of conv2's accumulator, in the reference's float32 order (-ffp-contract=off):
 *   y = scale[o] * (float)acc + bias[o]        conv2's epilogue: one multiply, one add
 *   s = y + skip                               the skip branch's float32 value: one add
 *   k = clip(rint(s * ratio[o]), 0, 2^bits[o] - 1)   the next layer's codes (the ReLU)
 * acc int64 and skip float32 are [units][channels][inner], every parameter per channel.
 * Paths (each table of dispatch.c names one): residual_scalar.c (the reference path) and
 * residual_avx2.c (also run on avx512);
 * spans of `inner` elements sharing a channel, threads over contiguous ranges of spans. */
#ifndef SONIQ_RESIDUAL_H
#define SONIQ_RESIDUAL_H

#include <stdint.h>

typedef struct {
    float scale, bias, ratio, top;     /* one channel's parameters; top = 2^bits - 1 */
} soniq_residual_params;

void soniq_residual_span_scalar(const int64_t *acc, const float *skip, int64_t n,
                                const soniq_residual_params *p, uint8_t *k);
void soniq_residual_span_avx2(const int64_t *acc, const float *skip, int64_t n,
                              const soniq_residual_params *p, uint8_t *k);
/* The same with an identity skip given as the block input's codes and their channel's
 * factor s_a 2^(A - a_bits): skip = (float)codes[j] * factor, one rounding, as
 * soniq_ref's ResidualStage.skip_value computes it. */
void soniq_residual_codes_span_scalar(const int64_t *acc, const uint8_t *codes, float factor,
                                      int64_t n, const soniq_residual_params *p, uint8_t *k);
void soniq_residual_codes_span_avx2(const int64_t *acc, const uint8_t *codes, float factor,
                                    int64_t n, const soniq_residual_params *p, uint8_t *k);
int soniq_residual_requantize(const int64_t *acc, const float *skip, int64_t total,
                              int64_t channels, int64_t inner, const float *scale,
                              const float *bias, const uint8_t *bits, const float *ratio,
                              uint8_t *out, int isa, int n_threads);

#endif
