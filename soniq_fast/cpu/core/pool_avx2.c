/* Max pooling 2x2, stride 2, with AVX2: output row (p, i) is the byte-pair maximum of the
 * elementwise maximum of input rows 2i and 2i+1 of plane p. 16, 8, 4 or 2 outputs per step
 * (32, 16, 8 or 4 input bytes per row), then single outputs. */
#pragma GCC target("avx2")
#include <immintrin.h>
#include <string.h>

#include "soniq_cpu.h"

/* max of each byte pair, as the low byte of each 16-bit lane (high byte cleared) */
static inline __attribute__((always_inline)) __m128i pair_max128(__m128i v) {
    return _mm_and_si128(_mm_max_epu8(v, _mm_srli_epi16(v, 8)), _mm_set1_epi16(0xff));
}

/* Rows 8 or 4 codes wide with an even height: output row `row` reads the 2w input bytes at
 * 2w * row, so one vector of 32 input bytes covers 32 / 2w output rows (8 outputs). The
 * vertical maximum pairs bytes w apart, the pair maximum adjacent bytes; `pick` gathers the
 * outputs of each 128-bit lane, and the two lanes' 4 bytes are joined. Returns the rows done. */
static int64_t pool_narrow(const uint8_t *x, int64_t w, int64_t lo, int64_t hi, uint8_t *out) {
    const __m256i low = _mm256_set1_epi16(0xff);
    const __m256i pick8 = _mm256_setr_epi8(0, 2, 4, 6, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
                                           -1, -1, 0, 2, 4, 6, -1, -1, -1, -1, -1, -1, -1, -1,
                                           -1, -1, -1, -1);
    const __m256i pick4 = _mm256_setr_epi8(0, 2, 8, 10, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
                                           -1, -1, 0, 2, 8, 10, -1, -1, -1, -1, -1, -1, -1, -1,
                                           -1, -1, -1, -1);
    const __m256i join = _mm256_setr_epi32(0, 4, 1, 1, 1, 1, 1, 1);
    const int64_t step = 32 / (2 * w);          /* output rows per vector */
    int64_t row = lo;
    for (; row + step <= hi; row += step) {
        __m256i v = _mm256_loadu_si256((const __m256i *)(x + row * 2 * w));
        v = _mm256_max_epu8(v, w == 8 ? _mm256_bsrli_epi128(v, 8) : _mm256_srli_epi64(v, 32));
        v = _mm256_and_si256(_mm256_max_epu8(v, _mm256_srli_epi16(v, 8)), low);
        v = _mm256_shuffle_epi8(v, w == 8 ? pick8 : pick4);
        v = _mm256_permutevar8x32_epi32(v, join);
        _mm_storel_epi64((__m128i *)(out + row * (w / 2)), _mm256_castsi256_si128(v));
    }
    return row - lo;
}

void soniq_max_pool2_avx2(const uint8_t *x, int64_t h, int64_t w, int64_t ho, int64_t wo,
                          int64_t lo, int64_t hi, uint8_t *out) {
    const __m256i low = _mm256_set1_epi16(0xff);
    const int even = h == 2 * ho;      /* then output row `row` reads input rows 2 row, +1 */
    if (even && (w == 8 || w == 4))
        lo += pool_narrow(x, w, lo, hi, out);
    for (int64_t row = lo; row < hi; row++) {
        const uint8_t *r0 = even ? x + row * 2 * w : x + (row / ho) * h * w + (row % ho) * 2 * w;
        const uint8_t *r1 = r0 + w;
        uint8_t *o = out + row * wo;
        int64_t j = 0;
        for (; j + 16 <= wo; j += 16) {
            __m256i v = _mm256_max_epu8(_mm256_loadu_si256((const __m256i *)(r0 + 2 * j)),
                                        _mm256_loadu_si256((const __m256i *)(r1 + 2 * j)));
            v = _mm256_and_si256(_mm256_max_epu8(v, _mm256_srli_epi16(v, 8)), low);
            v = _mm256_permute4x64_epi64(_mm256_packus_epi16(v, v), 0x08);
            _mm_storeu_si128((__m128i *)(o + j), _mm256_castsi256_si128(v));
        }
        for (; j + 8 <= wo; j += 8) {
            __m128i v = _mm_max_epu8(_mm_loadu_si128((const __m128i *)(r0 + 2 * j)),
                                     _mm_loadu_si128((const __m128i *)(r1 + 2 * j)));
            v = pair_max128(v);
            _mm_storel_epi64((__m128i *)(o + j), _mm_packus_epi16(v, v));
        }
        for (; j + 4 <= wo; j += 4) {
            __m128i v = _mm_max_epu8(_mm_loadl_epi64((const __m128i *)(r0 + 2 * j)),
                                     _mm_loadl_epi64((const __m128i *)(r1 + 2 * j)));
            v = pair_max128(v);
            int32_t four = _mm_cvtsi128_si32(_mm_packus_epi16(v, v));
            memcpy(o + j, &four, 4);
        }
        for (; j + 2 <= wo; j += 2) {
            int32_t a, b;
            memcpy(&a, r0 + 2 * j, 4);
            memcpy(&b, r1 + 2 * j, 4);
            __m128i v = pair_max128(_mm_max_epu8(_mm_cvtsi32_si128(a), _mm_cvtsi32_si128(b)));
            uint16_t two = (uint16_t)_mm_cvtsi128_si32(_mm_packus_epi16(v, v));
            memcpy(o + j, &two, 2);
        }
        for (; j < wo; j++) {
            uint8_t a = r0[2 * j] > r0[2 * j + 1] ? r0[2 * j] : r0[2 * j + 1];
            uint8_t b = r1[2 * j] > r1[2 * j + 1] ? r1[2 * j] : r1[2 * j + 1];
            o[j] = a > b ? a : b;
        }
    }
}
