/* INT8 engine with AVX2: one weight width per block (see packed.py), run by
 * int8_avx2_bytes.c (vpmaddubsw, int16 partial sums) when that is exact, else by
 * int8_avx2_wide.c (int16 operands, vpmaddwd). Same result as int8_scalar.c. */
#include "soniq_cpu.h"

void soniq_int8_avx2(const soniq_gemm_job *job, const soniq_act_group *g, const soniq_block *b,
                     int64_t m0, int64_t rows, int64_t *tile) {
    if (soniq_int8_steps(b->wbits, g->bits, g->shift) > 0)
        soniq_int8_avx2_bytes(job, g, b, m0, rows, tile);
    else
        soniq_int8_avx2_wide(job, g, b, m0, rows, tile);
}
