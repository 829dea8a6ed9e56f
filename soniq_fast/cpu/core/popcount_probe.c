/* Peak of this CPU's AND + popcount stream in the instruction mix of a popcount engine, with
 * all operands in registers (for benchmarks/popcount_probe.py). Returns the binary
 * multiply-accumulates done (one bit of W AND one bit of A counted), 0 when the CPU lacks
 * the code path.
 *   avx512: AND, VPOPCNTQ, VPADDQ on 6 x 4 accumulators (bitserial_avx512.c);
 *   avx2:   two ANDs with the nibble-split weights, two VPSHUFB lookups, two byte adds on
 *           2 x 4 accumulators, plus the shift of each broadcast word (bitserial_avx2.c). */
#include <immintrin.h>

#include "soniq_cpu.h"

__attribute__((target("avx512f,avx512vpopcntdq")))
int64_t soniq_popcount_probe_avx512(int64_t iterations) {
    enum { ACCS = 24 };
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
    return iterations * ACCS * 512;
}

__attribute__((target("avx2")))
int64_t soniq_popcount_probe_avx2(int64_t iterations) {
    enum { MR = 2, NR = 4 };
    const __m256i table = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                           0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
    __m256i acc[MR][NR], a[MR], lo[NR], hi[NR];
    for (int r = 0; r < MR; r++) {
        a[r] = _mm256_set1_epi64x(0x0123456789abcdefLL * (r + 1));
        for (int c = 0; c < NR; c++)
            acc[r][c] = _mm256_setzero_si256();
    }
    for (int c = 0; c < NR; c++) {
        lo[c] = _mm256_set1_epi64x(0x0e0d0c0b0a090807LL ^ c);
        hi[c] = _mm256_set1_epi64x(0x0706050403020100LL ^ c);
    }
    for (int64_t t = 0; t < iterations; t++) {
        for (int r = 0; r < MR; r++)
            __asm__ volatile("" : "+x"(a[r]));
        for (int r = 0; r < MR; r++) {
            __m256i as = _mm256_srli_epi64(a[r], 4);
            for (int c = 0; c < NR; c++) {
                __m256i cl = _mm256_shuffle_epi8(table, _mm256_and_si256(a[r], lo[c]));
                __m256i ch = _mm256_shuffle_epi8(table, _mm256_and_si256(as, hi[c]));
                acc[r][c] = _mm256_add_epi8(acc[r][c], _mm256_add_epi8(cl, ch));
            }
        }
    }
    __m256i total = _mm256_setzero_si256();
    for (int r = 0; r < MR; r++)
        for (int c = 0; c < NR; c++)
            total = _mm256_add_epi8(total, acc[r][c]);
    __asm__ volatile("" : : "x"(total));
    return iterations * MR * NR * 256;
}

int64_t soniq_popcount_probe(int isa, int64_t iterations) {
    const soniq_isa_ops *ops = soniq_isa_ops_for(isa);
    if (!ops || !ops->popcount_probe || !soniq_cpu_has(isa))
        return 0;
    return ops->popcount_probe(iterations);
}
