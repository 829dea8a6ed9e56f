/* The per-code-path kernel tables (soniq_isa_ops, soniq_cpu.h): which kernel each code path
 * runs for every step of a job, written once here. The scalar table is portable C, the
 * reference of the others; each vector table names its own kernels and, where a step has
 * no kernel of its own, that of the path below it (the avx512 path prepares int8 rows and
 * 16-entry lut tables with AVX2, and its epilogue and pooling are AVX2's). Whether the CPU
 * can run a path is checked by Python (isa.py) before a path is used. */
#include <stddef.h>

#include "soniq_cpu.h"

static const soniq_isa_ops scalar_ops = {
    .isa = SONIQ_SCALAR,
    .engine = {
        [SONIQ_ENGINE_POPCOUNT] = soniq_bitserial_scalar,
        [SONIQ_ENGINE_INT8] = soniq_int8_scalar,
        [SONIQ_ENGINE_LUT] = soniq_lut_scalar,
    },
    .flush_assigns = 0,
    .pack_planes = soniq_pack_planes_scalar,
    .int8_prepare = soniq_int8_prepare_scalar,
    .lut_tables = soniq_lut_tables_scalar,
    .lut64_tables = NULL,
    .gather_every_other = NULL,
    .gather_runs = 0,
    .pad_images = 0,
    .epilogue_span = soniq_epilogue_span_scalar,
    .requantize_span = soniq_requantize_span_scalar,
    .requantize_columns = soniq_requantize_columns_scalar,
    .direct_conv = NULL,
    .residual_span = soniq_residual_span_scalar,
    .residual_codes_span = soniq_residual_codes_span_scalar,
    .max_pool2 = NULL,
    .popcount_probe = NULL,
};

static const soniq_isa_ops avx2_ops = {
    .isa = SONIQ_AVX2,
    .engine = {
        [SONIQ_ENGINE_POPCOUNT] = soniq_bitserial_avx2,
        [SONIQ_ENGINE_INT8] = soniq_int8_avx2,
        [SONIQ_ENGINE_LUT] = soniq_lut_avx2,
    },
    .flush_assigns = 1,       /* each AVX2 engine adds every output cell of a block once */
    .pack_planes = soniq_pack_planes_avx2,
    .int8_prepare = soniq_int8_prepare_avx2,
    .lut_tables = soniq_lut_tables_avx2,
    .lut64_tables = NULL,
    .gather_every_other = soniq_gather_every_other_avx2,
    .gather_runs = 1,
    .pad_images = 1,
    .epilogue_span = soniq_epilogue_span_avx2,
    .requantize_span = soniq_requantize_span_avx2,
    .requantize_columns = soniq_requantize_columns_avx2,
    .direct_conv = soniq_direct_conv_requantize_avx2,
    .residual_span = soniq_residual_span_avx2,
    .residual_codes_span = soniq_residual_codes_span_avx2,
    .max_pool2 = soniq_max_pool2_avx2,
    .popcount_probe = soniq_popcount_probe_avx2,
};

static const soniq_isa_ops avx512_ops = {
    .isa = SONIQ_AVX512,
    .engine = {
        [SONIQ_ENGINE_POPCOUNT] = soniq_bitserial_avx512,
        [SONIQ_ENGINE_INT8] = soniq_int8_vnni,
        [SONIQ_ENGINE_LUT] = soniq_lut_avx512,
    },
    .flush_assigns = 0,       /* the AVX-512 engines' flushes add (flush_avx512.c) */
    .pack_planes = soniq_pack_planes_avx512,
    .int8_prepare = soniq_int8_prepare_avx2,
    .lut_tables = soniq_lut_tables_avx2,
    .lut64_tables = soniq_lut64_tables_avx512,
    .gather_every_other = soniq_gather_every_other_avx2,
    .gather_runs = 1,
    .pad_images = 1,
    .epilogue_span = soniq_epilogue_span_avx2,
    .requantize_span = soniq_requantize_span_avx2,
    .requantize_columns = soniq_requantize_columns_avx2,
    .direct_conv = soniq_direct_conv_requantize_avx2,
    .residual_span = soniq_residual_span_avx2,
    .residual_codes_span = soniq_residual_codes_span_avx2,
    .max_pool2 = soniq_max_pool2_avx2,
    .popcount_probe = soniq_popcount_probe_avx512,
};

static const soniq_isa_ops *const tables[SONIQ_ISAS] = {
    [SONIQ_SCALAR] = &scalar_ops,
    [SONIQ_AVX2] = &avx2_ops,
    [SONIQ_AVX512] = &avx512_ops,
};

const soniq_isa_ops *soniq_isa_ops_for(int isa) {
    return isa >= 0 && isa < SONIQ_ISAS ? tables[isa] : NULL;
}
