"""Weights packed once for the cpu kernels, and the GEMM blocks built from them.

Output channels are grouped by weight width ``bw``; for each activation group (see
:mod:`.act_groups`) every weight group becomes one *block*, run on one engine:

* popcount: planes ``W_j`` of the weight codes restricted to the group's K positions,
  uint64 ``[n, bw, words]``; the kernel adds
  ``2^(A-ba) * (2 sum_{i,j} 2^(i+j) popcount(W_j & A_i) - (2^bw - 1) sum_c a)``.
* int8: ``v = w - 2^(bw-1)`` as int8 ``[n, kpad]`` (so ``q = 2 v + 1``); the kernel adds
  ``2 sum_c v a' + sum_c a'`` with ``a' = a << (A - ba)`` in uint8. Exact at A = 8 too:
  uint8 x int8 products are what VNNI multiplies.
* lut: the popcount sum by table lookup (``core/lut.h``): per row and 4 K positions a
  16-entry table of the sums of every subset of the 4 codes, indexed per channel by the
  4 bits of weight plane ``j`` there, ``uint8 [n/16, bw, ceil(k/8), 2, 16]``; the kernel adds
  the popcount contribution.

The engine for a (bw, ba) pair is chosen per code path by :mod:`.engines` (the rule and
the figures behind it). The int8 term does not depend on ``bw``, so all int8 columns of an
activation group form one block, except on the AVX2 path, whose kernel's int16 bounds
depend on the range of the values: there the columns whose values ``v`` on the group's K
positions all fit ``e`` signed bits form one block (``wbits`` = e <= bw).
The AVX-512 kernels keep one output channel per SIMD lane, so for them channels are
interleaved: 8 per vector for popcount (``[n/8, bw, words, 8]``), 16 per vector of
4-byte groups for int8 (``[n/16, kpad/4, 16, 4]``). The AVX2 popcount kernel interleaves 4
channels per vector with every word split into its low and high nibbles
(``[n/4, bw, words, 2, 4]``: ``w & 0x0f..`` then ``(w >> 4) & 0x0f..``), the two table
indices of its vpshufb count. The AVX2 int8 kernel interleaves 8
channels per vector: 4-byte groups ``[n/8, kpad/4, 8, 4]`` when vpmaddubsw is exact
(``int8_steps > 0``), else int16 pairs ``[n/8, kpad/2, 8, 2]`` (then the group also
prepares its shifted codes as int16, ``need_bytes`` bit 1). Blocks are built once per
activation layout and code path and cached on the packed weights.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np

from soniq_ref import checks
from soniq_ref.bitpack import check_weights, code_planes, pack_bits

from ._kernels import (INT8_LANES_AVX2, INT8_LANES_AVX512, LUT64_LANES, LUT_LANES,
                       NEED_BYTES, NEED_WIDE, POPCOUNT_LANES_AVX2, POPCOUNT_LANES_AVX512,
                       TABLES_16, TABLES_64, int8_steps)
from .act_groups import ActGroup, act_groups
from .engines import (ENGINE_NAMES, INT8, LUT, POPCOUNT, choose_engine,
                      int8_split_by_value_width, lut_lanes)
from .records import ActGroupRecord, Block, KernelPlan, LutPart

# per code path: (words alignment of plane rows, popcount lanes, int8 lanes)
LAYOUTS = {"scalar": (1, 1, 1), "avx2": (1, POPCOUNT_LANES_AVX2, INT8_LANES_AVX2),
           "avx512": (1, POPCOUNT_LANES_AVX512, INT8_LANES_AVX512)}
# code paths whose popcount weights are stored split into nibbles (counted by table lookup)
NIBBLE_SPLIT = {"avx2"}
AVX2_INT8_LANES = INT8_LANES_AVX2
# bytes per int8 row, by int8 lanes: the AVX2 kernel steps through K 4 bytes at a time
INT8_BYTE_ALIGN = {1: 64, INT8_LANES_AVX2: 4, INT8_LANES_AVX512: 64}

MAX_PLANS = 16      # activation layouts whose blocks a packed object keeps (LRU)
MERGE_MIN_SAVED = 0.2   # AVX2 int8 value-width classes merge when that saves this share of
                        # vectors (_merge_short)


class Plan(NamedTuple):
    """The GEMM plan of one activation layout: its act groups and blocks (records.py), the
    names of the engines its blocks run on, and the same groups and blocks as the C records
    ``_kernels.gemm`` runs (``kernel``)."""

    groups: tuple[ActGroupRecord, ...]
    blocks: tuple[Block, ...]
    engines: frozenset
    kernel: KernelPlan


class CpuPackedWeights:
    """Weight codes packed for the cpu backend (accepted by its linear_int / conv2d_int).

    codes: uint8 [N, K] (flattened) or in ``shape``, bits: uint8 [N], shape: the original
    code shape ([N, K] or [O, C, kh, kw]); validated here like ``pack_weights``'s arguments
    and kept as read-only copies (a snapshot: editing the caller's arrays changes nothing).
    Blocks for each activation layout are built on first use and kept (the last
    MAX_PLANS layouts), so a layer packs its weights once and reuses them on every call.
    """

    def __init__(self, codes: np.ndarray, bits: np.ndarray, shape: tuple):
        shape = checks.check_weight_shape("w_codes shape", shape)
        codes = checks.as_array("w_codes", codes, np.uint8)
        if codes.size != int(np.prod(shape, dtype=object)) or codes.shape[:1] != shape[:1]:
            raise ValueError(f"w_codes of shape {list(codes.shape)} do not fit shape "
                             f"{list(shape)}")
        codes, bits = check_weights(codes.reshape(shape), bits)
        self._codes = checks.frozen(checks.rows(codes))
        self.bits = checks.frozen(bits)
        self.shape = shape
        # what check() compares by identity: the arrays are read-only views of read-only
        # copies (in-place edits are impossible), so only replacing an attribute can change
        # what the kernels would see
        self._sealed = (self._codes, self.bits, self.shape)
        self._by_width = {int(b): np.flatnonzero(self.bits == b).astype(np.int32)
                          for b in np.unique(self.bits)}
        self._plans = OrderedDict()
        self._lock = threading.Lock()

    def check(self) -> "CpuPackedWeights":
        """Refuse (ValueError naming w_codes) an object edited since it was packed: the
        kernels rely on its shapes and bits. O(1), run before every kernel: the codes, bits
        and shape must be the very objects packing made (their arrays cannot be edited in
        place, see ``checks.frozen``)."""
        sealed = getattr(self, "_sealed", None)
        if not (isinstance(sealed, tuple) and len(sealed) == 3
                and getattr(self, "_codes", None) is sealed[0]
                and getattr(self, "bits", None) is sealed[1]
                and getattr(self, "shape", None) is sealed[2]):
            raise ValueError("w_codes: the packed weights were changed after packing; "
                             "pack the codes again")
        return self

    @property
    def k(self) -> int:
        return int(self._codes.shape[1])

    def codes(self) -> np.ndarray:
        """The uint8 weight codes in their original shape."""
        return self._codes.reshape(self.shape).copy()

    def plan(self, k_bits: np.ndarray, act_bits_hi: int, policy: str = "auto",
             isa: str = "scalar"):
        """The :class:`Plan` for activations whose K positions have widths ``k_bits``."""
        return self.cached((act_bits_hi, policy, isa, k_bits.tobytes()),
                            lambda: self._build(k_bits, act_bits_hi, policy, isa))

    def cached(self, key, build):
        """The cached value for ``key`` (built on a miss); the least recently used of more
        than MAX_PLANS entries is dropped, so distinct layouts cannot grow memory."""
        with self._lock:
            value = self._plans.get(key)
            if value is not None:
                self._plans.move_to_end(key)
                return value
        value = build()
        with self._lock:
            value = self._plans.setdefault(key, value)
            while len(self._plans) > MAX_PLANS:
                self._plans.popitem(last=False)
        return value

    def direct(self, k_bits: np.ndarray, act_bits_hi: int) -> np.ndarray:
        """int16 [N, K rounded up to even]: ``q << (A - ba)`` with ``q = 2 w - (2^bw - 1)``,
        the weights of the direct conv (core/direct_conv_avx2.c); zero past K."""
        return self.cached(("direct", act_bits_hi, k_bits.tobytes()),
                            lambda: self._direct_weights(k_bits, act_bits_hi))

    def _direct_weights(self, k_bits: np.ndarray, act_bits_hi: int) -> np.ndarray:
        n, k = self._codes.shape
        q = 2 * self._codes.astype(np.int16) - ((1 << self.bits.astype(np.int16)) - 1)[:, None]
        weights = np.zeros((n, k + k % 2), np.int16)
        weights[:, :k] = q << (act_bits_hi - k_bits.astype(np.int16))[None, :]
        return weights

    def _build(self, k_bits, act_bits_hi, policy, isa):
        word_align, pop_lanes, int8_lanes = LAYOUTS[isa]
        nibbles = isa in NIBBLE_SPLIT
        groups = act_groups(k_bits, act_bits_hi, word_align, INT8_BYTE_ALIGN[int8_lanes])
        blocks, need = [], [_Needs() for _ in groups]
        rank = None     # after act group 0: each channel's place in its blocks' column order
        for gi, group in enumerate(groups):
            int8_cols = []
            for w_bits, cols in self._by_width.items():
                cols = _in_order(cols, rank)
                engine = choose_engine(w_bits, group.bits, policy, isa, len(cols), group.k)
                if engine == LUT:
                    lanes = lut_lanes(isa)
                    need[gi].tables = TABLES_64 if lanes == LUT64_LANES else TABLES_16
                    blocks.append(self._lut64_block(gi, group, w_bits, cols)
                                  if lanes == LUT64_LANES else
                                  self._lut_block(gi, group, w_bits, cols))
                elif engine == POPCOUNT:
                    need[gi].planes = True
                    blocks.append(self._popcount_block(gi, group, w_bits, cols, pop_lanes,
                                                       nibbles))
                else:
                    int8_cols.append((w_bits, cols))
            if int8_cols and int8_split_by_value_width(isa):   # one block per value width
                for v_bits, cols in _merge_short(self._value_widths(group, int8_cols), group):
                    wide = int8_steps(v_bits, group.bits, group.shift) == 0
                    need[gi].bytes |= NEED_BYTES | (NEED_WIDE if wide else 0)
                    blocks.append(self._avx2_int8_block(gi, group, v_bits,
                                                        _in_order(cols, rank), wide))
            elif int8_cols:   # the int8 term does not depend on bw: one block for all widths
                need[gi].bytes |= NEED_BYTES
                cols = np.sort(np.concatenate([c for _, c in int8_cols])).astype(np.int32)
                blocks.append(self._int8_block(gi, group, _in_order(cols, rank), int8_lanes))
            if gi == 0 and blocks:
                rank = np.empty(self._codes.shape[0], np.int64)
                order = np.concatenate([b.cols for b in blocks])
                rank[order] = np.arange(len(order))
        blocks = _merge_lut_parts(blocks)
        records = tuple(_group_record(g, n) for g, n in zip(groups, need))
        engines = frozenset(ENGINE_NAMES[b.engine] for b in blocks)
        blocks = tuple(blocks)
        return Plan(records, blocks, engines, KernelPlan(records, blocks))

    def _gathered(self, group: ActGroup, cols: np.ndarray, lanes: int) -> np.ndarray:
        """uint8 [n rounded up to lanes, k_group]: the block's codes, zero rows as padding."""
        n_pad = -(-len(cols) // lanes) * lanes
        w = np.zeros((n_pad, group.k), np.uint8)
        w[:len(cols)] = self._codes[cols][:, group.idx]
        return w

    def _popcount_block(self, gi: int, group: ActGroup, w_bits: int, cols: np.ndarray,
                        lanes: int, nibbles: bool = False) -> Block:
        w = self._gathered(group, cols, lanes)
        n_pad = w.shape[0]
        packed = pack_bits(code_planes(w, w_bits))                   # [n_pad, bw, ceil(k/64)]
        planes = np.zeros((n_pad, w_bits, group.words), np.uint64)
        planes[:, :, :packed.shape[2]] = packed
        # [n_pad / lanes, lanes, bw, words] -> [n_pad / lanes, bw, words, lanes]
        wplanes = np.ascontiguousarray(
            planes.reshape(n_pad // lanes, lanes, w_bits, group.words).transpose(0, 2, 3, 1))
        if nibbles:   # [..., words, lanes] -> [..., words, 2, lanes]: low, high nibbles
            low = np.uint64(0x0F0F0F0F0F0F0F0F)
            wplanes = np.ascontiguousarray(
                np.stack([wplanes & low, (wplanes >> np.uint64(4)) & low], axis=-2))
        return Block(POPCOUNT, gi, w_bits, len(cols), cols, lanes, wplanes=wplanes)

    def _lut_block(self, gi: int, group: ActGroup, w_bits: int, cols: np.ndarray) -> Block:
        """uint8 [n/16, bw, ceil(k/8), 2, 16]: per weight plane j and group of 4 K positions
        q = 2 p + h, the table index sum_t bit_j(w[4 q + t]) 2^t of each channel (core/lut.h)."""
        w = self._gathered(group, cols, LUT_LANES)
        n_pad, groups = w.shape[0], 2 * -(-group.k // 8)
        codes = np.zeros((n_pad, groups * 4), np.uint8)
        codes[:, :group.k] = w
        planes = code_planes(codes, w_bits)                          # [n_pad, bw, groups * 4]
        index = (planes.reshape(n_pad, w_bits, groups, 4)
                 << np.arange(4, dtype=np.uint8)).sum(axis=-1, dtype=np.uint8)
        # [n/16, 16, bw, groups/2, 2] -> [n/16, bw, groups/2, 2, 16]
        index = index.reshape(n_pad // LUT_LANES, LUT_LANES, w_bits, groups // 2, 2)
        return Block(LUT, gi, w_bits, len(cols), cols, LUT_LANES,
                     wnibbles=np.ascontiguousarray(index.transpose(0, 2, 3, 4, 1)))

    def _lut64_block(self, gi: int, group: ActGroup, w_bits: int, cols: np.ndarray) -> Block:
        """uint8 [n/64, bw, ceil(k/6), 64]: per weight plane j and group of 6 K positions q,
        the table index sum_u bit_j(w[6 q + u]) 2^u of each channel (core/lut_avx512.c)."""
        w = self._gathered(group, cols, LUT64_LANES)
        n_pad, groups = w.shape[0], -(-group.k // 6)
        codes = np.zeros((n_pad, groups * 6), np.uint8)
        codes[:, :group.k] = w
        planes = code_planes(codes, w_bits)                          # [n_pad, bw, groups * 6]
        index = (planes.reshape(n_pad, w_bits, groups, 6)
                 << np.arange(6, dtype=np.uint8)).sum(axis=-1, dtype=np.uint8)
        # [n/64, 64, bw, groups] -> [n/64, bw, groups, 64]
        index = index.reshape(n_pad // LUT64_LANES, LUT64_LANES, w_bits, groups)
        return Block(LUT, gi, w_bits, len(cols), cols, LUT64_LANES,
                     wnibbles=np.ascontiguousarray(index.transpose(0, 2, 3, 1)))

    def _int8_values(self, group: ActGroup, cols: np.ndarray, lanes: int) -> np.ndarray:
        """int8 [n rounded up to lanes, kpad]: v = w - 2^(bw-1), zero rows and tail as padding."""
        w = self._gathered(group, cols, lanes).astype(np.int16)
        n_pad = w.shape[0]
        half = np.zeros(n_pad, np.int16)
        half[:len(cols)] = 1 << (self.bits[cols].astype(np.int16) - 1)
        values = np.zeros((n_pad, group.kpad), np.int8)
        values[:, :group.k] = (w - half[:, None]).astype(np.int8)    # v = w - 2^(bw-1)
        return values

    def _int8_block(self, gi: int, group: ActGroup, cols: np.ndarray, lanes: int) -> Block:
        values = self._int8_values(group, cols, lanes)
        if lanes > 1:   # [n/16, 16, kpad/4, 4] -> [n/16, kpad/4, 16, 4]
            values = _interleave(values, lanes, 4)
        return Block(INT8, gi, 0, len(cols), cols, lanes, wbytes=values)

    def _value_widths(self, group: ActGroup, int8_cols: list) -> list:
        """[(e, cols)]: the int8 columns by the smallest e with -2^(e-1) <= v < 2^(e-1) for
        all their values v = w - 2^(bw-1) on the group's K positions (e <= bw; the AVX2
        kernel's int16 bounds need only the values' range, so this is exact)."""
        cols = np.concatenate([c for _, c in int8_cols])
        half = (1 << (self.bits[cols].astype(np.int16) - 1))[:, None]
        v = self._codes[cols][:, group.idx].astype(np.int16) - half
        need = np.maximum(-v.min(axis=1, initial=0), v.max(axis=1, initial=0) + 1)
        width = np.ones(len(cols), np.int64)
        for e in range(1, 8):
            width[need > (1 << (e - 1))] = e + 1
        return [(int(e), np.sort(cols[width == e]).astype(np.int32)) for e in np.unique(width)]

    def _avx2_int8_block(self, gi: int, group: ActGroup, v_bits: int, cols: np.ndarray,
                         wide: bool) -> Block:
        """One value width: int8 [n/8, kpad/4, 8, 4], or int16 [n/8, kpad/2, 8, 2] if wide."""
        lanes = AVX2_INT8_LANES
        values = self._int8_values(group, cols, lanes)
        values = _interleave(values.astype(np.int16), lanes, 2) if wide \
            else _interleave(values, lanes, 4)
        return Block(INT8, gi, v_bits, len(cols), cols, lanes, wbytes=values)


def _in_order(cols: np.ndarray, rank) -> np.ndarray:
    """A later act group's block columns in the order of act group 0's blocks (``rank``:
    each channel's place there; None: act group 0 itself, columns ascending). The kernels
    stage the sums of a layer whose widths interleave in that order (core/tile_output.c), where a
    block's columns are then consecutive and flushed with vector stores; any order is exact."""
    if rank is None:
        return cols
    return cols[np.argsort(rank[cols], kind="stable")].astype(np.int32)


def _merge_short(classes: list, group: ActGroup) -> list:
    """Value-width classes [(e, cols)] with int16 partial sums, merged into one block of the
    widest of them when the group's whole K fits one int16 run of that width: the sums are
    widened once either way, and one wider block runs fuller register tiles (small K, e.g.
    a first conv layer, has few quads per row and pays per block and per tile).

    Also for longer K when the merged block needs at least a fifth fewer vectors of 8
    channels (``MERGE_MIN_SAVED``) than the classes apart: the narrow class then widens its
    sums more often (about a tenth more work), but partly filled vectors cost as much as
    full ones. Fashion-MNIST ResNet deploy model (width 24, W1/W4 weights on A = 8, batch
    256, 1 thread, thread CPU time, Zen 3, avx2): the first block's convs (24 channels, 17 +
    7 and 19 + 5: 4 vectors apart, 3 merged) 64.0 -> 56.8 ms merged; the 48-channel block
    (6 -> 6 vectors, and 7 -> 6 for its projection) 35.5 / 35.2 ms and the 96-channel one
    (13 -> 12) 25.1 / 25.3 ms, no gain; the Fashion-MNIST CNN's 64-channel conv (8 -> 8)
    unchanged."""
    steps = {e: int8_steps(e, group.bits, group.shift) for e, _ in classes}
    narrow = [(e, c) for e, c in classes if steps[e] > 0]
    if len(narrow) < 2:
        return classes
    widest = max(e for e, _ in narrow)
    apart = sum(_vectors(len(c)) for _, c in narrow)
    saved = apart - _vectors(sum(len(c) for _, c in narrow))
    if steps[widest] * 4 < group.kpad and saved < MERGE_MIN_SAVED * apart:
        return classes
    merged = np.sort(np.concatenate([c for _, c in narrow])).astype(np.int32)
    return [(widest, merged)] + [(e, c) for e, c in classes if steps[e] == 0]


def _vectors(channels: int) -> int:
    """AVX2 int8 vectors (8 channels each) a block of ``channels`` channels runs."""
    return -(-channels // AVX2_INT8_LANES)


def _merge_lut_parts(blocks: list) -> list:
    """lut blocks of one weight width over the same columns in several act groups, as one
    block (at the place of the first) whose later groups are its ``more`` parts: their sums
    add into the same tile cells and the output is written once (core/lut.h)."""
    first, merged = {}, []
    for block in blocks:
        if block.engine != LUT:
            merged.append(block)
            continue
        key = (block.wbits, block.cols.tobytes())
        if key not in first:
            first[key] = len(merged)
            merged.append(block)
            continue
        at = first[key]
        head = merged[at]
        merged[at] = replace(head, more=head.more + (LutPart(block.group, block.wnibbles),))
    return merged


def _interleave(values: np.ndarray, lanes: int, group: int) -> np.ndarray:
    """[n, kpad] -> [n / lanes, kpad / group, lanes, group]: channels interleaved per vector."""
    n, kpad = values.shape
    values = values.reshape(n // lanes, lanes, kpad // group, group)
    return np.ascontiguousarray(values.transpose(0, 2, 1, 3))


@dataclass
class _Needs:
    """What an act group's blocks need prepared per row, gathered while they are built:
    bit planes (popcount), NEED_BYTES / NEED_WIDE rows (int8), TABLES_16 / TABLES_64 (lut)."""

    planes: bool = False
    bytes: int = 0
    tables: int = 0


def _group_record(group: ActGroup, need: _Needs) -> ActGroupRecord:
    """The act group as the kernels see it, with what its blocks need prepared per row."""
    return ActGroupRecord(bits=group.bits, shift=group.shift, k=group.k, idx=group.idx,
                          start=int(group.idx[0]) if group.k else 0,
                          contiguous=group.contiguous, every_other=group.every_other,
                          words=group.words, kpad=group.kpad, need_planes=need.planes,
                          need_bytes=need.bytes, need_tables=need.tables)
