"""Guard zones around kernel arguments: out-of-bounds writes become errors.

Each array argument is copied into a larger buffer between two zones of a known
byte pattern; the kernel gets the copy. After the launch the zones are checked
(a write past either end of any argument is reported) and the copies of written
arguments are copied back. Reads past the end return the pattern, not a crash.
One array passed as two arguments becomes two copies (kernels here never alias).
"""

from __future__ import annotations

import numpy as np

GUARD_BYTES = 256       # a multiple of 64, so the copy keeps 64-byte alignment
PATTERN = 0x5A


class GuardedArray:
    """A padded copy of ``array`` whose interior the kernel sees."""

    def __init__(self, array: np.ndarray):
        self.array = array
        nbytes = array.nbytes
        self._raw = np.empty(nbytes + 2 * GUARD_BYTES + 64, np.uint8)
        start = (-self._raw.ctypes.data) % 64          # align the interior to 64 bytes
        self._buf = self._raw[start:start + nbytes + 2 * GUARD_BYTES]
        self._buf[:GUARD_BYTES] = PATTERN
        self._buf[GUARD_BYTES + nbytes:] = PATTERN
        self._buf[GUARD_BYTES:GUARD_BYTES + nbytes] = array.reshape(-1).view(np.uint8)

    @property
    def address(self) -> int:
        return self._buf.ctypes.data + GUARD_BYTES

    def violation(self) -> str | None:
        """'before' / 'past the end' if a guard zone was written, else None."""
        if np.any(self._buf[:GUARD_BYTES] != PATTERN):
            return "before the start"
        if np.any(self._buf[GUARD_BYTES + self.array.nbytes:] != PATTERN):
            return "past the end"
        return None

    def copy_back(self) -> None:
        self.array.reshape(-1).view(np.uint8)[:] = \
            self._buf[GUARD_BYTES:GUARD_BYTES + self.array.nbytes]
