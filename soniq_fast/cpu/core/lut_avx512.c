/* lut engine with AVX-512 (lut.h has the layouts; same result as lut_scalar.c, the reading
 * copy).
 *
 * vpshufb on a 512-bit vector looks up each of its four 128-bit lanes in that lane's own
 * 16-entry table, so one instruction covers 16 output channels x 16 K positions:
 *
 *   one table (codes of <= 4 bits): a row's tables of pairs p and p + 1 are 64 consecutive
 *     bytes (groups 2p, 2p+1, 2p+2, 2p+3 in lanes 0..3), and so are a weight plane's indices
 *     of those pairs: two pairs per step, no shuffle;
 *   two tables (low and high nibbles): the 64 bytes of pair p are its low-nibble tables
 *     (lanes 0, 1) then its high-nibble ones (lanes 2, 3), and the 32 index bytes of the pair
 *     are broadcast to both halves: one pair per step.
 *
 * Byte sums run while no lane can pass 255 (each lane adds one entry per step), are then
 * widened to uint16 with vpmaddubsw by a per-lane weight (1; 16 for the high-nibble lanes),
 * and at the end of a K block (before uint16 could wrap, per lane) the four lanes of a channel
 * are added as int32 and go, shifted by plane j, into the int64 tile. 32 vector registers
 * hold a tile of MR rows x NX expanded vectors (vector, weight plane) of byte sums, their
 * uint16 sums, NX index vectors and a table. The flush is the popcount engine's:
 * P -> 2^shift (2 P - (2^bw - 1) rowsum). */
#pragma GCC target("avx2,avx512f,avx512bw")
#include <immintrin.h>
#include <string.h>

#include "lut.h"
#include "soniq_cpu.h"

#define LANES SONIQ_LUT_LANES
#define CHUNK_VECTORS (SONIQ_TILE_COLS / LANES)
#ifndef MR
#define MR 2           /* rows: 8 byte sums + 16 uint16 sums + 4 indices + table + 2 consts */
#endif
#define NX 4           /* expanded vectors per register tile */
#ifndef K_BLOCK
#define K_BLOCK 128    /* pairs of groups per pass over the tile rows (one table) */
#endif
#define K_BLOCK2 64    /* the same with two tables: a high lane's uint16 sum 16 * 60 * 64 */

/* Add (store when `first`) 8 channels' sums, shifted, to 8 int64 tile cells: `sums` holds
 * them as uint16 in each of its four lanes. */
static inline __attribute__((always_inline))
void spill8(int64_t *dst, __m512i sums, int shift, int first) {
    const __m512i lanes = _mm512_add_epi32(_mm512_cvtepu16_epi32(_mm512_castsi512_si256(sums)),
                                           _mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(sums, 1)));
    const __m256i both = _mm256_add_epi32(_mm512_castsi512_si256(lanes),
                                          _mm512_extracti64x4_epi64(lanes, 1));
    __m512i v = _mm512_sll_epi64(_mm512_cvtepu32_epi64(both), _mm_cvtsi32_si128(shift));
    if (!first)
        v = _mm512_add_epi64(_mm512_loadu_si512((const void *)dst), v);
    _mm512_storeu_si512((void *)dst, v);
}

/* acc += vpshufb(table, idx) (bytes); inline assembly only to keep the compiler from
 * renaming the sums through extra moves in the hot loop. */
#define LOOK(acc, table, idx) do {                                                           \
        __m512i t_;                                                                        \
        __asm__("vpshufb %3, %2, %1\n\t"                                                    \
                "vpaddb %1, %0, %0"                                                        \
                : "+v"(acc), "=&v"(t_) : "v"(table), "v"(idx));                            \
    } while (0)

/* Rows r0 .. r0 + mr - 1 against expanded vectors x0 .. x0 + nx - 1 (x = v pw + j), pairs
 * of groups kb .. kb_end - 1 of one part: P into tile cells (row, 16 (v - v_lo) + channel),
 * stored by the first contribution to a cell (`first` part, K block 0, plane 0). */
static inline __attribute__((always_inline))
void micro(const soniq_lut_part *part, const soniq_block *b, int first, int64_t r0,
           int64_t rows, int64_t x0, int nx, int64_t v_lo, int64_t kb, int64_t kb_end, int mr,
           int nt, int64_t *tile) {
    const soniq_act_group *g = part->g;
    const int64_t pairs = soniq_lut_groups(g->k) / 2, row_bytes = soniq_lut_row_bytes(g->k, g->bits);
    /* pairs per run of byte sums: each lane adds one entry per step, a step being two
     * pairs with one table and one pair with two */
    const int64_t run = (255 / soniq_lut_entry_max(g->bits)) * (nt == 1 ? 2 : 1);
    const uint8_t *tables = g->tables + r0 * row_bytes;
    const uint8_t *w = part->wnibbles + x0 * pairs * 32;
    const int64_t xs = pairs * 32;          /* bytes from one expanded vector to the next */
    const __m512i zero = _mm512_setzero_si512();
    /* vpmaddubsw weights of the (byte, 0) pairs: 16 in the high-nibble lanes */
    const __m512i weight = nt == 1 ? _mm512_set1_epi16(1)
        : _mm512_inserti64x4(_mm512_set1_epi16(1), _mm256_set1_epi16(16), 1);
    __m512i sums[MR][NX][2];         /* [row][vector][channels 0-7, 8-15], uint16 per lane */
    for (int r = 0; r < mr; r++)
        for (int x = 0; x < nx; x++)
            sums[r][x][0] = sums[r][x][1] = zero;
    for (int64_t p0 = kb; p0 < kb_end; p0 += run) {
        const int64_t p1 = kb_end - p0 < run ? kb_end : p0 + run;
        __m512i acc[MR][NX];
        for (int r = 0; r < mr; r++)
            for (int x = 0; x < nx; x++)
                acc[r][x] = zero;
        const uint8_t *tp = tables + p0 * nt * 32, *wp = w + p0 * 32;
        if (nt == 1) {
            int64_t p = p0;
            for (; p + 2 <= p1; p += 2, tp += 64, wp += 64) {
                __m512i idx[NX];
                for (int x = 0; x < nx; x++)
                    idx[x] = _mm512_loadu_si512((const void *)(wp + x * xs));
                for (int r = 0; r < mr; r++) {
                    const __m512i table = _mm512_loadu_si512((const void *)(tp + r * row_bytes));
                    for (int x = 0; x < nx; x++)
                        LOOK(acc[r][x], table, idx[x]);
                }
            }
            if (p < p1) {   /* the last pair of an odd count: lanes 2, 3 look up zeros */
                const __mmask64 half = 0xffffffffull;
                __m512i idx[NX];
                for (int x = 0; x < nx; x++)
                    idx[x] = _mm512_maskz_loadu_epi8(half, wp + x * xs);
                for (int r = 0; r < mr; r++) {
                    const __m512i table = _mm512_maskz_loadu_epi8(half, tp + r * row_bytes);
                    for (int x = 0; x < nx; x++)
                        LOOK(acc[r][x], table, idx[x]);
                }
            }
        } else {
            for (int64_t p = p0; p < p1; p++, tp += 64, wp += 32) {
                __m512i idx[NX];
                for (int x = 0; x < nx; x++)
                    idx[x] = _mm512_broadcast_i64x4(
                        _mm256_loadu_si256((const __m256i *)(wp + x * xs)));
                for (int r = 0; r < mr; r++) {
                    const __m512i table = _mm512_loadu_si512((const void *)(tp + r * row_bytes));
                    for (int x = 0; x < nx; x++)
                        LOOK(acc[r][x], table, idx[x]);
                }
            }
        }
        for (int r = 0; r < mr; r++)
            for (int x = 0; x < nx; x++) {
                sums[r][x][0] = _mm512_add_epi16(
                    sums[r][x][0], _mm512_maddubs_epi16(_mm512_unpacklo_epi8(acc[r][x], zero), weight));
                sums[r][x][1] = _mm512_add_epi16(
                    sums[r][x][1], _mm512_maddubs_epi16(_mm512_unpackhi_epi8(acc[r][x], zero), weight));
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

/* One register-tile shape over the rows of a tile, each a function of its own so each is
 * register-allocated alone. */
typedef void (*tile_fn)(const soniq_lut_part *part, const soniq_block *b, int first,
                        int64_t rows, int64_t x0, int64_t v_lo, int64_t kb, int64_t kb_end,
                        int64_t *tile);
#define TILE_FN(nx_, nt_)                                                                    \
    static __attribute__((noinline)) void tile_##nx_##_##nt_(                              \
        const soniq_lut_part *part, const soniq_block *b, int first, int64_t rows,         \
        int64_t x0, int64_t v_lo, int64_t kb, int64_t kb_end, int64_t *tile) {             \
        for (int64_t r0 = 0; r0 < rows; r0 += MR)                                          \
            micro(part, b, first, r0, rows, x0, nx_, v_lo, kb, kb_end, MR, nt_, tile);     \
    }
TILE_FN(1, 1) TILE_FN(2, 1) TILE_FN(3, 1) TILE_FN(4, 1)
TILE_FN(1, 2) TILE_FN(2, 2) TILE_FN(3, 2) TILE_FN(4, 2)
#undef TILE_FN
static const tile_fn TILES[2][NX] = {   /* [tables - 1][nx - 1]: constant tile shapes */
    {tile_1_1, tile_2_1, tile_3_1, tile_4_1},
    {tile_1_2, tile_2_2, tile_3_2, tile_4_2},
};

/* A chunk of 64 channels, K in blocks of K_BLOCK pairs (K_BLOCK2 with two tables). */
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

void soniq_lut_avx512(const soniq_gemm_job *job, const soniq_act_group *g, const soniq_block *b,
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
        soniq_popcount_flush_avx2(job, lb.flush, b, m0, rows, tile, SONIQ_TILE_COLS,
                                  v_lo * LANES, o1);
    }
}

_Static_assert(K_BLOCK / 2 * 60 <= 65535, "one table: a lane's uint16 sum of a K block cannot wrap");
_Static_assert(K_BLOCK2 * 60 * 16 <= 65535, "two tables: a high lane's uint16 sum cannot wrap");
_Static_assert(K_BLOCK % 2 == 0, "one table: K blocks start on a pair of pairs");
_Static_assert(MR <= SONIQ_ROW_PAD, "tiles past rows: spare rows");
_Static_assert(CHUNK_VECTORS * LANES == SONIQ_TILE_COLS, "a chunk's sums fill the tile scratch");
