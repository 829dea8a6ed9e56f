# cython: language_level=3, boundscheck=False, wraparound=False
"""Cython glue: NumPy arrays in, C kernels run with the GIL released.

Every function here trusts its caller (soniq_fast.cpu.backend) to have validated
shapes, dtypes and ranges and to keep the arrays alive for the call; arrays are
passed as C-contiguous NumPy arrays and reached through their data addresses.
"""

from cpython.buffer cimport PyBUF_ANY_CONTIGUOUS, PyBuffer_Release, PyObject_GetBuffer
from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint8_t, uint64_t
from libc.stdlib cimport calloc, free

cdef extern from "core/soniq_cpu.h" nogil:
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
        int64_t c, h, w, kh, kw, stride, padding, ho, wo
    ctypedef struct soniq_gemm_job:
        const uint8_t *a
        const soniq_conv_src *conv
        int64_t m, k
        int n_groups
        soniq_act_group *groups
        int n_blocks
        const soniq_block *blocks
        int64_t *out
        int64_t n_out
        soniq_out_layout layout
        int isa
        const int16_t *direct
        int64_t direct_k
    int soniq_cpu_has(int isa)
    int64_t soniq_popcount_probe(int isa, int64_t iterations)
    int64_t soniq_engine_calls(int isa, int engine)
    int soniq_gemm_run(const soniq_gemm_job *job, int n_threads)
    ctypedef struct soniq_requant_out:
        const float *scale
        const float *bias
        const float *ratio
        const uint8_t *bits
        int per_position
        uint8_t *codes
    int soniq_gemm_requantize_run(const soniq_gemm_job *job, const soniq_requant_out *rq,
                                  int n_threads)
    int soniq_pack_activations(const uint8_t *a, int64_t m, int64_t k, const uint8_t *a_bits,
                               int hi, uint64_t *out, int isa, int n_threads)
    int soniq_epilogue(const int64_t *acc, int64_t total, int64_t channels, int64_t inner,
                       const float *scale, const float *bias, float *out, int isa,
                       int n_threads)
    int soniq_requantize(const int64_t *acc, int64_t total, int64_t channels, int64_t inner,
                         const float *scale, const float *bias, const uint8_t *bits,
                         const float *ratio, uint8_t *out, int isa, int n_threads)
    int soniq_max_pool(const uint8_t *x, int64_t planes, int64_t h, int64_t w, int kernel,
                       int stride, uint8_t *out, int isa, int n_threads)


cdef inline size_t addr(arr) except? 0:
    """The data address of a contiguous array, through the buffer protocol (much cheaper than
    ``arr.ctypes.data``); the caller keeps ``arr`` alive."""
    cdef Py_buffer view
    cdef size_t data
    PyObject_GetBuffer(arr, &view, PyBUF_ANY_CONTIGUOUS)
    data = <size_t>view.buf
    PyBuffer_Release(&view)
    return data


def cpu_has(int isa):
    """Whether this CPU can run code path ``isa`` (0 scalar, 1 AVX2, 2 AVX-512)."""
    return bool(soniq_cpu_has(isa))


def gemm(a, conv, int64_t m, int64_t k, list groups, list blocks, out, int64_t n_out,
         tuple layout, int isa, int n_threads, tuple requant=None, direct=None):
    """Run one GEMM job (see core/soniq_cpu.h); every element of ``out`` (int64) is written.

    a: uint8 [M, K] or None; conv: None or (x uint8 [B, C, H, W], c, h, w, kh, kw, stride,
    padding, ho, wo). groups: tuples (bits, shift, k, idx int32, start, contiguous, words,
    kpad, need_planes, need_bytes, every_other, need_tables). blocks: tuples (engine, group,
    wbits, n, cols int32, wplanes uint64 or None, wbytes int8 or None, lanes, wnibbles uint8 or
    None, more: ((group, wnibbles), ...) of a lut block spanning more act groups; at most
    7, one per other activation width). n_out: output channels. layout: (rows_per_image,
    image_stride, row_stride, col_stride).
    requant: None, or (scale, bias, bits, ratio, per_position) to requantize the sums right
    away (see soniq_gemm_requantize_run): ``out`` is then the uint8 codes.
    direct: None, or with requant on the AVX2 path the int16 [n_out, K rounded up to even]
    weights q << (A - ba) of the direct conv (core/direct_conv_avx2.c).
    """
    cdef soniq_gemm_job job
    cdef soniq_requant_out rq
    cdef soniq_conv_src src
    cdef soniq_act_group *cg = <soniq_act_group *>calloc(max(len(groups), 1),
                                                         sizeof(soniq_act_group))
    cdef soniq_block *cb = <soniq_block *>calloc(max(len(blocks), 1), sizeof(soniq_block))
    cdef int rc
    if cg == NULL or cb == NULL:
        free(cg); free(cb)
        raise MemoryError("cannot allocate the job description")
    try:
        for i, g in enumerate(groups):
            cg[i].bits, cg[i].shift, cg[i].k = g[0], g[1], g[2]
            cg[i].idx = <int32_t *>addr(g[3])
            cg[i].start, cg[i].contiguous, cg[i].words, cg[i].kpad = g[4], g[5], g[6], g[7]
            cg[i].need_planes, cg[i].need_bytes, cg[i].every_other = g[8], g[9], g[10]
            cg[i].need_tables = g[11]
        for i, b in enumerate(blocks):
            cb[i].engine, cb[i].group, cb[i].wbits, cb[i].n = b[0], b[1], b[2], b[3]
            cb[i].cols = <int32_t *>addr(b[4])
            cb[i].lanes = b[7]
            if b[5] is not None:
                cb[i].wplanes = <uint64_t *>addr(b[5])
            if b[6] is not None:
                cb[i].wbytes = <int8_t *>addr(b[6])
            if b[8] is not None:
                cb[i].wnibbles = <uint8_t *>addr(b[8])
            cb[i].n_more = len(b[9])
            for j, (more_group, more_wnibbles) in enumerate(b[9]):
                cb[i].more_group[j] = more_group
                cb[i].more_wnibbles[j] = <uint8_t *>addr(more_wnibbles)
        job.a = NULL
        if a is not None:
            job.a = <uint8_t *>addr(a)
        job.conv = NULL
        if conv is not None:
            src.x = <uint8_t *>addr(conv[0])
            src.c, src.h, src.w, src.kh, src.kw = conv[1], conv[2], conv[3], conv[4], conv[5]
            src.stride, src.padding, src.ho, src.wo = conv[6], conv[7], conv[8], conv[9]
            job.conv = <const soniq_conv_src *>&src
        job.m, job.k = m, k
        job.n_groups, job.groups = len(groups), cg
        job.n_blocks, job.blocks = len(blocks), cb
        job.out = <int64_t *>addr(out)
        job.n_out = n_out
        job.layout.rows_per_image, job.layout.image_stride = layout[0], layout[1]
        job.layout.row_stride, job.layout.col_stride = layout[2], layout[3]
        job.isa = isa
        job.direct = NULL
        job.direct_k = 0
        if direct is not None:
            job.direct = <int16_t *>addr(direct)
            job.direct_k = direct.shape[1]
        if requant is None:
            with nogil:
                rc = soniq_gemm_run(&job, n_threads)
        else:
            job.out = NULL
            rq.scale, rq.bias = <float *>addr(requant[0]), <float *>addr(requant[1])
            rq.bits, rq.ratio = <uint8_t *>addr(requant[2]), <float *>addr(requant[3])
            rq.per_position, rq.codes = requant[4], <uint8_t *>addr(out)
            with nogil:
                rc = soniq_gemm_requantize_run(&job, &rq, n_threads)
    finally:
        free(cg); free(cb)
    if rc == -2:
        raise ValueError("too many activation bit-width groups")
    if rc == -3:
        raise ValueError("no fused requantize for this output layout or K")
    if rc != 0:
        raise MemoryError("the cpu kernels could not allocate their scratch buffers")


def popcount_probe(int isa, int64_t iterations):
    """Run the AND + popcount peak probe of code path ``isa`` (1 avx2, 2 avx512); returns the
    binary multiply-accumulates done (0 when the CPU lacks the path, or for scalar)."""
    cdef int64_t macs
    with nogil:
        macs = soniq_popcount_probe(isa, iterations)
    return macs


def engine_calls(int isa, int engine):
    """How many times engine ``engine`` (0 popcount, 1 int8, 2 lut) of code path ``isa`` has run."""
    if not (0 <= isa <= 2 and 0 <= engine <= 2):
        raise ValueError(f"no engine ({isa}, {engine})")
    return soniq_engine_calls(isa, engine)


def pack_activations(a, a_bits, int hi, out, int isa, int n_threads):
    """a uint8 [M, K], a_bits uint8 [K] -> out uint64 [M, hi, ceil(K/64)] (written in place)."""
    cdef const uint8_t *pa = <const uint8_t *>addr(a)
    cdef const uint8_t *pb = <const uint8_t *>addr(a_bits)
    cdef uint64_t *po = <uint64_t *>addr(out)
    cdef int64_t m = a.shape[0], k = a.shape[1]
    cdef int rc
    with nogil:
        rc = soniq_pack_activations(pa, m, k, pb, hi, po, isa, n_threads)
    if rc != 0:
        raise MemoryError("the cpu kernels could not allocate their scratch buffers")


def epilogue(acc, int64_t channels, int64_t inner, scale, bias, out, int isa, int n_threads):
    """out float32 (like acc) = scale[o] * float32(acc) + bias[o], o = (i // inner) % channels."""
    cdef const int64_t *pa = <const int64_t *>addr(acc)
    cdef const float *ps = <const float *>addr(scale)
    cdef const float *pb = <const float *>addr(bias)
    cdef float *po = <float *>addr(out)
    cdef int64_t total = acc.size
    cdef int rc
    with nogil:
        rc = soniq_epilogue(pa, total, channels, inner, ps, pb, po, isa, n_threads)
    if rc != 0:
        raise MemoryError("the cpu kernels could not start their threads")


def requantize(acc, int64_t channels, int64_t inner, scale, bias, bits, ratio, out,
               int isa, int n_threads):
    """out uint8 = clip(rint((scale * float32(acc) + bias) * ratio), 0, 2**bits - 1).

    Per channel o = (i // inner) % channels of flat element i.
    """
    cdef const int64_t *pa = <const int64_t *>addr(acc)
    cdef const float *ps = <const float *>addr(scale)
    cdef const float *pb = <const float *>addr(bias)
    cdef const uint8_t *pbits = <const uint8_t *>addr(bits)
    cdef const float *pr = <const float *>addr(ratio)
    cdef uint8_t *po = <uint8_t *>addr(out)
    cdef int64_t total = acc.size
    cdef int rc
    with nogil:
        rc = soniq_requantize(pa, total, channels, inner, ps, pb, pbits, pr, po, isa,
                              n_threads)
    if rc != 0:
        raise MemoryError("the cpu kernels could not start their threads")


cdef extern from "core/residual.h" nogil:
    int soniq_residual_requantize(const int64_t *acc, const float *skip, int64_t total,
                                  int64_t channels, int64_t inner, const float *scale,
                                  const float *bias, const uint8_t *bits, const float *ratio,
                                  uint8_t *out, int isa, int n_threads)


def residual_requantize(acc, skip, int64_t channels, int64_t inner, scale, bias, bits, ratio,
                        out, int isa, int n_threads):
    """out uint8 = clip(rint(((scale * float32(acc) + bias) + skip) * ratio), 0, 2**bits - 1),
    per channel o = (i // inner) % channels of flat element i (core/residual.h)."""
    cdef const int64_t *pa = <const int64_t *>addr(acc)
    cdef const float *pk = <const float *>addr(skip)
    cdef const float *ps = <const float *>addr(scale)
    cdef const float *pb = <const float *>addr(bias)
    cdef const uint8_t *pbits = <const uint8_t *>addr(bits)
    cdef const float *pr = <const float *>addr(ratio)
    cdef uint8_t *po = <uint8_t *>addr(out)
    cdef int64_t total = acc.size
    cdef int rc
    with nogil:
        rc = soniq_residual_requantize(pa, pk, total, channels, inner, ps, pb, pbits, pr, po,
                                       isa, n_threads)
    if rc != 0:
        raise MemoryError("the cpu kernels could not start their threads")


def max_pool(x, int kernel, int stride, out, int isa, int n_threads):
    """out uint8 [B, C, Ho, Wo] = window maxima of x uint8 [B, C, H, W] (both C-contiguous)."""
    cdef const uint8_t *px = <const uint8_t *>addr(x)
    cdef uint8_t *po = <uint8_t *>addr(out)
    cdef int64_t planes = x.shape[0] * x.shape[1], h = x.shape[2], w = x.shape[3]
    cdef int rc
    with nogil:
        rc = soniq_max_pool(px, planes, h, w, kernel, stride, po, isa, n_threads)
    if rc != 0:
        raise MemoryError("the cpu kernels could not start their threads")


# ------------------------------------------------ constants and rules of the C kernels
# Written once, in core/soniq_cpu.h and core/lut.h; the Python side reads them from here.

cdef extern from "core/soniq_cpu.h" nogil:
    enum: SONIQ_MAX_EXACT_K
    enum: SONIQ_DIRECT_MAX_K
    enum: SONIQ_FEATURE_VBMI
    int64_t soniq_int8_steps(int wbits, int abits, int shift)

cdef extern from "core/lut.h" nogil:
    enum: SONIQ_LUT_LANES
    enum: SONIQ_LUT64_LANES
    int soniq_lut_tables(int bits)

# Largest K the int32 accumulators of the kernels sum exactly (|term| <= 255 * 255).
MAX_EXACT_K = SONIQ_MAX_EXACT_K
# Largest K of a stride-1 conv run as a direct convolution (core/direct_conv_avx2.c).
DIRECT_MAX_K = SONIQ_DIRECT_MAX_K
# Output channels per vector of the lut engine (core/lut.h).
LUT_LANES = SONIQ_LUT_LANES
# The same with 64-entry tables (core/lut_avx512.c, AVX-512 VBMI).
LUT64_LANES = SONIQ_LUT64_LANES
# cpu_has(VBMI_FEATURE): whether the avx512 path can use those tables.
VBMI_FEATURE = SONIQ_FEATURE_VBMI


def int8_steps(int w_bits, int a_bits, int shift):
    """How many vpmaddubsw results the AVX2 int8 kernel may add in int16 (0: none is exact):
    ``32768 // (((2^a_bits - 1) << shift) << w_bits)`` (soniq_int8_steps, core/soniq_cpu.h).

    With a' <= amax = (2^ba - 1) 2^shift and -2^(bw-1) <= v < 2^(bw-1), one vpmaddubsw pair
    sum lies in [-amax 2^bw, amax (2^bw - 2)], so L of them fit int16 (no saturation, no
    wrap) while L * amax * 2^bw <= 32768."""
    return soniq_int8_steps(w_bits, a_bits, shift)


def lut_tables(int a_bits):
    """Tables per group of 4 K positions in the lut engine: codes above 4 bits split into
    their low and high nibbles, so every entry fits a byte (soniq_lut_tables, core/lut.h)."""
    return soniq_lut_tables(a_bits)
