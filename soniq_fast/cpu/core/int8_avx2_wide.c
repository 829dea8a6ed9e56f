/* INT8 engine with AVX2 when vpmaddubsw is not exact (bw = 8 with a' > 128): both operands
 * as int16 and vpmaddwd, which adds two exact products into each int32 lane.
 *
 * Weights int16 wbytes[v][p][lane][0..1]: v = w - 2^(bw-1) of channel 8 v + lane at K
 * positions 2 p, 2 p + 1; the group's `wide` rows hold a' as int16, and one pair of them is
 * broadcast to all lanes. Register tile: MR rows x NR vectors. int32 is exact: |V| <=
 * K * 255 * 128 with K <= 33025. Same result as int8_scalar.c. */
#pragma GCC target("avx2")
#include <immintrin.h>
#include <string.h>

#include "int8_avx2.h"

#define MR 4
#define NR 2

static inline __attribute__((always_inline)) __m256i bcast_pair(const int16_t *p) {
    int32_t pair;
    memcpy(&pair, p, 4);
    return _mm256_set1_epi32(pair);
}

static inline __attribute__((always_inline))
void micro(const soniq_gemm_job *job, const soniq_act_group *g, const soniq_block *b,
           const soniq_int8_avx2_rows *t, int64_t r0, int64_t rows, int64_t v0, int nr) {
    const int64_t kpad = g->kpad, kp = kpad / 2;
    const int16_t *a = g->wide + r0 * kpad;
    const int16_t *w = (const int16_t *)(const void *)b->wbytes + v0 * kpad * 8;
    __m256i acc[MR][NR];
    for (int r = 0; r < MR; r++)
        for (int c = 0; c < nr; c++)
            acc[r][c] = _mm256_setzero_si256();
    for (int64_t p = 0; p < kp; p++) {
        __m256i wv[NR];
        for (int c = 0; c < nr; c++)
            wv[c] = _mm256_loadu_si256((const __m256i *)(w + (c * kp + p) * 16));
        for (int r = 0; r < MR; r++) {
            __m256i x = bcast_pair(a + r * kpad + 2 * p);
            for (int c = 0; c < nr; c++)
                acc[r][c] = _mm256_add_epi32(acc[r][c], _mm256_madd_epi16(x, wv[c]));
        }
    }
    int contiguous[NR];
    for (int c = 0; c < nr; c++)
        contiguous[c] = soniq_int8_avx2_contiguous(job, b, v0 + c);
    for (int r = 0; r < MR && r0 + r < rows; r++)
        for (int c = 0; c < nr; c++)
            soniq_int8_avx2_add(job, b, t->out[r0 + r], v0 + c, contiguous[c], acc[r][c],
                                t->base[r0 + r]);
}

void soniq_int8_avx2_wide(const soniq_gemm_job *job, const soniq_act_group *g,
                          const soniq_block *b, int64_t m0, int64_t rows, int64_t *tile) {
    (void)tile;
    const int64_t n_vec = (b->n + 7) / 8;
    soniq_int8_avx2_rows t;
    soniq_int8_avx2_rows_init(&t, job, g, m0, rows);
    for (int64_t v0 = 0; v0 < n_vec; v0 += NR) {
        const int nr = n_vec - v0 < NR ? (int)(n_vec - v0) : NR;
        for (int64_t r0 = 0; r0 < rows; r0 += MR) {
            if (nr == NR)
                micro(job, g, b, &t, r0, rows, v0, NR);
            else
                micro(job, g, b, &t, r0, rows, v0, 1);
        }
    }
}

_Static_assert(NR == 2 && MR <= SONIQ_ROW_PAD, "partial tiles: nr is NR or 1; spare rows");
