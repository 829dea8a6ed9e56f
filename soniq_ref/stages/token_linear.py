"""A quantized linear map inside a token stage: float32 in, float32 out.

x float32 [..., C] (uint8 pixel codes for a patch projection) -> y float32 [..., O],
on the rows ``x.reshape(-1, C)``, exactly as :class:`~soniq_ref.layers.QuantLinear`
computes it in exact mode::

    k   = x                                              ``pixels``: the uint8 codes
        | quantize_acts(x, a_bits, clip)                 ``unsigned`` (after a ReLU)
        | quantize_signed_acts(x, a_bits, clip)          ``signed`` (zero point 2**(ba-1))
    acc = linear_int(k, a_bits, W, w_bits, A)            int64 [M, O], the integer core
        - signed_input_offset(W, w_bits, A)              ``signed`` only: int64 [O]
    y   = epilogue(acc, scale, bias)                     float32, scale = float32(w_step s_a)

``clip`` is the layer's float32 input clip ``beta``: the ratios ``float32(2**ba / beta)``
(unsigned) or ``float32(2**(ba-1) / beta)`` (signed) are computed from it by the same
functions the training layer calls, so the file stores the clip and never a ratio.

In the file the map is an object in the ``linear`` layout of
:class:`~soniq_ref.stages.quant.QuantStage` (as the stage that ends a model: no
``out_clip``), plus ``input_clip`` unless it reads pixels; its tensors are named
``<index>.<name>.<tensor>``. Which of the three inputs a map has follows from where it
sits (the stage types fix it), so the file does not store it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..container import fail
from ..fileschema import StageEntry, exact_keys
from ..integer_core import signed_input_offset
from ..layers.input_quantizers import PIXEL_BITS
from ..quantizers import (SIGNED_MIN_BITS, act_ratio, quantize_acts, quantize_signed_acts,
                          signed_act_ratio)
from .quant import QuantStage

INPUTS = ("pixels", "unsigned", "signed")
CLIP_KEY = "input_clip"


@dataclass
class TokenLinear:
    """``layer``: the map's weights, bits, scale and bias (a final ``linear``
    :class:`QuantStage`); ``input``: one of :data:`INPUTS`; ``clip``: float32 input clip
    (None for pixels)."""

    layer: QuantStage
    input: str
    clip: np.float32 | None = None
    _offset: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def from_layer(cls, layer, where: str) -> "TokenLinear":
        """The map of a :class:`~soniq_ref.layers.QuantLinear` with fixed bits."""
        from ..deploy import _new_stage          # the export of every quantized layer

        if layer.w_bits is None:
            raise ValueError(f"{where}: every quantized layer needs fixed bits before export")
        kind = "pixels" if layer.first_layer else "signed" if layer.signed_input \
            else "unsigned"
        clip = layer.act_clip()
        return cls(_new_stage(layer), kind, None if clip is None else np.float32(clip))

    @property
    def in_features(self) -> int:
        return int(self.layer.w_codes.shape[1])

    @property
    def out_features(self) -> int:
        return self.layer.out_channels

    def codes(self, rows: np.ndarray) -> np.ndarray:
        """uint8 codes [M, C] of the rows ``rows`` [M, C] (see the module docstring)."""
        if self.input == "pixels":
            return rows
        quantize = quantize_signed_acts if self.input == "signed" else quantize_acts
        return quantize(rows, self.layer.a_bits, self.clip)

    def offset(self) -> np.ndarray:
        """int64 [O]: ``signed_input_offset`` of the weights (computed once)."""
        if self._offset is None:
            layer = self.layer
            self._offset = signed_input_offset(layer.w_codes, layer.w_bits, layer.act_bits_hi)
        return self._offset

    def apply(self, x: np.ndarray, run) -> np.ndarray:
        """float32 [..., O] of x [..., C] on ``run`` (a :class:`~.base.BackendRun`: its
        backend's ``linear_int`` and ``epilogue``, the next packed weights)."""
        layer, backend = self.layer, run.backend
        rows = x.reshape(-1, x.shape[-1])
        acc = backend.linear_int(self.codes(rows), layer.a_bits, next(run.packed),
                                 layer.w_bits, layer.act_bits_hi)
        if self.input == "signed":
            acc = acc - self.offset()
        y = backend.epilogue(acc, layer.scale, layer.bias)
        return y.reshape(x.shape[:-1] + (y.shape[-1],))

    # ------------------------------------------------------------------ file

    @staticmethod
    def file_tensors(prefix: str) -> set:
        return QuantStage.file_tensors(prefix, "linear", True)

    def to_file(self, prefix: str, tensors: dict) -> dict:
        entry = self.layer.to_file(prefix, True, tensors)
        if self.input != "pixels":
            entry[CLIP_KEY] = float(np.float32(self.clip))
        return entry

    @classmethod
    def from_file(cls, entry, name: str, n_in: int, kind: str) -> "TokenLinear":
        """The map ``name`` of ``entry`` (a :class:`~soniq_ref.fileschema.StageEntry`),
        reading ``n_in`` features, with input ``kind``; every field and tensor checked."""
        fields = entry.fields[name]
        where = f"{entry.where} {name}"
        if not isinstance(fields, dict) or fields.get("type") != "linear":
            fail(f"{where} must be an object of type 'linear'")
        keys = QuantStage.file_keys("linear", True) | ({CLIP_KEY} if kind != "pixels"
                                                         else set())
        exact_keys(fields, keys, where)
        inner = StageEntry(f"{entry.index}.{name}", fields, entry.tensors, (n_in,), True)
        layer = QuantStage.from_file(inner)
        if kind == "pixels":
            if tuple(layer.act_palette) != (PIXEL_BITS, PIXEL_BITS):
                inner.fail(f"it reads 8-bit pixels: its act_palette must be [8, 8], got "
                           f"{list(layer.act_palette)}")
            return cls(layer, kind)
        if kind == "signed" and layer.act_palette[0] < SIGNED_MIN_BITS:
            inner.fail(f"it reads signed values: its act_palette needs lo >= "
                       f"{SIGNED_MIN_BITS}, got {list(layer.act_palette)}")
        clip = inner.float32(CLIP_KEY)
        try:
            (signed_act_ratio if kind == "signed" else act_ratio)(clip, layer.a_bits)
        except ValueError as exc:
            inner.fail(f"{CLIP_KEY}: {exc}")
        return cls(layer, kind, clip)
