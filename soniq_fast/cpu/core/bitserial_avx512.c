/* Bit-serial popcount engine with AVX-512 VPOPCNTQ: register tiles of MR rows x NR columns,
 * 512 bits of K per step, plane pairs combined by Horner over s = i + j:
 * t = sum_s 2^s sum_{i+j=s} popcount(W_j & A_i). Same result as bitserial_scalar.c. */
#pragma GCC target("avx512f,avx512bw,avx512vpopcntdq")
#include <immintrin.h>

#include "soniq_cpu.h"

#define COL_BLOCK 128
#define MAX_PLANES 8

static inline __attribute__((always_inline))
__m512i pair_sum(const __m512i *va, const __m512i *vw, int pa, int pw) {
    __m512i t = _mm512_setzero_si512();
    for (int s = pa + pw - 2; s >= 0; s--) {
        t = _mm512_add_epi64(t, t);
        for (int i = s - pw + 1 > 0 ? s - pw + 1 : 0; i < pa && i <= s; i++)
            t = _mm512_add_epi64(t, _mm512_popcnt_epi64(_mm512_and_si512(va[i], vw[s - i])));
    }
    return t;
}

static inline __attribute__((always_inline))
void tile(const soniq_gemm_job *job, const soniq_act_group *g, const soniq_block *b,
          int64_t m0, int64_t m, int64_t o, int mr, int nr,
          int pa, int pw) {
    int64_t words = g->words;
    const uint64_t *abase = g->planes + m * pa * words;
    const uint64_t *wbase = b->wplanes + o * pw * words;
    __m512i acc[4][4];
    for (int r = 0; r < mr; r++)
        for (int c = 0; c < nr; c++)
            acc[r][c] = _mm512_setzero_si512();
    for (int64_t w = 0; w < words; w += 8) {
        __m512i va[4][MAX_PLANES], vw[4][MAX_PLANES];
        for (int r = 0; r < mr; r++)
            for (int i = 0; i < pa; i++)
                va[r][i] = _mm512_loadu_si512((const void *)(abase + (r * pa + i) * words + w));
        for (int c = 0; c < nr; c++)
            for (int j = 0; j < pw; j++)
                vw[c][j] = _mm512_loadu_si512((const void *)(wbase + (c * pw + j) * words + w));
        for (int r = 0; r < mr; r++)
            for (int c = 0; c < nr; c++)
                acc[r][c] = _mm512_add_epi64(acc[r][c], pair_sum(va[r], vw[c], pa, pw));
    }
    for (int r = 0; r < mr; r++)
        for (int c = 0; c < nr; c++) {
            int64_t p = _mm512_reduce_add_epi64(acc[r][c]);
            *soniq_out_at(job, m0 + m + r, b->cols[o + c]) +=
                soniq_popcount_term(p, b->wbits, g->rowsum[m + r], g->shift);
        }
}

static inline __attribute__((always_inline))
void run(const soniq_gemm_job *job, const soniq_act_group *g, const soniq_block *b,
         int64_t m0, int64_t m1, int pa, int pw,
         int MR, int NR) {
    for (int64_t o0 = 0; o0 < b->n; o0 += COL_BLOCK) {
        int64_t o1 = o0 + COL_BLOCK < b->n ? o0 + COL_BLOCK : b->n;
        int64_t m = 0;
        for (; m + MR <= m1; m += MR) {
            int64_t o = o0;
            for (; o + NR <= o1; o += NR)
                tile(job, g, b, m0, m, o, MR, NR, pa, pw);
            for (; o < o1; o++)
                tile(job, g, b, m0, m, o, MR, 1, pa, pw);
        }
        for (; m < m1; m++)
            for (int64_t o = o0; o < o1; o++)
                tile(job, g, b, m0, m, o, 1, 1, pa, pw);
    }
}

void soniq_bitserial_avx512(const soniq_gemm_job *job, const soniq_act_group *g, const soniq_block *b,
                            int64_t m0, int64_t rows) {
    int pa = g->bits, pw = b->wbits;
    if (pa == 1 && pw == 1)
        run(job, g, b, m0, rows, 1, 1, 4, 4);
    else if (pa == 2 && pw == 1)
        run(job, g, b, m0, rows, 2, 1, 2, 4);
    else if (pa == 1 && pw == 2)
        run(job, g, b, m0, rows, 1, 2, 2, 4);
    else if (pa == 2 && pw == 2)
        run(job, g, b, m0, rows, 2, 2, 2, 4);
    else
        run(job, g, b, m0, rows, pa, pw, 1, 1);
}
