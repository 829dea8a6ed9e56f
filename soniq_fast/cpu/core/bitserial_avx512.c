/* Bit-serial popcount engine with AVX-512 VPOPCNTQ, one output channel per 64-bit lane.
 *
 * Weights are interleaved 8 channels per vector: wplanes[v][j][w][lane] is word w of plane j
 * of channel 8 v + lane. An "expanded row" e = r * pa + i is plane i of tile row r and an
 * "expanded vector" x = v * pw + j is plane j of vector v; the kernel is a binary GEMM over
 * them: word w of expanded row e is broadcast to all lanes and ANDed with word w of MR
 * expanded vectors, so every lane accumulates its own channel and no horizontal sum is needed.
 * Each sum is then added, shifted by i + j, into tile[r][8 v + lane]; the flush turns
 * P = sum_{i,j} 2^(i+j) popcount(W_j & A_i) into the block's contribution.
 * Same result as bitserial_scalar.c. */
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vpopcntdq")
#include <immintrin.h>
#include <string.h>

#include "soniq_cpu.h"

#define MR 6    /* expanded rows per register tile */
#define NR 4    /* expanded vectors per register tile */

static inline __attribute__((always_inline))
void micro(const uint64_t *a, const uint64_t *wv, int64_t words, int nr, int pa, int pw,
           int64_t e0, int64_t e_end, int64_t x0, int64_t *tile, int64_t ld) {
    __m512i acc[MR][NR];
    for (int r = 0; r < MR; r++)
        for (int c = 0; c < nr; c++)
            acc[r][c] = _mm512_setzero_si512();
    for (int64_t w = 0; w < words; w++) {
        __m512i wz[NR];
        for (int c = 0; c < nr; c++)
            wz[c] = _mm512_loadu_si512((const void *)(wv + ((int64_t)c * words + w) * 8));
        for (int r = 0; r < MR; r++) {
            __m512i az = _mm512_set1_epi64((long long)a[r * words + w]);
            for (int c = 0; c < nr; c++)
                acc[r][c] = _mm512_add_epi64(acc[r][c],
                                             _mm512_popcnt_epi64(_mm512_and_si512(az, wz[c])));
        }
    }
    /* (row, plane) of expanded row e0 + r and (vector, plane) of x0 + c, without divisions
     * in the loop (they would cost more than the popcounts at small K) */
    int64_t row = e0 / pa, v_first = x0 / pw;
    int i = (int)(e0 % pa), j_first = (int)(x0 % pw);
    for (int r = 0; r < MR && e0 + r < e_end; r++) {
        int64_t v = v_first;
        int j = j_first;
        for (int c = 0; c < nr; c++) {
            int64_t *dst = tile + row * ld + v * 8;
            if (pa == 1 && pw == 1) {   /* the only plane pair: each cell written once */
                _mm512_storeu_si512((void *)dst, acc[r][c]);
            } else {
                __m512i shifted = _mm512_slli_epi64(acc[r][c], (unsigned)(i + j));
                _mm512_storeu_si512((void *)dst, _mm512_add_epi64(
                    _mm512_loadu_si512((const void *)dst), shifted));
            }
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

/* Columns per chunk: the chunk's int64 sums for a whole row tile stay in L1. */
#define CHUNK_VECTORS 8

void soniq_bitserial_avx512(const soniq_gemm_job *job, const soniq_act_group *g,
                            const soniq_block *b, int64_t m0, int64_t rows, int64_t *tile) {
    int pa = g->bits, pw = b->wbits;
    int64_t words = g->words, n_vec = (b->n + 7) / 8;
    int64_t ld = CHUNK_VECTORS * 8;   /* = SONIQ_TILE_COLS */
    int64_t e_end = rows * pa;
    for (int64_t v_lo = 0; v_lo < n_vec; v_lo += CHUNK_VECTORS) {
        int64_t v_hi = v_lo + CHUNK_VECTORS < n_vec ? v_lo + CHUNK_VECTORS : n_vec;
        if (pa != 1 || pw != 1)   /* several plane pairs add into each cell */
            memset(tile, 0, sizeof(int64_t) * (size_t)(rows * ld));
        for (int64_t x0 = v_lo * pw; x0 < v_hi * pw; x0 += NR) {
            const uint64_t *wv = b->wplanes + x0 * words * 8;
            int nr = v_hi * pw - x0 < NR ? (int)(v_hi * pw - x0) : NR;
            for (int64_t e0 = 0; e0 < e_end; e0 += MR) {
                const uint64_t *a = g->planes + e0 * words;
                int64_t xt = x0 - v_lo * pw;   /* expanded vector index within the chunk */
                switch (nr) {
                case 4: micro(a, wv, words, 4, pa, pw, e0, e_end, xt, tile, ld); break;
                case 3: micro(a, wv, words, 3, pa, pw, e0, e_end, xt, tile, ld); break;
                case 2: micro(a, wv, words, 2, pa, pw, e0, e_end, xt, tile, ld); break;
                default: micro(a, wv, words, 1, pa, pw, e0, e_end, xt, tile, ld); break;
                }
            }
        }
        int64_t o1 = v_hi * 8 < b->n ? v_hi * 8 : b->n;
        soniq_flush_avx512(job, g, b, m0, rows, tile, ld, v_lo * 8, o1);
    }
}

_Static_assert(CHUNK_VECTORS * 8 == SONIQ_TILE_COLS, "a chunk's sums fill the tile scratch");
_Static_assert(SONIQ_POPCOUNT_LANES_AVX512 == 8, "packed.py interleaves 8 channels per vector");
