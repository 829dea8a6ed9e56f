/* soniq_int8_prepare_scalar (int8_prepare.c) with AVX2, same result: 32 codes a step (then 8),
 * the shift moves 16-bit lanes and a mask drops the bits that cross into the next byte;
 * vpsadbw sums the codes. */
#pragma GCC target("avx2")
#include <immintrin.h>

#include "soniq_cpu.h"

int64_t soniq_int8_prepare_avx2(const uint8_t *src, int64_t k, int shift, uint8_t *dst,
                                int16_t *wide, int64_t kpad) {
    const __m128i count = _mm_cvtsi32_si128(shift);
    const __m256i keep = _mm256_set1_epi8((char)(uint8_t)(0xff << shift));
    __m256i sums = _mm256_setzero_si256();
    int64_t t = 0;
    for (; t + 32 <= k; t += 32) {
        const __m256i a = _mm256_loadu_si256((const __m256i *)(src + t));
        const __m256i v = _mm256_and_si256(_mm256_sll_epi16(a, count), keep);
        sums = _mm256_add_epi64(sums, _mm256_sad_epu8(a, _mm256_setzero_si256()));
        _mm256_storeu_si256((__m256i *)(dst + t), v);
        if (wide) {
            _mm256_storeu_si256((__m256i *)(wide + t),
                                _mm256_cvtepu8_epi16(_mm256_castsi256_si128(v)));
            _mm256_storeu_si256((__m256i *)(wide + t + 16),
                                _mm256_cvtepu8_epi16(_mm256_extracti128_si256(v, 1)));
        }
    }
    __m128i s = _mm_add_epi64(_mm256_castsi256_si128(sums), _mm256_extracti128_si256(sums, 1));
    if (!wide) {   /* short rows (a first conv layer's K = 9): 8 codes a step, then bytes */
        const __m128i keep8 = _mm256_castsi256_si128(keep);
        for (; t + 8 <= k; t += 8) {
            const __m128i a = _mm_loadl_epi64((const __m128i *)(src + t));
            s = _mm_add_epi64(s, _mm_sad_epu8(a, _mm_setzero_si128()));
            _mm_storel_epi64((__m128i *)(dst + t), _mm_and_si128(_mm_sll_epi16(a, count), keep8));
        }
        int64_t sum = _mm_cvtsi128_si64(s) + _mm_extract_epi64(s, 1);
        for (; t < k; t++) {
            sum += src[t];
            dst[t] = (uint8_t)(src[t] << shift);
        }
        for (; t < kpad; t++)
            dst[t] = 0;
        return sum;
    }
    int64_t sum = _mm_cvtsi128_si64(s) + _mm_extract_epi64(s, 1);
    return sum + soniq_int8_prepare_scalar(src + t, k - t, shift, dst + t,
                                           wide ? wide + t : NULL, kpad - t);
}
