/* The flush of the popcount-style engines with AVX2 (bitserial_avx2.c, lut_avx2.c): a chunk of
 * per-column sums P in the int64 tile becomes the contribution 2^shift * (2 P - (2^bw - 1)
 * * rowsum) of each output cell (see soniq_flush_tile). */
#pragma GCC target("avx2")
#include <immintrin.h>

#include "soniq_cpu.h"

/* The contribution (2 P - base) * 2^shift of four sums; a left shift is that product modulo
 * 2^64. Added to what dst holds unless the block assigns. */
static inline __attribute__((always_inline))
void put4(int64_t *dst, __m256i p, __m256i base, __m128i shift, int assign) {
    __m256i v = _mm256_sll_epi64(_mm256_sub_epi64(_mm256_add_epi64(p, p), base), shift);
    if (!assign)
        v = _mm256_add_epi64(_mm256_loadu_si256((const __m256i *)dst), v);
    _mm256_storeu_si256((__m256i *)dst, v);
}

/* The flush when the chunk's columns are consecutive channels of an output whose rows are
 * adjacent (row_stride 1: conv outputs, channel planes col_stride apart): 4 x 4 blocks of
 * the tile are transposed in registers, so each channel gets 4 rows in one store. Rows of
 * a block in different images, and the edges, go through soniq_flush_tile. */
static void flush_columns(const soniq_gemm_job *job, const soniq_act_group *g,
                          const soniq_block *b, int64_t m0, int64_t rows, const int64_t *tile,
                          int64_t ld, int64_t o0, int64_t o1) {
    const int64_t n4 = (o1 - o0) / 4 * 4, cs = job->layout.col_stride, first = b->cols[o0];
    const int64_t levels = ((int64_t)1 << b->wbits) - 1;
    const __m128i shift = _mm_cvtsi32_si128(g->shift);
    int64_t r = 0;
    for (; r + 4 <= rows; r += 4) {
        int64_t *out = soniq_out_row(job, m0 + r) + first * cs;
        if (soniq_out_row(job, m0 + r + 3) != soniq_out_row(job, m0 + r) + 3) {
            soniq_flush_tile(job, g, b, m0, r, r + 4, tile, ld, o0, o1);
            continue;
        }
        int64_t bases[4];
        for (int i = 0; i < 4; i++)
            bases[i] = levels * g->rowsum[r + i];
        const __m256i base = _mm256_loadu_si256((const __m256i *)bases);
        const int64_t *t = tile + r * ld;
        for (int64_t o = 0; o < n4; o += 4) {
            __m256i v0 = _mm256_loadu_si256((const __m256i *)(t + o));
            __m256i v1 = _mm256_loadu_si256((const __m256i *)(t + ld + o));
            __m256i v2 = _mm256_loadu_si256((const __m256i *)(t + 2 * ld + o));
            __m256i v3 = _mm256_loadu_si256((const __m256i *)(t + 3 * ld + o));
            __m256i t0 = _mm256_unpacklo_epi64(v0, v1), t1 = _mm256_unpackhi_epi64(v0, v1);
            __m256i t2 = _mm256_unpacklo_epi64(v2, v3), t3 = _mm256_unpackhi_epi64(v2, v3);
            int64_t *dst = out + o * cs;
            put4(dst, _mm256_permute2x128_si256(t0, t2, 0x20), base, shift, b->assign);
            put4(dst + cs, _mm256_permute2x128_si256(t1, t3, 0x20), base, shift, b->assign);
            put4(dst + 2 * cs, _mm256_permute2x128_si256(t0, t2, 0x31), base, shift, b->assign);
            put4(dst + 3 * cs, _mm256_permute2x128_si256(t1, t3, 0x31), base, shift, b->assign);
        }
        if (o0 + n4 < o1)   /* the last columns, whose tile cells start at column n4 */
            soniq_flush_tile(job, g, b, m0, r, r + 4, tile + n4, ld, o0 + n4, o1);
    }
    soniq_flush_tile(job, g, b, m0, r, rows, tile, ld, o0, o1);
}

/* soniq_flush_tile with AVX2 (vector stores when the chunk's columns are consecutive). */
void soniq_popcount_flush_avx2(const soniq_gemm_job *job, const soniq_act_group *g, const soniq_block *b,
                        int64_t m0, int64_t rows, const int64_t *tile, int64_t ld, int64_t o0,
                        int64_t o1) {
    if (!soniq_flush_contiguous(job, b, o0, o1)) {
        if (job->layout.row_stride == 1 && soniq_cols_consecutive(b->cols + o0, o1 - o0))
            flush_columns(job, g, b, m0, rows, tile, ld, o0, o1);
        else
            soniq_flush_tile(job, g, b, m0, 0, rows, tile, ld, o0, o1);
        return;
    }
    const int64_t n = o1 - o0, first = b->cols[o0];
    const int64_t levels = ((int64_t)1 << b->wbits) - 1;
    const __m128i shift = _mm_cvtsi32_si128(g->shift);
    for (int64_t r = 0; r < rows; r++) {
        int64_t *out = soniq_out_row(job, m0 + r) + first;
        const int64_t *t = tile + r * ld;
        const __m256i base = _mm256_set1_epi64x(levels * g->rowsum[r]);
        int64_t o = 0;
        for (; o + 4 <= n; o += 4)
            put4(out + o, _mm256_loadu_si256((const __m256i *)(t + o)), base, shift, b->assign);
        for (; o < n; o++) {
            int64_t term = soniq_popcount_term(t[o], b->wbits, g->rowsum[r], g->shift);
            out[o] = b->assign ? term : out[o] + term;
        }
    }
}

/* Ask for the output lines a chunk's flush will write, before the chunk is computed: they
 * arrive while it is (rows of a row tile lie far apart, so hardware prefetchers miss them,
 * and a store to a missing line waits for it). */
void soniq_popcount_prefetch_avx2(const soniq_gemm_job *job, const soniq_block *b, int64_t m0,
                               int64_t rows, int64_t o0, int64_t o1) {
    if (!soniq_flush_contiguous(job, b, o0, o1))
        return;
    const int64_t first = b->cols[o0], bytes = (o1 - o0) * (int64_t)sizeof(int64_t);
    for (int64_t r = 0; r < rows; r++) {
        const char *p = (const char *)(soniq_out_row(job, m0 + r) + first);
        for (int64_t off = 0; off < bytes; off += 64)
            _mm_prefetch(p + off, _MM_HINT_T0);
        _mm_prefetch(p + bytes - 1, _MM_HINT_T0);
    }
}

