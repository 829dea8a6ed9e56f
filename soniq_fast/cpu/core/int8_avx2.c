/* INT8 engine with AVX2: a' (uint8) and v (int8) widened to int16, vpmaddwd adds pairs of
 * products into int32 lanes (vpmaddubsw would saturate at 255 * 128 * 2); 2 x 4 tiles.
 * Same result as int8_scalar.c. */
#pragma GCC target("avx2")
#include <immintrin.h>

#include "soniq_cpu.h"

#define COL_BLOCK 64

static inline __attribute__((always_inline)) int64_t hsum32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

static inline __attribute__((always_inline))
void tile(const soniq_gemm_job *job, const soniq_act_group *g, const soniq_block *b,
          int64_t m0, int64_t m, int64_t o, int mr, int nr) {
    int64_t kpad = g->kpad;
    const uint8_t *abase = g->bytes + m * kpad;
    const int8_t *wbase = b->wbytes + o * kpad;
    __m256i acc[2][4];
    for (int r = 0; r < mr; r++)
        for (int c = 0; c < nr; c++)
            acc[r][c] = _mm256_setzero_si256();
    for (int64_t t = 0; t < kpad; t += 16) {
        __m256i va[2], vw[4];
        for (int r = 0; r < mr; r++)
            va[r] = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(abase + r * kpad + t)));
        for (int c = 0; c < nr; c++)
            vw[c] = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(wbase + c * kpad + t)));
        for (int r = 0; r < mr; r++)
            for (int c = 0; c < nr; c++)
                acc[r][c] = _mm256_add_epi32(acc[r][c], _mm256_madd_epi16(va[r], vw[c]));
    }
    for (int r = 0; r < mr; r++)
        for (int c = 0; c < nr; c++)
            *soniq_out_at(job, m0 + m + r, b->cols[o + c]) +=
                soniq_int8_term(hsum32(acc[r][c]), g->rowsum[m + r], g->shift);
}

void soniq_int8_avx2(const soniq_gemm_job *job, const soniq_act_group *g, const soniq_block *b,
                     int64_t m0, int64_t rows, int64_t *tile_buf) {
    (void)tile_buf;
    enum { MR = 2, NR = 4 };
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
