"""Activation groups: the positions along K that share one activation bit width.

A layer's activation channels may carry different widths ``ba`` on one A-bit grid.
The kernels treat each width as its own group of K positions (``idx``), so a group's
bit planes hold the *unshifted* codes and the shift ``A - ba`` is applied once per
output, and an int8 row holds the shifted codes ``a << (A - ba)`` (uint8, 0..255).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BYTE_ALIGN = 64    # int8 rows padded to 64 bytes (one 512-bit vector) unless a layout says less


def _round_up(value: int, multiple: int) -> int:
    return max(multiple, -(-value // multiple) * multiple)


@dataclass(frozen=True)
class ActGroup:
    """K positions ``idx`` (int32, ascending) of activation width ``bits``."""

    bits: int
    shift: int
    idx: np.ndarray
    word_align: int = 1
    byte_align: int = BYTE_ALIGN

    @property
    def k(self) -> int:
        return int(self.idx.shape[0])

    @property
    def words(self) -> int:
        """uint64 words per plane row: ceil(k / 64) rounded up to ``word_align``."""
        return _round_up(-(-self.k // 64), self.word_align)

    @property
    def kpad(self) -> int:
        """Bytes per int8 row: k rounded up to ``byte_align``."""
        return _round_up(self.k, self.byte_align)

    @property
    def contiguous(self) -> bool:
        return self.k > 0 and int(self.idx[-1]) - int(self.idx[0]) == self.k - 1

    @property
    def every_other(self) -> bool:
        """idx is start, start + 2, start + 4, ... (e.g. input channels alternating widths)."""
        return self.k > 1 and bool(np.all(np.diff(self.idx) == 2))


def act_groups(k_bits: np.ndarray, act_bits_hi: int, word_align: int = 1,
               byte_align: int = BYTE_ALIGN) -> tuple[ActGroup, ...]:
    """Split K positions by width. k_bits: uint8 [K], the width of every K position."""
    groups = []
    for bits in np.unique(k_bits):
        idx = np.flatnonzero(k_bits == bits).astype(np.int32)
        groups.append(ActGroup(int(bits), act_bits_hi - int(bits), idx, word_align,
                               byte_align))
    return tuple(groups)
