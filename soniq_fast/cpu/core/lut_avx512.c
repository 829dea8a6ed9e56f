/* lut engine with AVX-512 VBMI: 64-entry tables of 6 K positions, 64 channels per lookup.
 * (An AVX-512 CPU without VBMI packs the 16-entry layout and runs lut_avx2.c.)
 *
 * The sums are the lut engine's (lut.h, lut_scalar.c is the reading copy) with groups of 6
 * K positions instead of 4: a row of k activation codes (unshifted, width `bits`) is cut into
 * G = ceil(k / 6) groups q (codes past k are 0), each with the 64-entry table
 *
 *     T_q[i] = sum_{u<6} bit_u(i) a[6 q + u]                (bits <= 4: entries <= 90)
 *
 * or, for bits > 4, two: T_q^0 of the low nibbles a & 15 and T_q^1 of the high nibbles a >> 4.
 * Weight plane j of a channel gives per group the 6-bit index sum_u bit_j(w[6 q + u]) 2^u, and
 * sum_c bit_j(w_c) a_c = sum_q T_q[index_q]; P = sum_j 2^j of those sums.
 *
 *   tables of a row: [G][tables][64] bytes (soniq_lut64_row_bytes);
 *   weights (block lanes 64): [ceil(n/64)][bw][G][64]: byte c of group q of plane j of vector
 *     v is the index of channel 64 v + c.
 *
 * vpermb looks a whole 512-bit table up for 64 index bytes: 64 channels x 6 K positions per
 * instruction (vpshufb: 16 x 4 per 128-bit lane). Byte sums run while no byte can pass 255,
 * are widened to uint16 (two tables: lo + 16 hi by vpmaddubsw) and, per K block (before
 * uint16 could wrap), go shifted by plane j into the int64 tile, whose 64 columns are one
 * chunk of CHUNK_VECTORS vectors of channels. The flush is the popcount engine's. */
#pragma GCC target("avx2,avx512f,avx512bw,avx512vbmi")
#include <immintrin.h>
#include <string.h>

#include "lut.h"
#include "soniq_cpu.h"

#define LANES SONIQ_LUT64_LANES
#define CHUNK_VECTORS 4
#define LD (CHUNK_VECTORS * LANES)  /* tile columns: one chunk of vectors */
#define MR1 2          /* rows per register tile, one table: 8 byte sums + 16 uint16 sums +
                          4 index vectors + table */
#define MR2 1          /* two tables */
#define MR (MR1 > MR2 ? MR1 : MR2)
#define NX 4           /* expanded vectors (vector, weight plane) per register tile */
#define K_BLOCK 512    /* groups per pass, one table: uint16 sums <= 512 * 90 */
#define K_BLOCK2 40    /* two tables: lo + 16 hi <= 40 * 90 * 17 */

int64_t soniq_lut64_groups(int64_t k) { return (k + 5) / 6; }

int64_t soniq_lut64_row_bytes(int64_t k, int bits) {
    return soniq_lut64_groups(k) * soniq_lut_tables(bits) * 64;
}

/* ---------------------------------------------------------------- the tables of a row */

/* Tables of 4 groups (24 codes in `codes`, bytes 0..23) to dst (tables apart `ld` bytes;
 * `count` of them stored). Lane g first gathers the 8-entry subset sums of the group's first
 * three codes (bytes 0..7) and of its last three (8..15), then T_g[i] = LH_g[i & 7] +
 * LH_g[8 + (i >> 3)]. */
static inline __attribute__((always_inline))
void four_groups(__m512i codes, const __m512i pick[3], const __mmask64 keep[3],
                 const __m512i lo[4], const __m512i hi[4], uint8_t *dst, int64_t ld, int count) {
    __m512i lh = _mm512_maskz_permutexvar_epi8(keep[0], pick[0], codes);
    lh = _mm512_add_epi8(lh, _mm512_maskz_permutexvar_epi8(keep[1], pick[1], codes));
    lh = _mm512_add_epi8(lh, _mm512_maskz_permutexvar_epi8(keep[2], pick[2], codes));
    for (int g = 0; g < count; g++)
        _mm512_storeu_si512((void *)(dst + g * ld),
                            _mm512_add_epi8(_mm512_permutexvar_epi8(lo[g], lh),
                                            _mm512_permutexvar_epi8(hi[g], lh)));
}

static const uint8_t IOTA[64] __attribute__((aligned(64))) = {
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
    16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31,
    32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47,
    48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63,
};

int64_t soniq_lut64_tables_avx512(const uint8_t *src, int64_t k, int bits, uint8_t *dst) {
    const int n_tables = soniq_lut_tables(bits);
    const int64_t groups = soniq_lut64_groups(k);
    /* byte b of lane g = b / 16, u = b % 16: pick[t] = 6 g + t (u < 8) or 6 g + 3 + t, kept
     * where bit t of u & 7 is set; table i of lane g: lo = 16 g + (i & 7), hi = 16 g + 8 +
     * (i >> 3) */
    const __m512i iota = _mm512_load_si512((const void *)IOTA), seven = _mm512_set1_epi8(7);
    const __m512i u7 = _mm512_and_si512(iota, seven);
    const __m512i lane = _mm512_and_si512(_mm512_srli_epi16(iota, 4), _mm512_set1_epi8(3));
    const __m512i upper = _mm512_and_si512(_mm512_srli_epi16(iota, 3), _mm512_set1_epi8(1));
    const __m512i base = _mm512_add_epi8(_mm512_add_epi8(_mm512_add_epi8(lane, lane),
                                                         _mm512_add_epi8(lane, lane)),
                                         _mm512_add_epi8(_mm512_add_epi8(lane, lane),
                                                         _mm512_add_epi8(_mm512_add_epi8(upper, upper),
                                                                         upper)));
    __m512i pick[3], lo[4], hi[4];
    __mmask64 keep[3];
    for (int t = 0; t < 3; t++) {
        pick[t] = _mm512_add_epi8(base, _mm512_set1_epi8((char)t));
        keep[t] = _mm512_test_epi8_mask(u7, _mm512_set1_epi8((char)(1 << t)));
    }
    const __m512i i_hi = _mm512_and_si512(_mm512_srli_epi16(iota, 3), seven);
    for (int g = 0; g < 4; g++) {
        lo[g] = _mm512_add_epi8(u7, _mm512_set1_epi8((char)(16 * g)));
        hi[g] = _mm512_add_epi8(i_hi, _mm512_set1_epi8((char)(16 * g + 8)));
    }
    const __m512i low = _mm512_set1_epi8(15);
    __m512i sums = _mm512_setzero_si512();
    const int64_t ld = n_tables * 64;
    for (int64_t q = 0; q < groups; q += 4) {
        const int64_t c0 = 6 * q, left = k - c0;
        const __mmask64 in = left >= 24 ? (((__mmask64)1 << 24) - 1)
                                        : (((__mmask64)1 << left) - 1);
        const __m512i codes = _mm512_maskz_loadu_epi8(in, src + c0);
        sums = _mm512_add_epi64(sums, _mm512_sad_epu8(codes, _mm512_setzero_si512()));
        const int count = groups - q < 4 ? (int)(groups - q) : 4;
        uint8_t *out = dst + q * ld;
        if (n_tables == 1) {
            four_groups(codes, pick, keep, lo, hi, out, ld, count);
        } else {
            four_groups(_mm512_and_si512(codes, low), pick, keep, lo, hi, out, ld, count);
            four_groups(_mm512_and_si512(_mm512_srli_epi16(codes, 4), low), pick, keep, lo, hi,
                        out + 64, ld, count);
        }
    }
    return _mm512_reduce_add_epi64(sums);
}

/* ---------------------------------------------------------------- the engine */

/* Add (store when `first`) the uint16 sums of 32 channels to the tile row: `sums` holds, in
 * lane L, the channels 16 L + 8 h .. 16 L + 8 h + 7. */
static inline __attribute__((always_inline))
void spill(int64_t *row, __m512i sums, int h, int shift, int first) {
    const __m128i count = _mm_cvtsi32_si128(shift);
    for (int lane = 0; lane < 4; lane++) {
        const __m128i part = lane == 0 ? _mm512_castsi512_si128(sums)
                           : lane == 1 ? _mm512_extracti32x4_epi32(sums, 1)
                           : lane == 2 ? _mm512_extracti32x4_epi32(sums, 2)
                                       : _mm512_extracti32x4_epi32(sums, 3);
        int64_t *dst = row + 16 * lane + 8 * h;
        __m512i v = _mm512_sll_epi64(_mm512_cvtepu16_epi64(part), count);
        if (!first)
            v = _mm512_add_epi64(_mm512_loadu_si512((const void *)dst), v);
        _mm512_storeu_si512((void *)dst, v);
    }
}

/* Rows r0 .. r0 + mr - 1 against expanded vectors x0 .. x0 + nx - 1 (x = v bw + j), groups
 * kb .. kb_end - 1 of one part: P into tile cells (row, 64 (v - v_lo) + channel), stored by
 * the first contribution to a cell (`first` part, K block 0, plane 0). */
static inline __attribute__((always_inline))
void micro(const soniq_lut_part *part, const soniq_block *b, int first, int64_t r0,
           int64_t rows, int64_t x0, int nx, int64_t v_lo, int64_t kb, int64_t kb_end, int mr,
           int nt, int64_t *tile) {
    const soniq_act_group *g = part->g;
    const int64_t groups = soniq_lut64_groups(g->k), row_bytes = soniq_lut64_row_bytes(g->k, g->bits);
    const int entry = 6 * ((1 << (g->bits < 4 ? g->bits : 4)) - 1);
    const int64_t run = 255 / entry;
    const uint8_t *tables = g->tables + r0 * row_bytes;
    const uint8_t *w = part->wnibbles + x0 * groups * 64;
    const int64_t xs = groups * 64;          /* bytes from one expanded vector to the next */
    const __m512i zero = _mm512_setzero_si512(), lo_hi = _mm512_set1_epi16(16 << 8 | 1);
    __m512i sums[MR][NX][2];
    for (int r = 0; r < mr; r++)
        for (int x = 0; x < nx; x++)
            sums[r][x][0] = sums[r][x][1] = zero;
    for (int64_t q0 = kb; q0 < kb_end; q0 += run) {
        const int64_t q1 = kb_end - q0 < run ? kb_end : q0 + run;
        __m512i acc[MR][NX][2];
        for (int r = 0; r < mr; r++)
            for (int x = 0; x < nx; x++)
                for (int t = 0; t < nt; t++)
                    acc[r][x][t] = zero;
        for (int64_t q = q0; q < q1; q++) {
            __m512i idx[NX];
            for (int x = 0; x < nx; x++)
                idx[x] = _mm512_loadu_si512((const void *)(w + x * xs + q * 64));
            for (int r = 0; r < mr; r++)
                for (int t = 0; t < nt; t++) {
                    const __m512i table = _mm512_loadu_si512(
                        (const void *)(tables + r * row_bytes + (q * nt + t) * 64));
                    for (int x = 0; x < nx; x++)
                        acc[r][x][t] = _mm512_add_epi8(acc[r][x][t],
                                                       _mm512_permutexvar_epi8(idx[x], table));
                }
        }
        for (int r = 0; r < mr; r++)
            for (int x = 0; x < nx; x++) {
                if (nt == 1) {
                    sums[r][x][0] = _mm512_add_epi16(sums[r][x][0],
                                                     _mm512_unpacklo_epi8(acc[r][x][0], zero));
                    sums[r][x][1] = _mm512_add_epi16(sums[r][x][1],
                                                     _mm512_unpackhi_epi8(acc[r][x][0], zero));
                } else {
                    const __m512i l = acc[r][x][0], h = acc[r][x][1];
                    sums[r][x][0] = _mm512_add_epi16(
                        sums[r][x][0], _mm512_maddubs_epi16(_mm512_unpacklo_epi8(l, h), lo_hi));
                    sums[r][x][1] = _mm512_add_epi16(
                        sums[r][x][1], _mm512_maddubs_epi16(_mm512_unpackhi_epi8(l, h), lo_hi));
                }
            }
    }
    for (int r = 0; r < mr && r0 + r < rows; r++)
        for (int x = 0; x < nx; x++) {
            const int64_t v = (x0 + x) / b->wbits;
            const int j = (int)((x0 + x) % b->wbits);
            int64_t *row = tile + (r0 + r) * LD + (v - v_lo) * LANES;
            for (int h = 0; h < 2; h++)
                spill(row, sums[r][x][h], h, j + part->shift, first && kb == 0 && j == 0);
        }
}

typedef void (*tile_fn)(const soniq_lut_part *part, const soniq_block *b, int first,
                        int64_t rows, int64_t x0, int64_t v_lo, int64_t kb, int64_t kb_end,
                        int64_t *tile);
#define TILE_FN(nx_, nt_, mr_)                                                               \
    static __attribute__((noinline)) void tile_##nx_##_##nt_(                              \
        const soniq_lut_part *part, const soniq_block *b, int first, int64_t rows,         \
        int64_t x0, int64_t v_lo, int64_t kb, int64_t kb_end, int64_t *tile) {             \
        for (int64_t r0 = 0; r0 < rows; r0 += mr_)                                         \
            micro(part, b, first, r0, rows, x0, nx_, v_lo, kb, kb_end, mr_, nt_, tile);    \
    }
TILE_FN(1, 1, MR1) TILE_FN(2, 1, MR1) TILE_FN(3, 1, MR1) TILE_FN(4, 1, MR1)
TILE_FN(1, 2, MR2) TILE_FN(2, 2, MR2) TILE_FN(3, 2, MR2) TILE_FN(4, 2, MR2)
#undef TILE_FN
static const tile_fn TILES[2][NX] = {
    {tile_1_1, tile_2_1, tile_3_1, tile_4_1},
    {tile_1_2, tile_2_2, tile_3_2, tile_4_2},
};

/* Chunks of CHUNK_VECTORS vectors (256 channels): every row's tables are read once per
 * chunk, K blocks of K_BLOCK groups (K_BLOCK2 with two tables). */
static void lut64(const soniq_gemm_job *job, const soniq_act_group *g, const soniq_block *b,
                  int64_t m0, int64_t rows, int64_t *tile) {
    soniq_lut_block lb;
    soniq_lut_block_init(&lb, g, b, rows);
    const int64_t n_vec = (b->n + LANES - 1) / LANES, pw = b->wbits;
    const int stores = soniq_lut64_groups(g->k) > 0;
    for (int64_t v_lo = 0; v_lo < n_vec; v_lo += CHUNK_VECTORS) {
        const int64_t v_hi = v_lo + CHUNK_VECTORS < n_vec ? v_lo + CHUNK_VECTORS : n_vec;
        const int64_t o0 = v_lo * LANES, o1 = v_hi * LANES < b->n ? v_hi * LANES : b->n;
        soniq_popcount_prefetch_avx2(job, b, m0, rows, o0, o1);
        if (!stores)
            memset(tile, 0, sizeof(int64_t) * (size_t)(rows * LD));
        for (int i = 0; i < lb.n; i++) {
            const soniq_lut_part *part = &lb.parts[i];
            const int nt = soniq_lut_tables(part->g->bits);
            const int64_t groups = soniq_lut64_groups(part->g->k);
            const int64_t block = nt == 1 ? K_BLOCK : K_BLOCK2;
            for (int64_t kb = 0; kb < groups; kb += block) {
                const int64_t kb_end = groups - kb < block ? groups : kb + block;
                for (int64_t x0 = v_lo * pw; x0 < v_hi * pw; x0 += NX) {
                    const int nx = v_hi * pw - x0 < NX ? (int)(v_hi * pw - x0) : NX;
                    TILES[nt - 1][nx - 1](part, b, stores && i == 0, rows, x0, v_lo, kb,
                                          kb_end, tile);
                }
            }
        }
        soniq_popcount_flush_avx2(job, lb.flush, b, m0, rows, tile, LD, o0, o1);
    }
}

/* Blocks of 64 lanes (64-entry tables, with VBMI); others have the 16-entry layout of the
 * AVX2 kernel (an AVX-512 CPU without VBMI). */
void soniq_lut_avx512(const soniq_gemm_job *job, const soniq_act_group *g, const soniq_block *b,
                      int64_t m0, int64_t rows, int64_t *tile) {
    if (b->lanes == LANES)
        lut64(job, g, b, m0, rows, tile);
    else
        soniq_lut_avx2(job, g, b, m0, rows, tile);
}

_Static_assert(K_BLOCK * 90 <= 65535, "one table: uint16 sums of a K block cannot wrap");
_Static_assert(K_BLOCK2 * 90 * 17 <= 65535, "two tables: uint16 lo + 16 hi cannot wrap");
_Static_assert(MR1 <= SONIQ_ROW_PAD && MR2 <= SONIQ_ROW_PAD, "tiles past rows: spare rows");
_Static_assert(LD <= SONIQ_TILE_SCRATCH_COLS, "a chunk's sums fit the tile scratch");
