"""The bit budget: mean bits per weight and per activation, and its gradient.

Means are weighted by how much each channel carries:

    mean_w = sum_{layers, o} K_L * b~_o / sum_{layers, o} K_L
    mean_a = sum_{layers, c} S_L * b~_c / sum_{layers, c} S_L

with ``K_L`` the parameters per output channel of layer L and ``S_L`` the
activation elements per input channel per sample (1 for a linear layer,
H * W for a convolution). The first layer's input is the 8-bit image itself,
not a learned activation, so it is left out of ``mean_a``; so is the input of a
layer that reads another layer's input codes (a residual block's projection,
whose ``input_source`` is the block's first convolution): each activation
channel is counted once.

Phase 1 adds ``lambda_w * mean_w + lambda_a * mean_a`` to the loss.
"""

from __future__ import annotations

import numpy as np

from .noise import soft_bits_grad


def _weight_terms(layers, bits_of):
    sizes = [np.full(len(bits_of(l)), l.weight_channel_size, np.float64) for l in layers]
    return sizes, [np.asarray(bits_of(l), np.float64) for l in layers]


def owns_input(layer) -> bool:
    """Whether ``layer`` learns its own input precision: not the pixel-reading first
    layer, and not a layer sharing another's input quantizer (``input_source``)."""
    return not layer.first_layer and getattr(layer, "input_source", None) is None


def _act_layers(layers):
    return [l for l in layers if owns_input(l)]


def _mean(sizes, bits) -> float:
    total = sum(s.sum() for s in sizes)
    return float(sum((s * b).sum() for s, b in zip(sizes, bits)) / total) if total else 0.0


def _means(layers, wbits_of, abits_of) -> tuple[float, float]:
    mean_w = _mean(*_weight_terms(layers, wbits_of))
    act = _act_layers(layers)
    mean_a = _mean([np.full(len(abits_of(l)), l.act_channel_size, np.float64) for l in act],
                   [np.asarray(abits_of(l), np.float64) for l in act])
    return mean_w, mean_a


def soft_mean_bits(layers) -> tuple[float, float]:
    """(mean weight bits, mean activation bits) of the continuous precisions b~."""
    return _means(layers, lambda l: l.soft_weight_bits(), lambda l: l.soft_act_bits())


def hard_mean_bits(layers) -> tuple[float, float]:
    """(mean weight bits, mean activation bits) of the fixed bit widths (after snapping)."""
    return _means(layers, lambda l: l.w_bits, lambda l: l.a_bits)


def add_budget_grads(layers, lambda_w: float, lambda_a: float) -> float:
    """Add the penalty's gradient into each layer's ``grads['theta_w'/'theta_a']``.

    Call after the layers' backward pass (which overwrites ``grads``).
    Returns the penalty ``lambda_w * mean_w + lambda_a * mean_a``.
    """
    mean_w, mean_a = soft_mean_bits(layers)
    total_w = sum(l.weight_channel_size * len(l.params["theta_w"]) for l in layers)
    for l in layers:
        d = lambda_w * l.weight_channel_size / total_w
        l.grads["theta_w"] = l.grads.get("theta_w", 0) + \
            (d * soft_bits_grad(l.params["theta_w"], *l.weight_palette)).astype(l.dtype)
    act = _act_layers(layers)
    total_a = sum(l.act_channel_size * len(l.params["theta_a"]) for l in act)
    for l in act:
        d = lambda_a * l.act_channel_size / total_a
        l.grads["theta_a"] = l.grads.get("theta_a", 0) + \
            (d * soft_bits_grad(l.params["theta_a"], *l.act_palette)).astype(l.dtype)
    return lambda_w * mean_w + lambda_a * mean_a
