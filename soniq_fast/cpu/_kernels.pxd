# The records the cpu kernels receive, on both sides of the Cython/C boundary.
#
# C: the structs of core/params.h (what Python sets of them). Cython: the records built per
# call (OutLayout, ConvSource, Requantize, GemmJob) and KernelPlan, a GEMM plan's act groups
# and blocks (the dataclasses of records.py) filled into those C structs once, by name. All
# are immutable from Python (readonly attributes); _kernels.pyx reads them as C fields.

from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint8_t, uint64_t

cdef extern from "core/params.h" nogil:
    # field for field what Python sets (the rest is the kernels' own)
    ctypedef struct soniq_act_group:
        int bits
        int shift
        int64_t k
        const int32_t *idx
        int64_t start
        int contiguous
        int every_other
        int64_t words
        int64_t kpad
        int need_planes
        int need_bytes
        int need_tables
    ctypedef struct soniq_block:
        int engine
        int group
        int wbits
        int64_t n
        const int32_t *cols
        int lanes
        const uint64_t *wplanes
        const int8_t *wbytes
        const uint8_t *wnibbles
        int n_more
        int more_group[8]
        const uint8_t *more_wnibbles[8]
    ctypedef struct soniq_out_layout:
        int64_t rows_per_image, image_stride, row_stride, col_stride
    ctypedef struct soniq_conv_src:
        const uint8_t *x
        const uint8_t *shift
        int64_t c, h, w, kh, kw, stride, padding, ho, wo
    ctypedef struct soniq_requant_out:
        const float *scale
        const float *bias
        const float *ratio
        const uint8_t *bits
        int per_position
        uint8_t *codes
        const float *skip
        const uint8_t *skip_codes
        const float *skip_factor
    ctypedef struct soniq_gemm_job:
        const uint8_t *a
        const soniq_conv_src *conv
        int64_t m, k
        int n_groups
        const soniq_act_group *groups
        int n_blocks
        const soniq_block *blocks
        int64_t *out
        int64_t n_out
        soniq_out_layout layout
        int isa
        const int16_t *direct
        int64_t direct_k
    enum: SONIQ_MAX_GROUPS
    enum: SONIQ_ISAS
    enum: SONIQ_ENGINES


cdef class KernelPlan:
    cdef soniq_act_group *groups
    cdef soniq_block *blocks
    cdef readonly int n_groups, n_blocks
    cdef readonly tuple group_records, block_records


cdef class OutLayout:
    cdef readonly int64_t rows_per_image, image_stride, row_stride, col_stride


cdef class ConvSource:
    cdef readonly object x, shift
    cdef readonly int64_t c, h, w, kh, kw, stride, padding, ho, wo


cdef class Requantize:
    cdef readonly object scale, bias, bits, ratio, skip, skip_codes, skip_factor
    cdef readonly bint per_position


cdef class GemmJob:
    cdef readonly object a, out, direct
    cdef readonly ConvSource conv
    cdef readonly int64_t m, k, n_out
    cdef readonly KernelPlan plan
    cdef readonly OutLayout layout
    cdef readonly int isa
    cdef readonly Requantize requant
