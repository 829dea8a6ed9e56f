/* lut engine, portable reference (lut.h has the layouts): the tables of each row, and
 * P[m, o] = sum_j 2^j sum_q sum_t 16^t T_q^t[index of plane j, group q, channel o]
 * (of every part of the block, shifted as lut.h says). */
#include "lut.h"
#include "soniq_cpu.h"

int64_t soniq_lut_row_bytes(int64_t k, int bits) {
    return soniq_lut_groups(k) / 2 * soniq_lut_tables(bits) * 32;
}

int64_t soniq_lut_tables_scalar(const uint8_t *src, int64_t k, int bits, uint8_t *dst) {
    const int n_tables = soniq_lut_tables(bits);
    const int64_t groups = soniq_lut_groups(k);
    int64_t sum = 0;
    for (int64_t t = 0; t < k; t++)
        sum += src[t];
    for (int64_t q = 0; q < groups; q++)
        for (int tab = 0; tab < n_tables; tab++) {
            uint8_t *table = dst + soniq_lut_table_at(q, tab, n_tables);
            for (int i = 0; i < 16; i++) {
                int entry = 0;
                for (int t = 0; t < 4; t++) {
                    int64_t c = 4 * q + t;
                    int code = c < k ? src[c] : 0;
                    int part = n_tables == 1 ? code : tab == 0 ? code & 15 : code >> 4;
                    entry += (i >> t & 1) * part;
                }
                table[i] = (uint8_t)entry;
            }
        }
    return sum;
}

/* P of tile row r, column o of one part: sum_j 2^j sum_q sum_t 16^t T_q^t[index]. */
static int64_t part_sum(const soniq_lut_part *part, int pw, int64_t r, int64_t o) {
    const soniq_act_group *g = part->g;
    const int n_tables = soniq_lut_tables(g->bits);
    const int64_t groups = soniq_lut_groups(g->k);
    const uint8_t *tables = g->tables + r * soniq_lut_row_bytes(g->k, g->bits);
    const int64_t v = o / SONIQ_LUT_LANES;
    int64_t sum = 0;
    for (int j = 0; j < pw; j++) {
        const uint8_t *idx = part->wnibbles + (v * pw + j) * groups * SONIQ_LUT_LANES
                             + o % SONIQ_LUT_LANES;
        int64_t plane = 0;
        for (int64_t q = 0; q < groups; q++)
            for (int tab = 0; tab < n_tables; tab++)
                plane += (int64_t)tables[soniq_lut_table_at(q, tab, n_tables)
                                         + idx[soniq_lut_table_at(q, 0, 1)]] << (4 * tab);
        sum += plane << j;
    }
    return sum;
}

void soniq_lut_scalar(const soniq_gemm_job *job, const soniq_act_group *g, const soniq_block *b,
                      int64_t m0, int64_t rows, int64_t *tile) {
    soniq_lut_block lb;
    soniq_lut_block_init(&lb, g, b, rows);
    for (int64_t o0 = 0; o0 < b->n; o0 += SONIQ_TILE_COLS) {
        const int64_t o1 = o0 + SONIQ_TILE_COLS < b->n ? o0 + SONIQ_TILE_COLS : b->n;
        for (int64_t r = 0; r < rows; r++)
            for (int64_t o = o0; o < o1; o++) {
                int64_t sum = 0;
                for (int i = 0; i < lb.n; i++)
                    sum += part_sum(&lb.parts[i], b->wbits, r, o) << lb.parts[i].shift;
                tile[r * SONIQ_TILE_COLS + (o - o0)] = sum;
            }
        soniq_flush_tile(job, lb.flush, b, m0, 0, rows, tile, SONIQ_TILE_COLS, o0, o1);
    }
}
