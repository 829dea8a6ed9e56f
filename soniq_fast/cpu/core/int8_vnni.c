/* INT8 engine with AVX-512 VNNI, one output channel per 32-bit lane.
 *
 * Weights are interleaved 16 channels per vector: wbytes[v][q][lane][0..3] are the int8
 * values v = w - 2^(bw-1) of channel 16 v + lane at K positions 4 q .. 4 q + 3. Four shifted
 * activation bytes a' (uint8) of a row are broadcast to all lanes and vpdpbusd adds the four
 * uint8 x int8 products to each lane's int32 sum (no saturation). Register tile: MR rows x NR
 * vectors. int32 is exact: |sum| <= K * 255 * 128 with K <= 33025.
 * Same result as int8_scalar.c. */
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vnni")
#include <immintrin.h>
#include <string.h>

#include "soniq_cpu.h"

#define MR 6
#define NR 4

static inline __attribute__((always_inline))
void micro(const uint8_t *a, int64_t kpad, const int8_t *wv, int nr, int64_t r0, int64_t rows,
           int64_t v0, int64_t *tile, int64_t ld) {
    __m512i acc[MR][NR];
    int64_t kq = kpad / 4;
    for (int r = 0; r < MR; r++)
        for (int c = 0; c < nr; c++)
            acc[r][c] = _mm512_setzero_si512();
    for (int64_t q = 0; q < kq; q++) {
        __m512i wz[NR];
        for (int c = 0; c < nr; c++)
            wz[c] = _mm512_loadu_si512((const void *)(wv + ((int64_t)c * kq + q) * 64));
        for (int r = 0; r < MR; r++) {
            int32_t quad;
            memcpy(&quad, a + r * kpad + 4 * q, 4);
            __m512i az = _mm512_set1_epi32(quad);
            for (int c = 0; c < nr; c++)
                acc[r][c] = _mm512_dpbusd_epi32(acc[r][c], az, wz[c]);
        }
    }
    for (int r = 0; r < MR && r0 + r < rows; r++)
        for (int c = 0; c < nr; c++) {
            int64_t *dst = tile + (r0 + r) * ld + (v0 + c) * 16;
            _mm512_storeu_si512((void *)dst,
                                _mm512_cvtepi32_epi64(_mm512_castsi512_si256(acc[r][c])));
            _mm512_storeu_si512((void *)(dst + 8),
                                _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(acc[r][c], 1)));
        }
}

void soniq_int8_vnni(const soniq_gemm_job *job, const soniq_act_group *g, const soniq_block *b,
                     int64_t m0, int64_t rows, int64_t *tile) {
    /* one chunk of NR vectors (64 columns) at a time: its sums for the row tile stay in L1 */
    int64_t kpad = g->kpad, n_vec = (b->n + 15) / 16, ld = NR * 16;   /* = SONIQ_TILE_COLS */
    for (int64_t v0 = 0; v0 < n_vec; v0 += NR) {
        const int8_t *wv = b->wbytes + v0 * kpad * 16;
        int nr = n_vec - v0 < NR ? (int)(n_vec - v0) : NR;
        for (int64_t r0 = 0; r0 < rows; r0 += MR) {
            const uint8_t *a = g->bytes + r0 * kpad;
            switch (nr) {
            case 4: micro(a, kpad, wv, 4, r0, rows, 0, tile, ld); break;
            case 3: micro(a, kpad, wv, 3, r0, rows, 0, tile, ld); break;
            case 2: micro(a, kpad, wv, 2, r0, rows, 0, tile, ld); break;
            default: micro(a, kpad, wv, 1, r0, rows, 0, tile, ld); break;
            }
        }
        int64_t o1 = (v0 + nr) * 16 < b->n ? (v0 + nr) * 16 : b->n;
        soniq_flush_avx512(job, g, b, m0, rows, tile, ld, v0 * 16, o1);
    }
}

_Static_assert(NR * 16 == SONIQ_TILE_COLS, "a chunk's sums fill the tile scratch");
_Static_assert(SONIQ_INT8_LANES_AVX512 == 16, "packed.py interleaves 16 channels per vector");
