/* The GEMM driver. Output rows are cut into tiles of SONIQ_ROW_TILE rows; each thread takes
 * the next tile not yet taken (so a thread delayed by other work on its core does fewer),
 * gathers every act group's codes of the tile into its own scratch (bit planes and/or
 * shifted bytes, row sums), then runs every block on the tile. Each tile is computed by one
 * thread, and blocks add integer contributions, so the result is the same for any thread
 * count and any schedule.
 * With a fused requantize, the blocks add into a thread-local int64 tile instead, which is
 * requantized to codes right away: the int64 accumulator never goes to memory. */
#include <stdlib.h>
#include <string.h>

#include "soniq_cpu.h"

#ifndef SONIQ_STAGE_MAX_COLS
#define SONIQ_STAGE_MAX_COLS 1536   /* staged row tiles up to 576 KiB (about L2) */
#endif

typedef struct {
    const soniq_gemm_job *job;
    const soniq_requant_out *rq;    /* NULL: the sums go to job->out */
    int64_t next;                   /* first row of the next tile to take */
    int failed;
    /* fused requantize into a column-major tile buffer, or int64 sums staged in a tile
     * buffer (`staged`; laid out like the output, see local_job): buffer column i holds
     * output channel perm[i], and block bi's columns are local_cols[bi] (NULL: channel
     * order) */
    const int32_t *perm;
    const int32_t *const *local_cols;
    int staged;
} run_ctx;

typedef struct {                /* one thread's scratch */
    soniq_act_group view[SONIQ_MAX_GROUPS];
    uint8_t *patch;             /* conv: im2col rows of a tile, [SONIQ_ROW_TILE][K] + slack */
    uint8_t *padded;            /* conv, vector paths: the zero-padded image being read
                                   (NULL: rows built one at a time) */
    int64_t image;              /* which image `padded` holds (-1: none) */
    uint8_t *gathered;
    int64_t *tile;              /* SONIQ_ROW_TILE x SONIQ_TILE_SCRATCH_COLS */
} scratch;

/* Larger images are read one im2col row at a time, without a padded copy. */
#define MAX_PADDED ((int64_t)8 << 20)

/* Whether the group's positions are runs of equal length L > 1 at a constant stride S > L
 * (idx[t] = idx[0] + (t / L) S + t % L, k a multiple of L): sets g->run, g->run_stride. */
static void find_runs(soniq_act_group *g) {
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

/* dst = k positions of src in runs (see find_runs); src holds n bytes. A run is copied as
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

static int64_t lut_row_bytes(const soniq_act_group *g) {
    return g->need_tables == 2 ? soniq_lut64_row_bytes(g->k, g->bits)
                               : soniq_lut_row_bytes(g->k, g->bits);
}

static void scratch_free(scratch *s, int n_groups) {
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

static int scratch_alloc(scratch *s, const soniq_gemm_job *job) {
    size_t k = (size_t)(job->k > 0 ? job->k : 1);
    int ok = 1;
    memset(s, 0, sizeof *s);
    s->image = -1;
    s->patch = (uint8_t *)malloc(SONIQ_ROW_TILE * k + SONIQ_IM2COL_SLACK);
    if (job->conv && job->isa != SONIQ_SCALAR && soniq_padded_bytes(job->conv) <= MAX_PADDED) {
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
        find_runs(v);
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
        if (v->need_tables)
            v->tables = (uint8_t *)calloc((SONIQ_ROW_TILE + SONIQ_ROW_PAD)
                                          * (size_t)lut_row_bytes(v), 1);
        ok = ok && v->rowsum && (!v->need_planes || v->planes) && (!v->need_bytes || v->bytes)
             && (!(v->need_bytes & 2) || v->wide) && (!v->need_tables || v->tables);
    }
    return ok ? 0 : -1;
}

/* Locals throughout: the uint8 stores may alias anything, so fields read in the loops
 * would be reloaded on every element. */
static const uint8_t *gather(const soniq_gemm_job *job, const soniq_act_group *g,
                             const uint8_t *row, uint8_t *buf) {
    if (g->contiguous)
        return row + g->start;
    const int64_t k = g->k;
    if (g->every_other && job->isa != SONIQ_SCALAR) {   /* e.g. channels alternating widths */
        soniq_gather_every_other_avx2(row + g->start, job->k - g->start, k, buf);
        return buf;
    }
    if (g->run && job->isa != SONIQ_SCALAR) {            /* e.g. a conv's windows */
        gather_runs(row, job->k, g, buf);
        return buf;
    }
    const int32_t *idx = g->idx;
    for (int64_t t = 0; t < k; t++)
        buf[t] = row[idx[t]];
    return buf;
}

/* Tile row r of every group from the activation row `row` (K codes). */
static void prepare_row(const soniq_gemm_job *job, scratch *s, int64_t r, const uint8_t *row) {
    for (int gi = 0; gi < job->n_groups; gi++) {
        soniq_act_group *g = &s->view[gi];
        const uint8_t *src = gather(job, g, row, s->gathered);
        if (g->need_planes)
            g->rowsum[r] = soniq_pack_planes(job->isa, src, g->k, g->bits,
                                             g->planes + r * g->bits * g->words, g->words);
        if (g->need_bytes) {
            uint8_t *dst = g->bytes + r * g->kpad;
            int16_t *wide = g->need_bytes & 2 ? g->wide + r * g->kpad : NULL;
            g->rowsum[r] = job->isa >= SONIQ_AVX2
                ? soniq_int8_prepare_avx2(src, g->k, g->shift, dst, wide, g->kpad)
                : soniq_int8_prepare_scalar(src, g->k, g->shift, dst, wide, g->kpad);
        }
        if (g->need_tables) {
            uint8_t *dst = g->tables + r * lut_row_bytes(g);
            g->rowsum[r] = g->need_tables == 2 ? soniq_lut64_tables_avx512(src, g->k, g->bits, dst)
                : job->isa == SONIQ_SCALAR ? soniq_lut_tables_scalar(src, g->k, g->bits, dst)
                : soniq_lut_tables_avx2(src, g->k, g->bits, dst);
        }
    }
}

static int64_t engine_calls[3][SONIQ_ENGINES];

int64_t soniq_engine_calls(int isa, int engine) {
    return __atomic_load_n(&engine_calls[isa][engine], __ATOMIC_RELAXED);
}

static soniq_block_fn engine_for(int isa, int engine) {
    __atomic_add_fetch(&engine_calls[isa][engine], 1, __ATOMIC_RELAXED);
    if (engine == SONIQ_ENGINE_POPCOUNT)
        return isa == SONIQ_AVX512 ? soniq_bitserial_avx512
             : isa == SONIQ_AVX2 ? soniq_bitserial_avx2 : soniq_bitserial_scalar;
    if (engine == SONIQ_ENGINE_LUT)
        return isa == SONIQ_AVX512 ? soniq_lut_avx512
             : isa == SONIQ_AVX2 ? soniq_lut_avx2 : soniq_lut_scalar;
    return isa == SONIQ_AVX512 ? soniq_int8_vnni
         : isa == SONIQ_AVX2 ? soniq_int8_avx2 : soniq_int8_scalar;
}

/* Zero the output rows of a tile just before its blocks add into them: the output array is
 * never cleared beforehand, and these lines are then in cache for the blocks. Rows of one
 * image are consecutive in a column when row_stride is 1 (conv): one memset per column. */
static void zero_rows(const soniq_gemm_job *job, int64_t m0, int64_t rows) {
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

/* The activation rows of a tile: rows of `a`, or im2col rows built in the patch buffer
 * (a whole tile at once from the padded image; the scalar path one row at a time). */
static void prepare_tile(const soniq_gemm_job *job, scratch *s, int64_t m0, int64_t rows) {
    if (job->a) {
        for (int64_t r = 0; r < rows; r++)
            prepare_row(job, s, r, job->a + (m0 + r) * job->k);
        return;
    }
    if (s->padded)
        soniq_im2col_tile(job->conv, m0, rows, s->patch, s->padded, &s->image);
    else
        for (int64_t r = 0; r < rows; r++)
            soniq_im2col_row(job->conv, m0 + r, s->patch + r * job->k);
    for (int64_t r = 0; r < rows; r++)
        prepare_row(job, s, r, s->patch + r * job->k);
}

/* The job the engines see with a fused requantize or staged sums: the same blocks, output
 * rows 0 .. TILE-1 in `buf`, laid out like the final output: [TILE][n_out] for a
 * row-major output, [n_out][TILE] when the rows of a column are consecutive (conv). */
static soniq_gemm_job local_job(const soniq_gemm_job *job, int64_t *buf) {
    soniq_gemm_job local = *job;
    local.out = buf;
    if (job->layout.col_stride == 1)
        local.layout = (soniq_out_layout){SONIQ_ROW_TILE, 0, job->n_out, 1};
    else
        local.layout = (soniq_out_layout){SONIQ_ROW_TILE, 0, 1, SONIQ_ROW_TILE};
    return local;
}

/* Staged sums (see local_job) to the output rows m0 .. m0 + rows - 1. Row-major: channel
 * o of row m0 + r is buf[r][inverse[o]] (one sequential write per output row). Channel
 * planes (conv): buffer column i is channel perm[i], and each run of rows within one image
 * is one copy per channel. */
static void unstage_tile(const soniq_gemm_job *job, const int32_t *perm, const int64_t *buf,
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

static void requantize_span(int isa, const int64_t *acc, int64_t n, const soniq_epi_params *p,
                            uint8_t *k) {
    if (isa >= SONIQ_AVX2)
        soniq_requantize_span_avx2(acc, n, p, k);
    else
        soniq_requantize_span_scalar(acc, n, p, k);
}

/* Codes of output rows m0 .. m0+rows-1 from their sums in buf (see local_job; buffer
 * column i of a column-major buf is channel perm[i]). */
static void requantize_tile(const soniq_gemm_job *job, const soniq_requant_out *rq,
                            const int32_t *perm, const int64_t *buf, int64_t m0, int64_t rows) {
    const soniq_out_layout *l = &job->layout;
    const int64_t n_out = job->n_out, rpi = l->rows_per_image;
    if (l->col_stride == 1) {
        const soniq_epi_params p = {rq->scale, rq->bias, rq->ratio, rq->bits, 1, 1};
        for (int64_t r = 0; r < rows; r++) {
            int64_t m = m0 + r;
            uint8_t *out = rq->codes + (m / rpi) * l->image_stride + (m % rpi) * l->row_stride;
            requantize_span(job->isa, buf + r * n_out, n_out, &p, out);
        }
        return;
    }
    for (int64_t r = 0; r < rows;) {      /* runs of rows within one image */
        const int64_t m = m0 + r, pos = m % rpi;
        const int64_t run = rpi - pos < rows - r ? rpi - pos : rows - r;
        uint8_t *out = rq->codes + (m / rpi) * l->image_stride + pos;
        const int64_t at = rq->per_position ? pos : 0, param_ld = rq->per_position ? rpi : 1;
        const soniq_epi_params p = {rq->scale, rq->bias, rq->ratio + at, rq->bits + at, 0,
                                    rq->per_position};
        if (job->isa >= SONIQ_AVX2)
            soniq_requantize_columns_avx2(buf + r, SONIQ_ROW_TILE, n_out, run, &p, param_ld, out,
                                          l->col_stride, perm);
        else
            soniq_requantize_columns_scalar(buf + r, SONIQ_ROW_TILE, n_out, run, &p, param_ld,
                                            out, l->col_stride, perm);
        r += run;
    }
}

/* One thread: tiles until none is left (lo, hi: its worker index, unused). */
static void run_tiles(void *arg, int64_t lo, int64_t hi) {
    run_ctx *ctx = (run_ctx *)arg;
    const soniq_gemm_job *job = ctx->job;
    const size_t buf_len = (size_t)SONIQ_ROW_TILE * (size_t)job->n_out;
    const int local_rows = ctx->rq || ctx->staged;     /* engines write rows 0.. of buf */
    int64_t *buf = local_rows ? (int64_t *)malloc(sizeof(int64_t) * buf_len) : NULL;
    soniq_gemm_job local = local_job(job, buf);
    const soniq_gemm_job *target = local_rows ? &local : job;
    soniq_block *blocks = (soniq_block *)malloc(sizeof(soniq_block) * (size_t)(job->n_blocks + 1));
    scratch s;
    (void)lo, (void)hi;
    if (scratch_alloc(&s, job) != 0 || (local_rows && !buf) || !blocks) {
        __atomic_store_n(&ctx->failed, 1, __ATOMIC_RELAXED);
        scratch_free(&s, job->n_groups);
        free(buf);
        free(blocks);
        return;
    }
    const int assigned = assign_blocks(job, blocks);
    if (ctx->local_cols)
        for (int bi = 0; bi < job->n_blocks; bi++)
            blocks[bi].cols = ctx->local_cols[bi];
    for (;;) {
        const int64_t m0 = __atomic_fetch_add(&ctx->next, SONIQ_ROW_TILE, __ATOMIC_RELAXED);
        if (m0 >= job->m)
            break;
        const int64_t rows = job->m - m0 < SONIQ_ROW_TILE ? job->m - m0 : SONIQ_ROW_TILE;
        prepare_tile(job, &s, m0, rows);
        if (!assigned) {   /* else the first act group's blocks store every output */
            if (local_rows)
                memset(buf, 0, sizeof(int64_t) * buf_len);
            else
                zero_rows(job, m0, rows);
        }
        for (int bi = 0; bi < job->n_blocks; bi++) {
            const soniq_block *b = &blocks[bi];
            engine_for(job->isa, b->engine)(target, &s.view[b->group], b, local_rows ? 0 : m0,
                                            rows, s.tile);
        }
        if (ctx->rq)
            requantize_tile(job, ctx->rq, ctx->perm, buf, m0, rows);
        else if (ctx->staged)
            unstage_tile(job, ctx->perm, buf, m0, rows);
    }
    scratch_free(&s, job->n_groups);
    free(buf);
    free(blocks);
}

/* For a fused requantize into column-major tiles: a channel order in which the columns of
 * each block of act group 0 are consecutive (so their flushes store whole vectors of
 * channels), and every block's columns in that order. Returns 0, -1 if out of memory. */
static int local_order(const soniq_gemm_job *job, int32_t **perm, int32_t ***local_cols) {
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
 * the sums are staged in a tile buffer in block order and copied out (unstage_tile). */
static int scattered(const soniq_gemm_job *job) {
    for (int bi = 0; bi < job->n_blocks; bi++)
        if (job->blocks[bi].group == 0
            && !soniq_cols_consecutive(job->blocks[bi].cols, job->blocks[bi].n))
            return 1;
    return 0;
}

static int run(const soniq_gemm_job *job, const soniq_requant_out *rq, int n_threads) {
    run_ctx ctx = {job, rq, 0, 0, NULL, NULL, 0};
    const int64_t tiles = (job->m + SONIQ_ROW_TILE - 1) / SONIQ_ROW_TILE;
    int32_t *perm = NULL, **local_cols = NULL;
    if (job->n_groups > SONIQ_MAX_GROUPS)
        return -2;
    ctx.staged = !rq && (job->layout.col_stride == 1 || job->layout.row_stride == 1)
                 && job->n_out <= SONIQ_STAGE_MAX_COLS && scattered(job);
    /* act group 0's blocks cover every channel once, so `order` is a permutation */
    if (((rq && job->layout.col_stride != 1) || ctx.staged) && job->n_groups > 0) {
        if (local_order(job, &perm, &local_cols) != 0)
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
    return run(job, NULL, n_threads);
}

int soniq_gemm_requantize_run(const soniq_gemm_job *job, const soniq_requant_out *rq,
                              int n_threads) {
    if (job->layout.col_stride != 1 && job->layout.row_stride != 1)
        return -3;
    if (rq->per_position && job->layout.col_stride == 1)
        return -3;
    if (job->k > SONIQ_MAX_EXACT_K)     /* the requantize relies on |sum| < 2^31 */
        return -3;
    if (job->direct)
        return soniq_direct_conv_requantize_avx2(job, rq, n_threads);
    return run(job, rq, n_threads);
}
