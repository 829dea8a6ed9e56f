/* Activation rows: im2col patches, plane packing and the pack_activations contract function. */
#include <stdlib.h>
#include <string.h>

#include "soniq_cpu.h"

/* Row m = (b, oy, ox) of the im2col matrix, K ordered (c, r, s); padding reads code 0. */
void soniq_im2col_row(const soniq_conv_src *s, int64_t m, uint8_t *row) {
    int64_t per_image = s->ho * s->wo;
    int64_t b = m / per_image, p = m % per_image;
    int64_t y0 = (p / s->wo) * s->stride - s->padding;
    int64_t x0 = (p % s->wo) * s->stride - s->padding;
    const uint8_t *img = s->x + b * s->c * s->h * s->w;
    for (int64_t c = 0; c < s->c; c++) {
        const uint8_t *plane = img + c * s->h * s->w;
        const int sh = s->shift ? s->shift[c] : 0;
        for (int64_t r = 0; r < s->kh; r++) {
            int64_t y = y0 + r;
            uint8_t *dst = row + (c * s->kh + r) * s->kw;
            if (y < 0 || y >= s->h) {
                memset(dst, 0, (size_t)s->kw);
                continue;
            }
            for (int64_t q = 0; q < s->kw; q++) {
                int64_t x = x0 + q;
                dst[q] = (x >= 0 && x < s->w) ? (uint8_t)(plane[y * s->w + x] << sh) : 0;
            }
        }
    }
}

/* The zero-padded image: [c][h + 2 padding][w + 2 padding + SONIQ_IM2COL_SLACK] bytes. */
int64_t soniq_padded_row_bytes(const soniq_conv_src *s) {
    return s->w + 2 * s->padding + SONIQ_IM2COL_SLACK;
}

int64_t soniq_padded_bytes(const soniq_conv_src *s) {
    return s->c * (s->h + 2 * s->padding) * soniq_padded_row_bytes(s);
}

/* n codes from src to dst, each shifted left by sh (0..7) bits: 8 at a time as one 64-bit
 * word shifted whole, the bits each byte receives from the byte below masked off. Rows of a
 * feature map are short (28, 14, 7 codes), too short for a library call each. */
static inline void copy_row(uint8_t *dst, const uint8_t *src, int64_t n, int sh) {
    if (sh == 0 && n > 64) {
        memcpy(dst, src, (size_t)n);
        return;
    }
    const uint64_t keep = 0x0101010101010101ull * (uint8_t)(0xFFu << sh);
    int64_t x = 0;
    for (; x + 8 <= n; x += 8) {
        uint64_t v;
        memcpy(&v, src + x, 8);
        v = (v << sh) & keep;
        memcpy(dst + x, &v, 8);
    }
    if (x + 4 <= n) {
        uint32_t v;
        memcpy(&v, src + x, 4);
        v = (v << sh) & (uint32_t)keep;
        memcpy(dst + x, &v, 4);
        x += 4;
    }
    for (; x < n; x++)
        dst[x] = (uint8_t)(src[x] << sh);
}

/* Copy image b into `padded` (zeroed once by the caller; only the interior is written),
 * each channel's codes shifted by s->shift[c] when given. */
void soniq_pad_image(const soniq_conv_src *s, int64_t b, uint8_t *padded) {
    const int64_t hp = s->h + 2 * s->padding, wpp = soniq_padded_row_bytes(s), w = s->w;
    const uint8_t *img = s->x + b * s->c * s->h * w;
    for (int64_t c = 0; c < s->c; c++) {
        const int sh = s->shift ? s->shift[c] : 0;
        for (int64_t y = 0; y < s->h; y++)
            copy_row(padded + (c * hp + y + s->padding) * wpp + s->padding,
                     img + (c * s->h + y) * w, w, sh);
    }
}

/* The (c, r) segments of one im2col row, kw <= 8: 8-byte copies in increasing order (constant
 * kh, kw in the 3x3 specialization, so the copies unroll). */
static inline __attribute__((always_inline))
void copy_segments(const uint8_t *src, uint8_t *dst, int64_t c_n, int64_t plane, int64_t wpp,
                   int64_t kh, int64_t kw) {
    for (int64_t c = 0; c < c_n; c++, src += plane)
        for (int64_t q = 0; q < kh; q++, dst += kw) {
            uint64_t eight;
            memcpy(&eight, src + q * wpp, 8);
            memcpy(dst, &eight, 8);
        }
}

/* Rows m0 .. m0+rows-1 of the im2col matrix into patch ([rows][K], SONIQ_IM2COL_SLACK spare
 * bytes at the end), the same bytes as soniq_im2col_row. Each (c, r) segment of kw codes is
 * one copy from the padded image; for kw <= 8 an 8-byte copy whose excess bytes the next
 * segment (or row) overwrites, since segments are written in increasing order. *image is the
 * image now in `padded` (-1: none yet). */
void soniq_im2col_tile(const soniq_conv_src *s, int64_t m0, int64_t rows, uint8_t *patch,
                       uint8_t *padded, int64_t *image) {
    const int64_t per_image = s->ho * s->wo, wo = s->wo, c_n = s->c, kh = s->kh, kw = s->kw;
    const int64_t hp = s->h + 2 * s->padding, wpp = soniq_padded_row_bytes(s);
    const int64_t stride = s->stride, k = c_n * kh * kw, plane = hp * wpp;
    int64_t b = m0 / per_image, oy = (m0 % per_image) / wo, ox = (m0 % per_image) % wo;
    for (int64_t r = 0; r < rows; r++) {
        if (b != *image) {
            soniq_pad_image(s, b, padded);
            *image = b;
        }
        const uint8_t *src = padded + oy * stride * wpp + ox * stride;
        uint8_t *dst = patch + r * k;
        if (kh == 3 && kw == 3)
            copy_segments(src, dst, c_n, plane, wpp, 3, 3);
        else if (kw <= 8)
            copy_segments(src, dst, c_n, plane, wpp, kh, kw);
        else
            for (int64_t c = 0; c < c_n; c++, src += plane)
                for (int64_t q = 0; q < kh; q++, dst += kw)
                    memcpy(dst, src + q * wpp, (size_t)kw);
        if (++ox == wo) {        /* the next output position */
            ox = 0;
            if (++oy == s->ho) {
                oy = 0;
                b++;
            }
        }
    }
}

typedef struct {
    const uint8_t *a;
    int64_t k;
    const uint8_t *a_bits;
    int hi;
    soniq_pack_fn pack_planes;
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
        c->pack_planes(shifted, c->k, c->hi, planes, c->words);
        memcpy(c->out + m * c->hi * c->words, planes,
               sizeof(uint64_t) * (size_t)(c->hi * c->words));
    }
    free(shifted); free(planes);
}

/* out: uint64 [m][hi][ceil(k/64)], plane i = bit i of a << (hi - a_bits). */
int soniq_pack_activations(const uint8_t *a, int64_t m, int64_t k, const uint8_t *a_bits,
                           int hi, uint64_t *out, int isa, int n_threads) {
    const soniq_isa_ops *ops = soniq_isa_ops_for(isa);
    if (!ops)
        return -3;
    pack_ctx c = {a, k, a_bits, hi, ops->pack_planes, (k + 63) / 64, out, 0};
    if (soniq_parallel_for(n_threads, m, pack_rows, &c) != 0)
        return -1;
    return c.failed ? -1 : 0;
}
