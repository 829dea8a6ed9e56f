"""The cuda backend's packed weights."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from soniq_ref import checks


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

    def __post_init__(self):
        shape = checks.check_weight_shape("shape", self.shape)
        bits = checks.frozen(checks.check_bits("bits", self.bits, shape[0]))
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "bits", bits)
        for name in ("planes", "codes", "bits_device"):   # host copies (emulation): read-only
            value = getattr(self, name)
            if isinstance(value, np.ndarray):
                object.__setattr__(self, name, checks.frozen(value))
        object.__setattr__(self, "_bits_bytes", bits.tobytes())
        self.check()

    def check(self) -> "CudaPackedWeights":
        """Refuse (ValueError naming w_codes) an object whose arrays disagree with its
        shape and bits, or whose bits changed since packing; O(N), before every kernel."""
        shape = checks.check_weight_shape("shape", self.shape)
        n, k = shape[0], int(np.prod(shape[1:], dtype=object))
        expected = {"planes": ((n, 8, (k + 63) // 64), np.uint64), "codes": ((n, k), np.uint8),
                    "bits_device": ((n,), np.uint8)}
        for name, (shape, dtype) in expected.items():
            value = getattr(self, name)
            if tuple(getattr(value, "shape", ())) != shape or \
                    getattr(value, "dtype", None) != np.dtype(dtype):
                raise ValueError(f"w_codes: packed {name} must be {np.dtype(dtype).name} "
                                 f"{list(shape)}; pack the codes again")
        if not isinstance(self.bits, np.ndarray) or self.bits.dtype != np.uint8 \
                or self.bits.tobytes() != self._bits_bytes or (
                isinstance(self.bits_device, np.ndarray)
                and self.bits_device.tobytes() != self._bits_bytes):
            raise ValueError("w_codes: the packed weights were changed after packing; "
                             "pack the codes again")
        return self

    @property
    def k(self) -> int:
        return int(np.prod(self.shape[1:]))
