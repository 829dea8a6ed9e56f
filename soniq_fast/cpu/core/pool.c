/* Max pooling of uint8 codes [planes][h][w] -> [planes][ho][wo] (planes = B * C):
 *   out[p, i, j] = max_{u, v < kernel} x[p, i * stride + u, j * stride + v]
 * ho = (h - kernel) / stride + 1 (likewise wo). Threads take contiguous ranges of output rows
 * (p, i); a code path's max_pool2 kernel (AVX2's) covers kernel == stride == 2, the scalar
 * loop every window. */
#include "soniq_cpu.h"

typedef struct {
    const uint8_t *x;
    int64_t h, w, ho, wo;
    int kernel, stride;
    soniq_max_pool2_fn max_pool2;   /* the code path's 2 x 2 stride-2 kernel, or NULL */
    uint8_t *out;
} pool_ctx;

static void pool_rows_scalar(const pool_ctx *c, int64_t lo, int64_t hi) {
    const int64_t h = c->h, w = c->w, ho = c->ho, wo = c->wo;
    const int k = c->kernel, s = c->stride;
    for (int64_t row = lo; row < hi; row++) {
        const uint8_t *top = c->x + (row / ho) * h * w + (row % ho) * s * w;
        uint8_t *out = c->out + row * wo;
        for (int64_t j = 0; j < wo; j++) {
            const uint8_t *win = top + j * s;
            unsigned best = 0;
            for (int u = 0; u < k; u++)
                for (int v = 0; v < k; v++)
                    best = win[u * w + v] > best ? win[u * w + v] : best;
            out[j] = (uint8_t)best;
        }
    }
}

static void pool_rows(void *arg, int64_t lo, int64_t hi) {
    const pool_ctx *c = (const pool_ctx *)arg;
    if (c->max_pool2 && c->kernel == 2 && c->stride == 2)
        c->max_pool2(c->x, c->h, c->w, c->ho, c->wo, lo, hi, c->out);
    else
        pool_rows_scalar(c, lo, hi);
}

int soniq_max_pool(const uint8_t *x, int64_t planes, int64_t h, int64_t w, int kernel,
                   int stride, uint8_t *out, int isa, int n_threads) {
    const soniq_isa_ops *ops = soniq_isa_ops_for(isa);
    if (!ops)
        return -3;
    pool_ctx c = {x, h, w, (h - kernel) / stride + 1, (w - kernel) / stride + 1, kernel, stride,
                  ops->max_pool2, out};
    return soniq_parallel_for(n_threads, planes * c.ho, pool_rows, &c);
}
