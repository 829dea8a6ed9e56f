/* What the AVX2 int8 kernels share: adding one vector of int32 sums to the output.
 * Include after #pragma GCC target("avx2"). Weights interleave 8 output channels per vector
 * (soniq_block.lanes = 8): lane j of vector v is column 8 v + j of the block. */
#ifndef SONIQ_INT8_AVX2_H
#define SONIQ_INT8_AVX2_H

#include <immintrin.h>

#include "soniq_cpu.h"

/* How the 8 columns of vector v lie in the output: 1 = 8 consecutive outputs of a row-major
 * output, 2 = 8 consecutive channels of a strided output, 0 = otherwise. */
static inline int soniq_int8_avx2_contiguous(const soniq_gemm_job *job, const soniq_block *b,
                                             int64_t v) {
    if (8 * v + 8 > b->n || !soniq_cols_consecutive(b->cols + 8 * v, 8))
        return 0;
    return job->layout.col_stride == 1 ? 1 : 2;
}

/* Per tile row r < rows: its output row and base = rowsum << shift (computed once per block,
 * not per micro tile: soniq_out_row divides). */
typedef struct {
    int64_t *out[SONIQ_ROW_TILE];
    int64_t base[SONIQ_ROW_TILE];
} soniq_int8_avx2_rows;

static inline void soniq_int8_avx2_rows_init(soniq_int8_avx2_rows *t, const soniq_gemm_job *job,
                                             const soniq_act_group *g, int64_t m0, int64_t rows) {
    for (int64_t r = 0; r < rows; r++) {
        t->out[r] = soniq_out_row(job, m0 + r);
        t->base[r] = g->rowsum[r] << g->shift;
    }
}

/* out[cols[8 v + j]] += 2 V_j + base for the lanes j < 8 that are columns of the block
 * (V = acc, int32): the int8 term 2 V + sum a'. Stored instead of added when b->assign. */
static inline __attribute__((always_inline))
void soniq_int8_avx2_add(const soniq_gemm_job *job, const soniq_block *b, int64_t *out, int64_t v,
                         int contiguous, __m256i acc, int64_t base) {
    const __m256i bv = _mm256_set1_epi64x(base);
    __m256i lo = _mm256_cvtepi32_epi64(_mm256_castsi256_si128(acc));
    __m256i hi = _mm256_cvtepi32_epi64(_mm256_extracti128_si256(acc, 1));
    lo = _mm256_add_epi64(_mm256_add_epi64(lo, lo), bv);
    hi = _mm256_add_epi64(_mm256_add_epi64(hi, hi), bv);
    if (contiguous == 1) {
        out += b->cols[8 * v];
        if (!b->assign) {
            lo = _mm256_add_epi64(_mm256_loadu_si256((const __m256i *)out), lo);
            hi = _mm256_add_epi64(_mm256_loadu_si256((const __m256i *)(out + 4)), hi);
        }
        _mm256_storeu_si256((__m256i *)out, lo);
        _mm256_storeu_si256((__m256i *)(out + 4), hi);
        return;
    }
    int64_t t[8];
    _mm256_storeu_si256((__m256i *)t, lo);
    _mm256_storeu_si256((__m256i *)(t + 4), hi);
    const int64_t cs = job->layout.col_stride, n = b->n - 8 * v < 8 ? b->n - 8 * v : 8;
    const int32_t *cols = b->cols + 8 * v;
    if (contiguous == 2) {   /* consecutive channels of a strided output */
        int64_t *p = out + cols[0] * cs;
        if (b->assign)
            for (int j = 0; j < 8; j++)
                p[j * cs] = t[j];
        else
            for (int j = 0; j < 8; j++)
                p[j * cs] += t[j];
        return;
    }
    for (int64_t j = 0; j < n; j++)
        out[cols[j] * cs] = b->assign ? t[j] : out[cols[j] * cs] + t[j];
}

/* The 8 x 8 transpose of int32 lanes: x[r] lane j -> x[j] lane r. */
static inline __attribute__((always_inline)) void soniq_transpose8_epi32(__m256i x[8]) {
    __m256i t[8], u[8];
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_epi32(x[i], x[i + 1]);
        t[i + 1] = _mm256_unpackhi_epi32(x[i], x[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {
        u[i] = _mm256_unpacklo_epi64(t[i], t[i + 2]);
        u[i + 1] = _mm256_unpackhi_epi64(t[i], t[i + 2]);
        u[i + 2] = _mm256_unpacklo_epi64(t[i + 1], t[i + 3]);
        u[i + 3] = _mm256_unpackhi_epi64(t[i + 1], t[i + 3]);
    }
    for (int i = 0; i < 4; i++) {
        x[i] = _mm256_permute2x128_si256(u[i], u[i + 4], 0x20);
        x[i + 4] = _mm256_permute2x128_si256(u[i], u[i + 4], 0x31);
    }
}

/* Whether rows r0 .. r0 + mr - 1 of a micro tile can go out column by column: a column-major
 * output (row_stride 1) in which they are all rows of the tile and consecutive. */
static inline int soniq_int8_avx2_columns(const soniq_gemm_job *job,
                                          const soniq_int8_avx2_rows *t, int64_t r0, int mr,
                                          int64_t rows) {
    return job->layout.row_stride == 1 && mr >= 4 && r0 + mr <= rows
           && t->out[r0 + mr - 1] == t->out[r0] + mr - 1;
}

/* Vector v of mr (4..8) rows at once, when soniq_int8_avx2_columns and v's 8 channels are
 * consecutive (contiguous 2): transposed, so each channel gets its rows in vector stores
 * instead of 8 scattered stores per row. sums[r * stride]: the int32 sums of row r. */
static inline __attribute__((always_inline))
void soniq_int8_avx2_put_columns(const soniq_gemm_job *job, const soniq_block *b,
                                 const soniq_int8_avx2_rows *t, int64_t r0, int mr, int64_t v,
                                 const __m256i *sums, int stride) {
    __m256i x[8];
    int64_t base[8] = {0};
    for (int r = 0; r < 8; r++) {
        x[r] = r < mr ? _mm256_loadu_si256(sums + r * stride) : _mm256_setzero_si256();
        if (r < mr)
            base[r] = t->base[r0 + r];
    }
    soniq_transpose8_epi32(x);
    const int64_t cs = job->layout.col_stride;
    int64_t *p = t->out[r0] + b->cols[8 * v] * cs;
    const __m256i b0 = _mm256_loadu_si256((const __m256i *)base);
    const __m256i b1 = _mm256_loadu_si256((const __m256i *)(base + 4));
    for (int j = 0; j < 8; j++, p += cs) {
        __m256i lo = _mm256_cvtepi32_epi64(_mm256_castsi256_si128(x[j]));
        __m256i hi = _mm256_cvtepi32_epi64(_mm256_extracti128_si256(x[j], 1));
        lo = _mm256_add_epi64(_mm256_add_epi64(lo, lo), b0);
        hi = _mm256_add_epi64(_mm256_add_epi64(hi, hi), b1);
        if (!b->assign)
            lo = _mm256_add_epi64(_mm256_loadu_si256((const __m256i *)p), lo);
        _mm256_storeu_si256((__m256i *)p, lo);
        if (mr == 8) {
            if (!b->assign)
                hi = _mm256_add_epi64(_mm256_loadu_si256((const __m256i *)(p + 4)), hi);
            _mm256_storeu_si256((__m256i *)(p + 4), hi);
        } else if (mr == 6) {
            __m128i h = _mm256_castsi256_si128(hi);
            if (!b->assign)
                h = _mm_add_epi64(_mm_loadu_si128((const __m128i *)(p + 4)), h);
            _mm_storeu_si128((__m128i *)(p + 4), h);
        } else {
            int64_t rest[4];
            _mm256_storeu_si256((__m256i *)rest, hi);
            for (int r = 4; r < mr; r++)
                p[r] = b->assign ? rest[r - 4] : p[r] + rest[r - 4];
        }
    }
}

/* Add the sums acc[r][c] of a micro tile (rows r0 + r, vectors v0 + c) to the output: the
 * sums go through memory once here, so the compiler keeps acc in registers in the K loop. */
#define soniq_int8_avx2_flush(job, b, t, r0, mr, rows, v0, nr, acc) do {                      \
        __m256i sums_[sizeof(acc) / sizeof(acc[0])][sizeof(acc[0]) / sizeof(__m256i)];    \
        int contiguous_[sizeof(acc[0]) / sizeof(__m256i)];                                \
        for (int r_ = 0; r_ < (mr); r_++)                                                 \
            for (int c_ = 0; c_ < (nr); c_++)                                             \
                _mm256_storeu_si256(&sums_[r_][c_], acc[r_][c_]);                         \
        const int columns_ = soniq_int8_avx2_columns(job, t, r0, mr, rows);               \
        for (int c_ = 0; c_ < (nr); c_++) {                                               \
            contiguous_[c_] = soniq_int8_avx2_contiguous(job, b, (v0) + c_);              \
            if (columns_ && contiguous_[c_] == 2)                                         \
                soniq_int8_avx2_put_columns(job, b, t, r0, mr, (v0) + c_, &sums_[0][c_],  \
                                            (int)(sizeof(acc[0]) / sizeof(__m256i)));     \
        }                                                                                 \
        for (int r_ = 0; r_ < (mr) && (r0) + r_ < (rows); r_++)                           \
            for (int c_ = 0; c_ < (nr); c_++)                                             \
                if (!(columns_ && contiguous_[c_] == 2))                                  \
                    soniq_int8_avx2_add(job, b, (t)->out[(r0) + r_], (v0) + c_,           \
                                        contiguous_[c_], _mm256_loadu_si256(&sums_[r_][c_]), \
                                        (t)->base[(r0) + r_]);                            \
    } while (0)

#endif
