"""Weights packed once for the cpu kernels, and the GEMM blocks built from them.

Output channels are grouped by weight width ``bw``; for each activation group (see
:mod:`.act_groups`) every weight group becomes one *block*, run on one engine:

* popcount: planes ``W_j`` of the weight codes restricted to the group's K positions,
  uint64 ``[n, bw, words]``; the kernel adds
  ``2^(A-ba) * (2 sum_{i,j} 2^(i+j) popcount(W_j & A_i) - (2^bw - 1) sum_c a)``.
* int8: ``v = w - 2^(bw-1)`` as int8 ``[n, kpad]`` (so ``q = 2 v + 1``); the kernel adds
  ``2 sum_c v a' + sum_c a'`` with ``a' = a << (A - ba)`` in uint8. Exact at A = 8 too:
  uint8 x int8 products are what VNNI multiplies.

The engine for a block is popcount when ``bw * ba <= 4`` (few plane pairs), else int8.
Blocks are built once per activation layout and cached on the packed weights.
"""

from __future__ import annotations

import threading

import numpy as np

from soniq_ref.bitpack import code_planes, pack_bits

from .act_groups import ActGroup, act_groups

POPCOUNT, INT8 = 0, 1
ENGINE_NAMES = ("popcount", "int8")
POPCOUNT_MAX_PLANE_PAIRS = 4


def choose_engine(w_bits: int, a_bits: int, policy: str = "auto") -> int:
    """Engine for a (weight width, activation width) block under ``policy``."""
    if policy == "popcount":
        return POPCOUNT
    if policy == "int8":
        return INT8
    return POPCOUNT if w_bits * a_bits <= POPCOUNT_MAX_PLANE_PAIRS else INT8


class CpuPackedWeights:
    """Weight codes packed for the cpu backend (accepted by its linear_int / conv2d_int).

    codes: uint8 [N, K] (flattened), bits: uint8 [N], shape: the original code shape
    ([N, K] or [O, C, kh, kw]). Blocks for each activation layout are built on first use
    and kept, so a layer packs its weights once and reuses them on every call.
    """

    def __init__(self, codes: np.ndarray, bits: np.ndarray, shape: tuple):
        self._codes = np.ascontiguousarray(codes.reshape(codes.shape[0], -1))
        self._codes.setflags(write=False)
        self.bits = bits.copy()
        self.bits.setflags(write=False)
        self.shape = tuple(shape)
        self._by_width = {int(b): np.flatnonzero(self.bits == b).astype(np.int32)
                          for b in np.unique(self.bits)}
        self._plans = {}
        self._lock = threading.Lock()

    @property
    def k(self) -> int:
        return int(self._codes.shape[1])

    def codes(self) -> np.ndarray:
        """The uint8 weight codes in their original shape."""
        return self._codes.reshape(self.shape).copy()

    def plan(self, k_bits: np.ndarray, act_bits_hi: int, policy: str = "auto"):
        """(groups, blocks) for activations whose K positions have widths ``k_bits``."""
        key = (act_bits_hi, policy, k_bits.tobytes())
        plan = self._plans.get(key)
        if plan is None:
            plan = self._build(k_bits, act_bits_hi, policy)
            with self._lock:
                plan = self._plans.setdefault(key, plan)
        return plan

    def _build(self, k_bits, act_bits_hi, policy):
        groups = act_groups(k_bits, act_bits_hi)
        blocks, need = [], [[False, False] for _ in groups]
        for gi, group in enumerate(groups):
            for w_bits, cols in self._by_width.items():
                engine = choose_engine(w_bits, group.bits, policy)
                need[gi][engine] = True
                blocks.append(self._block(engine, gi, group, w_bits, cols))
        group_args = tuple(_group_args(g, *n) for g, n in zip(groups, need))
        engines = frozenset(ENGINE_NAMES[b[0]] for b in blocks)
        return group_args, tuple(blocks), engines

    def _block(self, engine: int, gi: int, group: ActGroup, w_bits: int, cols: np.ndarray):
        w = self._codes[cols][:, group.idx]                          # [n, k_group]
        wplanes = wbytes = None
        if engine == POPCOUNT:
            packed = pack_bits(code_planes(w, w_bits))               # [n, bw, ceil(k/64)]
            wplanes = np.zeros((len(cols), w_bits, group.words), np.uint64)
            wplanes[:, :, :packed.shape[2]] = packed
        else:
            wbytes = np.zeros((len(cols), group.kpad), np.int8)
            wbytes[:, :group.k] = (w.astype(np.int16) - (1 << (w_bits - 1))).astype(np.int8)
        return (engine, gi, w_bits, len(cols), cols, wplanes, wbytes)


def _group_args(group: ActGroup, need_planes: bool, need_bytes: bool) -> tuple:
    start = int(group.idx[0]) if group.k else 0
    return (group.bits, group.shift, group.k, group.idx, start, int(group.contiguous),
            group.words, group.kpad, int(need_planes), int(need_bytes))
