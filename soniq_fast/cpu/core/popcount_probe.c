/* Peak of this CPU's AND + VPOPCNTQ + VPADDQ stream, the instruction mix of the AVX-512
 * popcount engine, with all operands in registers (for benchmarks/popcount_probe.py).
 * Returns the number of 512-bit AND+popcount steps done, 0 without AVX-512 VPOPCNTDQ. */
#include <immintrin.h>

#include "soniq_cpu.h"

#define ACCS 24

__attribute__((target("avx512f,avx512vpopcntdq")))
static int64_t probe_avx512(int64_t iterations) {
    __m512i acc[ACCS], a[6], w[4];
    for (int i = 0; i < ACCS; i++)
        acc[i] = _mm512_setzero_si512();
    for (int i = 0; i < 6; i++)
        a[i] = _mm512_set1_epi64(0x0123456789abcdefLL * (i + 1));
    for (int i = 0; i < 4; i++)
        w[i] = _mm512_set1_epi64(0x7edcba9876543210LL ^ i);
    for (int64_t t = 0; t < iterations; t++) {
        /* opaque to the compiler, so the loop body is not hoisted */
        for (int i = 0; i < 4; i++)
            __asm__ volatile("" : "+v"(w[i]));
        for (int r = 0; r < 6; r++)
            for (int c = 0; c < 4; c++)
                acc[r * 4 + c] = _mm512_add_epi64(
                    acc[r * 4 + c], _mm512_popcnt_epi64(_mm512_and_si512(a[r], w[c])));
    }
    __m512i total = _mm512_setzero_si512();
    for (int i = 0; i < ACCS; i++)
        total = _mm512_add_epi64(total, acc[i]);
    /* keep the sums alive */
    __asm__ volatile("" : : "v"(total));
    return iterations * ACCS;
}

int64_t soniq_popcount_probe(int64_t iterations) {
    if (!soniq_cpu_has(SONIQ_AVX512))
        return 0;
    return probe_avx512(iterations);
}
