/* INT8 engine with AVX2 when vpmaddubsw is exact (soniq_int8_steps() = L > 0).
 *
 * Weights wbytes[v][q][lane][0..3]: the int8 values v = w - 2^(bw-1) of channel 8 v + lane
 * at K positions 4 q .. 4 q + 3. Four shifted activation bytes a' of a row are broadcast to
 * all lanes; vpmaddubsw (u8 x s8) gives each lane two int16 pair sums, of which L steps are
 * added in int16 (exact by the bound of soniq_int8_steps), then widened and added into int32
 * by vpmaddwd with ones. Register tile: MR rows x NR = 2 vectors. int32 is exact: |V| <=
 * K * 255 * 128 with K <= 33025. Same result as int8_scalar.c.
 *
 * The step of one row is inline assembly only to fix the instruction order: compilers
 * otherwise hoist all products of a step first and run out of the 16 registers. */
#pragma GCC target("avx2")
#include <immintrin.h>

#include "int8_avx2.h"

#define NR 2
#define MR_SUM 6        /* int16 sums: 12 accumulators + 2 weight vectors + 1 broadcast */
#define MR_ONE 4        /* L = 1: 8 int32 accumulators + ones + temporaries */

/* s0 += maddubs(a'[p..p+3] broadcast, w0), s1 likewise with w1 (int16 lanes) */
#define STEP2(s0, s1, p, w0, w1) do {                                                        \
        __m256i x_, t_;                                                                    \
        __asm__("vpbroadcastd %4, %2\n\t"                                                  \
                "vpmaddubsw %5, %2, %3\n\t"                                                \
                "vpaddw %3, %0, %0\n\t"                                                    \
                "vpmaddubsw %6, %2, %2\n\t"                                                \
                "vpaddw %2, %1, %1"                                                        \
                : "+x"(s0), "+x"(s1), "=&x"(x_), "=&x"(t_)                                 \
                : "m"(*(const int32_t *)(const void *)(p)), "x"(w0), "x"(w1));              \
    } while (0)
#define STEP1(s0, p, w0) do {                                                                \
        __m256i x_;                                                                        \
        __asm__("vpbroadcastd %2, %1\n\t"                                                  \
                "vpmaddubsw %3, %1, %1\n\t"                                                \
                "vpaddw %1, %0, %0"                                                        \
                : "+x"(s0), "=&x"(x_)                                                      \
                : "m"(*(const int32_t *)(const void *)(p)), "x"(w0));                       \
    } while (0)
/* L = 1: acc0 += madd(maddubs(x, w0), ones), acc1 likewise (int32 lanes) */
#define WIDE2(s0, s1, p, w0, w1, ones) do {                                                  \
        __m256i x_, t_;                                                                    \
        __asm__("vpbroadcastd %4, %2\n\t"                                                  \
                "vpmaddubsw %5, %2, %3\n\t"                                                \
                "vpmaddwd %7, %3, %3\n\t"                                                  \
                "vpaddd %3, %0, %0\n\t"                                                    \
                "vpmaddubsw %6, %2, %2\n\t"                                                \
                "vpmaddwd %7, %2, %2\n\t"                                                  \
                "vpaddd %2, %1, %1"                                                        \
                : "+x"(s0), "+x"(s1), "=&x"(x_), "=&x"(t_)                                 \
                : "m"(*(const int32_t *)(const void *)(p)), "x"(w0), "x"(w1), "x"(ones));   \
    } while (0)
#define WIDE1(s0, p, w0, ones) do {                                                          \
        __m256i x_;                                                                        \
        __asm__("vpbroadcastd %2, %1\n\t"                                                  \
                "vpmaddubsw %3, %1, %1\n\t"                                                \
                "vpmaddwd %4, %1, %1\n\t"                                                  \
                "vpaddd %1, %0, %0"                                                        \
                : "+x"(s0), "=&x"(x_)                                                      \
                : "m"(*(const int32_t *)(const void *)(p)), "x"(w0), "x"(ones));            \
    } while (0)

/* V for rows r0 .. r0 + mr - 1 and vectors v0 .. v0 + nr - 1, added to the output. */
static inline __attribute__((always_inline))
void micro(const soniq_gemm_job *job, const soniq_act_group *g, const soniq_block *b,
           const soniq_int8_avx2_rows *t, int64_t r0, int64_t rows, int64_t v0, int mr, int nr,
           int64_t steps) {
    const int64_t kpad = g->kpad, kq = kpad / 4;
    const uint8_t *a = g->bytes + r0 * kpad;
    const int8_t *w = b->wbytes + v0 * kpad * 8;
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i acc[MR_SUM][NR];
    for (int r = 0; r < mr; r++)
        for (int c = 0; c < nr; c++)
            acc[r][c] = _mm256_setzero_si256();
    if (steps == 1) {   /* every pair sum widened at once */
        for (int64_t q = 0; q < kq; q++) {
            const __m256i w0 = _mm256_loadu_si256((const __m256i *)(w + q * 32));
            if (nr == 2) {
                const __m256i w1 = _mm256_loadu_si256((const __m256i *)(w + (kq + q) * 32));
                for (int r = 0; r < mr; r++)
                    WIDE2(acc[r][0], acc[r][1], a + r * kpad + 4 * q, w0, w1, ones);
            } else {
                for (int r = 0; r < mr; r++)
                    WIDE1(acc[r][0], a + r * kpad + 4 * q, w0, ones);
            }
        }
    } else {
        for (int64_t q0 = 0; q0 < kq; q0 += steps) {
            const int64_t q1 = q0 + steps < kq ? q0 + steps : kq;
            __m256i s[MR_SUM][NR];
            for (int r = 0; r < mr; r++)
                for (int c = 0; c < nr; c++)
                    s[r][c] = _mm256_setzero_si256();
            for (int64_t q = q0; q < q1; q++) {
                const __m256i w0 = _mm256_loadu_si256((const __m256i *)(w + q * 32));
                if (nr == 2) {
                    const __m256i w1 = _mm256_loadu_si256((const __m256i *)(w + (kq + q) * 32));
                    for (int r = 0; r < mr; r++)
                        STEP2(s[r][0], s[r][1], a + r * kpad + 4 * q, w0, w1);
                } else {
                    for (int r = 0; r < mr; r++)
                        STEP1(s[r][0], a + r * kpad + 4 * q, w0);
                }
            }
            for (int r = 0; r < mr; r++)
                for (int c = 0; c < nr; c++)
                    acc[r][c] = _mm256_add_epi32(acc[r][c], _mm256_madd_epi16(s[r][c], ones));
        }
    }
    soniq_int8_avx2_flush(job, b, t, r0, mr, rows, v0, nr, acc);
}

static inline __attribute__((always_inline))
void run(const soniq_gemm_job *job, const soniq_act_group *g, const soniq_block *b,
         int64_t m0, int64_t rows, int64_t steps, int mr) {
    const int64_t n_vec = (b->n + 7) / 8;
    soniq_int8_avx2_rows t;
    soniq_int8_avx2_rows_init(&t, job, g, m0, rows);
    for (int64_t v0 = 0; v0 < n_vec; v0 += NR) {
        const int nr = n_vec - v0 < NR ? (int)(n_vec - v0) : NR;
        for (int64_t r0 = 0; r0 < rows; r0 += mr) {
            if (nr == NR)
                micro(job, g, b, &t, r0, rows, v0, mr, NR, steps);
            else
                micro(job, g, b, &t, r0, rows, v0, mr, 1, steps);
        }
    }
}

void soniq_int8_avx2_bytes(const soniq_gemm_job *job, const soniq_act_group *g,
                           const soniq_block *b, int64_t m0, int64_t rows, int64_t *tile) {
    (void)tile;
    const int64_t steps = soniq_int8_steps(b->wbits, g->bits, g->shift);
    if (steps == 1)
        run(job, g, b, m0, rows, 1, MR_ONE);
    else
        run(job, g, b, m0, rows, steps, MR_SUM);
}

_Static_assert(MR_SUM <= SONIQ_ROW_PAD && MR_ONE <= SONIQ_ROW_PAD, "tiles past rows: spare rows");
_Static_assert(SONIQ_INT8_LANES_AVX2 == 8, "packed.py interleaves 8 channels per vector");
