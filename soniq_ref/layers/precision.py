"""A quantized layer's precision settings: palettes, fixed widths, the clip floor.

A palette is two bit widths ``(lo, hi)``, ``1 <= lo <= hi <= 8``; after snapping
every channel holds one of them (:func:`check_levels`). Clips (``alpha`` of the
weights, ``beta`` of the activations) are read as at least ``MIN_CLIP``, so a clip
that training pushed to 0 or below still gives a finite step.
"""

from __future__ import annotations

import numpy as np

MIN_CLIP = 1e-6


def check_palette(name: str, palette) -> tuple[int, int]:
    """A palette is two bit widths ``(lo, hi)`` with ``1 <= lo <= hi <= 8``."""
    try:
        lo, hi = (int(v) for v in palette)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be two bit widths (lo, hi), got {palette!r}") from None
    if not 1 <= lo <= hi <= 8:
        raise ValueError(f"{name} levels must satisfy 1 <= lo <= hi <= 8, got ({lo}, {hi})")
    return lo, hi


def check_levels(name: str, bits, palette: tuple, length: int) -> np.ndarray:
    """uint8 [length]: ``bits`` with each entry one of the palette's two levels."""
    bits = np.asarray(bits)
    if bits.shape != (length,):
        raise ValueError(f"{name} must have shape ({length},), got {bits.shape}")
    if not np.all(np.isin(bits, palette)):
        raise ValueError(f"{name} entries must be palette levels {palette}")
    return bits.astype(np.uint8)
