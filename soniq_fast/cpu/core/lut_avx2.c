/* lut engine with AVX2 (lut.h has the layouts; same result as lut_scalar.c).
 *
 * One vpshufb looks up a row's tables of 8 K positions (two groups, one per 128-bit lane)
 * for 16 output channels at once: a weight plane against activations of any width, 128
 * products per vpshufb + byte add. AND + nibble-count popcount (bitserial_avx2.c) spends
 * as many vpshufb per product for every activation plane, plus the ANDs, so the lut engine
 * wins from 2-bit activations on (the table already holds the codes). Byte sums run for
 * `steps` pairs of groups (steps * max entry <= 255), then are widened to uint16 and, at
 * the end of a K block (before uint16 could wrap), added to the int64 tile shifted by plane
 * j. One table: unpack with zero. Two tables (low and high nibbles): a channel's two byte
 * sums are interleaved and vpmaddubsw with (1, 16) gives lo + 16 hi in one step, so one
 * uint16 sum holds the channel's whole sum (K_BLOCK2 keeps it from wrapping). Register
 * tile: MR rows x NX expanded vectors (vector, weight plane).
 * The flush is the popcount engine's: P -> 2^shift (2 P - (2^bw - 1) rowsum). */
#pragma GCC target("avx2")
#include <immintrin.h>
#include <string.h>

#include "lut.h"
#include "soniq_cpu.h"

#define LANES SONIQ_LUT_LANES
#define CHUNK_VECTORS (SONIQ_TILE_COLS / LANES)
#ifndef MR1
#define MR1 2          /* one table: 8 byte sums + 4 index vectors + table + temporary */
#endif
#ifndef MR2
#define MR2 1          /* two tables: 8 byte sums + 4 index vectors + table + temporary */
#endif
#define MR (MR1 > MR2 ? MR1 : MR2)
#ifndef K_BLOCK
#define K_BLOCK 128    /* pairs of groups (1024 K positions) per pass over the tile rows */
#endif
#define K_BLOCK2 64    /* the same with two tables: uint16 sums lo + 16 hi <= 64 * 60 * 17 */
#define NX 4           /* expanded vectors per register tile: a row's tables are read once
                          per 64 channels (from L2 for large K, so not once per 32) */

/* ---------------------------------------------------------------- the tables of a row */

/* The tables of two pairs (groups 0..3 of 16 codes c, which both lanes hold) in 9 vector
 * ops: lane L first gathers, for groups L and 2 + L, the partial sums
 *     LH = [0, a0, a1, a0 + a1, 0, a2, a3, a2 + a3]   (a_t = code t of the group)
 * (GATHER[0] + GATHER[1]), then T[i] = LH[i & 3] + LH[4 + (i >> 2)] for groups 0, 1 (pair
 * A, PICK[0] + PICK[1]) and 2, 3 (pair B, PICK[2] + PICK[3]). 0x80: vpshufb gives 0. */
static const uint8_t GATHER[2][32] __attribute__((aligned(32))) = {
    {0x80, 0x00, 0x01, 0x00, 0x80, 0x02, 0x03, 0x02, 0x80, 0x08, 0x09, 0x08, 0x80, 0x0a, 0x0b, 0x0a,
     0x80, 0x04, 0x05, 0x04, 0x80, 0x06, 0x07, 0x06, 0x80, 0x0c, 0x0d, 0x0c, 0x80, 0x0e, 0x0f, 0x0e},
    /* above: a0, a1, a0 | a2, a3, a2 of groups L, 2 + L; below: a1 | a3 */
    {0x80, 0x80, 0x80, 0x01, 0x80, 0x80, 0x80, 0x03, 0x80, 0x80, 0x80, 0x09, 0x80, 0x80, 0x80, 0x0b,
     0x80, 0x80, 0x80, 0x05, 0x80, 0x80, 0x80, 0x07, 0x80, 0x80, 0x80, 0x0d, 0x80, 0x80, 0x80, 0x0f},
};
static const uint8_t PICK[4][32] __attribute__((aligned(32))) = {
    {0x00, 0x01, 0x02, 0x03, 0x00, 0x01, 0x02, 0x03, 0x00, 0x01, 0x02, 0x03, 0x00, 0x01, 0x02, 0x03,
     0x00, 0x01, 0x02, 0x03, 0x00, 0x01, 0x02, 0x03, 0x00, 0x01, 0x02, 0x03, 0x00, 0x01, 0x02, 0x03},
    {0x04, 0x04, 0x04, 0x04, 0x05, 0x05, 0x05, 0x05, 0x06, 0x06, 0x06, 0x06, 0x07, 0x07, 0x07, 0x07,
     0x04, 0x04, 0x04, 0x04, 0x05, 0x05, 0x05, 0x05, 0x06, 0x06, 0x06, 0x06, 0x07, 0x07, 0x07, 0x07},
    {0x08, 0x09, 0x0a, 0x0b, 0x08, 0x09, 0x0a, 0x0b, 0x08, 0x09, 0x0a, 0x0b, 0x08, 0x09, 0x0a, 0x0b,
     0x08, 0x09, 0x0a, 0x0b, 0x08, 0x09, 0x0a, 0x0b, 0x08, 0x09, 0x0a, 0x0b, 0x08, 0x09, 0x0a, 0x0b},
    {0x0c, 0x0c, 0x0c, 0x0c, 0x0d, 0x0d, 0x0d, 0x0d, 0x0e, 0x0e, 0x0e, 0x0e, 0x0f, 0x0f, 0x0f, 0x0f,
     0x0c, 0x0c, 0x0c, 0x0c, 0x0d, 0x0d, 0x0d, 0x0d, 0x0e, 0x0e, 0x0e, 0x0e, 0x0f, 0x0f, 0x0f, 0x0f},
};

/* Tables of pairs 2 q, 2 q + 1 (when that is a pair: last) from 16 codes in both lanes. */
static inline __attribute__((always_inline))
void two_pairs(__m256i codes, __m256i g0, __m256i g1, __m256i pa0, __m256i pa1, __m256i pb0,
               __m256i pb1, uint8_t *dst, int n_tables, int both) {
    const __m256i lh = _mm256_add_epi8(_mm256_shuffle_epi8(codes, g0),
                                       _mm256_shuffle_epi8(codes, g1));
    _mm256_storeu_si256((__m256i *)dst, _mm256_add_epi8(_mm256_shuffle_epi8(lh, pa0),
                                                         _mm256_shuffle_epi8(lh, pa1)));
    if (both)
        _mm256_storeu_si256((__m256i *)(dst + n_tables * 32),
                            _mm256_add_epi8(_mm256_shuffle_epi8(lh, pb0),
                                            _mm256_shuffle_epi8(lh, pb1)));
}

int64_t soniq_lut_tables_avx2(const uint8_t *src, int64_t k, int bits, uint8_t *dst) {
    const int n_tables = soniq_lut_tables(bits);
    const int64_t pairs = soniq_lut_groups(k) / 2;
    const __m256i low = _mm256_set1_epi8(15);
    const __m256i g0 = _mm256_load_si256((const __m256i *)GATHER[0]);
    const __m256i g1 = _mm256_load_si256((const __m256i *)GATHER[1]);
    const __m256i pa0 = _mm256_load_si256((const __m256i *)PICK[0]);
    const __m256i pa1 = _mm256_load_si256((const __m256i *)PICK[1]);
    const __m256i pb0 = _mm256_load_si256((const __m256i *)PICK[2]);
    const __m256i pb1 = _mm256_load_si256((const __m256i *)PICK[3]);
    __m256i sums = _mm256_setzero_si256();
    for (int64_t p = 0; p < pairs; p += 2) {
        __m128i sixteen;    /* codes 8 p .. 8 p + 15, zero past k */
        if (8 * p + 16 <= k) {
            sixteen = _mm_loadu_si128((const __m128i *)(src + 8 * p));
        } else {
            uint8_t tail[16];
            memset(tail, 0, 16);
            for (int64_t c = 8 * p; c < k; c++)
                tail[c - 8 * p] = src[c];
            sixteen = _mm_loadu_si128((const __m128i *)tail);
        }
        const __m256i codes = _mm256_broadcastsi128_si256(sixteen);
        sums = _mm256_add_epi64(sums, _mm256_sad_epu8(codes, _mm256_setzero_si256()));
        uint8_t *out = dst + p * n_tables * 32;
        const int both = p + 1 < pairs;
        if (n_tables == 1) {
            two_pairs(codes, g0, g1, pa0, pa1, pb0, pb1, out, 1, both);
        } else {
            two_pairs(_mm256_and_si256(codes, low), g0, g1, pa0, pa1, pb0, pb1, out, 2, both);
            two_pairs(_mm256_and_si256(_mm256_srli_epi16(codes, 4), low), g0, g1, pa0, pa1, pb0,
                      pb1, out + 32, 2, both);
        }
    }
    /* lane 0 summed codes 0..7 and 8..15 of every step */
    const __m128i s = _mm256_castsi256_si128(sums);
    return _mm_cvtsi128_si64(s) + _mm_extract_epi64(s, 1);
}

/* ---------------------------------------------------------------- the engine */

/* Add (store when `first`) 8 channels' sums, shifted, to 8 int64 tile cells: `sums` holds
 * them as uint16 twice, from the even groups (low lane) and the odd groups (high lane). */
static inline __attribute__((always_inline))
void spill8(int64_t *dst, __m256i sums, int shift, int first) {
    const __m128i count = _mm_cvtsi32_si128(shift);
    const __m256i both = _mm256_add_epi32(_mm256_cvtepu16_epi32(_mm256_castsi256_si128(sums)),
                                          _mm256_cvtepu16_epi32(_mm256_extracti128_si256(sums, 1)));
    for (int i = 0; i < 2; i++) {
        __m256i v = _mm256_sll_epi64(_mm256_cvtepu32_epi64(i ? _mm256_extracti128_si256(both, 1)
                                                             : _mm256_castsi256_si128(both)),
                                     count);
        if (!first)
            v = _mm256_add_epi64(_mm256_loadu_si256((const __m256i *)(dst + 4 * i)), v);
        _mm256_storeu_si256((__m256i *)(dst + 4 * i), v);
    }
}

/* acc += vpshufb(table, idx) (bytes); inline assembly only to keep the compiler from
 * renaming the sums through extra moves in the hot loop. */
#define LOOK(acc, table, idx) do {                                                           \
        __m256i t_;                                                                        \
        __asm__("vpshufb %3, %2, %1\n\t"                                                    \
                "vpaddb %1, %0, %0"                                                        \
                : "+x"(acc), "=&x"(t_) : "x"(table), "x"(idx));                            \
    } while (0)

/* Rows r0 .. r0 + mr - 1 against expanded vectors x0 .. x0 + nx - 1 (x = v pw + j), pairs
 * of groups kb .. kb_end - 1 of one part, a pair per step: P into tile cells (row,
 * 16 (v - v_lo) + channel), stored by the first contribution to a cell (`first` part,
 * pair 0, plane 0). */
static inline __attribute__((always_inline))
void micro(const soniq_lut_part *part, const soniq_block *b, int first, int64_t r0,
           int64_t rows, int64_t x0, int nx, int64_t v_lo, int64_t kb, int64_t kb_end, int mr,
           int nt, int64_t *tile) {
    const soniq_act_group *g = part->g;
    const int64_t pairs = soniq_lut_groups(g->k) / 2, row_bytes = soniq_lut_row_bytes(g->k, g->bits);
    const int max = soniq_lut_entry_max(g->bits);
    const int64_t steps = 255 / max;
    const uint8_t *tables = g->tables + r0 * row_bytes;
    const uint8_t *w = part->wnibbles + x0 * pairs * 32;
    const int64_t xs = pairs * 32;          /* bytes from one expanded vector to the next */
    const __m256i zero = _mm256_setzero_si256();
    __m256i sums[MR][NX][2];         /* [row][vector][channels 0-7, 8-15], uint16 */
    for (int r = 0; r < mr; r++)
        for (int x = 0; x < nx; x++)
            sums[r][x][0] = sums[r][x][1] = zero;
    for (int64_t p0 = kb; p0 < kb_end; p0 += steps) {
        const int64_t p1 = kb_end - p0 < steps ? kb_end : p0 + steps;
        __m256i acc[MR][NX][2];
        for (int r = 0; r < mr; r++)
            for (int x = 0; x < nx; x++)
                for (int t = 0; t < nt; t++)
                    acc[r][x][t] = zero;
        const uint8_t *tp = tables + p0 * nt * 32, *wp = w + p0 * 32;
        for (int64_t p = p0; p < p1; p++, tp += nt * 32, wp += 32) {
            __m256i idx[NX];
            for (int x = 0; x < nx; x++)
                idx[x] = _mm256_loadu_si256((const __m256i *)(wp + x * xs));
            for (int r = 0; r < mr; r++)
                for (int t = 0; t < nt; t++) {
                    const __m256i table =
                        _mm256_loadu_si256((const __m256i *)(tp + r * row_bytes + t * 32));
                    for (int x = 0; x < nx; x++)
                        LOOK(acc[r][x][t], table, idx[x]);
                }
        }
        if (nt == 2) {   /* bytes (lo, hi) of a channel side by side, times (1, 16) */
            const __m256i lo_hi = _mm256_set1_epi16(16 << 8 | 1);
            for (int r = 0; r < mr; r++)
                for (int x = 0; x < nx; x++) {
                    const __m256i lo = acc[r][x][0], hi = acc[r][x][1];
                    sums[r][x][0] = _mm256_add_epi16(
                        sums[r][x][0], _mm256_maddubs_epi16(_mm256_unpacklo_epi8(lo, hi), lo_hi));
                    sums[r][x][1] = _mm256_add_epi16(
                        sums[r][x][1], _mm256_maddubs_epi16(_mm256_unpackhi_epi8(lo, hi), lo_hi));
                }
        } else {
            for (int r = 0; r < mr; r++)
                for (int x = 0; x < nx; x++) {
                    sums[r][x][0] = _mm256_add_epi16(sums[r][x][0],
                                                        _mm256_unpacklo_epi8(acc[r][x][0], zero));
                    sums[r][x][1] = _mm256_add_epi16(sums[r][x][1],
                                                        _mm256_unpackhi_epi8(acc[r][x][0], zero));
                }
        }
    }
    for (int r = 0; r < mr && r0 + r < rows; r++)
        for (int x = 0; x < nx; x++) {
            const int64_t v = (x0 + x) / b->wbits;
            const int j = (int)((x0 + x) % b->wbits);
            int64_t *dst = tile + (r0 + r) * SONIQ_TILE_COLS + (v - v_lo) * LANES;
            for (int h = 0; h < 2; h++)
                spill8(dst + 8 * h, sums[r][x][h], j + part->shift, first && kb == 0 && j == 0);
        }
}

/* One register-tile shape over the rows of a tile: a function of its own per shape, so
 * each is register-allocated alone (inlined into one function, the two-table shapes
 * cost the one-table ones stack traffic in their K loops). */
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
static const tile_fn TILES[2][NX] = {   /* [tables - 1][nx - 1]: constant tile shapes */
    {tile_1_1, tile_2_1, tile_3_1, tile_4_1},
    {tile_1_2, tile_2_2, tile_3_2, tile_4_2},
};

/* A chunk of 64 channels, K in blocks of K_BLOCK pairs (K_BLOCK2 with two tables): a
 * block's indices for NX expanded vectors (16 KiB) stay in L1 and the tile rows' tables of
 * the block (48 x 4 KiB per table) in L2 while the rows pass. */
static void chunk(const soniq_lut_part *part, const soniq_block *b, int first, int64_t rows,
                  int64_t v_lo, int64_t v_hi, int64_t *tile) {
    const soniq_act_group *g = part->g;
    const int pw = b->wbits, nt = soniq_lut_tables(g->bits);
    const int64_t pairs = soniq_lut_groups(g->k) / 2;
    const int64_t block = nt == 1 ? K_BLOCK : K_BLOCK2;
    for (int64_t kb = 0; kb < pairs; kb += block) {
        const int64_t kb_end = pairs - kb < block ? pairs : kb + block;
        for (int64_t x0 = v_lo * pw; x0 < v_hi * pw; x0 += NX) {
            const int nx = v_hi * pw - x0 < NX ? (int)(v_hi * pw - x0) : NX;
            TILES[nt - 1][nx - 1](part, b, first, rows, x0, v_lo, kb, kb_end, tile);
        }
    }
}

void soniq_lut_avx2(const soniq_gemm_job *job, const soniq_act_group *g, const soniq_block *b,
                    int64_t m0, int64_t rows, int64_t *tile) {
    soniq_lut_block lb;
    soniq_lut_block_init(&lb, g, b, rows);
    const int64_t n_vec = (b->n + LANES - 1) / LANES;
    /* the first part's first spill stores into each cell; with no K it has none */
    const int stores = soniq_lut_groups(g->k) > 0;
    for (int64_t v_lo = 0; v_lo < n_vec; v_lo += CHUNK_VECTORS) {
        const int64_t v_hi = v_lo + CHUNK_VECTORS < n_vec ? v_lo + CHUNK_VECTORS : n_vec;
        const int64_t o1 = v_hi * LANES < b->n ? v_hi * LANES : b->n;
        soniq_popcount_prefetch_avx2(job, b, m0, rows, v_lo * LANES, o1);
        if (!stores)
            memset(tile, 0, sizeof(int64_t) * (size_t)(rows * SONIQ_TILE_COLS));
        for (int i = 0; i < lb.n; i++)
            chunk(&lb.parts[i], b, stores && i == 0, rows, v_lo, v_hi, tile);
        soniq_popcount_flush_avx2(job, lb.flush, b, m0, rows, tile, SONIQ_TILE_COLS, v_lo * LANES,
                                  o1);
    }
}

_Static_assert(K_BLOCK * 60 <= 65535, "one table: uint16 sums of a K block cannot wrap (entries <= 60)");
_Static_assert(K_BLOCK2 * 60 * 17 <= 65535, "two tables: uint16 lo + 16 hi of a K block cannot wrap");
_Static_assert(MR <= SONIQ_ROW_PAD, "tiles past rows: spare rows");
_Static_assert(CHUNK_VECTORS * LANES == SONIQ_TILE_COLS, "a chunk's sums fill the tile scratch");
