/* Tile preparation for the GEMM driver (gemm.c): each activation row of a tile (a row of
 * `a`, or an im2col patch of the conv input) is gathered per act group (its K positions
 * idx, read as one span, every other byte, runs of a conv window, or one by one) and turned
 * into what the group's blocks read, in the thread's scratch (tile_scratch.c):
 *   planes  bit planes of the unshifted codes (popcount engine),
 *   bytes   the shifted codes a << (A - ba), zero tail, and their int16 copy (int8 engine),
 *   tables  the lut engine's row tables (lut.h, lut_avx512.c),
 * each with the row sum of the unshifted codes. The kernels are the code path's (dispatch.c). */
#include <string.h>

#include "gemm_tile.h"

/* Whether the group's positions are runs of equal length L > 1 at a constant stride S > L
 * (idx[t] = idx[0] + (t / L) S + t % L, k a multiple of L): sets g->run, g->run_stride. */
void soniq_find_runs(soniq_act_group *g) {
    const int32_t *idx = g->idx;
    const int64_t k = g->k;
    int64_t len = 1;
    g->run = g->run_stride = 0;
    if (g->contiguous || g->every_other || k < 2)
        return;
    while (len < k && idx[len] == idx[0] + len)
        len++;
    if (len < 2 || len == k || k % len != 0)
        return;
    const int64_t stride = (int64_t)idx[len] - idx[0];
    for (int64_t t = 0; t < k; t++)
        if (idx[t] != idx[0] + (t / len) * stride + t % len)
            return;
    g->run = len;
    g->run_stride = stride;
}

/* dst = k positions of src in runs (see soniq_find_runs); src holds n bytes. A run is copied as
 * whole 16-byte (or 8-byte) blocks where source and destination have room for them (the
 * bytes past the run are rewritten by the next run), else byte by byte. */
static void gather_runs(const uint8_t *src, int64_t n, const soniq_act_group *g, uint8_t *dst) {
    const int64_t len = g->run, stride = g->run_stride, k = g->k;
    int64_t t = 0, at = g->idx[0];
    for (; t < k; t += len, at += stride) {
        if (len <= 16 && at + 16 <= n && t + 16 <= k) {
            memcpy(dst + t, src + at, 16);
        } else if (len <= 8 && at + 8 <= n && t + 8 <= k) {
            memcpy(dst + t, src + at, 8);
        } else {
            for (int64_t i = 0; i < len; i++)
                dst[t + i] = src[at + i];
        }
    }
}

/* Locals throughout: the uint8 stores may alias anything, so fields read in the loops
 * would be reloaded on every element. */
static const uint8_t *gather(const soniq_gemm_job *job, const soniq_isa_ops *ops,
                             const soniq_act_group *g, const uint8_t *row, uint8_t *buf) {
    if (g->contiguous)
        return row + g->start;
    const int64_t k = g->k;
    if (g->every_other && ops->gather_every_other) {   /* e.g. channels alternating widths */
        ops->gather_every_other(row + g->start, job->k - g->start, k, buf);
        return buf;
    }
    if (g->run && ops->gather_runs) {                  /* e.g. a conv's windows */
        gather_runs(row, job->k, g, buf);
        return buf;
    }
    const int32_t *idx = g->idx;
    for (int64_t t = 0; t < k; t++)
        buf[t] = row[idx[t]];
    return buf;
}

/* Tile row r of every group from the activation row `row` (K codes). */
static void prepare_row(const soniq_gemm_job *job, const soniq_isa_ops *ops, soniq_scratch *s,
                        int64_t r, const uint8_t *row) {
    for (int gi = 0; gi < job->n_groups; gi++) {
        soniq_act_group *g = &s->view[gi];
        const uint8_t *src = gather(job, ops, g, row, s->gathered);
        if (g->need_planes)
            g->rowsum[r] = ops->pack_planes(src, g->k, g->bits,
                                            g->planes + r * g->bits * g->words, g->words);
        if (g->need_bytes) {
            uint8_t *dst = g->bytes + r * g->kpad;
            int16_t *wide = g->need_bytes & SONIQ_NEED_WIDE ? g->wide + r * g->kpad : NULL;
            g->rowsum[r] = ops->int8_prepare(src, g->k, g->shift, dst, wide, g->kpad);
        }
        if (g->need_tables) {
            uint8_t *dst = g->tables + r * soniq_group_table_bytes(g);
            const soniq_tables_fn tables = g->need_tables == SONIQ_TABLES_64 ? ops->lut64_tables
                                                                             : ops->lut_tables;
            g->rowsum[r] = tables(src, g->k, g->bits, dst);
        }
    }
}

/* The activation rows of a tile: rows of `a`, or im2col rows built in the patch buffer
 * (a whole tile at once from the padded image where the code path pads images, else one
 * row at a time). */
void soniq_prepare_tile(const soniq_gemm_job *job, const soniq_isa_ops *ops, soniq_scratch *s,
                        int64_t m0, int64_t rows) {
    if (job->a) {
        for (int64_t r = 0; r < rows; r++)
            prepare_row(job, ops, s, r, job->a + (m0 + r) * job->k);
        return;
    }
    if (s->padded)
        soniq_im2col_tile(job->conv, m0, rows, s->patch, s->padded, &s->image);
    else
        for (int64_t r = 0; r < rows; r++)
            soniq_im2col_row(job->conv, m0 + r, s->patch + r * job->k);
    for (int64_t r = 0; r < rows; r++)
        prepare_row(job, ops, s, r, s->patch + r * job->k);
}

