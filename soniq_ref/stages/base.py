"""What every deploy stage type provides, and what a stage reaches while it runs.

A stage type is one class. It knows

* its shapes: ``output_shape(shape)``, the per-sample output shape for a
  per-sample input shape (Python integers, never wrapping);
* how it runs: ``run(codes, run)`` on a :class:`BackendRun`, uint8 codes in, the
  next codes (or, for the stage that ends the model, float32 values) out;
* what it guarantees about the codes it hands on: ``code_bound(bound, shape,
  out_shape)``, the largest code per output element given the largest per input
  element (used once per backend to decide whether fused kernels may skip scanning
  codes by value);
* its description: ``describe()`` (the fields ``soniq info --json`` shows) and
  ``summary()`` (the columns ``soniq info`` prints after the output shape);
* its part of the ``.soniq`` file: ``file_keys``/``file_tensors`` (exactly what the
  manifest entry and the tensors hold), ``to_file`` and ``from_file``;
* the quantized layers it runs (``quant_parts``), whose weights the model packs once
  per backend and hands to ``run`` in that order; a stage that reads codes on a
  learned grid and requantizes its output sets ``quantized`` (it is then a
  producer and a consumer in :mod:`soniq_ref.stages.link`);
* ``spread_back(values, in_shape)`` for stages that only move codes (pooling,
  flattening): per-feature values at its output placed at the input positions
  they come from, which is how a per-feature precision reaches the producing
  convolution.
* whether it reads or gives float32 tokens (``reads_tokens``, ``gives_tokens``: the
  stages of a Transformer hand float32 [B, T, D] from one to the next, see
  :mod:`soniq_ref.stages.transformer_block`); a stage that reads tokens follows
  exactly one that gives them;
* whether the backend's fused kernels may run it (``fusable``; a model with any
  stage that is not runs on the contract functions only);
* its ONNX form (:mod:`soniq_ref.onnx_export`): ``to_onnx(graph, codes, out_shape,
  next_hi)`` adds its nodes to the graph and names the value it hands on, and
  ``onnx_input_hi(next_hi)`` gives the grid ``A`` of the shifted codes it reads
  (a stage that only moves codes reads them on the grid it hands them on).

Registering the class in :data:`soniq_ref.stages.STAGE_TYPES` under its ``kind``
makes the model, the file format and ``soniq info`` handle it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Iterator

from ..checks import MAX_GEOMETRY
from ..layers.pooling import max_pool_codes


def check_size(shape, where: str) -> int:
    """The element count of ``shape`` in Python integers (no wrap), at most MAX_GEOMETRY."""
    size = 1
    for dim in shape:
        size *= int(dim)
    if size > MAX_GEOMETRY:
        raise ValueError(f"{where}: {list(shape)} has {size} elements per sample, more than "
                         f"the {MAX_GEOMETRY} any backend runs")
    return size


@dataclass
class BackendRun:
    """What the stages of one forward pass reach.

    backend: the contract functions (``linear_int``, ``conv2d_int``, ``epilogue``,
             ``requantize``; optionally ``max_pool_codes``);
    kernels: the backend's fused kernels, or None (used only when the model's
             parameters and the codes it hands on checked out, see
             :meth:`soniq_ref.deploy.DeployModel.forward`);
    packed:  the packed weights of the quantized stages, in order;
    input_checked: whether the codes reaching the stages have been checked yet
             (the kernels path checks the first quantized stage's input itself).
    """

    backend: object
    kernels: object | None
    packed: Iterator
    input_checked: bool = False

    @property
    def max_pool_codes(self):
        return getattr(self.kernels or self.backend, "max_pool_codes", max_pool_codes)


class Stage:
    """Base of the stage types (see the module docstring for the protocol)."""

    kind: ClassVar[str]    # the name in the manifest and in `soniq info`
    final = False          # whether ``run`` gives the model's float32 output
    quantized = False      # whether it reads codes on a learned grid (``a_bits``) and
                           # requantizes its output (``out_bits``, ``out_ratio``, ``out_clip``)
    gives_logits = False   # whether it can end the model (a classifier)
    reads_tokens = False   # whether its input is float32 tokens [B, T, D], not codes
    gives_tokens = False   # whether its output is float32 tokens [B, T, D]
    fusable = True         # whether the backend's fused kernels may run it

    def quant_parts(self) -> list:
        """The quantized layers (:class:`QuantStage`) whose packed weights ``run`` takes
        from ``BackendRun.packed``, in the order it takes them."""
        return []

    def output_shape(self, shape: tuple) -> tuple:
        raise NotImplementedError

    def run(self, codes, run: BackendRun):
        raise NotImplementedError

    def code_bound(self, bound, shape: tuple, out_shape: tuple):
        raise NotImplementedError

    def spread_back(self, values, in_shape: tuple):
        raise ValueError(f"a per-feature precision cannot pass a {self.kind} stage")

    def to_onnx(self, graph, codes: str, out_shape: tuple, next_hi):
        """Add this stage to ``graph`` (:class:`soniq_ref.onnx_export.OnnxGraph`).

        codes: the name of its input, uint8 shifted codes ``k << (A - bits)``;
        out_shape: its per-sample output shape; next_hi: the grid ``A`` of the codes it
        hands on, None when it hands on float32 values. Returns the name of its output.
        """
        raise ValueError(f"a {self.kind} stage has no ONNX form")

    def onnx_input_hi(self, next_hi):
        """The grid ``A`` of the shifted codes it reads, given that of those it hands on."""
        return next_hi

    def float32_values(self) -> int:
        """Numbers a float32 model of this stage stores (weights and biases)."""
        return 0

    def describe(self) -> dict:
        return {}

    def summary(self) -> str:
        return ""

    @classmethod
    def file_keys(cls, kind: str, last: bool) -> set:
        return {"type"}

    @classmethod
    def file_tensors(cls, index: int, kind: str, last: bool) -> set:
        return set()

    def to_file(self, index: int, last: bool, tensors: dict) -> dict:
        return {"type": self.kind}

    @classmethod
    def from_file(cls, entry) -> "Stage":
        raise NotImplementedError
