/* Bit-serial popcount engine, portable reference:
 * P[m, o] = sum_{i<ba, j<bw} 2^(i+j) popcount(W_j[o] & A_i[m]) over the group's words. */
#include "soniq_cpu.h"

static unsigned popcount64(uint64_t x) {
    /* portable SWAR popcount (no ISA assumption) */
    x = x - ((x >> 1) & 0x5555555555555555ULL);
    x = (x & 0x3333333333333333ULL) + ((x >> 2) & 0x3333333333333333ULL);
    x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0FULL;
    return (unsigned)((x * 0x0101010101010101ULL) >> 56);
}

void soniq_bitserial_scalar(const soniq_gemm_job *job, const soniq_act_group *g,
                            const soniq_block *b, int64_t m0, int64_t rows, int64_t *tile_buf) {
    (void)tile_buf;
    int64_t words = g->words;
    for (int64_t r = 0; r < rows; r++) {
        const uint64_t *a = g->planes + r * g->bits * words;
        for (int64_t o = 0; o < b->n; o++) {
            const uint64_t *w = b->wplanes + o * b->wbits * words;
            int64_t p = 0;
            for (int i = 0; i < g->bits; i++)
                for (int j = 0; j < b->wbits; j++) {
                    int64_t s = 0;
                    for (int64_t t = 0; t < words; t++)
                        s += popcount64(a[i * words + t] & w[j * words + t]);
                    p += s << (i + j);
                }
            *soniq_out_at(job, m0 + r, b->cols[o]) +=
                soniq_popcount_term(p, b->wbits, g->rowsum[r], g->shift);
        }
    }
}
