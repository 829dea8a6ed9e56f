/* One thread's scratch for the GEMM driver (gemm.c): a view of every act group (its record
 * from Python plus buffers for one tile of SONIQ_ROW_TILE rows and SONIQ_ROW_PAD spare rows,
 * zeroed, so engines may compute past the tile), the im2col patch rows of a conv tile, the
 * padded image they are cut from (vector paths), and the engines' int64 tile of sums. */
#include <stdlib.h>
#include <string.h>

#include "gemm_tile.h"

/* Larger images are read one im2col row at a time, without a padded copy. */
#define MAX_PADDED ((int64_t)8 << 20)

void soniq_scratch_free(soniq_scratch *s, int n_groups) {
    for (int gi = 0; gi < n_groups; gi++) {
        free(s->view[gi].planes);
        free(s->view[gi].bytes);
        free(s->view[gi].rowsum);
        free(s->view[gi].wide);
        free(s->view[gi].tables);
    }
    free(s->patch);
    free(s->padded);
    free(s->gathered);
    free(s->tile);
}

int soniq_scratch_alloc(soniq_scratch *s, const soniq_gemm_job *job, const soniq_isa_ops *ops) {
    size_t k = (size_t)(job->k > 0 ? job->k : 1);
    int ok = 1;
    memset(s, 0, sizeof *s);
    s->image = -1;
    s->patch = (uint8_t *)malloc(SONIQ_ROW_TILE * k + SONIQ_IM2COL_SLACK);
    if (job->conv && ops->pad_images && soniq_padded_bytes(job->conv) <= MAX_PADDED) {
        s->padded = (uint8_t *)calloc((size_t)soniq_padded_bytes(job->conv), 1);
        ok = s->padded != NULL;
    }
    s->gathered = (uint8_t *)malloc(k);
    s->tile = (int64_t *)malloc(sizeof(int64_t) * SONIQ_ROW_TILE * SONIQ_TILE_SCRATCH_COLS);
    ok = ok && s->patch && s->gathered && s->tile;
    for (int gi = 0; gi < job->n_groups; gi++) {
        soniq_act_group *v = &s->view[gi];
        *v = job->groups[gi];
        v->planes = NULL;
        v->bytes = NULL;
        v->wide = NULL;
        v->tables = NULL;
        soniq_find_runs(v);
        v->rowsum = (int64_t *)malloc(sizeof(int64_t) * SONIQ_ROW_TILE);
        /* zeroed, with SONIQ_ROW_PAD spare rows: engines may read rows past the tile */
        if (v->need_planes)
            v->planes = (uint64_t *)calloc((SONIQ_ROW_TILE * (size_t)v->bits + SONIQ_ROW_PAD)
                                           * (size_t)v->words, sizeof(uint64_t));
        if (v->need_bytes)
            v->bytes = (uint8_t *)calloc((SONIQ_ROW_TILE + SONIQ_ROW_PAD) * (size_t)v->kpad, 1);
        if (v->need_bytes & SONIQ_NEED_WIDE)
            v->wide = (int16_t *)calloc((SONIQ_ROW_TILE + SONIQ_ROW_PAD) * (size_t)v->kpad,
                                        sizeof(int16_t));
        if (v->need_tables)
            v->tables = (uint8_t *)calloc((SONIQ_ROW_TILE + SONIQ_ROW_PAD)
                                          * (size_t)soniq_group_table_bytes(v), 1);
        ok = ok && v->rowsum && (!v->need_planes || v->planes) && (!v->need_bytes || v->bytes)
             && (!(v->need_bytes & SONIQ_NEED_WIDE) || v->wide) && (!v->need_tables || v->tables);
    }
    return ok ? 0 : -1;
}

