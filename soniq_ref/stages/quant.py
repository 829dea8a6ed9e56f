"""``linear`` and ``conv``: one quantized layer.

Its integer accumulator (``linear_int`` / ``conv2d_int``) goes through one fused
per-channel step::

    y = scale[o] * float32(acc) + bias[o]
    scale = a_bn[o] * w_step[o] * s_a          (float32)
    bias  = a_bn[o] * bias_layer[o] + b_bn[o]  (float32)

with the following batch norm folded in (``a_bn``, ``b_bn``: its eval-mode affine
map; 1 and 0 when there is none). The stage that ends the model emits ``y`` as
float32 (``epilogue``); every other stage emits the next layer's input codes
``clip(rint(y * out_ratio), 0, 2**out_bits - 1)`` (``requantize``; the clip at 0 is
the ReLU), where ``out_bits`` are the next layer's input bits and
``out_ratio = float32(2**out_bits) / out_clip``, ``out_clip`` the next layer's
activation clip (see :mod:`soniq_ref.stages.link`).

When a convolution feeds a linear layer through flattening, the linear layer's
input precision is per *feature* (channel, row, column): ``out_bits`` and
``out_ratio`` are then given per position of the [O, H, W] output
(``per_feature``), and the requantization runs on the accumulator viewed as
``[B, O*H*W]`` with ``scale``/``bias`` repeated per position (the fused kernels
take the per-position ``out_bits``/``out_ratio`` directly).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import checks, compact
from ..contract import INT32_EXACT_K
from ..integer_core import conv_output_size
from .base import Stage, check_size


@dataclass
class QuantStage(Stage):
    """One quantized layer, ready for the integer core (see the module docstring).

    w_codes uint8 [O, K] or [O, C, kh, kw]; w_bits uint8 [O]; a_bits uint8 [C or K];
    scale, bias float32 [O]; out_bits uint8 / out_ratio float32, [O] (per channel) or
    [O*H*W] (per feature, ``per_feature``), or None for the stage that ends the model;
    out_clip: the float32 clip ``out_ratio`` follows from (None: not known).
    """

    kind: str                    # "linear" or "conv"
    w_codes: np.ndarray
    w_bits: np.ndarray
    a_bits: np.ndarray
    act_bits_hi: int
    weight_palette: tuple
    act_palette: tuple
    stride: int
    padding: int
    scale: np.ndarray
    bias: np.ndarray
    out_bits: np.ndarray | None = None
    out_ratio: np.ndarray | None = None
    per_feature: bool = False
    out_clip: np.float32 | None = None

    KINDS = ("linear", "conv")
    quantized = True             # consumes codes on a learned grid, emits the next codes

    @property
    def out_channels(self) -> int:
        return int(self.w_codes.shape[0])

    @property
    def gives_logits(self) -> bool:
        """Whether it can end the model (a classifier: [B, O] from its input)."""
        return self.kind == "linear"

    def quant_parts(self) -> list:
        """The quantized layers whose packed weights it takes, in order."""
        return [self]

    @property
    def final(self) -> bool:
        return self.out_bits is None

    # ------------------------------------------------------------------ shapes, run

    def output_shape(self, shape: tuple) -> tuple:
        shape = tuple(int(v) for v in shape)
        if self.kind == "linear":
            return (self.out_channels,)
        _, _, kh, kw = self.w_codes.shape
        return (self.out_channels,
                conv_output_size(shape[1], kh, self.stride, self.padding),
                conv_output_size(shape[2], kw, self.stride, self.padding))

    def run(self, codes, run):
        """The next codes (float32 ``y`` when ``final``) from the input codes."""
        packed = next(run.packed)
        if run.kernels is None:
            acc = self._accumulate(run.backend, packed, codes)
            if self.final:
                return run.backend.epilogue(acc, self.scale, self.bias)
            return self._requantize(run.backend, acc)
        if not run.input_checked and self.a_bits.min() < 8:   # (8-bit: any uint8 is valid)
            checks.check_codes("x_codes" if self.kind == "conv" else "a_codes", codes,
                               self.a_bits, axis=1)
        run.input_checked = True    # every later stage sees codes the model produced
        if self.final:
            acc = self._accumulate(run.kernels, packed, codes)
            return run.kernels.epilogue(acc, self.scale, self.bias)
        return self._fused(run.kernels, packed, codes)

    def accumulate(self, impl, packed, codes):
        """int64 accumulator of ``codes`` through ``impl`` (the backend or its kernels)."""
        return self._accumulate(impl, packed, codes)

    def _accumulate(self, impl, packed, codes):
        if self.kind == "linear":
            return impl.linear_int(codes, self.a_bits, packed, self.w_bits, self.act_bits_hi)
        return impl.conv2d_int(codes, self.a_bits, packed, self.w_bits, self.act_bits_hi,
                               stride=self.stride, padding=self.padding)

    def _fused(self, kernels, packed, codes):
        """The next codes from the fused kernels' GEMM with requantize fused in."""
        if self.kind == "linear":
            return kernels.linear_requantize(codes, self.a_bits, packed, self.act_bits_hi,
                                             self.scale, self.bias, self.out_bits,
                                             self.out_ratio)
        return kernels.conv2d_requantize(codes, self.a_bits, packed, self.act_bits_hi,
                                         self.stride, self.padding, self.scale, self.bias,
                                         self.out_bits, self.out_ratio)

    def _requantize(self, impl, acc):
        if not self.per_feature:
            return impl.requantize(acc, self.scale, self.bias, self.out_bits, self.out_ratio)
        positions = int(np.prod(acc.shape[2:]))
        flat = impl.requantize(checks.rows(acc), np.repeat(self.scale, positions),
                               np.repeat(self.bias, positions), self.out_bits, self.out_ratio)
        return flat.reshape(acc.shape)

    def code_bound(self, bound, shape, out_shape):
        """Checks the parameters and that the codes reaching it (``bound``: their maximum
        per element, None for pixels) fit ``a_bits``; the largest code it emits per
        output element (uint8 ``out_shape``), or None when ``final``. Raises
        ValueError/TypeError/IndexError on anything inconsistent."""
        hi = checks.check_bits_value("act_bits_hi", self.act_bits_hi)
        a_bits = checks.check_bits("a_bits", self.a_bits, shape[0], hi=hi)
        if self.w_codes.ndim != (2 if self.kind == "linear" else 4) \
                or self.w_codes.ndim != len(shape) + 1 or self.w_codes.shape[1] != shape[0]:
            raise ValueError("weights do not fit the stage's input")
        if bound is not None:       # codes produced by the previous stage
            checks.check_codes("codes", bound[None], a_bits, axis=1)
        o = self.out_channels
        checks.check_float32("scale", self.scale, o)
        checks.check_float32("bias", self.bias, o)
        return out_code_bound(self, out_shape)

    # ------------------------------------------------------------------ ONNX

    def onnx_input_hi(self, next_hi) -> int:
        """Its own grid: it reads ``k << (act_bits_hi - a_bits)``."""
        return self.act_bits_hi

    def to_onnx(self, graph, codes, out_shape, next_hi):
        """Integer operators on the shifted codes ``a'`` (see :mod:`soniq_ref.onnx_export`)::

            P   = ConvInteger(a', k_w)  or MatMulInteger(a', k_w^T)      int32
            S   = ConvInteger(a', ones) or MatMulInteger(a', ones)       int32 (sum of a')
            acc = 2 * P - (2^bw[o] - 1) * S                              int32, exact
            y   = scale[o] * float32(acc) + bias[o]                      float32

        then, unless ``next_hi`` is None, the next codes on the grid ``next_hi``:
        ``Cast<uint8>(min(max(Round(y * out_ratio), 0), 2^out_bits - 1) *
        2^(next_hi - out_bits))``. ValueError when K exceeds the int32 bound."""
        onnx_check_k(int(np.prod(self.w_codes.shape[1:])))
        y = self._onnx_epilogue(graph, self._onnx_accumulate(graph, codes),
                                4 if self.kind == "conv" else 2)
        return y if next_hi is None else onnx_requantize(graph, y, out_shape, next_hi,
                                                         self.out_bits, self.out_ratio,
                                                         self.per_feature)

    def _onnx_epilogue(self, g, acc: str, ndim: int) -> str:
        """float32 ``scale[o] * float32(acc) + bias[o]`` of the int32 ``acc``."""
        acc = g.op("Cast", [acc], to=1)                                        # 1: float32
        return g.op("Add", [g.op("Mul", [acc, g.const("scale", _per_channel(self.scale, ndim))]),
                            g.const("bias", _per_channel(self.bias, ndim))])

    def _onnx_accumulate(self, g, codes: str) -> str:
        """int32 ``acc = 2 * sum(k * a') - n * sum(a')``."""
        if self.kind == "conv":
            _, c, kh, kw = self.w_codes.shape
            conv = dict(pads=[self.padding] * 4, strides=[self.stride] * 2)
            p = g.op("ConvInteger", [codes, g.const("weight_codes", self.w_codes)], **conv)
            s = g.op("ConvInteger", [codes, g.const("ones", np.ones((1, c, kh, kw), np.uint8))],
                     **conv)
        else:
            k = self.w_codes.shape[1]
            p = g.op("MatMulInteger", [codes, g.const("weight_codes", self.w_codes.T)])
            s = g.op("MatMulInteger", [codes, g.const("ones", np.ones((k, 1), np.uint8))])
        ndim = 4 if self.kind == "conv" else 2
        n = _per_channel(((1 << self.w_bits.astype(np.int64)) - 1).astype(np.int32), ndim)
        twice = g.op("Mul", [p, g.const("two", np.array(2, np.int32))])
        return g.op("Sub", [twice, g.op("Mul", [s, g.const("levels", n)])])

    # ------------------------------------------------------------------ description

    def float32_values(self) -> int:
        return int(self.w_codes.size + self.bias.size)

    def weight_bits_total(self) -> int:
        """Bits of all weights: sum over channels of bits x weights per channel."""
        per_channel = int(np.prod(self.w_codes.shape[1:]))
        return int(self.w_bits.astype(np.int64).sum()) * per_channel

    def describe(self) -> dict:
        return {"weight_shape": list(self.w_codes.shape),
                "weight_bits": _histogram(self.w_bits), "input_bits": _histogram(self.a_bits),
                "mean_weight_bits": float(self.w_bits.mean())}

    def summary(self) -> str:
        """Weight shape, weight bits and input bits as ``bits:channels`` counts."""
        wb = " ".join(f"{b}:{c}" for b, c in _histogram(self.w_bits).items())
        ab = " ".join(f"{b}:{c}" for b, c in _histogram(self.a_bits).items())
        return f" {str(list(self.w_codes.shape)):<16} {wb:<27} {ab}"

    # ------------------------------------------------------------------ file

    @classmethod
    def file_keys(cls, kind: str, last: bool) -> set:
        keys = {"type", "weight_shape", "weight_palette", "act_palette"}
        if kind == "conv":
            keys |= {"stride", "padding"}
        return keys if last else keys | {"out_clip"}

    @classmethod
    def file_tensors(cls, index: int, kind: str, last: bool) -> set:
        return {f"{index}.{name}" for name in
                ("weight_planes", "weight_levels", "input_levels", "scale", "bias")}

    def to_file(self, index: int, last: bool, tensors: dict) -> dict:
        """The manifest entry; adds the stage's tensors to ``tensors``. ValueError when
        the stage holds something the format cannot store exactly."""
        where = f"stage {index} ({self.kind})"
        if self.act_bits_hi != self.act_palette[1]:
            raise ValueError(f"{where}: act_bits_hi {self.act_bits_hi} is not the high level "
                             f"of the act_palette {list(self.act_palette)}")
        try:
            w_levels = compact.levels_from_bits(self.w_bits, self.weight_palette)
            a_levels = compact.levels_from_bits(self.a_bits, self.act_palette)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        tensors[f"{index}.weight_planes"] = compact.weight_stream(self.w_codes, self.w_bits)
        tensors[f"{index}.weight_levels"] = w_levels
        tensors[f"{index}.input_levels"] = a_levels
        tensors[f"{index}.scale"] = self.scale
        tensors[f"{index}.bias"] = self.bias
        entry = {"type": self.kind, "weight_shape": list(self.w_codes.shape),
                 "weight_palette": list(self.weight_palette),
                 "act_palette": list(self.act_palette)}
        if self.kind == "conv":
            entry.update(stride=self.stride, padding=self.padding)
        if not last:
            entry["out_clip"] = out_clip_field(self, where)
        return entry

    @classmethod
    def _check_fit(cls, entry, kind: str, wshape: list, stride: int, padding: int) -> None:
        """The weights ``wshape`` fit the input shape ``entry.shape`` (file reading)."""
        check_fit(entry, kind, wshape, stride, padding)

    @classmethod
    def from_file(cls, entry) -> "QuantStage":
        """The stage ``entry`` (a :class:`~soniq_ref.fileschema.StageEntry`) describes,
        every field and tensor checked; its ``out_bits``/``out_ratio`` are derived
        later, from the next quantized stage (:mod:`soniq_ref.stages.link`)."""
        kind = entry.type
        wshape = entry.int_list("weight_shape", least=1,
                                length=(2,) if kind in ("linear", "avgpool_linear") else (4,))
        o, k = wshape[0], check_size(wshape[1:], f"{entry.where} weight_shape")
        w_pal, a_pal = entry.palette("weight_palette"), entry.palette("act_palette")
        stride, padding = (entry.int("stride", 1), entry.int("padding", 0)) \
            if kind == "conv" else (1, 0)
        cls._check_fit(entry, kind, wshape, stride, padding)
        w_bits = _bits(entry, "weight_levels", o, w_pal)
        total = int(w_bits.astype(np.int64).sum())
        stream = entry.tensor("weight_planes", "U8", [compact.stream_bytes(k, total)])
        if len(stream) and not compact.stream_tail_is_clear(stream, k, total):
            entry.fail(f"tensor '{entry.name('weight_planes')}' has bits set beyond K = {k} "
                       f"in its last plane")
        a_bits = _bits(entry, "input_levels", wshape[1], a_pal)
        scale, bias = (entry.tensor(n, "F32", [o]) for n in ("scale", "bias"))
        for name, values in (("scale", scale), ("bias", bias)):
            if not np.all(np.isfinite(values)):
                entry.fail(f"tensor '{entry.name(name)}' must be finite")
        out_clip = None if entry.last else entry.float32("out_clip")
        codes = compact.codes_from_stream(stream, w_bits, k).reshape(wshape)
        return cls(kind, codes, w_bits, a_bits, a_pal[1], w_pal, a_pal, stride, padding,
                   scale, bias, out_clip=out_clip)


def _bits(entry, name: str, n: int, palette: tuple) -> np.ndarray:
    """uint8 [n]: the widths the stage's level tensor ``name`` selects from ``palette``."""
    levels = entry.tensor(name, "U8", [(n + 7) // 8])
    if not compact.levels_are_canonical(levels, n, palette):
        entry.fail(f"tensor '{entry.name(name)}' selects levels beyond its {n} entries "
                   f"or from a palette of one level {list(palette)}")
    return compact.bits_from_levels(levels, n, palette)


def check_fit(entry, kind: str, wshape: list, stride: int, padding: int) -> None:
    """The stage's weights fit the input shape the previous stage gives."""
    n_in, shape = wshape[1], entry.shape
    if kind == "linear":
        if shape != (n_in,):
            entry.fail(f"weights expect input [{n_in}], the previous stage gives "
                       f"{list(shape)}")
        return
    if len(shape) != 3 or shape[0] != n_in:
        entry.fail(f"weights expect {n_in} input channels, previous stage gives {list(shape)}")
    if padding >= min(wshape[2:]) or shape[1] + 2 * padding < wshape[2] or \
            shape[2] + 2 * padding < wshape[3]:
        entry.fail(f"kernel {wshape[2:]} with padding {padding} does not fit input "
                   f"{list(shape)}")


def out_clip_field(stage, where: str) -> float:
    """The manifest's ``out_clip`` of a stage that requantizes its output: its float32
    clip as a JSON number; ValueError naming ``where`` when it has none."""
    if stage.out_clip is None:
        raise ValueError(f"{where}: its requantization has no out_clip, the clip out_ratio "
                         f"follows from")
    return float(np.float32(stage.out_clip))


def out_code_bound(stage, out_shape):
    """Checks ``stage``'s requantization (``out_bits``, ``out_ratio`` per channel of its
    [O, ...] output or per feature) and returns the largest code it emits per output
    element (uint8 ``out_shape``), or None when the stage is ``final``."""
    if stage.final:
        return None
    o = stage.out_channels
    length = int(np.prod(out_shape)) if stage.per_feature else o
    bits = checks.check_bits("out_bits", stage.out_bits, length)
    ratio = checks.check_float32("out_ratio", stage.out_ratio, length)
    if np.any(ratio <= 0):
        raise ValueError("out_ratio must be > 0")
    top = ((1 << bits.astype(np.int64)) - 1).astype(np.uint8)
    if stage.per_feature:
        return top.reshape(out_shape)
    return np.ascontiguousarray(np.broadcast_to(
        top.reshape((o,) + (1,) * (len(out_shape) - 1)), out_shape))


def _per_channel(values: np.ndarray, ndim: int) -> np.ndarray:
    """[O] -> [1, O] (linear) or [1, O, 1, 1] (conv), for broadcasting."""
    return values.reshape((1, -1) + (1,) * (ndim - 2))


def _histogram(bits: np.ndarray) -> dict:
    values, counts = np.unique(bits, return_counts=True)
    return {int(v): int(c) for v, c in zip(values, counts)}


def onnx_check_k(k: int) -> None:
    """ValueError unless ``K`` products per output fit ONNX's int32 accumulator."""
    if k > INT32_EXACT_K:
        raise ValueError(f"a layer with K = {k} > {INT32_EXACT_K} inputs per output does "
                         f"not fit the int32 accumulator of ONNX's integer operators")


def onnx_requantize(g, y: str, out_shape: tuple, next_hi: int, out_bits, out_ratio,
                    per_feature: bool) -> str:
    """uint8 shifted codes on the grid ``next_hi`` from float32 ``y``:
    ``Cast<uint8>(min(max(Round(y * out_ratio), 0), 2^out_bits - 1) * 2^(next_hi - out_bits))``,
    the parameters per channel (or per feature of ``out_shape``)."""
    if per_feature:
        shape = (1,) + tuple(out_shape)
        bits, ratio = out_bits.reshape(shape), out_ratio.reshape(shape)
    else:
        ndim = 1 + len(out_shape)
        bits, ratio = _per_channel(out_bits, ndim), _per_channel(out_ratio, ndim)
    top = ((1 << bits.astype(np.int64)) - 1).astype(np.float32)
    shift = (1 << (next_hi - bits.astype(np.int64))).astype(np.float32)
    t = g.op("Round", [g.op("Mul", [y, g.const("ratio", ratio.astype(np.float32))])])
    t = g.op("Min", [g.op("Max", [t, g.const("zero", np.array(0, np.float32))]),
                     g.const("top", top)])
    return g.op("Cast", [g.op("Mul", [t, g.const("shift", shift)])], to=2)   # 2: uint8
