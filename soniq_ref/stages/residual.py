"""``residual`` and ``residual_projection``: a residual block on codes.

Input codes ``a`` [B, C, H, W] on the block's input grid (``a_bits`` [C], high
level ``A``, step ``s_a``), output the next layer's codes [B, O, Ho, Wo]::

    h    = conv1 requantized to conv2's input codes          (a QuantStage, BN1 folded)
    y    = scale2[o] * float32(acc2) + bias2[o]               conv2's epilogue (BN2 folded)
    skip = s_a * float32(a << (A - a_bits[c]))                ``residual``: the input's value
         | scale_p[o] * float32(acc_p) + bias_p[o]            ``residual_projection``: a 1x1
                                                              strided conv on the same codes
    s    = y + skip                                           one float32 add
    out  = clip(rint(s * out_ratio), 0, 2**out_bits - 1)      the next layer's codes (ReLU)

Every operation is a contract function of the backend (``conv2d_int``, ``requantize``
or the fused forms, ``epilogue``) or one float32 operation written here, in this
order and without fused multiply-add (docs/semantics.md, "Residual blocks").
``out_bits``/``out_ratio`` follow from the next quantized stage as for a
:class:`QuantStage` (per channel, or per feature before flattening); ``s_a`` is the
step of the codes the block reads: ``act_step(clip, A)`` with ``clip`` the
producing stage's ``out_clip``, or 1/255 when the block reads the pixels
(:meth:`ResidualStage.input_step`), so the file does not store it.

In the file the entry holds the inner layers as ``conv1``, ``conv2`` (and
``projection``) objects in the ``conv`` layout, their tensors named
``<i>.conv1.<tensor>``...; conv1's ``out_clip`` is conv2's input clip.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import checks
from ..container import fail
from ..fileschema import StageEntry, exact_keys
from ..layers.input_quantizers import PIXEL_STEP
from ..quantizers import act_ratio, act_step, codes_from_ratio, shifted_codes
from .link import link
from .base import Stage
from .quant import QuantStage, onnx_requantize, out_clip_field, out_code_bound


@dataclass(frozen=True)
class IdentitySkip:
    """An identity skip as fused kernels may take it: the block's input ``codes`` (uint8
    [B, C, H, W]) and one float32 ``factor`` per channel [C], ``s_a * 2^(A - a_bits[c])``;
    the skip is ``float32(codes) * factor[c]``, exactly :meth:`ResidualStage.skip_value`."""

    codes: np.ndarray
    factor: np.ndarray


@dataclass
class ResidualStage(Stage):
    """conv1, conv2 (final: float32 out) and optionally a projection (final), see the
    module docstring. ``skip_step``: float32 ``s_a`` of the input (identity skip)."""

    conv1: QuantStage
    conv2: QuantStage
    proj: QuantStage | None = None
    skip_step: np.float32 | None = None
    out_bits: np.ndarray | None = None
    out_ratio: np.ndarray | None = None
    per_feature: bool = False
    out_clip: np.float32 | None = None

    KINDS = ("residual", "residual_projection")
    quantized = True
    gives_logits = False

    @property
    def kind(self) -> str:
        return self.KINDS[self.proj is not None]

    @property
    def final(self) -> bool:
        return self.out_bits is None

    @property
    def a_bits(self) -> np.ndarray:
        return self.conv1.a_bits

    @property
    def act_bits_hi(self) -> int:
        return self.conv1.act_bits_hi

    @property
    def out_channels(self) -> int:
        return self.conv2.out_channels

    def quant_parts(self) -> list:
        return [self.conv1, self.conv2] + ([self.proj] if self.proj is not None else [])

    def input_step(self, clip) -> np.float32:
        """``s_a`` of the codes the block reads: ``act_step(clip, A)`` for codes a stage
        requantized with float32 clip ``clip``; 1/255 for pixels (``clip`` None)."""
        return PIXEL_STEP if clip is None else act_step(np.float32(clip), self.act_bits_hi)

    # ------------------------------------------------------------------ shapes, run

    def output_shape(self, shape: tuple) -> tuple:
        return self.conv2.output_shape(self.conv1.output_shape(shape))

    def run(self, codes, run):
        """The next codes (float32 ``s`` when ``final``). With the backend's fused kernels,
        when the requantization is per channel: conv2 with its epilogue, the add and the
        requantization in one kernel call where they offer ``conv2d_residual_requantize``,
        else conv2's sums and then ``residual_requantize`` on them, where offered."""
        h = self.conv1.run(codes, run)               # checks the input codes when needed
        whole = getattr(run.kernels, "conv2d_residual_requantize", None)
        if whole is not None and not self.final and not self.per_feature:
            packed, c2 = next(run.packed), self.conv2
            factor = self.skip_factor() if self.proj is None else None
            skip = self._skip(codes, run) if factor is None else IdentitySkip(codes, factor)
            return whole(h, c2.a_bits, packed, c2.act_bits_hi, c2.stride, c2.padding, c2.scale,
                         c2.bias, skip, self.out_bits, self.out_ratio)
        fused = getattr(run.kernels, "residual_requantize", None)
        if fused is not None and not self.final and not self.per_feature:
            acc = self.conv2.accumulate(run.kernels, next(run.packed), h)
            return fused(acc, self.conv2.scale, self.conv2.bias, self._skip(codes, run),
                         self.out_bits, self.out_ratio)
        y = self.conv2.run(h, run)
        s = y + self._skip(codes, run)
        if self.final:
            return s
        if not self.per_feature:
            return codes_from_ratio(s, self.out_ratio, self.out_bits)
        return codes_from_ratio(s.reshape(len(s), -1), self.out_ratio,
                                self.out_bits).reshape(s.shape)

    def _skip(self, codes, run) -> np.ndarray:
        return self.proj.run(codes, run) if self.proj is not None else self.skip_value(codes)

    def skip_value(self, codes) -> np.ndarray:
        """float32 ``s_a * float32(a << (A - a_bits[c]))`` (the identity skip).

        Computed as ``float32(a) * (s_a * 2^(A - a_bits[c]))``: scaling by a power of two
        is exact, so both are the one rounding of the same real product ``s_a * a *
        2^(A - a_bits[c])`` -- the same bits, from one multiply on the uint8 codes instead
        of a shift in int64 (whenever the per-channel factor is finite)."""
        factor = self.skip_factor()
        if factor is None:                               # an infinite factor: the long way
            step = np.float32(self.skip_step)
            return step * shifted_codes(codes, self.a_bits, self.act_bits_hi).astype(np.float32)
        return codes.astype(np.float32) * factor.reshape((1, -1) + (1,) * (codes.ndim - 2))

    def skip_factor(self) -> np.ndarray | None:
        """float32 [C] ``s_a * 2^(A - a_bits[c])``, the identity skip's factor per channel
        (see :meth:`skip_value`); None where one is not finite."""
        step = np.float32(self.skip_step)
        shift = (self.act_bits_hi - self.a_bits.astype(np.int64)).astype(np.float32)
        with np.errstate(over="ignore"):
            factor = (step * np.exp2(shift)).astype(np.float32)
        return factor if np.all(np.isfinite(factor)) else None

    def code_bound(self, bound, shape, out_shape):
        """Checks every inner layer, the shapes of both branches and the skip step; the
        largest code per output element (see :meth:`QuantStage.code_bound`)."""
        if self.conv1.kind != "conv" or self.conv2.kind != "conv" or \
                (self.proj is not None and self.proj.kind != "conv"):
            raise ValueError("the layers of a residual block must be convolutions")
        if self.conv1.final or self.conv1.per_feature or not self.conv2.final or \
                (self.proj is not None and not self.proj.final):
            raise ValueError("conv1 must requantize per channel to conv2's input; conv2 and "
                             "the projection give float32")
        mid = self.conv1.output_shape(shape)
        self.conv2.code_bound(self.conv1.code_bound(bound, shape, mid), mid, out_shape)
        if self.proj is not None:
            if not _same_input(self.conv1, self.proj):
                raise ValueError("the projection's input bits and palette must be conv1's")
            if self.proj.output_shape(shape) != tuple(out_shape):
                raise ValueError("the projection's output shape differs from conv2's")
            self.proj.code_bound(bound, shape, out_shape)
        else:
            if tuple(shape) != tuple(out_shape):
                raise ValueError("an identity skip needs the block's output shape to equal "
                                 "its input shape")
            step = checks.check_float32("skip_step", np.atleast_1d(self.skip_step), 1)
            if not step[0] > 0:
                raise ValueError("skip_step must be > 0")
        return out_code_bound(self, out_shape)

    # ------------------------------------------------------------------ ONNX

    def onnx_input_hi(self, next_hi) -> int:
        """Its own grid: conv1 (and the projection) read ``k << (A - a_bits)``."""
        return self.act_bits_hi

    def to_onnx(self, graph, codes, out_shape, next_hi):
        """conv1 (requantized to conv2's grid) and conv2 as :meth:`QuantStage.to_onnx`
        gives them, the skip -- the projection's float32 output, or ``s_a *
        float32(a')`` of the shifted input codes ``a'`` themselves -- one ``Add``, and
        the block's requantization to the grid ``next_hi`` (float32 ``s`` when None)."""
        mid = (self.conv1.out_channels,) + tuple(out_shape[1:])    # conv1 requantizes per
        # channel, so only the rank of its output shape is read
        h = self.conv1.to_onnx(graph, codes, mid, self.conv2.act_bits_hi)
        y = self.conv2.to_onnx(graph, h, out_shape, None)
        if self.proj is not None:
            skip = self.proj.to_onnx(graph, codes, out_shape, None)
        else:
            skip = graph.op("Mul", [graph.op("Cast", [codes], to=1),        # 1: float32
                                    graph.const("skip_step", np.float32(self.skip_step))])
        s = graph.op("Add", [y, skip])
        return s if next_hi is None else onnx_requantize(
            graph, s, out_shape, next_hi, self.out_bits, self.out_ratio, self.per_feature)

    # ------------------------------------------------------------------ description

    def float32_values(self) -> int:
        return sum(p.float32_values() for p in self.quant_parts())

    def describe(self) -> dict:
        parts = dict(zip(("conv1", "conv2", "projection"),
                         (p.describe() for p in self.quant_parts())))
        weights = sum(int(p.w_codes.size) for p in self.quant_parts())
        bits = sum(p.weight_bits_total() for p in self.quant_parts())
        return {**parts, "mean_weight_bits": bits / weights}

    def summary(self) -> str:
        """One line per inner layer (``conv1``, ``conv2``, ``proj``): its weights, weight
        bits and input bits, as :meth:`QuantStage.summary` gives them."""
        return "\n".join(f" {name:<5}{part.summary()}" for name, part in
                         zip(("conv1", "conv2", "proj"), self.quant_parts()))

    # ------------------------------------------------------------------ file

    @classmethod
    def file_keys(cls, kind: str, last: bool) -> set:
        keys = {"type", "conv1", "conv2"} | ({"projection"} if kind == cls.KINDS[1] else set())
        return keys if last else keys | {"out_clip"}

    @classmethod
    def file_tensors(cls, index: int, kind: str, last: bool) -> set:
        names = ("conv1", "conv2", "projection")[:3 if kind == cls.KINDS[1] else 2]
        return set().union(*(QuantStage.file_tensors(f"{index}.{n}", "conv", True)
                             for n in names))

    def to_file(self, index: int, last: bool, tensors: dict) -> dict:
        entry = {"type": self.kind,
                 "conv1": self.conv1.to_file(f"{index}.conv1", False, tensors),
                 "conv2": self.conv2.to_file(f"{index}.conv2", True, tensors)}
        if self.proj is not None:
            entry["projection"] = self.proj.to_file(f"{index}.projection", True, tensors)
        if not last:
            entry["out_clip"] = out_clip_field(self, f"stage {index} ({self.kind})")
        return entry

    @classmethod
    def from_file(cls, entry) -> "ResidualStage":
        """The block ``entry`` describes; conv1's requantization is rebuilt from its
        ``out_clip`` and conv2's input bits; ``skip_step`` and the block's own
        requantization are set when the model is linked (:mod:`soniq_ref.fileformat`)."""
        shape = entry.shape
        if len(shape) != 3:
            entry.fail(f"a residual block reads [C, H, W] codes, the previous stage gives "
                       f"{list(shape)}")
        conv1 = _inner(entry, "conv1", shape, last=False)
        mid = conv1.output_shape(shape)
        conv2 = _inner(entry, "conv2", mid, last=True)
        proj = _inner(entry, "projection", shape, last=True) \
            if entry.type == cls.KINDS[1] else None
        out = conv2.output_shape(mid)
        if proj is not None and not _same_input(conv1, proj):
            entry.fail("the projection reads the block's input codes: its act_palette and "
                       "input bits must be conv1's")
        if proj is not None and proj.output_shape(shape) != out:
            entry.fail(f"the projection gives {list(proj.output_shape(shape))}, conv2 gives "
                       f"{list(out)}: the branches cannot be added")
        if proj is None and out != tuple(shape):
            entry.fail(f"an identity skip needs the output {list(out)} to equal the input "
                       f"{list(shape)}")
        try:
            link(conv1, mid, [], conv2.a_bits, act_ratio(conv1.out_clip, conv2.a_bits))
        except ValueError as exc:
            entry.fail(f"conv1: {exc}")
        out_clip = None if entry.last else entry.float32("out_clip")
        return cls(conv1, conv2, proj, out_clip=out_clip)


def _same_input(conv1: QuantStage, proj: QuantStage) -> bool:
    """Whether the projection reads the block's input codes as conv1 does (same grid)."""
    return tuple(proj.act_palette) == tuple(conv1.act_palette) and \
        np.array_equal(proj.a_bits, conv1.a_bits)


def _inner(entry, name: str, shape: tuple, last: bool) -> QuantStage:
    """The inner convolution ``name`` of a residual entry, read like a ``conv`` stage."""
    fields = entry.fields[name]
    where = f"{entry.where} {name}"
    if not isinstance(fields, dict) or fields.get("type") != "conv":
        fail(f"{where} must be an object of type 'conv'")
    exact_keys(fields, QuantStage.file_keys("conv", last), where)
    inner = StageEntry(f"{entry.index}.{name}", fields, entry.tensors, tuple(shape), last)
    return QuantStage.from_file(inner)
