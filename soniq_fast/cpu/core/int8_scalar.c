/* INT8 engine, portable reference: V[m, o] = sum_c v[o, c] * a'[m, c], v int8, a' uint8. */
#include "soniq_cpu.h"

void soniq_int8_scalar(const soniq_gemm_job *job, const soniq_act_group *g, const soniq_block *b,
                       int64_t m0, int64_t rows, int64_t *tile_buf) {
    (void)tile_buf;
    for (int64_t r = 0; r < rows; r++) {
        const uint8_t *a = g->bytes + r * g->kpad;
        for (int64_t o = 0; o < b->n; o++) {
            const int8_t *w = b->wbytes + o * g->kpad;
            int64_t v = 0;
            for (int64_t t = 0; t < g->k; t++)
                v += (int64_t)w[t] * a[t];
            *soniq_out_at(job, m0 + r, b->cols[o]) += soniq_int8_term(v, g->rowsum[r], g->shift);
        }
    }
}
