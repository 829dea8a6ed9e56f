# cython: language_level=3, boundscheck=False, wraparound=False
"""Cython glue: NumPy arrays in, C kernels run with the GIL released.

Every function here trusts its caller (soniq_fast.cpu.backend) to have validated
shapes, dtypes and ranges and to keep the arrays alive for the call; arrays are
passed as C-contiguous NumPy arrays and reached through their data addresses.
"""

from cpython.buffer cimport PyBUF_ANY_CONTIGUOUS, PyBuffer_Release, PyObject_GetBuffer
from libc.stdlib cimport calloc, free

cdef extern from "core/soniq_cpu.h" nogil:
    int soniq_cpu_has(int isa)
    int64_t soniq_popcount_probe(int isa, int64_t iterations)
    int64_t soniq_engine_calls(int isa, int engine)
    int soniq_gemm_run(const soniq_gemm_job *job, int n_threads)
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


cdef inline size_t addr_or_null(arr) except? 0:
    """addr(arr), or 0 (NULL) for None."""
    return 0 if arr is None else addr(arr)


cdef void fill_group(soniq_act_group *cg, g) except *:
    """An ActGroupRecord (records.py) into its C struct, by name."""
    cg.bits, cg.shift, cg.k = g.bits, g.shift, g.k
    cg.idx = <int32_t *>addr(g.idx)
    cg.start, cg.contiguous, cg.every_other = g.start, g.contiguous, g.every_other
    cg.words, cg.kpad = g.words, g.kpad
    cg.need_planes, cg.need_bytes, cg.need_tables = g.need_planes, g.need_bytes, g.need_tables


cdef void fill_block(soniq_block *cb, b) except *:
    """A Block (records.py) into its C struct, by name."""
    cb.engine, cb.group, cb.wbits, cb.n = b.engine, b.group, b.wbits, b.n
    cb.cols = <int32_t *>addr(b.cols)
    cb.lanes = b.lanes
    cb.wplanes = <uint64_t *>addr_or_null(b.wplanes)
    cb.wbytes = <int8_t *>addr_or_null(b.wbytes)
    cb.wnibbles = <uint8_t *>addr_or_null(b.wnibbles)
    if len(b.more) >= SONIQ_MAX_GROUPS:
        raise ValueError("a lut block spans more act groups than there are activation widths")
    cb.n_more = len(b.more)
    for j, part in enumerate(b.more):
        cb.more_group[j] = part.group
        cb.more_wnibbles[j] = <uint8_t *>addr(part.wnibbles)


cdef class KernelPlan:
    """A GEMM plan's act groups (``ActGroupRecord``) and blocks (``Block``, records.py) as
    the C records ``soniq_act_group`` / ``soniq_block`` of core/params.h, filled once, by
    field name, when the plan is built (the plan is cached with the packed weights, so a
    call fills nothing). Keeps the records, whose arrays the C records point into, alive."""

    def __cinit__(self, tuple groups, tuple blocks):
        self.groups = <soniq_act_group *>calloc(max(len(groups), 1), sizeof(soniq_act_group))
        self.blocks = <soniq_block *>calloc(max(len(blocks), 1), sizeof(soniq_block))
        if self.groups == NULL or self.blocks == NULL:
            raise MemoryError("cannot allocate the plan's records")
        if len(groups) > SONIQ_MAX_GROUPS:
            raise ValueError("too many activation bit-width groups")
        self.group_records, self.block_records = groups, blocks
        for i, g in enumerate(groups):
            fill_group(&self.groups[i], g)
        for i, b in enumerate(blocks):
            fill_block(&self.blocks[i], b)
        self.n_groups, self.n_blocks = len(groups), len(blocks)

    def __dealloc__(self):
        free(self.groups)
        free(self.blocks)


cdef class OutLayout:
    """Where ``acc[m, o]`` goes (``soniq_out_layout``): element
    ``(m // rows_per_image) * image_stride + (m % rows_per_image) * row_stride
    + o * col_stride`` of the output. Linear: (M, 0, N, 1); conv [B, O, Ho, Wo]:
    (Ho Wo, O Ho Wo, 1, Ho Wo)."""

    def __init__(self, *, int64_t rows_per_image, int64_t image_stride, int64_t row_stride,
                 int64_t col_stride):
        self.rows_per_image, self.image_stride = rows_per_image, image_stride
        self.row_stride, self.col_stride = row_stride, col_stride


cdef class ConvSource:
    """GEMM rows as im2col patches of ``x`` uint8 [B, c, h, w] (``soniq_conv_src``): K
    ordered (channel, kernel row, kernel column), window kh x kw, ``stride``, zero
    ``padding``, output ho x wo per image. ``shift``: None, or uint8 [c]: the codes are read
    as ``x << shift[channel]`` (inputs of several widths run at the high width A)."""

    def __init__(self, *, x, int64_t c, int64_t h, int64_t w, int64_t kh, int64_t kw,
                 int64_t stride, int64_t padding, int64_t ho, int64_t wo, shift=None):
        self.x, self.shift = x, shift
        self.c, self.h, self.w, self.kh, self.kw = c, h, w, kh, kw
        self.stride, self.padding, self.ho, self.wo = stride, padding, ho, wo


cdef class Requantize:
    """The fused requantize (``soniq_requant_out``): codes = ``clip(rint((scale[o] *
    float32(acc) + bias[o]) * ratio), 0, 2^bits - 1)``; scale, bias float32 [O]; bits uint8
    and ratio float32 per channel [O], or per (channel, position) [O Ho Wo] when
    ``per_position``. ``skip``: None, or float32 like the output (a conv's channel planes,
    parameters per channel): the residual tail ``clip(rint(((scale[o] * float32(acc) +
    bias[o]) + skip) * ratio), 0, 2^bits - 1)`` instead (core/residual.h); or, for an
    identity skip, ``skip_codes`` (uint8 like the output) and ``skip_factor`` (float32 [O]):
    ``skip = float32(skip_codes) * skip_factor[o]``."""

    def __init__(self, *, scale, bias, bits, ratio, bint per_position, skip=None,
                 skip_codes=None, skip_factor=None):
        self.scale, self.bias, self.bits, self.ratio = scale, bias, bits, ratio
        self.skip, self.skip_codes, self.skip_factor = skip, skip_codes, skip_factor
        self.per_position = per_position


cdef class GemmJob:
    """One GEMM (``soniq_gemm_job``): rows of ``a`` uint8 [m, k] or of ``conv`` (the other
    None), the act groups and blocks of ``plan``, ``out`` (int64 in ``layout``, every
    element written; uint8 codes when ``requant`` is set), ``n_out`` output channels, code
    path ``isa`` (its index). ``direct``: None, or with ``requant`` the int16
    [n_out, k rounded up to even] weights ``q << (A - ba)`` of the direct conv."""

    def __init__(self, *, a, ConvSource conv, int64_t m, int64_t k, KernelPlan plan not None,
                 out, int64_t n_out, OutLayout layout not None, int isa,
                 Requantize requant=None, direct=None):
        self.a, self.conv, self.m, self.k, self.plan = a, conv, m, k, plan
        self.out, self.n_out, self.layout, self.isa = out, n_out, layout, isa
        self.requant, self.direct = requant, direct


def gemm(GemmJob job not None, int n_threads):
    """Run one GEMM job (C: soniq_gemm_job, core/params.h) with ``n_threads`` threads;
    every element of ``job.out`` is written: int64 sums, or with ``job.requant`` set the
    uint8 codes of the fused requantize (soniq_gemm_requantize_run)."""
    cdef soniq_gemm_job cjob
    cdef soniq_requant_out rq
    cdef soniq_conv_src src
    cdef ConvSource conv = job.conv
    cdef OutLayout layout = job.layout
    cdef Requantize requant = job.requant
    cdef int rc
    cjob.a = <uint8_t *>addr_or_null(job.a)
    cjob.conv = NULL
    if conv is not None:
        src.x = <uint8_t *>addr(conv.x)
        src.shift = <uint8_t *>addr_or_null(conv.shift)
        src.c, src.h, src.w, src.kh, src.kw = conv.c, conv.h, conv.w, conv.kh, conv.kw
        src.stride, src.padding, src.ho, src.wo = conv.stride, conv.padding, conv.ho, conv.wo
        cjob.conv = <const soniq_conv_src *>&src
    cjob.m, cjob.k = job.m, job.k
    cjob.n_groups, cjob.groups = job.plan.n_groups, job.plan.groups
    cjob.n_blocks, cjob.blocks = job.plan.n_blocks, job.plan.blocks
    cjob.n_out = job.n_out
    cjob.layout.rows_per_image, cjob.layout.image_stride = (layout.rows_per_image,
                                                            layout.image_stride)
    cjob.layout.row_stride, cjob.layout.col_stride = layout.row_stride, layout.col_stride
    cjob.isa = job.isa
    cjob.direct = <int16_t *>addr_or_null(job.direct)
    cjob.direct_k = 0 if job.direct is None else job.direct.shape[1]
    if requant is None:
        cjob.out = <int64_t *>addr(job.out)
        with nogil:
            rc = soniq_gemm_run(&cjob, n_threads)
    else:
        cjob.out = NULL
        rq.scale, rq.bias = <float *>addr(requant.scale), <float *>addr(requant.bias)
        rq.bits, rq.ratio = <uint8_t *>addr(requant.bits), <float *>addr(requant.ratio)
        rq.per_position, rq.codes = requant.per_position, <uint8_t *>addr(job.out)
        rq.skip = <float *>addr_or_null(requant.skip)
        rq.skip_codes = <uint8_t *>addr_or_null(requant.skip_codes)
        rq.skip_factor = <float *>addr_or_null(requant.skip_factor)
        with nogil:
            rc = soniq_gemm_requantize_run(&cjob, &rq, n_threads)
    if rc == -2:
        raise ValueError("too many activation bit-width groups")
    if rc == -3:
        raise ValueError("no fused requantize for this output layout or K, or the code path "
                         "lacks a kernel the job needs")
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
    if not (0 <= isa < SONIQ_ISAS and 0 <= engine < SONIQ_ENGINES):
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
# Written once, in core/params.h, core/soniq_cpu.h and core/lut.h; the Python side reads
# them from here.

cdef extern from "core/params.h" nogil:
    enum: SONIQ_SCALAR
    enum: SONIQ_AVX2
    enum: SONIQ_AVX512
    enum: SONIQ_ENGINE_POPCOUNT
    enum: SONIQ_ENGINE_INT8
    enum: SONIQ_ENGINE_LUT
    enum: SONIQ_MAX_EXACT_K
    enum: SONIQ_DIRECT_MAX_K
    enum: SONIQ_FEATURE_VBMI
    enum: SONIQ_NEED_BYTES
    enum: SONIQ_NEED_WIDE
    enum: SONIQ_TABLES_16
    enum: SONIQ_TABLES_64
    enum: SONIQ_POPCOUNT_LANES_AVX2
    enum: SONIQ_POPCOUNT_LANES_AVX512
    enum: SONIQ_INT8_LANES_AVX2
    enum: SONIQ_INT8_LANES_AVX512

cdef extern from "core/soniq_cpu.h" nogil:
    int64_t soniq_int8_steps(int wbits, int abits, int shift)

cdef extern from "core/lut.h" nogil:
    enum: SONIQ_LUT_LANES
    enum: SONIQ_LUT64_LANES
    int soniq_lut_tables(int bits)

# Code path ids (the index into isa.ISA_NAMES) and engine ids (engines.ENGINE_NAMES).
ISA_SCALAR, ISA_AVX2, ISA_AVX512 = SONIQ_SCALAR, SONIQ_AVX2, SONIQ_AVX512
ENGINE_POPCOUNT, ENGINE_INT8, ENGINE_LUT = (SONIQ_ENGINE_POPCOUNT, SONIQ_ENGINE_INT8,
                                            SONIQ_ENGINE_LUT)
# ActGroupRecord.need_bytes bits and need_tables values (records.py).
NEED_BYTES, NEED_WIDE = SONIQ_NEED_BYTES, SONIQ_NEED_WIDE
TABLES_16, TABLES_64 = SONIQ_TABLES_16, SONIQ_TABLES_64
# Output channels interleaved per vector in a block's weights, per engine and vector path.
POPCOUNT_LANES_AVX2, POPCOUNT_LANES_AVX512 = SONIQ_POPCOUNT_LANES_AVX2, SONIQ_POPCOUNT_LANES_AVX512
INT8_LANES_AVX2, INT8_LANES_AVX512 = SONIQ_INT8_LANES_AVX2, SONIQ_INT8_LANES_AVX512
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
