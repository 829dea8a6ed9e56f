/* The C kernels of the soniq cpu backend: shared types and entry points.
 *
 * A GEMM job computes, for rows m of the activation codes and output channels o,
 *
 *     acc[m, o] = sum_c q[o, c] * (a[m, c] << (A - ba[c])),   q = 2 w - (2^bw - 1),
 *
 * split into blocks: input channels are grouped by activation bit width (an
 * "act group"); for each act group, the output channels whose (bw, ba) pair goes to the
 * popcount engine form one block per weight width, the rest one int8 block (the int8
 * term does not depend on bw):
 *
 *   popcount: P = sum_{i<ba, j<bw} 2^(i+j) popcount(W_j & A_i) = sum_c w a   (unshifted a)
 *             contribution = 2^(A-ba) * (2 P - (2^bw - 1) * sum_c a)
 *   int8:     v = w - 2^(bw-1) in int8, a' = a << (A - ba) in uint8, so q = 2 v + 1
 *             contribution = 2 * sum_c v a' + sum_c a'
 *   lut:      P as popcount, by table lookup: for every 4 K positions of a row a table
 *             T[i] = sum_{t<4} bit_t(i) a[4 q + t] (16 entries), indexed by the 4 bits
 *             of weight plane j at those positions; same contribution as popcount
 *
 * int8 partial sums are int32 (|term| <= 255 * 128, K <= 33025), popcount sums and all
 * contributions int64; blocks add into the int64 output rows (zeroed per row tile), so the
 * result does not depend on the order of blocks, the ISA path or the thread count.
 */
#ifndef SONIQ_CPU_H
#define SONIQ_CPU_H

#include <stdint.h>

#include "params.h"   /* the records from Python, the ids and constants Python relies on */
#include "residual.h"

#define SONIQ_ROW_TILE 48       /* rows prepared and multiplied together by one thread */

/* isa.c */
int soniq_cpu_has(int isa);

/* popcount_probe.c: the AND + popcount peak probe of a code path (its dispatch table's
 * popcount_probe), returning the binary multiply-accumulates done */
int64_t soniq_popcount_probe(int isa, int64_t iterations);
int64_t soniq_popcount_probe_avx2(int64_t iterations);
int64_t soniq_popcount_probe_avx512(int64_t iterations);

/* threads.c: calls fn(ctx, lo, hi) on n_threads disjoint contiguous ranges of [0, total). */
typedef void (*soniq_range_fn)(void *ctx, int64_t lo, int64_t hi);
int soniq_parallel_for(int n_threads, int64_t total, soniq_range_fn fn, void *ctx);

/* gemm.c: returns 0, -1 when scratch cannot be allocated, -2 for too many act groups, -3
 * for a job the code path cannot run (64-entry lut tables without AVX-512) */
int soniq_gemm_run(const soniq_gemm_job *job, int n_threads);
int64_t soniq_engine_calls(int isa, int engine);   /* engine runs so far, for tests */
/* Output row m; rows of the first image (every row of a linear layer or of a fused tile)
 * are found without a division. */
static inline int64_t *soniq_out_row(const soniq_gemm_job *job, int64_t m) {
    const soniq_out_layout *l = &job->layout;
    if (m < l->rows_per_image)
        return job->out + m * l->row_stride;
    return job->out + (m / l->rows_per_image) * l->image_stride
           + (m % l->rows_per_image) * l->row_stride;
}
static inline int64_t *soniq_out_at(const soniq_gemm_job *job, int64_t m, int64_t o) {
    return soniq_out_row(job, m) + o * job->layout.col_stride;
}

/* prepare.c; plane packing returns the sum of the k codes (the row sum) */
#define SONIQ_IM2COL_SLACK 8    /* spare bytes after padded image rows and after a patch tile */
void soniq_im2col_row(const soniq_conv_src *src, int64_t m, uint8_t *row);
int64_t soniq_padded_row_bytes(const soniq_conv_src *src);
int64_t soniq_padded_bytes(const soniq_conv_src *src);
/* image b of src into padded ([c][h + 2 padding][soniq_padded_row_bytes], zeroed once) */
void soniq_pad_image(const soniq_conv_src *src, int64_t b, uint8_t *padded);
void soniq_im2col_tile(const soniq_conv_src *src, int64_t m0, int64_t rows, uint8_t *patch,
                       uint8_t *padded, int64_t *image);
int soniq_pack_activations(const uint8_t *a, int64_t m, int64_t k, const uint8_t *a_bits,
                           int hi, uint64_t *out, int isa, int n_threads);
int64_t soniq_pack_planes_scalar(const uint8_t *src, int64_t k, int bits, uint64_t *dst,
                                 int64_t words);
int64_t soniq_pack_planes_avx2(const uint8_t *src, int64_t k, int bits, uint64_t *dst,
                               int64_t words);
/* pack_avx2.c: dst[t] = src[2 t] for t < k; src holds n >= 2 k - 1 bytes */
void soniq_gather_every_other_avx2(const uint8_t *src, int64_t n, int64_t k, uint8_t *dst);
int64_t soniq_pack_planes_avx512(const uint8_t *src, int64_t k, int bits, uint64_t *dst,
                                 int64_t words);

/* int8_prepare.c: dst = a << shift (uint8, zero tail to kpad), also as int16 in wide unless
 * NULL; returns the sum of the k codes */
int64_t soniq_int8_prepare_scalar(const uint8_t *src, int64_t k, int shift, uint8_t *dst,
                                  int16_t *wide, int64_t kpad);
int64_t soniq_int8_prepare_avx2(const uint8_t *src, int64_t k, int shift, uint8_t *dst,
                                int16_t *wide, int64_t kpad);

/* engines: add the block's contribution for the prepared tile rows r in [0, rows) of group g
 * (a thread's scratch view) to the output rows m0 + r. `tile` is the thread's int64 scratch
 * of SONIQ_ROW_TILE * SONIQ_TILE_SCRATCH_COLS entries (the sums of one chunk of columns,
 * SONIQ_TILE_COLS of them but in the 64-entry lut engine). Up to
 * SONIQ_ROW_PAD scratch rows past `rows` are allocated and initialised, so engines may
 * compute on them; those results are never stored. */
#define SONIQ_ROW_PAD 8
#define SONIQ_TILE_COLS 64
#define SONIQ_TILE_SCRATCH_COLS 256   /* columns the tile scratch holds (lut_avx512.c) */
typedef void (*soniq_block_fn)(const soniq_gemm_job *job, const soniq_act_group *g,
                               const soniq_block *b, int64_t m0, int64_t rows, int64_t *tile);
#define SONIQ_ENGINE(name) \
    void name(const soniq_gemm_job *, const soniq_act_group *, const soniq_block *, int64_t, \
              int64_t, int64_t *tile)
SONIQ_ENGINE(soniq_bitserial_scalar);
SONIQ_ENGINE(soniq_bitserial_avx2);
SONIQ_ENGINE(soniq_bitserial_avx512);
SONIQ_ENGINE(soniq_int8_scalar);
SONIQ_ENGINE(soniq_int8_avx2);
SONIQ_ENGINE(soniq_int8_avx2_bytes);     /* soniq_int8_avx2 when soniq_int8_steps() > 0 */
SONIQ_ENGINE(soniq_int8_avx2_wide);      /* and when it is 0 */
SONIQ_ENGINE(soniq_int8_vnni);
SONIQ_ENGINE(soniq_lut_scalar);
SONIQ_ENGINE(soniq_lut_avx2);
SONIQ_ENGINE(soniq_lut_avx512);

/* lut engine (lut.h has the layout): tables of a row of k codes of width bits,
 * returning the sum of the codes */
int64_t soniq_lut_row_bytes(int64_t k, int bits);
int64_t soniq_lut_tables_scalar(const uint8_t *src, int64_t k, int bits, uint8_t *dst);
int64_t soniq_lut_tables_avx2(const uint8_t *src, int64_t k, int bits, uint8_t *dst);
/* lut_avx512.c: the same with 64-entry tables of 6 K positions (act groups with
 * need_tables == 2, blocks with 64 lanes) */
int64_t soniq_lut64_row_bytes(int64_t k, int bits);
int64_t soniq_lut64_tables_avx512(const uint8_t *src, int64_t k, int bits, uint8_t *dst);
/* popcount_flush_avx2.c: soniq_flush_tile of popcount sums with AVX2, and a prefetch of the
 * output lines it will write */
void soniq_popcount_flush_avx2(const soniq_gemm_job *job, const soniq_act_group *g,
                               const soniq_block *b, int64_t m0, int64_t rows,
                               const int64_t *tile, int64_t ld, int64_t o0, int64_t o1);
void soniq_popcount_prefetch_avx2(const soniq_gemm_job *job, const soniq_block *b, int64_t m0,
                                  int64_t rows, int64_t o0, int64_t o1);

/* flush_avx512.c: soniq_flush_tile of the AVX-512 engines, with vector stores where the
 * chunk's columns are consecutive channels (of a row-major output, or of one whose rows are
 * adjacent) */
void soniq_flush_avx512(const soniq_gemm_job *job, const soniq_act_group *g, const soniq_block *b,
                        int64_t m0, int64_t rows, const int64_t *tile, int64_t ld, int64_t o0,
                        int64_t o1);

/* contribution helpers shared by the engines */
static inline int64_t soniq_popcount_term(int64_t p, int wbits, int64_t rowsum, int shift) {
    return (2 * p - (((int64_t)1 << wbits) - 1) * rowsum) * ((int64_t)1 << shift);
}
static inline int64_t soniq_int8_term(int64_t v, int64_t rowsum, int shift) {
    return 2 * v + rowsum * ((int64_t)1 << shift);
}
/* How many vpmaddubsw results (pair sums of a' v) the avx2 int8 engine may add in int16:
 * a' <= amax = (2^ba - 1) 2^shift, -2^(e-1) <= v < 2^(e-1) (e = wbits), so a pair sum lies
 * in [-amax 2^e, amax (2^e - 2)] and L of them fit int16 (no saturation, no wrap) while
 * L amax 2^e <= 32768. 0: not even one is exact (e = 8, amax > 128). Python reads it as
 * _kernels.int8_steps. */
static inline int64_t soniq_int8_steps(int wbits, int abits, int shift) {
    return 32768 / ((((int64_t)1 << abits) - 1) << shift << wbits);
}

/* Add a block's per-column sums tile[r][o - o0] (r0 <= r < r1, o0 <= o < o1) to the output
 * rows m0 + r (store them when b->assign):
 * popcount, lut: t = P, contribution 2^shift * (2 P - (2^bw - 1) * rowsum);
 * int8:     t = V, contribution 2 V + 2^shift * rowsum. Locals first: out may alias nothing
 * here, but the compiler cannot know that and would reload every field per element. */
static inline void soniq_flush_tile(const soniq_gemm_job *job, const soniq_act_group *g,
                                    const soniq_block *b, int64_t m0, int64_t r0, int64_t r1,
                                    const int64_t *tile, int64_t ld, int64_t o0, int64_t o1) {
    const int64_t n = o1 - o0, cs = job->layout.col_stride;
    const int32_t *cols = b->cols + o0;
    const int64_t scale = (int64_t)1 << g->shift;
    const int popcount = b->engine != SONIQ_ENGINE_INT8;
    const int64_t levels = ((int64_t)1 << b->wbits) - 1;
    for (int64_t r = r0; r < r1; r++) {
        int64_t *out = soniq_out_row(job, m0 + r);
        const int64_t *t = tile + r * ld;
        const int64_t rowsum = g->rowsum[r];
        if (popcount && b->assign) {
            const int64_t base = levels * rowsum;
            for (int64_t o = 0; o < n; o++)
                out[cols[o] * cs] = (2 * t[o] - base) * scale;
        } else if (popcount) {
            const int64_t base = levels * rowsum;
            for (int64_t o = 0; o < n; o++)
                out[cols[o] * cs] += (2 * t[o] - base) * scale;
        } else if (b->assign) {
            const int64_t base = rowsum * scale;
            for (int64_t o = 0; o < n; o++)
                out[cols[o] * cs] = 2 * t[o] + base;
        } else {
            const int64_t base = rowsum * scale;
            for (int64_t o = 0; o < n; o++)
                out[cols[o] * cs] += 2 * t[o] + base;
        }
    }
}

/* Whether cols[0 .. n-1] are n consecutive channels, cols[i] = cols[0] + i. (A block's
 * columns ascend in a job's own output; in the channel order of a fused requantize's tile
 * buffer (tile_output.c) only the blocks of the first act group are known to, so look at each.) */
static inline int soniq_cols_consecutive(const int32_t *cols, int64_t n) {
    for (int64_t i = 1; i < n; i++)
        if (cols[i] != cols[0] + i)
            return 0;
    return 1;
}

/* Whether the block's columns o0 .. o1-1 are consecutive output channels of a row-major
 * output (then a flush can use vector loads and stores). */
static inline int soniq_flush_contiguous(const soniq_gemm_job *job, const soniq_block *b,
                                         int64_t o0, int64_t o1) {
    return job->layout.col_stride == 1 && soniq_cols_consecutive(b->cols + o0, o1 - o0);
}

/* epilogue.c: acc is [units][channels][inner]; scale, bias, bits, ratio per channel */
int soniq_epilogue(const int64_t *acc, int64_t total, int64_t channels, int64_t inner,
                   const float *scale, const float *bias, float *out, int isa, int n_threads);
int soniq_requantize(const int64_t *acc, int64_t total, int64_t channels, int64_t inner,
                     const float *scale, const float *bias, const uint8_t *bits,
                     const float *ratio, uint8_t *out, int isa, int n_threads);

/* One span of elements sharing the channel: each parameter is one value for the whole span
 * (step 0) or one per element (step 1); scale and bias share a step, ratio and bits too. */
typedef struct {
    const float *scale, *bias, *ratio;
    const uint8_t *bits;
    int scale_step, ratio_step;
} soniq_epi_params;
void soniq_epilogue_span_scalar(const int64_t *acc, int64_t n, const soniq_epi_params *p,
                                float *y);
void soniq_epilogue_span_avx2(const int64_t *acc, int64_t n, const soniq_epi_params *p,
                              float *y);
void soniq_requantize_span_scalar(const int64_t *acc, int64_t n, const soniq_epi_params *p,
                                  uint8_t *k);
void soniq_requantize_span_avx2(const int64_t *acc, int64_t n, const soniq_epi_params *p,
                                uint8_t *k);
/* Columns i < cols of a column-major block: acc[i * ld + j] -> k[o * ks + j], j < n, for
 * channel o = perm[i] (o = i when perm is NULL), with scale[o], bias[o], and ratio, bits at
 * [o * param_ld] (+ j when p->ratio_step is 1); the pointers in p are those of channel 0
 * (scale_step is ignored). For GEMM sums: every |acc| < 2^31 (K <= SONIQ_MAX_EXACT_K). */
void soniq_requantize_columns_scalar(const int64_t *acc, int64_t ld, int64_t cols, int64_t n,
                                     const soniq_epi_params *p, int64_t param_ld, uint8_t *k,
                                     int64_t ks, const int32_t *perm);
void soniq_requantize_columns_avx2(const int64_t *acc, int64_t ld, int64_t cols, int64_t n,
                                   const soniq_epi_params *p, int64_t param_ld, uint8_t *k,
                                   int64_t ks, const int32_t *perm);

/* gemm.c: the GEMM with the requantize fused in: codes (uint8, laid out like job->layout in
 * elements; job->out is not used) = requantize(acc) with scale, bias per output channel and
 * bits, ratio per channel, or per (channel, position in the image) when per_position is set
 * (then the rows of a column must be consecutive: row_stride 1). Returns as soniq_gemm_run,
 * or -3 for a layout that is neither row-major nor column-consecutive, or K above
 * SONIQ_MAX_EXACT_K. */
int soniq_gemm_requantize_run(const soniq_gemm_job *job, const soniq_requant_out *rq,
                              int n_threads);
/* direct_conv_avx2.c: the same for a conv job with `direct` set, stride 1 and K <= 64:
 * no im2col, no packing; returns 0, or -1 when scratch cannot be allocated. */
int soniq_direct_conv_requantize_avx2(const soniq_gemm_job *job, const soniq_requant_out *rq,
                                      int n_threads);

/* pool.c: max pooling of uint8 codes [planes][h][w] with a square window */
int soniq_max_pool(const uint8_t *x, int64_t planes, int64_t h, int64_t w, int kernel,
                   int stride, uint8_t *out, int isa, int n_threads);
void soniq_max_pool2_avx2(const uint8_t *x, int64_t h, int64_t w, int64_t ho, int64_t wo,
                          int64_t lo, int64_t hi, uint8_t *out);

/* dispatch.c: one table of kernels per code path, filled at compile time and chosen once per
 * call from the code path Python detected or was told to use (job->isa, or the isa argument
 * of the other entries). The scalar table is the reference every other one must equal; a
 * NULL entry means the path has no kernel of that kind and the caller uses the portable C
 * (or, for the direct conv and the 64-entry tables, refuses the job). Callers read only
 * the table: no code outside dispatch.c compares code paths. */
typedef int64_t (*soniq_pack_fn)(const uint8_t *src, int64_t k, int bits, uint64_t *dst,
                                 int64_t words);
typedef int64_t (*soniq_int8_prepare_fn)(const uint8_t *src, int64_t k, int shift,
                                         uint8_t *dst, int16_t *wide, int64_t kpad);
typedef int64_t (*soniq_tables_fn)(const uint8_t *src, int64_t k, int bits, uint8_t *dst);
typedef void (*soniq_gather_fn)(const uint8_t *src, int64_t n, int64_t k, uint8_t *dst);
typedef void (*soniq_epilogue_span_fn)(const int64_t *acc, int64_t n,
                                       const soniq_epi_params *p, float *y);
typedef void (*soniq_requantize_span_fn)(const int64_t *acc, int64_t n,
                                         const soniq_epi_params *p, uint8_t *k);
typedef void (*soniq_requantize_columns_fn)(const int64_t *acc, int64_t ld, int64_t cols,
                                            int64_t n, const soniq_epi_params *p,
                                            int64_t param_ld, uint8_t *k, int64_t ks,
                                            const int32_t *perm);
typedef int (*soniq_direct_conv_fn)(const soniq_gemm_job *job, const soniq_requant_out *rq,
                                    int n_threads);
typedef void (*soniq_max_pool2_fn)(const uint8_t *x, int64_t h, int64_t w, int64_t ho,
                                   int64_t wo, int64_t lo, int64_t hi, uint8_t *out);
typedef void (*soniq_residual_span_fn)(const int64_t *acc, const float *skip, int64_t n,
                                       const soniq_residual_params *p, uint8_t *k);
typedef void (*soniq_residual_codes_span_fn)(const int64_t *acc, const uint8_t *codes,
                                             float factor, int64_t n,
                                             const soniq_residual_params *p, uint8_t *k);
typedef int64_t (*soniq_probe_fn)(int64_t iterations);
typedef struct {
    int isa;                                /* SONIQ_SCALAR, SONIQ_AVX2, SONIQ_AVX512 */
    soniq_block_fn engine[SONIQ_ENGINES];   /* by SONIQ_ENGINE_* */
    int flush_assigns;        /* every engine's flush can store instead of add (b->assign) */
    /* tile preparation (tile_prepare.c) */
    soniq_pack_fn pack_planes;              /* planes of a row, returning its sum */
    soniq_int8_prepare_fn int8_prepare;
    soniq_tables_fn lut_tables;             /* 16-entry tables (lut.h) */
    soniq_tables_fn lut64_tables;           /* 64-entry tables (lut_avx512.c), or NULL */
    soniq_gather_fn gather_every_other;     /* idx = start, start + 2, ...; NULL: by index */
    int gather_runs;          /* gather runs of consecutive positions a run at a time */
    int pad_images;           /* conv rows a tile at a time from a padded image copy */
    /* tile output (tile_output.c) and the epilogue (epilogue.c) */
    soniq_epilogue_span_fn epilogue_span;
    soniq_requantize_span_fn requantize_span;
    soniq_requantize_columns_fn requantize_columns;
    soniq_direct_conv_fn direct_conv;       /* fused direct conv, or NULL */
    soniq_residual_span_fn residual_span;   /* the fused residual tail (residual.h) */
    soniq_residual_codes_span_fn residual_codes_span;   /* its identity skip from codes */
    soniq_max_pool2_fn max_pool2;           /* 2 x 2 windows at stride 2, or NULL */
    soniq_probe_fn popcount_probe;          /* or NULL */
} soniq_isa_ops;
/* The table of code path `isa`, or NULL for an unknown one. */
const soniq_isa_ops *soniq_isa_ops_for(int isa);

#endif
