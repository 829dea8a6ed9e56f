/* Bit-plane packing with AVX2: a byte's bit i moved to bit 7, then movemask (32 codes at once). */
#include <immintrin.h>
#include <string.h>

#include "soniq_cpu.h"

__attribute__((target("avx2")))
static uint64_t plane_word(__m256i lo, __m256i hi, int i) {
    __m128i count = _mm_cvtsi32_si128(7 - i);
    uint32_t a = (uint32_t)_mm256_movemask_epi8(_mm256_sll_epi16(lo, count));
    uint32_t b = (uint32_t)_mm256_movemask_epi8(_mm256_sll_epi16(hi, count));
    return (uint64_t)a | ((uint64_t)b << 32);
}

__attribute__((target("avx2")))
int64_t soniq_pack_planes_avx2(const uint8_t *src, int64_t k, int bits, uint64_t *dst,
                               int64_t words) {
    uint8_t tail[64];
    __m256i sums = _mm256_setzero_si256();
    for (int64_t w = 0; w < words; w++) {
        int64_t base = 64 * w;
        const uint8_t *chunk = src + base;
        if (base >= k) {
            for (int i = 0; i < bits; i++)
                dst[i * words + w] = 0;
            continue;
        }
        if (base + 64 > k) {
            memset(tail, 0, sizeof tail);
            memcpy(tail, chunk, (size_t)(k - base));
            chunk = tail;
        }
        __m256i lo = _mm256_loadu_si256((const __m256i *)chunk);
        __m256i hi = _mm256_loadu_si256((const __m256i *)(chunk + 32));
        sums = _mm256_add_epi64(sums, _mm256_sad_epu8(lo, _mm256_setzero_si256()));
        sums = _mm256_add_epi64(sums, _mm256_sad_epu8(hi, _mm256_setzero_si256()));
        for (int i = 0; i < bits; i++)
            dst[i * words + w] = plane_word(lo, hi, i);
    }
    __m128i s = _mm_add_epi64(_mm256_castsi256_si128(sums), _mm256_extracti128_si256(sums, 1));
    return _mm_cvtsi128_si64(s) + _mm_extract_epi64(s, 1);
}

/* The even bytes of 64 at a time: the low byte of every 16-bit lane, packed (vpackuswb works
 * per 128-bit half, vpermq restores the order). */
__attribute__((target("avx2")))
void soniq_gather_every_other_avx2(const uint8_t *src, int64_t n, int64_t k, uint8_t *dst) {
    const __m256i low = _mm256_set1_epi16(0x00ff);
    int64_t t = 0;
    for (; t + 32 <= k && 2 * t + 64 <= n; t += 32) {
        __m256i a = _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(src + 2 * t)), low);
        __m256i b = _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(src + 2 * t + 32)), low);
        _mm256_storeu_si256((__m256i *)(dst + t),
                            _mm256_permute4x64_epi64(_mm256_packus_epi16(a, b), 0xd8));
    }
    for (; t < k; t++)
        dst[t] = src[2 * t];
}
