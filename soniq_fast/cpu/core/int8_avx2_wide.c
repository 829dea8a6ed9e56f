/* INT8 engine with AVX2 when vpmaddubsw is not exact (bw = 8 with a' > 128): both operands
 * as int16 and vpmaddwd, which adds two exact products into each int32 lane.
 *
 * Weights int16 wbytes[v][p][lane][0..1]: v = w - 2^(bw-1) of channel 8 v + lane at K
 * positions 2 p, 2 p + 1; the group's `wide` rows hold a' as int16, and one pair of them is
 * broadcast to all lanes. Register tile: MR rows x NR vectors. int32 is exact: |V| <=
 * K * 255 * 128 with K <= 33025. Same result as int8_scalar.c. */
#pragma GCC target("avx2")
#include <immintrin.h>

#include "int8_avx2.h"

#define MR 6        /* 12 accumulators + 2 weight vectors + broadcast + product */
#define NR 2
#ifndef KB
#define KB 256      /* pairs per K block: 16 KiB of a chunk's weights */
#endif

/* acc0 += madd(a'[p], a'[p+1] broadcast, w0) (int32 lanes), acc1 likewise with w1. Inline
 * assembly only to fix the order (see int8_avx2_bytes.c). */
#define PAIR2(s0, s1, p, w0, w1) do {                                                        \
        __m256i x_, t_;                                                                    \
        __asm__("vpbroadcastd %4, %2\n\t"                                                  \
                "vpmaddwd %5, %2, %3\n\t"                                                  \
                "vpaddd %3, %0, %0\n\t"                                                    \
                "vpmaddwd %6, %2, %2\n\t"                                                  \
                "vpaddd %2, %1, %1"                                                        \
                : "+x"(s0), "+x"(s1), "=&x"(x_), "=&x"(t_)                                 \
                : "m"(*(const int32_t *)(const void *)(p)), "x"(w0), "x"(w1));              \
    } while (0)
#define PAIR1(s0, p, w0) do {                                                                \
        __m256i x_;                                                                        \
        __asm__("vpbroadcastd %2, %1\n\t"                                                  \
                "vpmaddwd %3, %1, %1\n\t"                                                  \
                "vpaddd %1, %0, %0"                                                        \
                : "+x"(s0), "=&x"(x_)                                                      \
                : "m"(*(const int32_t *)(const void *)(p)), "x"(w0));                       \
    } while (0)

/* Pairs p0 .. p1 - 1 of rows r0 .. r0 + MR - 1 and vectors v0 .. v0 + nr - 1: sums start
 * from `part` (int32 [rows][NR][8]) unless p0 = 0, and go back there unless p1 is the end of
 * K, where they are added to the output. */
static inline __attribute__((always_inline))
void micro(const soniq_gemm_job *job, const soniq_act_group *g, const soniq_block *b,
           const soniq_int8_avx2_rows *t, int64_t r0, int64_t rows, int64_t v0, int nr,
           int64_t p0, int64_t p1, int32_t *part) {
    const int64_t kpad = g->kpad, kp = kpad / 2;
    const int16_t *a = g->wide + r0 * kpad;
    const int16_t *w = (const int16_t *)(const void *)b->wbytes + v0 * kpad * 8;
    __m256i acc[MR][NR];
    for (int r = 0; r < MR; r++)
        for (int c = 0; c < nr; c++)
            acc[r][c] = p0 == 0 ? _mm256_setzero_si256()
                                : _mm256_loadu_si256((const __m256i *)(part + ((r0 + r) * NR + c) * 8));
    for (int64_t p = p0; p < p1; p++) {
        const __m256i w0 = _mm256_loadu_si256((const __m256i *)(w + p * 16));
        if (nr == 2) {
            const __m256i w1 = _mm256_loadu_si256((const __m256i *)(w + (kp + p) * 16));
            for (int r = 0; r < MR; r++)
                PAIR2(acc[r][0], acc[r][1], a + r * kpad + 2 * p, w0, w1);
        } else {
            for (int r = 0; r < MR; r++)
                PAIR1(acc[r][0], a + r * kpad + 2 * p, w0);
        }
    }
    if (p1 < kp) {
        for (int r = 0; r < MR; r++)
            for (int c = 0; c < nr; c++)
                _mm256_storeu_si256((__m256i *)(part + ((r0 + r) * NR + c) * 8), acc[r][c]);
        return;
    }
    soniq_int8_avx2_flush(job, b, t, r0, MR, rows, v0, nr, acc);
}

/* Per chunk of NR vectors, K in blocks of KB pairs (the chunk's weights of a block stay in
 * L1 while every row of the tile passes). */
void soniq_int8_avx2_wide(const soniq_gemm_job *job, const soniq_act_group *g,
                          const soniq_block *b, int64_t m0, int64_t rows, int64_t *tile) {
    const int64_t n_vec = (b->n + 7) / 8, kp = g->kpad / 2;
    int32_t *part = (int32_t *)(void *)tile;
    soniq_int8_avx2_rows t;
    soniq_int8_avx2_rows_init(&t, job, g, m0, rows);
    for (int64_t v0 = 0; v0 < n_vec; v0 += NR) {
        const int nr = n_vec - v0 < NR ? (int)(n_vec - v0) : NR;
        for (int64_t p0 = 0; p0 < kp; p0 += KB) {
            const int64_t p1 = kp - p0 > KB ? p0 + KB : kp;
            for (int64_t r0 = 0; r0 < rows; r0 += MR) {
                if (nr == NR)
                    micro(job, g, b, &t, r0, rows, v0, NR, p0, p1, part);
                else
                    micro(job, g, b, &t, r0, rows, v0, 1, p0, p1, part);
            }
        }
    }
}

_Static_assert(NR == 2 && MR <= SONIQ_ROW_PAD, "partial tiles: nr is NR or 1; spare rows");
_Static_assert(SONIQ_ROW_TILE % MR == 0, "micro tiles end inside the row tile");
_Static_assert(SONIQ_ROW_TILE * NR * 8 * 4 <= SONIQ_ROW_TILE * SONIQ_TILE_COLS * 8,
               "partial sums fit the tile scratch");
_Static_assert(SONIQ_INT8_LANES_AVX2 == 8, "packed.py interleaves 8 channels per vector");
