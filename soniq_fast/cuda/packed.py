"""The cuda backend's packed weights."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class CudaPackedWeights:
    """Weights prepared once for every engine, resident where the runtime keeps arrays.

    planes: u64 [N, 8, ceil(K / 64)] -- bit plane j of each row's codes (zero for
            j >= bits[o]), for the bit-serial and tensor-core engines;
    codes:  u8 [N, K] -- the unsigned codes, for the dp4a engine;
    bits:   u8 [N] (host) and bits_device (runtime copy);
    shape:  the original code shape, [N, K] or [O, C, kh, kw];
    row_groups: per (act_bits_hi, engine, compute capability), the engine split
            of the rows with their device index arrays, computed on first use.
    """

    planes: object
    codes: object
    bits: np.ndarray
    bits_device: object
    shape: tuple
    row_groups: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def k(self) -> int:
        return int(np.prod(self.shape[1:]))
