/* Activation rows: im2col patches, plane packing and the pack_activations contract function. */
#include <stdlib.h>
#include <string.h>

#include "soniq_cpu.h"

int64_t soniq_pack_planes(int isa, const uint8_t *src, int64_t k, int bits, uint64_t *dst,
                          int64_t words) {
    if (isa == SONIQ_AVX512)
        return soniq_pack_planes_avx512(src, k, bits, dst, words);
    if (isa == SONIQ_AVX2)
        return soniq_pack_planes_avx2(src, k, bits, dst, words);
    return soniq_pack_planes_scalar(src, k, bits, dst, words);
}

/* Row m = (b, oy, ox) of the im2col matrix, K ordered (c, r, s); padding reads code 0. */
void soniq_im2col_row(const soniq_conv_src *s, int64_t m, uint8_t *row) {
    int64_t per_image = s->ho * s->wo;
    int64_t b = m / per_image, p = m % per_image;
    int64_t y0 = (p / s->wo) * s->stride - s->padding;
    int64_t x0 = (p % s->wo) * s->stride - s->padding;
    const uint8_t *img = s->x + b * s->c * s->h * s->w;
    for (int64_t c = 0; c < s->c; c++) {
        const uint8_t *plane = img + c * s->h * s->w;
        for (int64_t r = 0; r < s->kh; r++) {
            int64_t y = y0 + r;
            uint8_t *dst = row + (c * s->kh + r) * s->kw;
            if (y < 0 || y >= s->h) {
                memset(dst, 0, (size_t)s->kw);
                continue;
            }
            for (int64_t q = 0; q < s->kw; q++) {
                int64_t x = x0 + q;
                dst[q] = (x >= 0 && x < s->w) ? plane[y * s->w + x] : 0;
            }
        }
    }
}

typedef struct {
    const uint8_t *a;
    int64_t k;
    const uint8_t *a_bits;
    int hi, isa;
    int64_t words;
    uint64_t *out;
    int failed;
} pack_ctx;

static void pack_rows(void *arg, int64_t lo, int64_t hi_row) {
    pack_ctx *c = (pack_ctx *)arg;
    uint8_t *shifted = (uint8_t *)malloc((size_t)(c->k > 0 ? c->k : 1));
    uint64_t *planes = (uint64_t *)malloc(sizeof(uint64_t) * (size_t)(c->hi * c->words + 1));
    if (!shifted || !planes) {
        __atomic_store_n(&c->failed, 1, __ATOMIC_RELAXED);
        free(shifted); free(planes);
        return;
    }
    for (int64_t m = lo; m < hi_row; m++) {
        const uint8_t *row = c->a + m * c->k;
        for (int64_t t = 0; t < c->k; t++)
            shifted[t] = (uint8_t)(row[t] << (c->hi - c->a_bits[t]));
        soniq_pack_planes(c->isa, shifted, c->k, c->hi, planes, c->words);
        memcpy(c->out + m * c->hi * c->words, planes,
               sizeof(uint64_t) * (size_t)(c->hi * c->words));
    }
    free(shifted); free(planes);
}

/* out: uint64 [m][hi][ceil(k/64)], plane i = bit i of a << (hi - a_bits). */
int soniq_pack_activations(const uint8_t *a, int64_t m, int64_t k, const uint8_t *a_bits,
                           int hi, uint64_t *out, int isa, int n_threads) {
    pack_ctx c = {a, k, a_bits, hi, isa, (k + 63) / 64, out, 0};
    if (soniq_parallel_for(n_threads, m, pack_rows, &c) != 0)
        return -1;
    return c.failed ? -1 : 0;
}
