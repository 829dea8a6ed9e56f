/* Bit-serial popcount engine with AVX2, one output channel per 64-bit lane.
 *
 * The structure of bitserial_avx512.c (expanded rows e = r * pa + i, expanded vectors
 * x = v * pw + j, a binary GEMM between them) with 4 channels per 256-bit vector. AVX2 has
 * no vector popcount, so counts come from a 16-entry nibble table (vpshufb). The weights are
 * stored already split into nibbles: wplanes[v][j][w][0][lane] = word & 0x0f0f.. and
 * wplanes[v][j][w][1][lane] = (word >> 4) & 0x0f0f.. of plane j of channel 4 v + lane.
 * A broadcast activation word a and a >> 4 are ANDed with them, so every byte of the two
 * products is already a table index (no masking or shifting per product):
 *
 *     popcount(a & w) per byte = T[a & w_lo] + T[(a >> 4) & w_hi]
 *
 * Counts add up in bytes (at most 8 per byte per word), so every 31 words the bytes are summed
 * per 64-bit lane (vpsadbw) -- each lane is one channel -- and added, shifted by i + j, into
 * tile[r][4 v + lane]. The flush turns P = sum_{i,j} 2^(i+j) popcount(W_j & A_i) into the
 * block's contribution. Same result as bitserial_scalar.c. */
#pragma GCC target("avx2")
#include <immintrin.h>
#include <string.h>

#include "soniq_cpu.h"

#ifndef BS_MR
#define BS_MR 1            /* expanded rows per register tile */
#endif
#ifndef BS_NR
#define BS_NR 8            /* expanded vectors per register tile */
#endif
#define LANES SONIQ_POPCOUNT_LANES_AVX2   /* 4: the weight layout packed.py builds */
#define BYTE_WORDS 31   /* words whose byte counts fit a byte: 31 * 8 <= 255 */
#define CHUNK_VECTORS (SONIQ_TILE_COLS / LANES)

/* Add the per-lane counts sums_in, shifted by i + j, to the tile cells. The
 * first spill into a cell stores instead: the chunk loops visit plane pair (0, 0) of a cell
 * first, and its first words first (first = w0 == 0), so the tile needs no clearing. */
static inline __attribute__((always_inline))
void spill(const __m256i sums_in[BS_MR][BS_NR], int nr, int pa, int pw, int64_t e0, int64_t e_end, int64_t x0,
           int64_t *tile, int64_t ld, int first) {
    /* (row, plane) of expanded row e0 + r and (vector, plane) of x0 + c, no divisions inside */
    int64_t row = e0 / pa, v_first = x0 / pw;
    int i = (int)(e0 % pa), j_first = (int)(x0 % pw);
    for (int r = 0; r < BS_MR && e0 + r < e_end; r++) {
        int64_t v = v_first;
        int j = j_first;
        for (int c = 0; c < nr; c++) {
            int64_t *dst = tile + row * ld + v * LANES;
            __m256i sums = _mm256_slli_epi64(_mm256_loadu_si256(&sums_in[r][c]), i + j);
            if (!(first && i == 0 && j == 0))
                sums = _mm256_add_epi64(_mm256_loadu_si256((const __m256i *)dst), sums);
            _mm256_storeu_si256((__m256i *)dst, sums);
            if (++j == pw) {
                j = 0;
                v++;
            }
        }
        if (++i == pa) {
            i = 0;
            row++;
        }
    }
}

/* acc += T[az & lo] + T[as & hi] (bytes), the weights read from memory: inline assembly only
 * to keep them memory operands -- compilers otherwise load every weight of a step into a
 * register first and spill accumulators. */
#define COUNT(acc, az, as, table, lo, hi) do {                                               \
        __m256i t1_, t2_;                                                                  \
        __asm__("vpand %6, %3, %1\n\t"                                                      \
                "vpshufb %1, %5, %1\n\t"                                                    \
                "vpand %7, %4, %2\n\t"                                                      \
                "vpshufb %2, %5, %2\n\t"                                                    \
                "vpaddb %2, %1, %1\n\t"                                                     \
                "vpaddb %1, %0, %0"                                                        \
                : "+x"(acc), "=&x"(t1_), "=&x"(t2_)                                        \
                : "x"(az), "x"(as), "x"(table), "m"(lo), "m"(hi));                         \
    } while (0)

static inline __attribute__((always_inline))
void micro(const uint64_t *a, const uint64_t *wv, int64_t words, int nr, int pa, int pw,
           int64_t e0, int64_t e_end, int64_t x0, int64_t *tile, int64_t ld) {
    const __m256i table = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                           0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
    const int64_t wstride = words * 2 * LANES;   /* uint64 per expanded vector */
    for (int64_t w0 = 0; w0 < words; w0 += BYTE_WORDS) {
        int64_t w1 = w0 + BYTE_WORDS < words ? w0 + BYTE_WORDS : words;
        __m256i acc[BS_MR][BS_NR];
        for (int r = 0; r < BS_MR; r++)
            for (int c = 0; c < nr; c++)
                acc[r][c] = _mm256_setzero_si256();
        for (int64_t w = w0; w < w1; w++) {
            __m256i az[BS_MR], as[BS_MR];
            for (int r = 0; r < BS_MR; r++) {
                az[r] = _mm256_set1_epi64x((long long)a[r * words + w]);
                as[r] = _mm256_srli_epi64(az[r], 4);
            }
            for (int c = 0; c < nr; c++) {
                const __m256i *p = (const __m256i *)(wv + c * wstride + w * 2 * LANES);
                for (int r = 0; r < BS_MR; r++)
                    COUNT(acc[r][c], az[r], as[r], table, p[0], p[1]);
            }
        }
        /* byte counts summed per lane; through memory, so acc stays in registers above */
        __m256i sums[BS_MR][BS_NR];
        for (int r = 0; r < BS_MR; r++)
            for (int c = 0; c < nr; c++)
                _mm256_storeu_si256(&sums[r][c], _mm256_sad_epu8(acc[r][c], _mm256_setzero_si256()));
        spill(sums, nr, pa, pw, e0, e_end, x0, tile, ld, w0 == 0);
    }
}

void soniq_bitserial_avx2(const soniq_gemm_job *job, const soniq_act_group *g,
                          const soniq_block *b, int64_t m0, int64_t rows, int64_t *tile) {
    int pa = g->bits, pw = b->wbits;
    int64_t words = g->words, n_vec = (b->n + LANES - 1) / LANES;
    int64_t ld = SONIQ_TILE_COLS;
    int64_t e_end = rows * pa;
    if (words == 0)   /* nothing to count: no spill would initialise the tile */
        memset(tile, 0, sizeof(int64_t) * (size_t)(rows * ld));
    for (int64_t v_lo = 0; v_lo < n_vec; v_lo += CHUNK_VECTORS) {
        int64_t v_hi = v_lo + CHUNK_VECTORS < n_vec ? v_lo + CHUNK_VECTORS : n_vec;
        int64_t o1 = v_hi * LANES < b->n ? v_hi * LANES : b->n;
        soniq_popcount_prefetch_avx2(job, b, m0, rows, v_lo * LANES, o1);
        for (int64_t x0 = v_lo * pw; x0 < v_hi * pw; x0 += BS_NR) {
            const uint64_t *wv = b->wplanes + x0 * words * 2 * LANES;
            int nr = v_hi * pw - x0 < BS_NR ? (int)(v_hi * pw - x0) : BS_NR;
            int64_t xt = x0 - v_lo * pw;   /* expanded vector index within the chunk */
            for (int64_t e0 = 0; e0 < e_end; e0 += BS_MR) {
                const uint64_t *a = g->planes + e0 * words;
                switch (nr) {   /* a constant nr per call, so the loops unroll */
#define NR_CASE(c) case c: micro(a, wv, words, c, pa, pw, e0, e_end, xt, tile, ld); break;
#if BS_NR >= 8
                NR_CASE(8) NR_CASE(7) NR_CASE(6) NR_CASE(5)
#endif
#if BS_NR >= 4
                NR_CASE(4) NR_CASE(3)
#endif
                NR_CASE(2)
                default: micro(a, wv, words, 1, pa, pw, e0, e_end, xt, tile, ld); break;
#undef NR_CASE
                }
            }
        }
        soniq_popcount_flush_avx2(job, g, b, m0, rows, tile, ld, v_lo * LANES, o1);
    }
}

_Static_assert(CHUNK_VECTORS * LANES == SONIQ_TILE_COLS, "a chunk's sums fill the tile scratch");
_Static_assert(BYTE_WORDS * 8 <= 255, "byte counts cannot overflow");
