/* What the C kernels receive from Python, and the values both languages rely on.
 *
 * Every record here is filled field by field, by name, in soniq_fast/cpu/_kernels.pyx from
 * the named records listed in soniq_fast/cpu/records.py (ActGroupRecord -> soniq_act_group,
 * Block -> soniq_block, ConvSource -> soniq_conv_src, OutLayout -> soniq_out_layout,
 * Requantize -> soniq_requant_out, GemmJob -> soniq_gemm_job; _kernels.pxd declares the
 * Cython side); no positional tuple crosses the boundary. Each constant Python reads is defined here once and exported by
 * _kernels.pyx; the _Static_asserts at the end state what the Python side assumes of them.
 */
#ifndef SONIQ_PARAMS_H
#define SONIQ_PARAMS_H

#include <stdint.h>

/* Code paths: an index into the per-ISA dispatch tables (dispatch.c) and into
 * soniq_fast.cpu.isa.ISA_NAMES. */
enum { SONIQ_SCALAR = 0, SONIQ_AVX2 = 1, SONIQ_AVX512 = 2 };
#define SONIQ_ISAS 3
enum { SONIQ_FEATURE_VBMI = 3 };   /* soniq_cpu_has: AVX-512 VBMI (lut_avx512.c) */

/* Engines: an index into a dispatch table's engines and into soniq_fast.cpu.engines. */
enum { SONIQ_ENGINE_POPCOUNT = 0, SONIQ_ENGINE_INT8 = 1, SONIQ_ENGINE_LUT = 2 };
#define SONIQ_ENGINES 3

/* Largest K whose int32 partial sums are exact (|term| <= 255 * 255). */
#define SONIQ_MAX_EXACT_K 33025
/* Largest K of a stride-1 conv run as a direct convolution (direct_conv_avx2.c). */
#define SONIQ_DIRECT_MAX_K 64
/* Act groups of one job: one per activation bit width 1..8. */
#define SONIQ_MAX_GROUPS 8

/* soniq_act_group.need_bytes bits: the int8 engine's uint8 rows; their int16 copies too
 * (AVX2 int8 blocks whose vpmaddubsw sums would not be exact) */
enum { SONIQ_NEED_BYTES = 1, SONIQ_NEED_WIDE = 2 };
/* soniq_act_group.need_tables: none, the 16-entry tables of lut.h, the 64-entry tables of
 * lut_avx512.c */
enum { SONIQ_TABLES_NONE = 0, SONIQ_TABLES_16 = 1, SONIQ_TABLES_64 = 2 };

/* Output channels interleaved per vector in a block's weights (soniq_block.lanes), per
 * engine and code path; the scalar path keeps plain rows (1). */
#define SONIQ_POPCOUNT_LANES_AVX2 4     /* 64-bit lanes of a 256-bit vector */
#define SONIQ_POPCOUNT_LANES_AVX512 8   /* 64-bit lanes of a 512-bit vector */
#define SONIQ_INT8_LANES_AVX2 8         /* 32-bit lanes of a 256-bit vector */
#define SONIQ_INT8_LANES_AVX512 16      /* 32-bit lanes of a 512-bit vector */

typedef struct {
    int bits;               /* activation bit width of the group */
    int shift;              /* A - bits */
    int64_t k;              /* channels in the group */
    const int32_t *idx;     /* their positions in a row, [k] */
    int64_t start;          /* idx is start, start+1, ... when contiguous != 0 */
    int contiguous;
    int every_other;        /* idx is start, start+2, start+4, ... */
    int64_t words;          /* uint64 words per plane row, ceil(k / 64) */
    int64_t kpad;           /* bytes per int8 row (multiple of 64; of 4 on the avx2 path) */
    int need_planes;
    int need_bytes;         /* SONIQ_NEED_BYTES | SONIQ_NEED_WIDE */
    int need_tables;        /* SONIQ_TABLES_*: the lut blocks' row tables */
    /* Not from Python: per-thread scratch for one tile of rows r = 0 .. SONIQ_ROW_TILE - 1
     * (set by tile_scratch.c) */
    uint64_t *planes;       /* [rows][bits][words], planes of the unshifted codes */
    uint8_t *bytes;         /* [rows][kpad], shifted codes a << shift, zero tail */
    int64_t *rowsum;        /* [rows], sum of unshifted codes */
    int16_t *wide;          /* [rows][kpad], the bytes widened to int16 (SONIQ_NEED_WIDE) */
    uint8_t *tables;        /* [rows][soniq_lut_row_bytes(k, bits)], need_tables */
    int64_t run, run_stride;/* idx is runs of `run` consecutive positions, run_stride apart
                               (a conv's kernel window of one input channel per run,
                               channels alternating widths); run 0: not so (tile_prepare.c) */
} soniq_act_group;

typedef struct {
    int engine;             /* SONIQ_ENGINE_* */
    int group;              /* act group index */
    int wbits;              /* popcount: weight bit width of every column; avx2 int8: e, every
                               value v fits e signed bits (e <= bw); other int8: 0 */
    int64_t n;              /* columns */
    const int32_t *cols;    /* output channel of each column, [n] */
    int lanes;              /* output channels interleaved per vector (1: plain rows) */
    const uint64_t *wplanes;/* popcount: [ceil(n/lanes)][wbits][words][lanes] */
    const int8_t *wbytes;   /* int8, v = w - 2^(bw[o]-1): lanes 1: [n][kpad];
                               lanes 16: [ceil(n/16)][kpad/4][16][4];
                               lanes 8 (avx2, one e): [ceil(n/8)][kpad/4][8][4], or when
                               soniq_int8_steps() is 0 int16 [ceil(n/8)][kpad/2][8][2] */
    const uint8_t *wnibbles;/* lut: [ceil(n/16)][wbits][ceil(k/8)][2][16]: byte c of half h of
                               pair p of plane j of vector v is bits j of the codes of
                               channel 16 v + c at K positions 4 q .. 4 q + 3, q = 2 p + h */
    int n_more;             /* lut: more act groups over the same columns, whose sums add into
                               the same tile cells before the one flush (0: none) */
    int more_group[SONIQ_MAX_GROUPS];
    const uint8_t *more_wnibbles[SONIQ_MAX_GROUPS];
    int assign;             /* not from Python, set by gemm.c: this block's flush stores its
                               contribution instead of adding it (the output rows were not
                               zeroed) */
} soniq_block;

/* acc[m, o] lives at out[(m / rpi) * istride + (m % rpi) * rstride + o * cstride] */
typedef struct {
    int64_t rows_per_image, image_stride, row_stride, col_stride;
} soniq_out_layout;

typedef struct {            /* rows are im2col patches of x [B, C, H, W], K ordered (c, r, s) */
    const uint8_t *x;
    const uint8_t *shift;   /* NULL, or per channel [C]: the codes read as x << shift[c] */
    int64_t c, h, w, kh, kw, stride, padding, ho, wo;
} soniq_conv_src;

/* The fused requantize (soniq_gemm_requantize_run): codes (uint8, laid out like
 * job->layout in elements) = requantize(acc) with scale, bias per output channel and bits,
 * ratio per channel, or per (channel, position in the image) when per_position is set.
 * With skip (float32, laid out like the codes; every parameter per channel) the residual
 * tail of residual.h instead: clip(rint(((scale acc + bias) + skip) ratio)); with
 * skip_codes (uint8, laid out like the codes) and skip_factor (float32 per channel) the same
 * with skip = (float)skip_codes * skip_factor[o] (an identity skip). At most one of the two. */
typedef struct {
    const float *scale, *bias, *ratio;
    const uint8_t *bits;
    int per_position;
    uint8_t *codes;
    const float *skip;
    const uint8_t *skip_codes;
    const float *skip_factor;
} soniq_requant_out;

typedef struct {
    const uint8_t *a;       /* [M, K] codes, or NULL when conv is set */
    const soniq_conv_src *conv;
    int64_t m, k;
    int n_groups;
    const soniq_act_group *groups;
    int n_blocks;
    const soniq_block *blocks;
    int64_t *out;           /* written only by the kernels: every element set, never read first */
    int64_t n_out;          /* output channels */
    soniq_out_layout layout;
    int isa;                /* SONIQ_SCALAR, SONIQ_AVX2 or SONIQ_AVX512 */
    /* direct conv (direct_conv_avx2.c), or NULL: q << (A - ba) per output channel and K
     * position, int16 [n_out][direct_k] (direct_k = K rounded up to even, zero padded) */
    const int16_t *direct;
    int64_t direct_k;
} soniq_gemm_job;

/* What the Python side assumes. isa.py's ISA_NAMES and engines.py's ENGINE_NAMES are
 * indexed by these ids, and dispatch.c's tables and the engine counters too. */
_Static_assert(SONIQ_SCALAR == 0 && SONIQ_AVX2 == 1 && SONIQ_AVX512 == 2
               && SONIQ_ISAS == 3, "code paths are 0 .. SONIQ_ISAS - 1 in ISA_NAMES order");
_Static_assert(SONIQ_FEATURE_VBMI >= SONIQ_ISAS, "a feature id is not a code path");
_Static_assert(SONIQ_ENGINE_POPCOUNT == 0 && SONIQ_ENGINE_INT8 == 1 && SONIQ_ENGINE_LUT == 2
               && SONIQ_ENGINES == 3, "engines are 0 .. SONIQ_ENGINES - 1 in ENGINE_NAMES order");
/* packed.py merges the lut blocks of one weight width over every other act group into
 * one block: at most SONIQ_MAX_GROUPS - 1 more parts, one per other activation width */
_Static_assert(SONIQ_MAX_GROUPS == 8, "one act group per activation width 1..8");
_Static_assert(sizeof(((soniq_block *)0)->more_group) / sizeof(int) == SONIQ_MAX_GROUPS
               && sizeof(((soniq_block *)0)->more_wnibbles) / sizeof(void *) == SONIQ_MAX_GROUPS,
               "room for every more part");
_Static_assert((SONIQ_NEED_BYTES & SONIQ_NEED_WIDE) == 0, "need_bytes flags are separate bits");
/* int32 sums are exact: K (255 * 128 + 255 * 255) < 2^31 for every K up to the limit */
_Static_assert((int64_t)SONIQ_MAX_EXACT_K * 255 * 255 <= INT32_MAX,
               "int32 partial sums of K = SONIQ_MAX_EXACT_K terms of |term| <= 255^2 are exact");
_Static_assert(0 < SONIQ_DIRECT_MAX_K && SONIQ_DIRECT_MAX_K <= SONIQ_MAX_EXACT_K,
               "a direct conv's K is within the exact limit");
/* The arrays Python hands over: element sizes of the NumPy dtypes it allocates */
_Static_assert(sizeof(int64_t) == 8 && sizeof(int32_t) == 4 && sizeof(int16_t) == 2
               && sizeof(float) == 4, "int64 / int32 / int16 / float32 arrays");
_Static_assert(SONIQ_POPCOUNT_LANES_AVX2 * 64 == 256 && SONIQ_POPCOUNT_LANES_AVX512 * 64 == 512
               && SONIQ_INT8_LANES_AVX2 * 32 == 256 && SONIQ_INT8_LANES_AVX512 * 32 == 512,
               "one output channel per accumulator lane of a vector");

#endif
