/* The GEMM driver. Threads own disjoint contiguous ranges of output rows. Each thread walks
 * its range in tiles of SONIQ_ROW_TILE rows: it gathers every act group's codes of the tile
 * into its own scratch (bit planes and/or shifted bytes, row sums), then runs every block on
 * the tile. Blocks add integer contributions, so the result is the same for any thread count. */
#include <stdlib.h>
#include <string.h>

#include "soniq_cpu.h"

typedef struct {
    const soniq_gemm_job *job;
    int failed;
} run_ctx;

typedef struct {                /* one thread's scratch */
    soniq_act_group view[SONIQ_MAX_GROUPS];
    uint8_t *patch, *gathered;
    int64_t *tile;              /* SONIQ_ROW_TILE x SONIQ_TILE_COLS */
} scratch;

static void scratch_free(scratch *s, int n_groups) {
    for (int gi = 0; gi < n_groups; gi++) {
        free(s->view[gi].planes);
        free(s->view[gi].bytes);
        free(s->view[gi].rowsum);
        free(s->view[gi].wide);
    }
    free(s->patch);
    free(s->gathered);
    free(s->tile);
}

static int scratch_alloc(scratch *s, const soniq_gemm_job *job) {
    size_t k = (size_t)(job->k > 0 ? job->k : 1);
    int ok = 1;
    memset(s, 0, sizeof *s);
    s->patch = (uint8_t *)malloc(k);
    s->gathered = (uint8_t *)malloc(k);
    s->tile = (int64_t *)malloc(sizeof(int64_t) * SONIQ_ROW_TILE * SONIQ_TILE_COLS);
    ok = s->patch && s->gathered && s->tile;
    for (int gi = 0; gi < job->n_groups; gi++) {
        soniq_act_group *v = &s->view[gi];
        *v = job->groups[gi];
        v->planes = NULL;
        v->bytes = NULL;
        v->wide = NULL;
        v->rowsum = (int64_t *)malloc(sizeof(int64_t) * SONIQ_ROW_TILE);
        /* zeroed, with SONIQ_ROW_PAD spare rows: engines may read rows past the tile */
        if (v->need_planes)
            v->planes = (uint64_t *)calloc((SONIQ_ROW_TILE * (size_t)v->bits + SONIQ_ROW_PAD)
                                           * (size_t)v->words, sizeof(uint64_t));
        if (v->need_bytes)
            v->bytes = (uint8_t *)calloc((SONIQ_ROW_TILE + SONIQ_ROW_PAD) * (size_t)v->kpad, 1);
        if (v->need_bytes & 2)
            v->wide = (int16_t *)calloc((SONIQ_ROW_TILE + SONIQ_ROW_PAD) * (size_t)v->kpad,
                                        sizeof(int16_t));
        ok = ok && v->rowsum && (!v->need_planes || v->planes) && (!v->need_bytes || v->bytes)
             && (!(v->need_bytes & 2) || v->wide);
    }
    return ok ? 0 : -1;
}

/* Locals throughout: the uint8 stores may alias anything, so fields read in the loops
 * would be reloaded on every element. */
static const uint8_t *gather(const soniq_act_group *g, const uint8_t *row, uint8_t *buf) {
    if (g->contiguous)
        return row + g->start;
    const int64_t k = g->k;
    const int32_t *idx = g->idx;
    for (int64_t t = 0; t < k; t++)
        buf[t] = row[idx[t]];
    return buf;
}

/* Tile row r of every group from the activation row `row` (K codes). */
static void prepare_row(const soniq_gemm_job *job, scratch *s, int64_t r, const uint8_t *row) {
    for (int gi = 0; gi < job->n_groups; gi++) {
        soniq_act_group *g = &s->view[gi];
        const uint8_t *src = gather(g, row, s->gathered);
        if (g->need_planes)
            g->rowsum[r] = soniq_pack_planes(job->isa, src, g->k, g->bits,
                                             g->planes + r * g->bits * g->words, g->words);
        if (g->need_bytes) {
            uint8_t *dst = g->bytes + r * g->kpad;
            int16_t *wide = g->need_bytes & 2 ? g->wide + r * g->kpad : NULL;
            g->rowsum[r] = job->isa == SONIQ_AVX2
                ? soniq_int8_prepare_avx2(src, g->k, g->shift, dst, wide, g->kpad)
                : soniq_int8_prepare_scalar(src, g->k, g->shift, dst, wide, g->kpad);
        }
    }
}

static int64_t engine_calls[3][2];

int64_t soniq_engine_calls(int isa, int engine) {
    return __atomic_load_n(&engine_calls[isa][engine], __ATOMIC_RELAXED);
}

static soniq_block_fn engine_for(int isa, int engine) {
    __atomic_add_fetch(&engine_calls[isa][engine], 1, __ATOMIC_RELAXED);
    if (engine == SONIQ_ENGINE_POPCOUNT)
        return isa == SONIQ_AVX512 ? soniq_bitserial_avx512
             : isa == SONIQ_AVX2 ? soniq_bitserial_avx2 : soniq_bitserial_scalar;
    return isa == SONIQ_AVX512 ? soniq_int8_vnni
         : isa == SONIQ_AVX2 ? soniq_int8_avx2 : soniq_int8_scalar;
}

/* Zero the output rows of a tile just before its blocks add into them: the output array is
 * never cleared beforehand, and these lines are then in cache for the blocks. */
static void zero_rows(const soniq_gemm_job *job, int64_t m0, int64_t rows) {
    int64_t cs = job->layout.col_stride;
    for (int64_t r = 0; r < rows; r++) {
        int64_t *out = soniq_out_row(job, m0 + r);
        if (cs == 1)
            memset(out, 0, sizeof(int64_t) * (size_t)job->n_out);
        else
            for (int64_t o = 0; o < job->n_out; o++)
                out[o * cs] = 0;
    }
}

/* Engines whose flush can store (b->assign) instead of adding: those that add each output
 * cell of a block exactly once (the AVX2 engines). */
static int engine_assigns(int isa, int engine) {
    (void)engine;
    return isa == SONIQ_AVX2;
}

/* The job's blocks with `assign` set. The blocks of act group 0 cover every output column
 * exactly once and run first on a tile, so when all of them can store, they store and the
 * output rows need no zeroing (returns 1); otherwise no block assigns (returns 0). */
static int assign_blocks(const soniq_gemm_job *job, soniq_block *blocks) {
    int all = job->n_groups > 0;
    for (int bi = 0; bi < job->n_blocks; bi++) {
        blocks[bi] = job->blocks[bi];
        if (blocks[bi].group == 0 && !engine_assigns(job->isa, blocks[bi].engine))
            all = 0;
    }
    for (int bi = 0; bi < job->n_blocks; bi++)
        blocks[bi].assign = all && blocks[bi].group == 0;
    return all;
}

static void run_rows(void *arg, int64_t lo, int64_t hi) {
    run_ctx *ctx = (run_ctx *)arg;
    const soniq_gemm_job *job = ctx->job;
    scratch s;
    soniq_block *blocks = (soniq_block *)malloc(sizeof(soniq_block) * (size_t)(job->n_blocks + 1));
    if (!blocks || scratch_alloc(&s, job) != 0) {
        __atomic_store_n(&ctx->failed, 1, __ATOMIC_RELAXED);
        if (blocks)
            scratch_free(&s, job->n_groups);
        free(blocks);
        return;
    }
    int assigned = assign_blocks(job, blocks);
    for (int64_t m0 = lo; m0 < hi; m0 += SONIQ_ROW_TILE) {
        int64_t rows = hi - m0 < SONIQ_ROW_TILE ? hi - m0 : SONIQ_ROW_TILE;
        for (int64_t r = 0; r < rows; r++) {
            const uint8_t *row = s.patch;
            if (job->a)
                row = job->a + (m0 + r) * job->k;
            else
                soniq_im2col_row(job->conv, m0 + r, s.patch);
            prepare_row(job, &s, r, row);
        }
        if (!assigned)
            zero_rows(job, m0, rows);
        for (int bi = 0; bi < job->n_blocks; bi++) {
            const soniq_block *b = &blocks[bi];
            engine_for(job->isa, b->engine)(job, &s.view[b->group], b, m0, rows, s.tile);
        }
    }
    scratch_free(&s, job->n_groups);
    free(blocks);
}

int soniq_gemm_run(const soniq_gemm_job *job, int n_threads) {
    run_ctx ctx = {job, 0};
    if (job->n_groups > SONIQ_MAX_GROUPS)
        return -2;
    if (soniq_parallel_for(n_threads, job->m, run_rows, &ctx) != 0)
        return -1;
    return ctx.failed ? -1 : 0;
}
