/* The lut engine's layouts, shared by lut_scalar.c and lut_avx2.c.
 *
 * A row of k activation codes a (unshifted, width `bits`) is cut into groups of 4 K positions
 * q = 0 .. 2 ceil(k/8) - 1 (codes past k are 0). Each group gets a 16-entry table
 *
 *     T_q[i] = sum_{t<4} bit_t(i) a[4 q + t]          (bits <= 4: entries <= 60, one byte)
 *
 * or, for bits > 4, two: T_q^0 of the low nibbles a & 15 and T_q^1 of the high nibbles a >> 4,
 * with T_q = T_q^0 + 16 T_q^1. A weight plane j gives, per output channel and group, the
 * 4-bit index i = sum_t bit_j(w[4 q + t]) 2^t, so sum_c bit_j(w_c) a_c = sum_q T_q[i_q]: the
 * binary products of 4 K positions in one table lookup, P = sum_j 2^j of those sums.
 *
 * Tables of a row: pairs of groups (2 p, 2 p + 1), per table t the 16 entries of group 2 p,
 * then those of group 2 p + 1: 32 bytes, the two 128-bit lanes of one AVX2 vector. Weights
 * match: per vector v of 16 channels, plane j and pair p, 32 index bytes, the 16 channels'
 * indices for group 2 p, then for group 2 p + 1. One vpshufb (which looks up each 128-bit
 * lane in its own table) then covers 16 channels x 8 K positions. */
#ifndef SONIQ_LUT_H
#define SONIQ_LUT_H

#include <stdint.h>

#include "soniq_cpu.h"

#define SONIQ_LUT_LANES 16     /* output channels per vector */
#define SONIQ_LUT64_LANES 64   /* the same with 64-entry tables (lut_avx512.c) */

static inline int soniq_lut_tables(int bits) { return bits > 4 ? 2 : 1; }
static inline int64_t soniq_lut_groups(int64_t k) { return 2 * ((k + 7) / 8); }
/* byte offset of table t of group q in a row's tables; that of channel c's index of group
 * q in the 32 (groups / 2) bytes of an expanded vector is soniq_lut_table_at(q, 0, 1) + c */
static inline int64_t soniq_lut_table_at(int64_t q, int t, int n_tables) {
    return ((q >> 1) * n_tables + t) * 32 + (q & 1) * 16;
}
/* Largest table entry: 4 codes (or nibbles) of at most 2^min(bits,4) - 1. */
static inline int soniq_lut_entry_max(int bits) {
    return 4 * ((1 << (bits < 4 ? bits : 4)) - 1);
}

/* A lut block may span several act groups over the same columns (``n_more``): each part's
 * P goes into the tile shifted by its group's shift, and one flush with the view below
 * (shift 0, rowsum = sum_p rowsum_p << shift_p) gives sum_p 2^shift_p (2 P_p - (2^bw - 1)
 * rowsum_p), the parts' contributions. */
typedef struct {
    const soniq_act_group *g;
    const uint8_t *wnibbles;
    int shift;              /* applied in the tile: the group's shift when parts are merged */
} soniq_lut_part;

/* A lut block's parts and the act group view its flush uses: g itself for one part, else
 * a copy with shift 0 and rowsum = sum_p rowsum_p << shift_p (SONIQ_ROW_TILE rows). g points
 * into the thread's array of act group views, where the other parts' groups are found. */
typedef struct {
    soniq_lut_part parts[SONIQ_MAX_GROUPS + 1];
    int n;
    const soniq_act_group *flush;
    soniq_act_group view;
    int64_t rowsum[SONIQ_ROW_TILE];
} soniq_lut_block;

static inline void soniq_lut_block_init(soniq_lut_block *lb, const soniq_act_group *g,
                                        const soniq_block *b, int64_t rows) {
    const soniq_act_group *views = g - b->group;
    lb->parts[0] = (soniq_lut_part){g, b->wnibbles, b->n_more ? g->shift : 0};
    for (int i = 0; i < b->n_more; i++) {
        const soniq_act_group *gi = views + b->more_group[i];
        lb->parts[1 + i] = (soniq_lut_part){gi, b->more_wnibbles[i], gi->shift};
    }
    lb->n = 1 + b->n_more;
    lb->flush = g;
    if (lb->n == 1)
        return;
    lb->view = *g;
    lb->view.shift = 0;
    lb->view.rowsum = lb->rowsum;
    for (int64_t r = 0; r < rows; r++) {
        lb->rowsum[r] = 0;
        for (int i = 0; i < lb->n; i++)
            lb->rowsum[r] += lb->parts[i].g->rowsum[r] << lb->parts[i].shift;
    }
    lb->flush = &lb->view;
}

#endif
