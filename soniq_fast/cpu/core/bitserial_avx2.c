/* Bit-serial popcount engine with AVX2: popcount by nibble lookup (vpshufb) summed per 64-bit
 * lane with vpsadbw; otherwise the structure of bitserial_avx512.c with 256 bits of K per step. */
#pragma GCC target("avx2")
#include <immintrin.h>

#include "soniq_cpu.h"

#define COL_BLOCK 128
#define MAX_PLANES 8

static inline __attribute__((always_inline)) __m256i popcnt_lanes(__m256i v) {
    const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                         0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
    const __m256i low = _mm256_set1_epi8(0x0f);
    __m256i lo = _mm256_and_si256(v, low);
    __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
    __m256i cnt = _mm256_add_epi8(_mm256_shuffle_epi8(lut, lo), _mm256_shuffle_epi8(lut, hi));
    return _mm256_sad_epu8(cnt, _mm256_setzero_si256());
}

static inline __attribute__((always_inline))
__m256i pair_sum(const __m256i *va, const __m256i *vw, int pa, int pw) {
    __m256i t = _mm256_setzero_si256();
    for (int s = pa + pw - 2; s >= 0; s--) {
        t = _mm256_add_epi64(t, t);
        for (int i = s - pw + 1 > 0 ? s - pw + 1 : 0; i < pa && i <= s; i++)
            t = _mm256_add_epi64(t, popcnt_lanes(_mm256_and_si256(va[i], vw[s - i])));
    }
    return t;
}

static inline __attribute__((always_inline)) int64_t hsum(__m256i v) {
    __m128i s = _mm_add_epi64(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    return _mm_cvtsi128_si64(s) + _mm_extract_epi64(s, 1);
}

static inline __attribute__((always_inline))
void tile(const soniq_gemm_job *job, const soniq_act_group *g, const soniq_block *b,
          int64_t m0, int64_t m, int64_t o, int mr, int nr,
          int pa, int pw) {
    int64_t words = g->words;
    const uint64_t *abase = g->planes + m * pa * words;
    const uint64_t *wbase = b->wplanes + o * pw * words;
    __m256i acc[2][4];
    for (int r = 0; r < mr; r++)
        for (int c = 0; c < nr; c++)
            acc[r][c] = _mm256_setzero_si256();
    for (int64_t w = 0; w < words; w += 4) {
        __m256i va[2][MAX_PLANES], vw[4][MAX_PLANES];
        for (int r = 0; r < mr; r++)
            for (int i = 0; i < pa; i++)
                va[r][i] = _mm256_loadu_si256((const __m256i *)(abase + (r * pa + i) * words + w));
        for (int c = 0; c < nr; c++)
            for (int j = 0; j < pw; j++)
                vw[c][j] = _mm256_loadu_si256((const __m256i *)(wbase + (c * pw + j) * words + w));
        for (int r = 0; r < mr; r++)
            for (int c = 0; c < nr; c++)
                acc[r][c] = _mm256_add_epi64(acc[r][c], pair_sum(va[r], vw[c], pa, pw));
    }
    for (int r = 0; r < mr; r++)
        for (int c = 0; c < nr; c++)
            *soniq_out_at(job, m0 + m + r, b->cols[o + c]) +=
                soniq_popcount_term(hsum(acc[r][c]), b->wbits, g->rowsum[m + r], g->shift);
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

void soniq_bitserial_avx2(const soniq_gemm_job *job, const soniq_act_group *g, const soniq_block *b,
                          int64_t m0, int64_t rows, int64_t *tile_buf) {
    (void)tile_buf;
    int pa = g->bits, pw = b->wbits;
    if (pa == 1 && pw == 1)
        run(job, g, b, m0, rows, 1, 1, 2, 4);
    else if (pa == 2 && pw == 1)
        run(job, g, b, m0, rows, 2, 1, 2, 2);
    else if (pa == 1 && pw == 2)
        run(job, g, b, m0, rows, 1, 2, 2, 2);
    else
        run(job, g, b, m0, rows, pa, pw, 1, 1);
}
