/* The parts of the GEMM driver (gemm.c) that live in their own files:
 *   tile_scratch.c  one thread's scratch: a view of every act group with buffers for one tile
 *   tile_prepare.c  a tile's activation rows (rows of `a` or im2col patches) gathered per act
 *                   group into that scratch: bit planes, shifted bytes, lut tables, row sums
 *   tile_output.c   a tile's sums to the output: zeroing, staged sums, the fused requantize
 * Each takes the code path's dispatch table (soniq_isa_ops) chosen once by the driver. */
#ifndef SONIQ_GEMM_TILE_H
#define SONIQ_GEMM_TILE_H

#include "lut.h"
#include "soniq_cpu.h"

typedef struct {                /* one thread's scratch */
    soniq_act_group view[SONIQ_MAX_GROUPS];
    uint8_t *patch;             /* conv: im2col rows of a tile, [SONIQ_ROW_TILE][K] + slack */
    uint8_t *padded;            /* conv, vector paths: the zero-padded image being read
                                   (NULL: rows built one at a time) */
    int64_t image;              /* which image `padded` holds (-1: none) */
    uint8_t *gathered;
    int64_t *tile;              /* SONIQ_ROW_TILE x SONIQ_TILE_SCRATCH_COLS */
} soniq_scratch;

/* Bytes of one row's lut tables in act group g (16- or 64-entry, by g->need_tables). */
static inline int64_t soniq_group_table_bytes(const soniq_act_group *g) {
    return g->need_tables == SONIQ_TABLES_64 ? soniq_lut64_row_bytes(g->k, g->bits)
                                             : soniq_lut_row_bytes(g->k, g->bits);
}

/* tile_scratch.c: returns 0, or -1 (and frees what it took) when out of memory */
int soniq_scratch_alloc(soniq_scratch *s, const soniq_gemm_job *job, const soniq_isa_ops *ops);
void soniq_scratch_free(soniq_scratch *s, int n_groups);

/* tile_prepare.c */
void soniq_find_runs(soniq_act_group *g);
void soniq_prepare_tile(const soniq_gemm_job *job, const soniq_isa_ops *ops, soniq_scratch *s,
                        int64_t m0, int64_t rows);

/* tile_output.c */
void soniq_zero_rows(const soniq_gemm_job *job, int64_t m0, int64_t rows);
soniq_gemm_job soniq_local_job(const soniq_gemm_job *job, int64_t *buf);
void soniq_unstage_tile(const soniq_gemm_job *job, const int32_t *perm, const int64_t *buf,
                        int64_t m0, int64_t rows);
void soniq_requantize_tile(const soniq_gemm_job *job, const soniq_isa_ops *ops,
                           const soniq_requant_out *rq, const int32_t *perm,
                           const int64_t *buf, int64_t m0, int64_t rows);
int soniq_local_order(const soniq_gemm_job *job, int32_t **perm, int32_t ***local_cols);
int soniq_scattered(const soniq_gemm_job *job);

#endif
