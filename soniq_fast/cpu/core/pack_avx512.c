/* Bit-plane packing with AVX-512BW: vptestmb gives the 64-bit plane word of 64 codes directly. */
#include <immintrin.h>
#include <string.h>

#include "soniq_cpu.h"

__attribute__((target("avx512f,avx512bw")))
int64_t soniq_pack_planes_avx512(const uint8_t *src, int64_t k, int bits, uint64_t *dst,
                                 int64_t words) {
    uint8_t tail[64];
    __m512i sums = _mm512_setzero_si512();
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
        __m512i v = _mm512_loadu_si512((const void *)chunk);
        sums = _mm512_add_epi64(sums, _mm512_sad_epu8(v, _mm512_setzero_si512()));
        for (int i = 0; i < bits; i++)
            dst[i * words + w] =
                (uint64_t)_mm512_test_epi8_mask(v, _mm512_set1_epi8((char)(1 << i)));
    }
    return _mm512_reduce_add_epi64(sums);
}
