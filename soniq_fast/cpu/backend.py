"""The cpu backend: the C kernels (GIL released) behind the reference's checking wrapper.

:class:`CpuKernels` implements the kernel protocol of :mod:`soniq_ref.contract` (arguments
already validated) plus the optional fused deploy kernels; :class:`CpuBackend` is the
:class:`~soniq_ref.contract.CheckedBackend` around them, so every backend refuses the same
inputs with the same messages before any kernel runs. Results never depend on the code
path or the thread count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from soniq_ref import checks
from soniq_ref.bitpack import words_for
from soniq_ref.contract import CheckedBackend
from soniq_ref.integer_core import check_conv_geometry
from soniq_ref.layers.pooling import check_pool_input
from soniq_ref.stages import IdentitySkip

from . import _kernels
from ._kernels import MAX_EXACT_K
from .engines import ENGINE_NAMES, ENGINE_POLICIES, direct_conv, one_width_for_mixed_inputs
from .isa import ISA_NAMES, check_isa, check_threads, isa_from_env, threads_from_env
from .packed import CpuPackedWeights
from .records import ConvSource, GemmJob, KernelPlan, OutLayout, Requantize


@dataclass
class CpuSettings:
    """What one cpu backend runs with: code path (``isa``, its index), thread count, engine
    policy; ``last_path`` is (isa, engines) of its most recent GEMM, for inspection."""

    isa: str
    isa_index: int
    num_threads: int
    engine_policy: str
    last_path: tuple | None = None


class CpuBackend(CheckedBackend):
    """The ``cpu`` backend pinned to one code path (``isa``) and thread count.

    ``variant(name)`` returns a copy pinned to 'scalar', 'avx2' or 'avx512';
    ``with_threads(n)`` a copy with ``n`` threads; ``set_num_threads(n)`` changes this
    one. ``with_engine(policy)`` ('auto', 'popcount', 'int8', 'lut') forces one engine.
    ``last_path`` is (isa, engines) of the most recent GEMM call, for inspection.
    ``kernels`` are the unchecked entries (DeployModel's): they check shapes only and
    start threads only for work worth it; the contract functions use every thread.
    """

    def __init__(self, isa: str | None = None, num_threads: int | None = None,
                 engine_policy: str = "auto"):
        isa = isa_from_env() if isa is None else isa
        isa_index = check_isa(isa)
        num_threads = threads_from_env() if num_threads is None else check_threads(num_threads)
        if engine_policy not in ENGINE_POLICIES:
            raise ValueError(f"engine_policy must be one of {', '.join(ENGINE_POLICIES)}, "
                             f"got {engine_policy!r}")
        self.settings = CpuSettings(isa, isa_index, num_threads, engine_policy)
        super().__init__("cpu", CpuKernels(self.settings, guarded=True),
                         CpuKernels(self.settings, guarded=False))

    def __repr__(self) -> str:
        return (f"CpuBackend(isa={self.isa!r}, num_threads={self.num_threads}, "
                f"engine_policy={self.engine_policy!r})")

    isa = property(lambda self: self.settings.isa)
    num_threads = property(lambda self: self.settings.num_threads)
    engine_policy = property(lambda self: self.settings.engine_policy)
    last_path = property(lambda self: self.settings.last_path)

    # ------------------------------------------------------------------ configuration

    variants = ISA_NAMES
    engines = ENGINE_POLICIES

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
        self.settings.num_threads = check_threads(num_threads)


class CpuKernels:
    """The cpu kernels on validated arguments (the kernel protocol of
    :mod:`soniq_ref.contract`), plus the fused deploy kernels ``linear_requantize`` /
    ``conv2d_requantize`` and ``max_pool_codes``; they never check values. The
    ``*_requantize`` forms fuse ``requantize`` into the GEMM (the int64 accumulator is
    never stored) and take out_bits/out_ratio per channel [O] or, for conv, per
    (channel, position) [O * Ho * Wo].

    ``guarded``: the entries handed out as ``CpuBackend.kernels``, to callers that checked
    values but may not have checked shapes: they check what memory safety needs (shapes,
    geometry, K; cheap) and start threads only for work worth it (``work_per_thread``).
    Unguarded, they run behind CheckedBackend, which has checked everything, on every
    thread."""

    name = "cpu"
    packed_type = CpuPackedWeights
    max_k = MAX_EXACT_K

    # Threads are started only for work worth it: one per this many multiply-adds (a pooled
    # code counts as 2); a thread start costs tens of microseconds. Results never depend on it.
    work_per_thread = 1 << 21

    def __init__(self, settings: CpuSettings, guarded: bool):
        self.settings = settings
        self.guarded = guarded

    def _threads(self, work: int) -> int:
        threads = self.settings.num_threads
        if not self.guarded:
            return threads
        return max(1, min(threads, 1 + work // self.work_per_thread))

    # ------------------------------------------------------------------------ weights

    def pack_weights(self, w_codes, w_bits) -> CpuPackedWeights:
        """Pack weight codes (uint8 [N, K] or [O, C, kh, kw]) with bits uint8 [N]."""
        return CpuPackedWeights(w_codes, w_bits, w_codes.shape)

    weights = pack_weights

    def pack_activations(self, a_codes, a_bits, act_bits_hi) -> np.ndarray:
        """uint64 [M, A, ceil(K/64)]: plane i holds bit i of ``a << (A - a_bits)``."""
        m, k = a_codes.shape
        out = np.zeros((m, act_bits_hi, words_for(k)), np.uint64)
        if out.size:
            _kernels.pack_activations(a_codes, a_bits, act_bits_hi, out,
                                      self.settings.isa_index, self._threads(out.size))
        return out

    # ----------------------------------------------------------------------- integer core

    def linear_int(self, a_codes, a_bits, w_codes, w_bits, act_bits_hi) -> np.ndarray:
        """int64 [M, N] (``w_codes``: packed; ``w_bits`` is ignored, the packed weights carry
        their bits)."""
        return self._linear(a_codes, a_bits, w_codes, act_bits_hi, None)

    def conv2d_int(self, x_codes, a_bits, w_codes, w_bits, act_bits_hi, stride=1, padding=0):
        """int64 [B, O, Ho, Wo] (``w_codes``: packed; ``w_bits`` is ignored)."""
        return self._conv(x_codes, a_bits, w_codes, act_bits_hi, stride, padding, None)

    def linear_requantize(self, a_codes, a_bits, packed, act_bits_hi, scale, bias, out_bits,
                          out_ratio) -> np.ndarray:
        """uint8 [M, N]: ``requantize(linear_int(...), scale, bias, out_bits, out_ratio)``."""
        return self._linear(a_codes, a_bits, packed, act_bits_hi,
                            _requant_args(packed.shape[0], 1, scale, bias, out_bits, out_ratio))

    def conv2d_requantize(self, x_codes, a_bits, packed, act_bits_hi, stride, padding, scale,
                          bias, out_bits, out_ratio) -> np.ndarray:
        """uint8 [B, O, Ho, Wo]: ``requantize(conv2d_int(...), ...)``, out_bits/out_ratio per
        channel [O] or per position [O * Ho * Wo]."""
        return self._conv(x_codes, a_bits, packed, act_bits_hi, stride, padding,
                          (scale, bias, out_bits, out_ratio))

    def conv2d_residual_requantize(self, x_codes, a_bits, packed, act_bits_hi, stride,
                                   padding, scale, bias, skip, out_bits,
                                   out_ratio) -> np.ndarray:
        """uint8 [B, O, Ho, Wo]: ``residual_requantize(conv2d_int(...), scale, bias, skip,
        out_bits, out_ratio)`` in one pass -- conv2 of a residual block, its epilogue, the
        skip add and the requantization, the int64 sums never stored (every parameter per
        channel). ``skip``: float32 [B, O, Ho, Wo], or an
        :class:`~soniq_ref.stages.IdentitySkip` (the block's input codes, read as the
        skip's float32 values in the kernel)."""
        return self._conv(x_codes, a_bits, packed, act_bits_hi, stride, padding,
                          (scale, bias, out_bits, out_ratio), skip)

    def _layout(self, packed, a_bits, hi, taps: int, conv: bool, direct_ok: bool) -> "_Layout":
        """How a call with input widths ``a_bits`` (``taps`` K positions per input channel)
        runs on ``packed`` under these settings, built once per layout and cached on the
        packed weights (a layer's later calls only look it up)."""
        settings = self.settings
        key = ("layout", hi, settings.engine_policy, settings.isa, taps, conv, direct_ok,
               a_bits.tobytes())
        return packed.cached(key, lambda: self._build_layout(packed, a_bits, hi, taps, conv,
                                                             direct_ok))

    def _build_layout(self, packed, a_bits, hi, taps, conv, direct_ok) -> "_Layout":
        """Inputs of several widths whose plan has an int8 block
        (:func:`~.engines.one_width_for_mixed_inputs`) run as codes shifted to ``a << (A -
        a_bits)`` with every K position at width A (the same sums); others as given."""
        settings = self.settings
        k_bits = np.repeat(a_bits, taps)
        shift = None
        if a_bits.size and a_bits.min() != a_bits.max() and one_width_for_mixed_inputs(
                settings.isa, settings.engine_policy,
                packed.plan(k_bits, hi, settings.engine_policy, settings.isa).engines,
                packed.k, conv=conv):
            shift = hi - a_bits.astype(np.uint8)      # per input channel
            k_bits = np.full_like(k_bits, hi)
        if direct_ok and direct_conv(settings.isa, settings.engine_policy, packed.k):
            return _Layout(shift, ("direct",), _NO_PLAN, packed.direct(k_bits, hi))
        found = packed.plan(k_bits, hi, settings.engine_policy, settings.isa)
        return _Layout(shift, tuple(sorted(found.engines)), found.kernel, None)

    def _linear(self, a_codes, a_bits, packed, hi, requant):
        if self.guarded:
            a_codes = _contiguous_codes(a_codes, 2)
            _check_packed(packed, a_bits, 2, a_codes.shape[1], packed.k)
        m, n = a_codes.shape[0], packed.shape[0]
        out = np.empty((m, n), np.int64 if requant is None else np.uint8)
        layout = self._layout(packed, a_bits, hi, 1, False, False)
        self._gemm(packed, layout, layout.shifted(a_codes), None, m, out,
                   OutLayout(rows_per_image=max(m, 1), image_stride=0, row_stride=n,
                             col_stride=1), requant)
        return out

    def _conv(self, x_codes, a_bits, packed, hi, stride, padding, requant, skip=None):
        if self.guarded:
            x_codes = _contiguous_codes(x_codes, 4)
            _check_packed(packed, a_bits, 4, x_codes.shape[1], packed.shape[1])
        stride, padding, ho, wo = check_conv_geometry(x_codes.shape, packed.shape, stride,
                                                      padding)
        b, c, h, w = x_codes.shape
        o, _, kh, kw = packed.shape
        if requant is not None:
            requant = _requant_args(o, 1 if skip is not None else ho * wo, *requant,
                                    **_check_skip(skip, (b, o, ho, wo)))
        out = np.empty((b, o, ho, wo), np.int64 if requant is None else np.uint8)
        layout = self._layout(packed, a_bits, hi, kh * kw, True,
                              requant is not None and skip is None and stride == 1)
        conv = ConvSource(x=x_codes, c=c, h=h, w=w, kh=kh, kw=kw, stride=stride,
                          padding=padding, ho=ho, wo=wo, shift=layout.shift)
        self._gemm(packed, layout, None, conv, b * ho * wo, out,
                   OutLayout(rows_per_image=ho * wo, image_stride=o * ho * wo, row_stride=1,
                             col_stride=ho * wo), requant)
        return out

    def _gemm(self, packed, layout, a_codes, conv, m, out, out_layout, requant):
        """Run the GEMM. requant: None (int64 sums) or the fused requantize's
        :class:`~.records.Requantize` (uint8 codes)."""
        settings = self.settings
        settings.last_path = (settings.isa, layout.engines)
        threads = self._threads(m * max(packed.k, 64) * packed.shape[0])  # K: 64-byte rows
        _kernels.gemm(GemmJob(a=a_codes, conv=conv, m=m, k=packed.k, plan=layout.plan,
                              out=out, n_out=packed.shape[0], layout=out_layout,
                              isa=settings.isa_index, requant=requant, direct=layout.direct),
                      threads)

    # --------------------------------------------------------------------------- epilogue

    def epilogue(self, acc, scale, bias) -> np.ndarray:
        """float32 like acc: ``scale[o] * float32(acc) + bias[o]`` (channel axis 1)."""
        _check_acc(acc)
        if scale.dtype != np.float32 or bias.dtype != np.float32 \
                or scale.shape != (acc.shape[1],) or bias.shape != (acc.shape[1],):
            raise ValueError("scale and bias: float32, one per channel")
        out = np.empty(acc.shape, np.float32)
        _kernels.epilogue(acc, acc.shape[1], _inner(acc), np.ascontiguousarray(scale),
                          np.ascontiguousarray(bias), out, self.settings.isa_index,
                          self._threads(8 * acc.size))
        return out

    def requantize(self, acc, scale, bias, out_bits, out_ratio) -> np.ndarray:
        """uint8 like acc: ``clip(rint(epilogue * out_ratio[o]), 0, 2^out_bits[o] - 1)``."""
        _check_acc(acc)
        args = _requant_args(acc.shape[1], 1, scale, bias, out_bits, out_ratio)
        out = np.empty(acc.shape, np.uint8)
        _kernels.requantize(acc, acc.shape[1], _inner(acc), args.scale, args.bias, args.bits,
                            args.ratio, out, self.settings.isa_index,
                            self._threads(8 * acc.size))
        return out

    def residual_requantize(self, acc, scale, bias, skip, out_bits, out_ratio) -> np.ndarray:
        """uint8 like acc [B, O, H, W]: the residual tail of
        :mod:`soniq_ref.stages.residual`, ``clip(rint(((scale[o] * float32(acc) + bias[o])
        + skip) * out_ratio[o]), 0, 2^out_bits[o] - 1)``, skip float32 like acc, every
        parameter per channel (core/residual.h)."""
        acc = np.ascontiguousarray(acc) if isinstance(acc, np.ndarray) else acc
        _check_acc(acc)
        o = acc.shape[1]
        if acc.ndim != 4 or not isinstance(skip, np.ndarray) or skip.dtype != np.float32 \
                or skip.shape != acc.shape:
            raise ValueError("acc must be int64 [B, O, H, W] and skip float32 of its shape")
        args = _requant_args(o, 1, scale, bias, out_bits, out_ratio)
        skip = np.ascontiguousarray(skip)
        out = np.empty(acc.shape, np.uint8)
        _kernels.residual_requantize(acc, skip, o, _inner(acc), args.scale, args.bias,
                                     args.bits, args.ratio, out, self.settings.isa_index,
                                     self._threads(8 * acc.size))
        return out

    # ------------------------------------------------------------------------- pooling

    def max_pool_codes(self, codes, kernel, stride=None) -> np.ndarray:
        """uint8 [B, C, H, W] -> window maxima [B, C, Ho, Wo], as
        :func:`soniq_ref.layers.pooling.max_pool_codes`."""
        stride = kernel if stride is None else stride
        if not isinstance(codes, np.ndarray) or codes.dtype != np.uint8:
            raise TypeError("codes must be a uint8 NumPy array")
        check_pool_input(codes, kernel, stride)
        codes = np.ascontiguousarray(codes)
        kernel, stride = int(kernel), int(stride)
        b, c, h, w = codes.shape
        out = np.empty((b, c, (h - kernel) // stride + 1, (w - kernel) // stride + 1), np.uint8)
        if out.size:
            _kernels.max_pool(codes, kernel, stride, out, self.settings.isa_index,
                              self._threads(2 * codes.size))
        return out


# The plan of a direct conv: no act groups, no blocks (the job's `direct` weights instead).
_NO_PLAN = KernelPlan((), ())


class _Layout(NamedTuple):
    """How calls with one input layout run (``CpuBackend._layout``): the per-channel shift
    to width A (uint8 [C]; None: the codes as given -- a convolution's kernels apply it as
    they read the image, a linear layer's codes are shifted here), the engine names, the
    kernel plan, and the direct conv's weights (None: a GEMM)."""

    shift: np.ndarray | None
    engines: tuple
    plan: KernelPlan
    direct: np.ndarray | None

    def shifted(self, codes: np.ndarray) -> np.ndarray:
        return codes if self.shift is None else np.left_shift(codes, self.shift[None, :])


def _check_packed(packed, a_bits, ndim: int, channels: int, expected: int) -> None:
    """Shapes only (what memory safety needs); the values were checked by the caller."""
    if not isinstance(packed, CpuPackedWeights) or len(packed.check().shape) != ndim:
        raise TypeError("the unchecked entries take this backend's packed weights")
    if channels != expected:
        raise ValueError(f"the codes have {channels} channels but the weights expect {expected}")
    if not isinstance(a_bits, np.ndarray) or a_bits.dtype != np.uint8 \
            or a_bits.shape != (channels,):
        raise ValueError("a_bits must be uint8, one per input channel")
    if packed.k > MAX_EXACT_K:
        raise ValueError(f"w_codes has K = {packed.k} inputs per output; the cpu kernels are "
                         f"exact only up to K = {MAX_EXACT_K}")


def _check_skip(skip, shape: tuple) -> dict:
    """The residual tail's skip as Requantize's keywords: none, a float32 array of the
    output's shape, or an IdentitySkip (uint8 codes of that shape, float32 factor [O])."""
    if skip is None:
        return {}
    if isinstance(skip, IdentitySkip):
        codes, factor = skip.codes, skip.factor
        if not isinstance(codes, np.ndarray) or codes.dtype != np.uint8 \
                or codes.shape != shape or not isinstance(factor, np.ndarray) \
                or factor.dtype != np.float32 or factor.shape != shape[1:2]:
            raise ValueError(f"an identity skip needs uint8 codes of the output's shape "
                             f"{list(shape)} and a float32 factor per channel")
        return {"skip_codes": np.ascontiguousarray(codes),
                "skip_factor": np.ascontiguousarray(factor)}
    if not isinstance(skip, np.ndarray) or skip.dtype != np.float32 or skip.shape != shape:
        raise ValueError(f"skip must be float32 of the output's shape {list(shape)}")
    return {"skip": np.ascontiguousarray(skip)}


def _requant_args(channels: int, positions: int, scale, bias, out_bits,
                  out_ratio, **skip) -> Requantize:
    """The fused requantize's record; only lengths are checked here (the values were checked
    by the caller). With a skip (Requantize's keywords from :func:`_check_skip`),
    ``positions`` is 1: the residual tail takes its parameters per channel."""
    floats = (scale, bias, out_ratio)
    if any(v.dtype != np.float32 for v in floats) or out_bits.dtype != np.uint8 \
            or scale.shape != (channels,) or bias.shape != (channels,) \
            or out_bits.ndim != 1 or out_bits.shape != out_ratio.shape \
            or out_bits.shape[0] not in (channels, channels * positions):
        raise ValueError("scale, bias: float32, one per channel; out_bits (uint8), out_ratio "
                         "(float32): one per channel or per position")
    per_position = positions > 1 and out_bits.shape[0] == channels * positions
    return Requantize(scale=np.ascontiguousarray(scale), bias=np.ascontiguousarray(bias),
                      bits=np.ascontiguousarray(out_bits), ratio=np.ascontiguousarray(out_ratio),
                      per_position=per_position, **skip)


def _contiguous_codes(codes, ndim: int) -> np.ndarray:
    return checks.as_array("a_codes" if ndim == 2 else "x_codes", codes, np.uint8, ndim=ndim)


def _check_acc(acc) -> None:
    if not isinstance(acc, np.ndarray) or acc.dtype != np.int64 or acc.ndim not in (2, 4) \
            or not acc.flags.c_contiguous:
        raise TypeError("acc must be a C-contiguous int64 array [M, N] or [B, O, H, W]")


def _inner(acc: np.ndarray) -> int:
    """Elements per channel step along the flat array: H * W for [B, O, H, W], 1 for [M, N]."""
    return int(np.prod(acc.shape[2:])) if acc.ndim == 4 else 1


def engine_calls() -> dict:
    """{(isa, engine): runs so far} for every code path and engine (for tests)."""
    return {(isa, engine): _kernels.engine_calls(i, e)
            for i, isa in enumerate(ISA_NAMES) for e, engine in enumerate(ENGINE_NAMES)}
