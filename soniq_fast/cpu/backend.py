"""The cpu backend: the six contract functions on the C kernels, GIL released.

Validation is the reference's own (``soniq_ref.checks`` and the reference helpers),
so every backend refuses the same inputs with the same messages before any kernel
runs. Results never depend on the code path or the thread count.
"""

from __future__ import annotations

import numpy as np

from soniq_ref import checks
from soniq_ref.bitpack import PackedWeights, check_stored_bits, words_for
from soniq_ref.epilogue import check_epilogue_args, check_requantize_args
from soniq_ref.integer_core import check_acts, check_conv_geometry
from soniq_ref.layers.pooling import max_pool_codes as ref_max_pool_codes
from soniq_ref.layers.pooling import check_pool_input

from . import _kernels, engines
from .isa import ISA_NAMES, check_isa, check_threads, isa_from_env, threads_from_env
from .engines import ENGINE_NAMES, ENGINE_POLICIES
from .packed import CpuPackedWeights

# The int8 engine keeps int32 partial sums: |(w - 2^(bw-1)) * a'| <= 128 * 255 per term,
# and the documented bound |term| <= 255 * 255 gives K <= 33025 for any int32 accumulator.
MAX_EXACT_K = 33025


class CpuBackend:
    """The ``cpu`` backend pinned to one code path (``isa``) and thread count.

    ``variant(name)`` returns a copy pinned to 'scalar', 'avx2' or 'avx512';
    ``with_threads(n)`` a copy with ``n`` threads; ``set_num_threads(n)`` changes this
    one. ``engine_policy`` ('auto', 'popcount', 'int8', 'lut') forces one engine for tests.
    ``last_path`` is (isa, engines) of the most recent GEMM call, for inspection.
    """

    name = "cpu"

    def __init__(self, isa: str | None = None, num_threads: int | None = None,
                 engine_policy: str = "auto"):
        self.isa = isa_from_env() if isa is None else isa
        self._isa_index = check_isa(self.isa)
        self.num_threads = threads_from_env() if num_threads is None else \
            check_threads(num_threads)
        if engine_policy not in ENGINE_POLICIES:
            raise ValueError(f"engine_policy must be one of {', '.join(ENGINE_POLICIES)}, "
                             f"got {engine_policy!r}")
        self.engine_policy = engine_policy
        self.last_path = None

    def __repr__(self) -> str:
        return (f"CpuBackend(isa={self.isa!r}, num_threads={self.num_threads}, "
                f"engine_policy={self.engine_policy!r})")

    # ------------------------------------------------------------------ configuration

    def variant(self, name: str) -> "CpuBackend":
        """This backend pinned to code path ``name`` (RuntimeError if the CPU lacks it)."""
        if name not in ISA_NAMES:
            raise ValueError(f"variant must be one of {', '.join(ISA_NAMES)}, got {name!r}")
        return CpuBackend(name, self.num_threads, self.engine_policy)

    def with_threads(self, num_threads: int) -> "CpuBackend":
        return CpuBackend(self.isa, num_threads, self.engine_policy)

    def with_engine(self, policy: str) -> "CpuBackend":
        return CpuBackend(self.isa, self.num_threads, policy)

    def set_num_threads(self, num_threads: int) -> None:
        self.num_threads = check_threads(num_threads)

    # ------------------------------------------------------------------------ weights

    def pack_weights(self, w_codes, w_bits) -> CpuPackedWeights:
        """Pack weight codes (uint8 [N, K] or [O, C, kh, kw]) with bits uint8 [N]."""
        w_codes = checks.as_array("w_codes", w_codes, np.uint8)
        return CpuPackedWeights(w_codes, w_bits, w_codes.shape)

    def _weights(self, w_codes, w_bits) -> CpuPackedWeights:
        """Validated packed weights from codes + bits, or a packed object (ours or ref's),
        checked unchanged since packing."""
        if isinstance(w_codes, (CpuPackedWeights, PackedWeights)):
            w_codes.check()
            if w_bits is not None:
                check_stored_bits(w_bits, w_codes.bits)
            if isinstance(w_codes, PackedWeights):
                return CpuPackedWeights(w_codes.codes(), w_codes.bits, w_codes.shape)
            return w_codes
        if w_bits is None:
            raise TypeError("w_bits is required unless w_codes is a packed weights object")
        return self.pack_weights(w_codes, w_bits)

    # ----------------------------------------------------------------------- integer core

    def linear_int(self, a_codes, a_bits, w_codes, w_bits, act_bits_hi) -> np.ndarray:
        """int64 [M, N]: ``sum_c (2 w[o,c] - (2^bw[o] - 1)) * (a[m,c] << (A - a_bits[c]))``."""
        packed = self._weights(w_codes, w_bits)
        if len(packed.shape) != 2:
            raise ValueError(f"w_codes must be [N, K] for linear_int, got shape {packed.shape}")
        a_codes, a_bits, hi = check_acts(a_codes, a_bits, act_bits_hi, packed.k, ndim=2)
        _check_k(packed.k)
        return self._linear(a_codes, a_bits, packed, hi)

    def conv2d_int(self, x_codes, a_bits, w_codes, w_bits, act_bits_hi, stride=1, padding=0):
        """int64 [B, O, Ho, Wo]: the linear_int sum over im2col patches, K = (c, row, col)."""
        packed = self._weights(w_codes, w_bits)
        if len(packed.shape) != 4:
            raise ValueError(f"w_codes must be [O, C, kh, kw] for conv2d_int, "
                             f"got {packed.shape}")
        x_codes, a_bits, hi = check_acts(x_codes, a_bits, act_bits_hi, packed.shape[1],
                                          ndim=4, name="x_codes")
        stride, padding, ho, wo = check_conv_geometry(x_codes.shape, packed.shape, stride,
                                                      padding)
        _check_k(packed.k)
        return self._conv(x_codes, a_bits, packed, hi, stride, padding, ho, wo)

    # Validated arguments from here on. requant: None (int64 sums) or the fused requantize's
    # (scale, bias, bits, ratio, per_position) (uint8 codes); threads: None for all of them.

    def _linear(self, a_codes, a_bits, packed, hi, requant=None, threads=None):
        m, n = a_codes.shape[0], packed.shape[0]
        out = np.empty((m, n), np.int64 if requant is None else np.uint8)
        self._gemm(packed, a_bits, hi, a_codes, None, m, out, (max(m, 1), 0, n, 1), requant,
                   threads)
        return out

    def _conv(self, x_codes, a_bits, packed, hi, stride, padding, ho, wo, requant=None,
              threads=None):
        b, c, h, w = x_codes.shape
        o, _, kh, kw = packed.shape
        out = np.empty((b, o, ho, wo), np.int64 if requant is None else np.uint8)
        conv = (x_codes, c, h, w, kh, kw, stride, padding, ho, wo)
        k_bits = np.repeat(a_bits, kh * kw)
        direct = None
        if requant is not None and stride == 1 and \
                engines.direct_conv(self.isa, self.engine_policy, packed.k):
            direct = packed.direct(k_bits, hi)
        self._gemm(packed, k_bits, hi, None, conv, b * ho * wo, out,
                   (ho * wo, o * ho * wo, 1, ho * wo), requant, threads, direct)
        return out

    def _gemm(self, packed, k_bits, hi, a_codes, conv, m, out, layout, requant=None,
              threads=None, direct=None):
        if direct is not None:
            engines = ("direct",)
            groups, blocks = [], []
        else:
            groups, blocks, engines = packed.plan(k_bits, hi, self.engine_policy, self.isa)
        self.last_path = (self.isa, tuple(sorted(engines)))
        _kernels.gemm(a_codes, conv, m, packed.k, list(groups), list(blocks), out,
                      packed.shape[0], layout, self._isa_index,
                      self.num_threads if threads is None else threads, requant, direct)

    # ------------------------------------------------------------------------ activations

    def pack_activations(self, a_codes, a_bits, act_bits_hi) -> np.ndarray:
        """uint64 [M, A, ceil(K/64)]: plane i holds bit i of ``a << (A - a_bits)``."""
        a_codes, a_bits, hi = checks.check_act_codes(a_codes, a_bits, act_bits_hi)
        m, k = a_codes.shape
        out = np.zeros((m, hi, words_for(k)), np.uint64)
        if out.size:
            _kernels.pack_activations(a_codes, a_bits, hi, out, self._isa_index,
                                      self.num_threads)
        return out

    # --------------------------------------------------------------------------- epilogue

    def epilogue(self, acc, scale, bias) -> np.ndarray:
        """float32 like acc: ``scale[o] * float32(acc) + bias[o]`` (channel axis 1)."""
        acc, scale, bias = check_epilogue_args(acc, scale, bias)
        out = np.empty(acc.shape, np.float32)
        _kernels.epilogue(acc, acc.shape[1], _inner(acc), scale, bias, out, self._isa_index,
                          self.num_threads)
        return out

    def requantize(self, acc, scale, bias, out_bits, out_ratio) -> np.ndarray:
        """uint8 like acc: ``clip(rint(epilogue * out_ratio[o]), 0, 2^out_bits[o] - 1)``."""
        acc, scale, bias, out_bits, out_ratio = check_requantize_args(acc, scale, bias,
                                                                      out_bits, out_ratio)
        out = np.empty(acc.shape, np.uint8)
        _kernels.requantize(acc, acc.shape[1], _inner(acc), scale, bias, out_bits, out_ratio,
                            out, self._isa_index, self.num_threads)
        return out

    # ----------------------------------------------------------------- optional: pooling

    def max_pool_codes(self, codes, kernel, stride=None) -> np.ndarray:
        """:func:`soniq_ref.layers.pooling.max_pool_codes` in C: uint8 [B, C, H, W] ->
        window maxima [B, C, Ho, Wo] (optional contract method, used by DeployModel)."""
        stride = kernel if stride is None else stride
        if not _positive_ints(kernel, stride):
            return ref_max_pool_codes(codes, kernel, stride)   # the reference's behaviour
        if not isinstance(codes, np.ndarray) or codes.dtype != np.uint8:
            raise TypeError("codes must be a uint8 NumPy array")
        check_pool_input(codes, kernel, stride)
        return self._max_pool(np.ascontiguousarray(codes), int(kernel), int(stride),
                              self.num_threads)

    def _max_pool(self, codes, kernel: int, stride: int, threads: int) -> np.ndarray:
        b, c, h, w = codes.shape
        out = np.empty((b, c, (h - kernel) // stride + 1, (w - kernel) // stride + 1), np.uint8)
        if out.size:
            _kernels.max_pool(codes, kernel, stride, out, self._isa_index, threads)
        return out

    # ------------------------------------------------- unchecked entries (DeployModel only)

    @property
    def trusted(self) -> "_Trusted":
        """The integer core, alone or with requantize fused in, without the scans of arrays
        by value (codes within their bits, finite parameters), for DeployModel.forward: it
        checks its input codes and its own parameters, and every later stage consumes codes
        it produced itself."""
        return _Trusted(self)


class _Trusted:
    """Integer core entries of one CpuBackend that trust their arguments' values (see
    ``CpuBackend.trusted``); shapes, geometry and K are still checked (cheap). The
    ``*_requantize`` forms fuse ``requantize`` into the GEMM (the int64 accumulator is
    never stored) and take out_bits/out_ratio per channel [O] or, for conv, per
    (channel, position) [O * Ho * Wo]."""

    # Threads are started only for work worth it: one per this many multiply-adds (a pooled
    # code counts as 2); a thread start costs tens of microseconds. Results never depend on it.
    work_per_thread = 1 << 21

    def __init__(self, backend: CpuBackend):
        self.backend = backend

    def _threads(self, work: int) -> int:
        return max(1, min(self.backend.num_threads, 1 + work // self.work_per_thread))

    def max_pool_codes(self, codes, kernel, stride=None) -> np.ndarray:
        if not isinstance(codes, np.ndarray) or codes.ndim != 4 \
                or not codes.flags.c_contiguous or not _positive_ints(kernel, stride):
            return self.backend.max_pool_codes(codes, kernel, stride)
        check_pool_input(codes, kernel, stride)
        return self.backend._max_pool(codes, int(kernel), int(stride),
                                      self._threads(2 * codes.size))

    def linear_int(self, a_codes, a_bits, packed, w_bits, act_bits_hi) -> np.ndarray:
        return self._linear(a_codes, a_bits, packed, act_bits_hi, None)

    def linear_requantize(self, a_codes, a_bits, packed, act_bits_hi, scale, bias, out_bits,
                          out_ratio) -> np.ndarray:
        return self._linear(a_codes, a_bits, packed, act_bits_hi,
                            _requant_args(packed.shape[0], 1, scale, bias, out_bits, out_ratio))

    def conv2d_int(self, x_codes, a_bits, packed, w_bits, act_bits_hi, stride=1, padding=0):
        return self._conv(x_codes, a_bits, packed, act_bits_hi, stride, padding, None)

    def conv2d_requantize(self, x_codes, a_bits, packed, act_bits_hi, stride, padding, scale,
                          bias, out_bits, out_ratio) -> np.ndarray:
        return self._conv(x_codes, a_bits, packed, act_bits_hi, stride, padding,
                          (scale, bias, out_bits, out_ratio))

    def epilogue(self, acc, scale, bias) -> np.ndarray:
        """``CpuBackend.epilogue`` without the scan of scale and bias for NaN and Inf."""
        if not isinstance(acc, np.ndarray) or acc.dtype != np.int64 or acc.ndim not in (2, 4) \
                or not acc.flags.c_contiguous:
            return self.backend.epilogue(acc, scale, bias)
        if scale.dtype != np.float32 or bias.dtype != np.float32 \
                or scale.shape != (acc.shape[1],) or bias.shape != (acc.shape[1],):
            raise ValueError("scale and bias: float32, one per channel")
        out = np.empty(acc.shape, np.float32)
        _kernels.epilogue(acc, acc.shape[1], _inner(acc), np.ascontiguousarray(scale),
                          np.ascontiguousarray(bias), out, self.backend._isa_index,
                          self._threads(8 * acc.size))
        return out

    def _linear(self, a_codes, a_bits, packed, act_bits_hi, requant):
        a_codes = _contiguous_codes(a_codes, 2)
        _check_packed(packed, a_bits, 2, a_codes.shape[1], packed.k)
        return self.backend._linear(a_codes, a_bits, packed, act_bits_hi, requant,
                                    self._gemm_threads(a_codes.shape[0], packed))

    def _conv(self, x_codes, a_bits, packed, act_bits_hi, stride, padding, requant):
        x_codes = _contiguous_codes(x_codes, 4)
        _check_packed(packed, a_bits, 4, x_codes.shape[1], packed.shape[1])
        stride, padding, ho, wo = check_conv_geometry(x_codes.shape, packed.shape, stride,
                                                      padding)
        if requant is not None:
            requant = _requant_args(packed.shape[0], ho * wo, *requant)
        return self.backend._conv(x_codes, a_bits, packed, act_bits_hi, stride, padding, ho, wo,
                                  requant, self._gemm_threads(x_codes.shape[0] * ho * wo,
                                                              packed))

    def _gemm_threads(self, m: int, packed) -> int:
        return self._threads(m * max(packed.k, 64) * packed.shape[0])   # K: 64-byte rows


def _check_packed(packed, a_bits, ndim: int, channels: int, expected: int) -> None:
    """Shapes only (what memory safety needs); the values were checked by the caller."""
    if not isinstance(packed, CpuPackedWeights) or len(packed.check().shape) != ndim:
        raise TypeError("the unchecked entries take this backend's packed weights")
    if channels != expected:
        raise ValueError(f"the codes have {channels} channels but the weights expect {expected}")
    if not isinstance(a_bits, np.ndarray) or a_bits.dtype != np.uint8 \
            or a_bits.shape != (channels,):
        raise ValueError("a_bits must be uint8, one per input channel")
    _check_k(packed.k)


def _requant_args(channels: int, positions: int, scale, bias, out_bits, out_ratio) -> tuple:
    """(scale, bias, bits, ratio, per_position) for the fused requantize; only lengths are
    checked here (the values were checked by the caller)."""
    floats = (scale, bias, out_ratio)
    if any(v.dtype != np.float32 for v in floats) or out_bits.dtype != np.uint8 \
            or scale.shape != (channels,) or bias.shape != (channels,) \
            or out_bits.ndim != 1 or out_bits.shape != out_ratio.shape \
            or out_bits.shape[0] not in (channels, channels * positions):
        raise ValueError("scale, bias: float32, one per channel; out_bits (uint8), out_ratio "
                         "(float32): one per channel or per position")
    per_position = positions > 1 and out_bits.shape[0] == channels * positions
    return (np.ascontiguousarray(scale), np.ascontiguousarray(bias),
            np.ascontiguousarray(out_bits), np.ascontiguousarray(out_ratio), per_position)


def _contiguous_codes(codes, ndim: int) -> np.ndarray:
    return checks.as_array("a_codes" if ndim == 2 else "x_codes", codes, np.uint8, ndim=ndim)


def _positive_ints(*values) -> bool:
    return all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))
               and v >= 1 for v in values)


def _inner(acc: np.ndarray) -> int:
    """Elements per channel step along the flat array: H * W for [B, O, H, W], 1 for [M, N]."""
    return int(np.prod(acc.shape[2:])) if acc.ndim == 4 else 1


def _check_k(k: int) -> None:
    if k > MAX_EXACT_K:
        raise ValueError(f"K = {k} is too large for the cpu backend's int32 accumulators "
                         f"(at most {MAX_EXACT_K}); use the ref backend")


def engine_calls() -> dict:
    """{(isa, engine): runs so far} for every code path and engine (for tests)."""
    return {(isa, engine): _kernels.engine_calls(i, e)
            for i, isa in enumerate(ISA_NAMES) for e, engine in enumerate(ENGINE_NAMES)}
