"""Phase 2: the real quantizers forward, straight-through gradients backward.

In exact mode a layer's forward rounds its weights and its input to their grids
(:mod:`soniq_ref.quantizers`) and runs the integer core; for the backward it uses
the values those codes stand for::

    weights      w^ = alpha * Q_w(w / alpha)        Q_w: the odd grid of 2**bw - 1 levels in [-1, 1]
    activations  x^ = beta * Q_a(x / beta)          Q_a: the grid k * 2**-ba, k in 0..2**ba - 1
    signed       x^ = beta * Q_s(x / beta)          Q_s: the grid l * 2**(1-ba), l in -2**(ba-1)..2**(ba-1) - 1

(:func:`dequantized_weights`, :func:`dequantized_acts`). Rounding has no useful
derivative, so the backward treats ``Q`` as the identity inside its clip range --
the straight-through estimator -- and differentiates the clip exactly. Inside
means the closed range: ``|w| <= alpha`` for weights; ``0 <= x * r_c <= 2**ba - 1``
for activations, with ``r_c = 2**ba / beta`` the float32 ratio that quantizes them;
``-2**(ba-1) <= x * r_c <= 2**(ba-1) - 1`` for signed ones (``r_c = 2**(ba-1) / beta``).
The clips get the LSQ-style gradient, the derivative of ``alpha * Q(w / alpha)``
with that rule::

    d w^ / d w     = [inside]
    d w^ / d alpha = w^ / alpha - [inside] w / alpha      (outside: w^ / alpha = +-1)
    d x^ / d x     = [inside]
    d x^ / d beta  = x^ / beta - [inside] x / beta        (above the clip: x^ / beta)

Each function works in the dtype of its inputs (float32 for training, float64 for
gradient checks). Channel axis: 0 for weights, 1 for activations. The activation
functions split their channels between workers (:mod:`soniq_ref.parallel`).
"""

from __future__ import annotations

import numpy as np

from .parallel import elementwise
from .quantizers import (act_ratio, dequantize_acts, dequantize_signed_acts, dequantize_weights,
                         signed_act_ratio)


def dequantized_weights(codes, alpha, bits, dtype) -> np.ndarray:
    """w^ = alpha * q / n from the weight codes (float32 arithmetic, then ``dtype``)."""
    return dequantize_weights(codes, alpha.astype(np.float32), bits).astype(dtype, copy=False)


def weight_ste_backward(dw_hat, w, w_hat, alpha):
    """Gradients through w^ = alpha * Q_w(w / alpha) -> (dw, dalpha [O]).

    dw_hat, w, w_hat: [O, ...]; alpha: [O], the clip the forward used.
    """
    a = alpha.reshape([-1] + [1] * (w.ndim - 1))
    inside = np.abs(w) <= a
    dw = dw_hat * inside
    dalpha = (dw_hat * (w_hat / a - np.where(inside, w / a, 0.0))).reshape(w.shape[0], -1) \
        .sum(axis=1)
    return dw, dalpha


def dequantized_acts(codes, bits, beta, act_bits_hi, dtype) -> np.ndarray:
    """x^ = s_a * (k << (A - ba)) from the activation codes (float32, then ``dtype``)."""
    return dequantize_acts(codes, bits, beta, act_bits_hi).astype(dtype, copy=False)


def act_ste_backward(dx_hat, x, x_hat, beta, bits):
    """Gradients through x^ = beta * Q_a(x / beta) -> (dx, dbeta [1]).

    dx_hat, x, x_hat: [M, C] or [B, C, H, W]; beta: the float32 clip the forward used;
    bits: uint8 [C], each channel's width.
    """
    ratio = act_ratio(beta, bits).reshape([1, -1] + [1] * (x.ndim - 2))
    top = ((1 << bits.astype(np.int64)) - 1).reshape(ratio.shape)
    inside = elementwise(_inside, x, ratio, top)
    dbeta = np.array([np.sum(elementwise(_clip_grad, dx_hat, x_hat, x, inside, beta))])
    return elementwise(np.multiply, dx_hat, inside), dbeta


def dequantized_signed_acts(codes, bits, beta, act_bits_hi, dtype) -> np.ndarray:
    """x^ = s_a * ((k << (A - ba)) - 2**(A-1)) from signed activation codes (float32,
    then ``dtype``)."""
    return dequantize_signed_acts(codes, bits, beta, act_bits_hi).astype(dtype, copy=False)


def signed_act_ste_backward(dx_hat, x, x_hat, beta, bits):
    """Gradients through x^ = beta * Q_s(x / beta) -> (dx, dbeta [1]); arguments as
    :func:`act_ste_backward`. Inside: ``-2**(ba-1) <= x * r_c <= 2**(ba-1) - 1``."""
    ratio = signed_act_ratio(beta, bits).reshape([1, -1] + [1] * (x.ndim - 2))
    half = (1 << (bits.astype(np.int64) - 1)).reshape(ratio.shape)
    inside = elementwise(_inside_signed, x, ratio, half)
    dbeta = np.array([np.sum(elementwise(_clip_grad, dx_hat, x_hat, x, inside, beta))])
    return elementwise(np.multiply, dx_hat, inside), dbeta


def _inside_signed(x, ratio, half, out=None):
    """``-half <= x * ratio <= half - 1`` (the product in float32)."""
    scaled = np.asarray(x, np.float32) * ratio
    return np.logical_and(scaled >= -half, scaled <= half - 1, out=out)


def _inside(x, ratio, top, out=None):
    """``0 <= x * ratio <= top`` (the product in float32), the STE's pass-through set."""
    scaled = np.asarray(x, np.float32) * ratio
    return np.logical_and(scaled >= 0, scaled <= top, out=out)


def _clip_grad(dx_hat, x_hat, x, inside, beta, out=None):
    """``dx_hat * (x^ / beta - [inside] x / beta)``, the terms of ``d loss / d beta``."""
    return np.multiply(dx_hat, x_hat / beta - np.where(inside, x / beta, 0.0), out=out)
