/* The flush of the AVX-512 engines (bitserial_avx512.c, int8_vnni.c): a chunk of per-column
 * sums in the int64 tile becomes each output cell's contribution (see soniq_flush_tile),
 *
 *     popcount, lut: t = P, (2 P - (2^bw - 1) rowsum) * 2^shift
 *     int8:          t = V, 2 V + rowsum * 2^shift,
 *
 * added to the output. Vector stores where the chunk's columns are consecutive channels:
 * of a row-major output (8 channels per store), or of an output whose rows are adjacent
 * (row_stride 1: conv outputs and fused-requantize tiles, channel planes col_stride apart),
 * where 4 x 4 blocks of the tile are transposed in registers so that each channel gets 4
 * rows per store. Everything else goes through soniq_flush_tile. */
#pragma GCC target("avx2,avx512f,avx512bw,avx512dq")
#include <immintrin.h>

#include "soniq_cpu.h"

/* 2 t - base, times 2^shift (popcount), or 2 t + base (int8) */
static inline __attribute__((always_inline))
__m256i term4(__m256i t, __m256i base, __m128i shift, int popcount) {
    const __m256i twice = _mm256_add_epi64(t, t);
    return popcount ? _mm256_sll_epi64(_mm256_sub_epi64(twice, base), shift)
                    : _mm256_add_epi64(twice, base);
}

static inline __attribute__((always_inline))
void add4(int64_t *dst, __m256i v) {
    _mm256_storeu_si256((__m256i *)dst,
                        _mm256_add_epi64(_mm256_loadu_si256((const __m256i *)dst), v));
}

/* Per-row base of the term: (2^bw - 1) rowsum (popcount) or rowsum * 2^shift (int8). */
static inline int64_t row_base(const soniq_act_group *g, const soniq_block *b, int popcount,
                               int64_t r) {
    return popcount ? (((int64_t)1 << b->wbits) - 1) * g->rowsum[r]
                    : g->rowsum[r] * ((int64_t)1 << g->shift);
}

static void flush_columns(const soniq_gemm_job *job, const soniq_act_group *g,
                          const soniq_block *b, int64_t m0, int64_t rows, const int64_t *tile,
                          int64_t ld, int64_t o0, int64_t o1, int popcount) {
    const int64_t n4 = (o1 - o0) / 4 * 4, cs = job->layout.col_stride, first = b->cols[o0];
    const __m128i shift = _mm_cvtsi32_si128(g->shift);
    int64_t r = 0;
    for (; r + 4 <= rows; r += 4) {
        int64_t *out = soniq_out_row(job, m0 + r) + first * cs;
        if (soniq_out_row(job, m0 + r + 3) != soniq_out_row(job, m0 + r) + 3) {
            soniq_flush_tile(job, g, b, m0, r, r + 4, tile, ld, o0, o1);
            continue;
        }
        const __m256i base = _mm256_set_epi64x(row_base(g, b, popcount, r + 3),
                                               row_base(g, b, popcount, r + 2),
                                               row_base(g, b, popcount, r + 1),
                                               row_base(g, b, popcount, r));
        const int64_t *t = tile + r * ld;
        for (int64_t o = 0; o < n4; o += 4) {
            __m256i v0 = _mm256_loadu_si256((const __m256i *)(t + o));
            __m256i v1 = _mm256_loadu_si256((const __m256i *)(t + ld + o));
            __m256i v2 = _mm256_loadu_si256((const __m256i *)(t + 2 * ld + o));
            __m256i v3 = _mm256_loadu_si256((const __m256i *)(t + 3 * ld + o));
            __m256i t0 = _mm256_unpacklo_epi64(v0, v1), t1 = _mm256_unpackhi_epi64(v0, v1);
            __m256i t2 = _mm256_unpacklo_epi64(v2, v3), t3 = _mm256_unpackhi_epi64(v2, v3);
            int64_t *dst = out + o * cs;
            add4(dst, term4(_mm256_permute2x128_si256(t0, t2, 0x20), base, shift, popcount));
            add4(dst + cs, term4(_mm256_permute2x128_si256(t1, t3, 0x20), base, shift, popcount));
            add4(dst + 2 * cs, term4(_mm256_permute2x128_si256(t0, t2, 0x31), base, shift, popcount));
            add4(dst + 3 * cs, term4(_mm256_permute2x128_si256(t1, t3, 0x31), base, shift, popcount));
        }
        if (o0 + n4 < o1)   /* the last columns, whose tile cells start at column n4 */
            soniq_flush_tile(job, g, b, m0, r, r + 4, tile + n4, ld, o0 + n4, o1);
    }
    soniq_flush_tile(job, g, b, m0, r, rows, tile, ld, o0, o1);
}

static void flush_rows(const soniq_gemm_job *job, const soniq_act_group *g, const soniq_block *b,
                       int64_t m0, int64_t rows, const int64_t *tile, int64_t ld, int64_t o0,
                       int64_t o1, int popcount) {
    const int64_t n = o1 - o0, first = b->cols[o0];
    const __m128i shift = _mm_cvtsi32_si128(g->shift);
    for (int64_t r = 0; r < rows; r++) {
        int64_t *out = soniq_out_row(job, m0 + r) + first;
        const int64_t *t = tile + r * ld;
        const int64_t base = row_base(g, b, popcount, r);
        const __m512i vbase = _mm512_set1_epi64(base);
        int64_t o = 0;
        for (; o + 8 <= n; o += 8) {
            __m512i v = _mm512_loadu_si512((const void *)(t + o));
            v = _mm512_add_epi64(v, v);
            v = popcount ? _mm512_sll_epi64(_mm512_sub_epi64(v, vbase), shift)
                         : _mm512_add_epi64(v, vbase);
            _mm512_storeu_si512((void *)(out + o),
                                _mm512_add_epi64(_mm512_loadu_si512((const void *)(out + o)), v));
        }
        for (; o < n; o++)
            out[o] += popcount ? (2 * t[o] - base) * ((int64_t)1 << g->shift) : 2 * t[o] + base;
    }
}

void soniq_flush_avx512(const soniq_gemm_job *job, const soniq_act_group *g, const soniq_block *b,
                        int64_t m0, int64_t rows, const int64_t *tile, int64_t ld, int64_t o0,
                        int64_t o1) {
    const int popcount = b->engine != SONIQ_ENGINE_INT8;
    if (b->assign)      /* the AVX-512 engines add (flush_assigns 0 in dispatch.c) */
        soniq_flush_tile(job, g, b, m0, 0, rows, tile, ld, o0, o1);
    else if (soniq_flush_contiguous(job, b, o0, o1))
        flush_rows(job, g, b, m0, rows, tile, ld, o0, o1, popcount);
    else if (job->layout.row_stride == 1 && soniq_cols_consecutive(b->cols + o0, o1 - o0))
        flush_columns(job, g, b, m0, rows, tile, ld, o0, o1, popcount);
    else
        soniq_flush_tile(job, g, b, m0, 0, rows, tile, ld, o0, o1);
}
