/* Tile output for the GEMM driver (gemm.c): where a tile's int64 sums go and how. Either
 * the engines add into the output rows themselves (zeroed here first, unless the first act
 * group's blocks store), or into a thread-local tile buffer laid out like the output
 * (soniq_local_job) that is then copied out in channel order (soniq_unstage_tile: staged
 * sums of a layer whose widths interleave) or requantized to uint8 codes right away
 * (soniq_requantize_tile: the fused requantize, with the code path's kernels). */
#include <stdlib.h>
#include <string.h>

#include "gemm_tile.h"

/* Zero the output rows of a tile just before its blocks add into them: the output array is
 * never cleared beforehand, and these lines are then in cache for the blocks. Rows of one
 * image are consecutive in a column when row_stride is 1 (conv): one memset per column. */
void soniq_zero_rows(const soniq_gemm_job *job, int64_t m0, int64_t rows) {
    const int64_t cs = job->layout.col_stride, rpi = job->layout.rows_per_image;
    const int64_t n_out = job->n_out;
    if (cs == 1) {
        for (int64_t r = 0; r < rows; r++)
            memset(soniq_out_row(job, m0 + r), 0, sizeof(int64_t) * (size_t)n_out);
        return;
    }
    if (job->layout.row_stride == 1) {
        for (int64_t r = 0; r < rows;) {
            int64_t run = rpi - (m0 + r) % rpi;
            run = run < rows - r ? run : rows - r;
            int64_t *out = soniq_out_row(job, m0 + r);
            for (int64_t o = 0; o < n_out; o++)
                memset(out + o * cs, 0, sizeof(int64_t) * (size_t)run);
            r += run;
        }
        return;
    }
    for (int64_t r = 0; r < rows; r++) {
        int64_t *out = soniq_out_row(job, m0 + r);
        for (int64_t o = 0; o < n_out; o++)
            out[o * cs] = 0;
    }
}


/* The job the engines see with a fused requantize or staged sums: the same blocks, output
 * rows 0 .. TILE-1 in `buf`, laid out like the final output: [TILE][n_out] for a
 * row-major output, [n_out][TILE] when the rows of a column are consecutive (conv). */
soniq_gemm_job soniq_local_job(const soniq_gemm_job *job, int64_t *buf) {
    soniq_gemm_job local = *job;
    local.out = buf;
    if (job->layout.col_stride == 1)
        local.layout = (soniq_out_layout){SONIQ_ROW_TILE, 0, job->n_out, 1};
    else
        local.layout = (soniq_out_layout){SONIQ_ROW_TILE, 0, 1, SONIQ_ROW_TILE};
    return local;
}

/* Staged sums (see soniq_local_job) to the output rows m0 .. m0 + rows - 1. Row-major: channel
 * o of row m0 + r is buf[r][inverse[o]] (one sequential write per output row). Channel
 * planes (conv): buffer column i is channel perm[i], and each run of rows within one image
 * is one copy per channel. */
void soniq_unstage_tile(const soniq_gemm_job *job, const int32_t *perm, const int64_t *buf,
                        int64_t m0, int64_t rows) {
    const soniq_out_layout *l = &job->layout;
    const int64_t n_out = job->n_out, rpi = l->rows_per_image;
    if (l->col_stride == 1) {
        const int32_t *inverse = perm + n_out;
        for (int64_t r = 0; r < rows; r++) {
            int64_t *out = soniq_out_row(job, m0 + r);
            const int64_t *src = buf + r * n_out;
            for (int64_t o = 0; o < n_out; o++)
                out[o] = src[inverse[o]];
        }
        return;
    }
    for (int64_t r = 0; r < rows;) {      /* row_stride 1: a run's rows are adjacent */
        const int64_t m = m0 + r, pos = m % rpi;
        const int64_t run = rpi - pos < rows - r ? rpi - pos : rows - r;
        int64_t *out = job->out + (m / rpi) * l->image_stride + pos;
        for (int64_t i = 0; i < n_out; i++)
            memcpy(out + perm[i] * l->col_stride, buf + i * SONIQ_ROW_TILE + r,
                   sizeof(int64_t) * (size_t)run);
        r += run;
    }
}

/* One channel's parameters of the residual tail (residual.h). */
static inline soniq_residual_params residual_params(const soniq_requant_out *rq, int64_t o) {
    const soniq_residual_params p = {rq->scale[o], rq->bias[o], rq->ratio[o],
                                     (float)((1 << rq->bits[o]) - 1)};
    return p;
}

/* The residual tail of channel o's n sums `acc`, whose codes and skip start at element at. */
static inline void residual_run(const soniq_isa_ops *ops, const soniq_requant_out *rq,
                                int64_t o, const int64_t *acc, int64_t at, int64_t n) {
    const soniq_residual_params p = residual_params(rq, o);
    if (rq->skip_codes)
        ops->residual_codes_span(acc, rq->skip_codes + at, rq->skip_factor[o], n, &p,
                                 rq->codes + at);
    else
        ops->residual_span(acc, rq->skip + at, n, &p, rq->codes + at);
}

/* The residual tail of a run of n rows within an image, from a column-major tile: buffer
 * column i (sums at buf + i SONIQ_ROW_TILE) is channel o = perm[i] (i without perm), whose
 * codes and skip values start at element `at` + o col_stride. */
static void residual_columns(const soniq_gemm_job *job, const soniq_isa_ops *ops,
                             const soniq_requant_out *rq, const int32_t *perm,
                             const int64_t *buf, int64_t at, int64_t n) {
    const int64_t cs = job->layout.col_stride;
    for (int64_t i = 0; i < job->n_out; i++) {
        const int64_t o = perm ? perm[i] : i;
        residual_run(ops, rq, o, buf + i * SONIQ_ROW_TILE, at + o * cs, n);
    }
}

/* Codes of output rows m0 .. m0+rows-1 from their sums in buf (see soniq_local_job; buffer
 * column i of a column-major buf is channel perm[i]). */
void soniq_requantize_tile(const soniq_gemm_job *job, const soniq_isa_ops *ops,
                           const soniq_requant_out *rq, const int32_t *perm,
                           const int64_t *buf, int64_t m0, int64_t rows) {
    const soniq_out_layout *l = &job->layout;
    const int64_t n_out = job->n_out, rpi = l->rows_per_image;
    if (l->col_stride == 1) {
        const soniq_epi_params p = {rq->scale, rq->bias, rq->ratio, rq->bits, 1, 1};
        for (int64_t r = 0; r < rows; r++) {
            int64_t m = m0 + r, at = (m / rpi) * l->image_stride + (m % rpi) * l->row_stride;
            if (rq->skip || rq->skip_codes)     /* a 1 x 1 output: one element per channel */
                for (int64_t o = 0; o < n_out; o++)
                    residual_run(ops, rq, o, buf + r * n_out + o, at + o, 1);
            else
                ops->requantize_span(buf + r * n_out, n_out, &p, rq->codes + at);
        }
        return;
    }
    for (int64_t r = 0; r < rows;) {      /* runs of rows within one image */
        const int64_t m = m0 + r, pos = m % rpi;
        const int64_t run = rpi - pos < rows - r ? rpi - pos : rows - r;
        uint8_t *out = rq->codes + (m / rpi) * l->image_stride + pos;
        if (rq->skip || rq->skip_codes) {
            residual_columns(job, ops, rq, perm, buf + r, m / rpi * l->image_stride + pos,
                             run);
            r += run;
            continue;
        }
        const int64_t at = rq->per_position ? pos : 0, param_ld = rq->per_position ? rpi : 1;
        const soniq_epi_params p = {rq->scale, rq->bias, rq->ratio + at, rq->bits + at, 0,
                                    rq->per_position};
        ops->requantize_columns(buf + r, SONIQ_ROW_TILE, n_out, run, &p, param_ld, out,
                                l->col_stride, perm);
        r += run;
    }
}

/* For a fused requantize into column-major tiles: a channel order in which the columns of
 * each block of act group 0 are consecutive (so their flushes store whole vectors of
 * channels), and every block's columns in that order. Returns 0, -1 if out of memory. */
int soniq_local_order(const soniq_gemm_job *job, int32_t **perm, int32_t ***local_cols) {
    const int64_t n_out = job->n_out;
    int64_t total = 0;
    for (int bi = 0; bi < job->n_blocks; bi++)
        total += job->blocks[bi].n;
    int32_t *order = (int32_t *)malloc(sizeof(int32_t) * (size_t)(2 * n_out + total + 1));
    int32_t **cols = (int32_t **)malloc(sizeof(int32_t *) * (size_t)(job->n_blocks + 1));
    if (!order || !cols) {
        free(order);
        free(cols);
        return -1;
    }
    int32_t *inverse = order + n_out, *next = inverse + n_out;
    int64_t i = 0;
    for (int bi = 0; bi < job->n_blocks; bi++)
        if (job->blocks[bi].group == 0)
            for (int64_t j = 0; j < job->blocks[bi].n; j++) {
                order[i] = job->blocks[bi].cols[j];
                inverse[order[i]] = (int32_t)i;
                i++;
            }
    for (int bi = 0; bi < job->n_blocks; bi++) {
        cols[bi] = next;
        for (int64_t j = 0; j < job->blocks[bi].n; j++)
            *next++ = inverse[job->blocks[bi].cols[j]];
    }
    *perm = order;
    *local_cols = cols;
    return 0;
}

/* Whether some block of act group 0 has columns that are not consecutive channels (the
 * widths of a mixed layer interleave): its flushes would store one element at a time, so
 * the sums are staged in a tile buffer in block order and copied out (soniq_unstage_tile). */
int soniq_scattered(const soniq_gemm_job *job) {
    for (int bi = 0; bi < job->n_blocks; bi++)
        if (job->blocks[bi].group == 0
            && !soniq_cols_consecutive(job->blocks[bi].cols, job->blocks[bi].n))
            return 1;
    return 0;
}

