"""The named records the cpu kernels receive: one frozen dataclass per C struct.

``_kernels.gemm`` reads these by field name and fills the C structs of
``core/params.h`` (same names, same fields) with them; nothing crosses the
Python/Cython/C boundary as a positional tuple. Arrays are C-contiguous NumPy arrays
that the record keeps alive for the call; their dtypes and shapes are the ones the C
comments give (``core/params.h``). The records hold no logic: the GEMM plan that fills
:class:`ActGroupRecord` and :class:`Block` is built in :mod:`.packed`, the engine rules in
:mod:`.engines`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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


@dataclass(frozen=True, slots=True, eq=False)
class ConvSource:
    """GEMM rows as im2col patches of ``x`` uint8 [B, c, h, w] (``soniq_conv_src``): K
    ordered (channel, kernel row, kernel column), window kh x kw, ``stride``, zero
    ``padding``, output ho x wo per image."""

    x: np.ndarray
    c: int
    h: int
    w: int
    kh: int
    kw: int
    stride: int
    padding: int
    ho: int
    wo: int


@dataclass(frozen=True, slots=True, eq=False)
class OutLayout:
    """Where ``acc[m, o]`` goes (``soniq_out_layout``): element
    ``(m // rows_per_image) * image_stride + (m % rows_per_image) * row_stride
    + o * col_stride`` of the output. Linear: (M, 0, N, 1); conv [B, O, Ho, Wo]:
    (Ho Wo, O Ho Wo, 1, Ho Wo)."""

    rows_per_image: int
    image_stride: int
    row_stride: int
    col_stride: int


@dataclass(frozen=True, slots=True, eq=False)
class Requantize:
    """The fused requantize (``soniq_requant_out``): codes = ``clip(rint((scale[o] *
    float32(acc) + bias[o]) * ratio), 0, 2^bits - 1)``; scale, bias float32 [O]; bits uint8 and
    ratio float32 per channel [O], or per (channel, position) [O Ho Wo] when
    ``per_position``."""

    scale: np.ndarray
    bias: np.ndarray
    bits: np.ndarray
    ratio: np.ndarray
    per_position: bool


@dataclass(frozen=True, slots=True, eq=False)
class GemmJob:
    """One GEMM (``soniq_gemm_job``): rows of ``a`` uint8 [m, k] or of ``conv`` (the other
    None), the plan's ``groups`` and ``blocks``, ``out`` (int64 in ``layout``, every element
    written; uint8 codes when ``requant`` is set), ``n_out`` output channels, code path
    ``isa`` (its index). ``direct``: None, or with ``requant`` the int16
    [n_out, k rounded up to even] weights ``q << (A - ba)`` of the direct conv."""

    a: np.ndarray | None
    conv: ConvSource | None
    m: int
    k: int
    groups: tuple[ActGroupRecord, ...]
    blocks: tuple[Block, ...]
    out: np.ndarray
    n_out: int
    layout: OutLayout
    isa: int
    requant: Requantize | None = None
    direct: np.ndarray | None = None
