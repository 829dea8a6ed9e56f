"""Snapping the learned precisions to each layer's two-level palette.

After phase 1 every channel has a continuous precision ``b~`` between its
palette's levels ``lo <= hi``. Snapping gives each channel one of the two:

1. rank all channels of the network (weights and activations separately) by
   ``b~``, highest first; ties keep network order (layer, then channel);
2. start with every channel at ``lo``; walk the ranking and move channels to
   ``hi`` while the size-weighted mean stays within the target
   (``sum_c size_c * bits_c <= target * sum_c size_c``); stop at the first
   channel that does not fit, so the high channels are exactly a top prefix.

``size_c`` is what the channel carries: parameters per output channel for
weights, activation elements per input channel for activations (the budget's
weighting, :mod:`soniq_ref.budget`). The first layer's 8-bit pixel input is
fixed and not snapped; a layer that shares another's input quantizer (a residual
block's projection) takes that layer's input bits. If even all-``lo`` exceeds the target, every channel
gets ``lo`` (the smallest the palette allows).
"""

from __future__ import annotations

import numpy as np

from ..budget import owns_input


def allocate(scores, sizes, palettes, target: float) -> list[np.ndarray]:
    """Pick ``lo``/``hi`` per channel.

    scores: list of float arrays (``b~`` per channel, one array per layer);
    sizes: list of ints (the per-channel size of each layer); palettes: list of
    ``(lo, hi)``; target: the mean-bits budget. Returns uint8 bit arrays.
    """
    if not np.isfinite(target) or target <= 0:
        raise ValueError(f"target must be a finite number of bits > 0, got {target!r}")
    score = np.concatenate([np.asarray(s, np.float64) for s in scores])
    size = np.concatenate([np.full(len(s), int(z), np.int64) for s, z in zip(scores, sizes)])
    lo = np.concatenate([np.full(len(s), p[0], np.int64) for s, p in zip(scores, palettes)])
    hi = np.concatenate([np.full(len(s), p[1], np.int64) for s, p in zip(scores, palettes)])
    bits = lo.copy()
    allowed = target * float(size.sum())
    used = int((size * lo).sum())
    for c in np.argsort(-score, kind="stable"):
        extra = int(size[c] * (hi[c] - lo[c]))
        if used + extra > allowed:
            break
        used += extra
        bits[c] = hi[c]
    return np.split(bits.astype(np.uint8), np.cumsum([len(s) for s in scores])[:-1])


def snap(layers, target_weight_bits: float, target_act_bits: float) -> None:
    """Snap every quantized layer in ``layers`` and fix its bits (``set_bits``)."""
    w_bits = allocate([l.soft_weight_bits() for l in layers],
                      [l.weight_channel_size for l in layers],
                      [l.weight_palette for l in layers], target_weight_bits)
    act_layers = [l for l in layers if owns_input(l)]
    a_bits = allocate([l.soft_act_bits() for l in act_layers],
                      [l.act_channel_size for l in act_layers],
                      [l.act_palette for l in act_layers], target_act_bits) if act_layers else []
    a_of = dict(zip(map(id, act_layers), a_bits))
    for layer, wb in zip(layers, w_bits):
        source = getattr(layer, "input_source", None)
        layer.set_bits(wb, a_of.get(id(source if source is not None else layer)))
