/* INT8 engine with AVX-512 VNNI: vpdpbusd multiplies uint8 a' by int8 v and adds groups of four
 * products into int32 lanes (no saturation); 4 x 4 register tiles, 64 bytes of K per step.
 * Same result as int8_scalar.c: int32 partial sums are exact because K <= 33025. */
#pragma GCC target("avx512f,avx512bw,avx512vnni")
#include <immintrin.h>

#include "soniq_cpu.h"

#define COL_BLOCK 64

static inline __attribute__((always_inline))
void tile(const soniq_gemm_job *job, const soniq_act_group *g, const soniq_block *b,
          int64_t m0, int64_t m, int64_t o, int mr, int nr) {
    int64_t kpad = g->kpad;
    const uint8_t *abase = g->bytes + m * kpad;
    const int8_t *wbase = b->wbytes + o * kpad;
    __m512i acc[4][4];
    for (int r = 0; r < mr; r++)
        for (int c = 0; c < nr; c++)
            acc[r][c] = _mm512_setzero_si512();
    for (int64_t t = 0; t < kpad; t += 64) {
        __m512i va[4], vw[4];
        for (int r = 0; r < mr; r++)
            va[r] = _mm512_loadu_si512((const void *)(abase + r * kpad + t));
        for (int c = 0; c < nr; c++)
            vw[c] = _mm512_loadu_si512((const void *)(wbase + c * kpad + t));
        for (int r = 0; r < mr; r++)
            for (int c = 0; c < nr; c++)
                acc[r][c] = _mm512_dpbusd_epi32(acc[r][c], va[r], vw[c]);
    }
    for (int r = 0; r < mr; r++)
        for (int c = 0; c < nr; c++) {
            int64_t v = _mm512_reduce_add_epi32(acc[r][c]);
            *soniq_out_at(job, m0 + m + r, b->cols[o + c]) +=
                soniq_int8_term(v, g->rowsum[m + r], g->shift);
        }
}

void soniq_int8_vnni(const soniq_gemm_job *job, const soniq_act_group *g, const soniq_block *b,
                     int64_t m0, int64_t rows) {
    enum { MR = 4, NR = 4 };
    for (int64_t o0 = 0; o0 < b->n; o0 += COL_BLOCK) {
        int64_t o1 = o0 + COL_BLOCK < b->n ? o0 + COL_BLOCK : b->n;
        int64_t m = 0;
        for (; m + MR <= rows; m += MR) {
            int64_t o = o0;
            for (; o + NR <= o1; o += NR)
                tile(job, g, b, m0, m, o, MR, NR);
            for (; o < o1; o++)
                tile(job, g, b, m0, m, o, MR, 1);
        }
        for (; m < rows; m++)
            for (int64_t o = o0; o < o1; o++)
                tile(job, g, b, m0, m, o, 1, 1);
    }
}
