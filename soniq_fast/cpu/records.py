"""The named records the cpu kernels receive, one per C struct of ``core/params.h``.

A GEMM plan's records are frozen dataclasses, built once per activation layout by
:mod:`.packed` and cached with the packed weights: :class:`ActGroupRecord`
(``soniq_act_group``), :class:`Block` (``soniq_block``) with its :class:`LutPart` parts.
:class:`KernelPlan` fills their C structs once, by field name, when the plan is built.
The records of one call are immutable extension types of ``_kernels`` (declared in
``_kernels.pxd``, cheap to build and read there as C fields): :class:`OutLayout`
(``soniq_out_layout``), :class:`ConvSource` (``soniq_conv_src``), :class:`Requantize`
(``soniq_requant_out``) and :class:`GemmJob` (``soniq_gemm_job``), which ``_kernels.gemm``
runs. Nothing crosses the Python/Cython/C boundary as a positional tuple. Arrays are
C-contiguous NumPy arrays that the records keep alive; their dtypes and shapes are the ones
the C comments give. The records hold no logic: the plan is built in :mod:`.packed`, the
engine rules are in :mod:`.engines`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._kernels import ConvSource, GemmJob, KernelPlan, OutLayout, Requantize

__all__ = ["ActGroupRecord", "LutPart", "Block", "KernelPlan", "OutLayout", "ConvSource",
           "Requantize", "GemmJob"]


@dataclass(frozen=True, slots=True, eq=False)
class ActGroupRecord:
    """An act group as the kernels see it (``soniq_act_group``): the K positions ``idx``
    (int32 [k], ascending) of activation width ``bits``, ``shift = A - bits``, and what its
    blocks need prepared per row.

    start: idx[0] (0 when k = 0); contiguous: idx = start, start + 1, ...; every_other:
    idx = start, start + 2, ...; words: uint64 words per bit-plane row, ceil(k / 64) rounded
    up to the layout's alignment; kpad: bytes per int8 row. need_planes: bit planes of the
    unshifted codes (popcount); need_bytes: ``NEED_BYTES`` (shifted uint8 codes, int8) with
    ``NEED_WIDE`` (their int16 copy, AVX2 int8 blocks whose vpmaddubsw sums are not exact);
    need_tables: ``TABLES_16`` / ``TABLES_64`` (the lut engine's row tables) or 0."""

    bits: int
    shift: int
    k: int
    idx: np.ndarray
    start: int
    contiguous: bool
    every_other: bool
    words: int
    kpad: int
    need_planes: bool
    need_bytes: int
    need_tables: int


@dataclass(frozen=True, slots=True, eq=False)
class LutPart:
    """A further act group of a lut block over the same columns (``more_group`` /
    ``more_wnibbles`` of ``soniq_block``): its sums add into the same tile cells."""

    group: int
    wnibbles: np.ndarray


@dataclass(frozen=True, slots=True, eq=False)
class Block:
    """Output columns ``cols`` (int32 [n], output channel of each) of one act group
    ``group`` run on one engine (``soniq_block``); weights in the engine's layout, with
    ``lanes`` output channels interleaved per vector (1: plain rows):

    * popcount: ``wplanes`` uint64 [ceil(n/lanes), wbits, words, lanes] (AVX2:
      [..., words, 2, lanes], low and high nibbles), ``wbits`` the weight width;
    * int8: ``wbytes`` int8 values ``v = w - 2^(bw-1)`` ([n, kpad], or interleaved
      [n/lanes, kpad/4, lanes, 4]; AVX2 int16 [n/8, kpad/2, 8, 2] when wide), ``wbits`` the
      signed width e of every value on the AVX2 path, else 0;
    * lut: ``wnibbles`` uint8 table indices ([n/16, bw, ceil(k/8), 2, 16], or
      [n/64, bw, ceil(k/6), 64] with 64 lanes), and ``more`` parts in other act groups."""

    engine: int
    group: int
    wbits: int
    n: int
    cols: np.ndarray
    lanes: int
    wplanes: np.ndarray | None = None
    wbytes: np.ndarray | None = None
    wnibbles: np.ndarray | None = None
    more: tuple[LutPart, ...] = ()
