/* The GEMM driver. Output rows are cut into tiles of SONIQ_ROW_TILE rows; each thread takes
 * the next tile not yet taken (so a thread delayed by other work on its core does fewer),
 * gathers every act group's codes of the tile into its own scratch (bit planes and/or
 * shifted bytes, row sums), then runs every block on the tile. Each tile is computed by one
 * thread, and blocks add integer contributions, so the result is the same for any thread
 * count and any schedule.
 * With a fused requantize, the blocks add into a thread-local int64 tile instead, which is
 * requantized to codes right away: the int64 accumulator never goes to memory.
 * The code path's kernels come from its dispatch table (dispatch.c), chosen once per job;
 * the thread's scratch is tile_scratch.c, a tile's preparation tile_prepare.c, where its
 * sums go tile_output.c. */
#include <stdlib.h>
#include <string.h>

#include "gemm_tile.h"

#ifndef SONIQ_STAGE_MAX_COLS
#define SONIQ_STAGE_MAX_COLS 1536   /* staged row tiles up to 576 KiB (about L2) */
#endif

typedef struct {
    const soniq_gemm_job *job;
    const soniq_isa_ops *ops;       /* the job's code path */
    const soniq_requant_out *rq;    /* NULL: the sums go to job->out */
    int64_t next;                   /* first row of the next tile to take */
    int failed;
    /* fused requantize into a column-major tile buffer, or int64 sums staged in a tile
     * buffer (`staged`; laid out like the output, see soniq_local_job): buffer column i holds
     * output channel perm[i], and block bi's columns are local_cols[bi] (NULL: channel
     * order) */
    const int32_t *perm;
    const int32_t *const *local_cols;
    int staged;
} run_ctx;

static int64_t engine_calls[SONIQ_ISAS][SONIQ_ENGINES];

int64_t soniq_engine_calls(int isa, int engine) {
    return __atomic_load_n(&engine_calls[isa][engine], __ATOMIC_RELAXED);
}

/* The code path's kernel of `engine`, counted as one run. */
static soniq_block_fn engine_for(const soniq_isa_ops *ops, int engine) {
    __atomic_add_fetch(&engine_calls[ops->isa][engine], 1, __ATOMIC_RELAXED);
    return ops->engine[engine];
}

/* The job's blocks with `assign` set. The blocks of act group 0 cover every output column
 * exactly once and run first on a tile, so when the code path's flushes can store (those
 * that add each output cell of a block exactly once: ops->flush_assigns), they store and
 * the output rows need no zeroing (returns 1); otherwise no block assigns (returns 0). */
static int assign_blocks(const soniq_gemm_job *job, const soniq_isa_ops *ops,
                         soniq_block *blocks) {
    int all = job->n_groups > 0 && ops->flush_assigns;
    for (int bi = 0; bi < job->n_blocks; bi++)
        blocks[bi] = job->blocks[bi];
    for (int bi = 0; bi < job->n_blocks; bi++)
        blocks[bi].assign = all && blocks[bi].group == 0;
    return all;
}

/* One thread: tiles until none is left (lo, hi: its worker index, unused). */
static void run_tiles(void *arg, int64_t lo, int64_t hi) {
    run_ctx *ctx = (run_ctx *)arg;
    const soniq_gemm_job *job = ctx->job;
    const size_t buf_len = (size_t)SONIQ_ROW_TILE * (size_t)job->n_out;
    const int local_rows = ctx->rq || ctx->staged;     /* engines write rows 0.. of buf */
    int64_t *buf = local_rows ? (int64_t *)malloc(sizeof(int64_t) * buf_len) : NULL;
    soniq_gemm_job local = soniq_local_job(job, buf);
    const soniq_gemm_job *target = local_rows ? &local : job;
    soniq_block *blocks = (soniq_block *)malloc(sizeof(soniq_block) * (size_t)(job->n_blocks + 1));
    soniq_scratch s;
    (void)lo, (void)hi;
    if (soniq_scratch_alloc(&s, job, ctx->ops) != 0 || (local_rows && !buf) || !blocks) {
        __atomic_store_n(&ctx->failed, 1, __ATOMIC_RELAXED);
        soniq_scratch_free(&s, job->n_groups);
        free(buf);
        free(blocks);
        return;
    }
    const int assigned = assign_blocks(job, ctx->ops, blocks);
    if (ctx->local_cols)
        for (int bi = 0; bi < job->n_blocks; bi++)
            blocks[bi].cols = ctx->local_cols[bi];
    for (;;) {
        const int64_t m0 = __atomic_fetch_add(&ctx->next, SONIQ_ROW_TILE, __ATOMIC_RELAXED);
        if (m0 >= job->m)
            break;
        const int64_t rows = job->m - m0 < SONIQ_ROW_TILE ? job->m - m0 : SONIQ_ROW_TILE;
        soniq_prepare_tile(job, ctx->ops, &s, m0, rows);
        if (!assigned) {   /* else the first act group's blocks store every output */
            if (local_rows)
                memset(buf, 0, sizeof(int64_t) * buf_len);
            else
                soniq_zero_rows(job, m0, rows);
        }
        for (int bi = 0; bi < job->n_blocks; bi++) {
            const soniq_block *b = &blocks[bi];
            engine_for(ctx->ops, b->engine)(target, &s.view[b->group], b, local_rows ? 0 : m0,
                                            rows, s.tile);
        }
        if (ctx->rq)
            soniq_requantize_tile(job, ctx->ops, ctx->rq, ctx->perm, buf, m0, rows);
        else if (ctx->staged)
            soniq_unstage_tile(job, ctx->perm, buf, m0, rows);
    }
    soniq_scratch_free(&s, job->n_groups);
    free(buf);
    free(blocks);
}

/* Whether the code path has a kernel for everything the job's act groups need. */
static int runnable(const soniq_gemm_job *job, const soniq_isa_ops *ops) {
    for (int gi = 0; gi < job->n_groups; gi++)
        if (job->groups[gi].need_tables == SONIQ_TABLES_64 && !ops->lut64_tables)
            return 0;
    return 1;
}

static int run(const soniq_gemm_job *job, const soniq_isa_ops *ops, const soniq_requant_out *rq,
               int n_threads) {
    run_ctx ctx = {job, ops, rq, 0, 0, NULL, NULL, 0};
    const int64_t tiles = (job->m + SONIQ_ROW_TILE - 1) / SONIQ_ROW_TILE;
    int32_t *perm = NULL, **local_cols = NULL;
    if (job->n_groups > SONIQ_MAX_GROUPS)
        return -2;
    if (!runnable(job, ops))
        return -3;
    ctx.staged = !rq && (job->layout.col_stride == 1 || job->layout.row_stride == 1)
                 && job->n_out <= SONIQ_STAGE_MAX_COLS && soniq_scattered(job);
    /* act group 0's blocks cover every channel once, so `order` is a permutation */
    if (((rq && job->layout.col_stride != 1) || ctx.staged) && job->n_groups > 0) {
        if (soniq_local_order(job, &perm, &local_cols) != 0)
            return -1;
        ctx.perm = perm;
        ctx.local_cols = (const int32_t *const *)local_cols;
    }
    int rc = soniq_parallel_for(n_threads, tiles, run_tiles, &ctx) != 0 ? -1 : 0;
    free(perm);
    free(local_cols);
    return rc != 0 || ctx.failed ? -1 : 0;
}

int soniq_gemm_run(const soniq_gemm_job *job, int n_threads) {
    const soniq_isa_ops *ops = soniq_isa_ops_for(job->isa);
    return ops ? run(job, ops, NULL, n_threads) : -3;
}

int soniq_gemm_requantize_run(const soniq_gemm_job *job, const soniq_requant_out *rq,
                              int n_threads) {
    const soniq_isa_ops *ops = soniq_isa_ops_for(job->isa);
    if (!ops)
        return -3;
    if (job->layout.col_stride != 1 && job->layout.row_stride != 1)
        return -3;
    if (rq->per_position && job->layout.col_stride == 1)
        return -3;
    if (job->k > SONIQ_MAX_EXACT_K)     /* the requantize relies on |sum| < 2^31 */
        return -3;
    if ((rq->skip || rq->skip_codes) && (rq->per_position || job->direct
                                          || (rq->skip && rq->skip_codes)
                                          || (rq->skip_codes && !rq->skip_factor)))
        return -3;                      /* the residual tail: parameters per channel */
    if (job->direct)
        return ops->direct_conv ? ops->direct_conv(job, rq, n_threads) : -3;
    return run(job, ops, rq, n_threads);
}
