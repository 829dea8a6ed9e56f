"""Quantizers: real values <-> integer codes, per channel, 1..8 bits.

Two grids, both described in docs/semantics.md.

Weights -- bipolar odd grid, one clip ``alpha[o] > 0`` and one width ``bw[o]``
per output channel ``o``. With ``n = 2**bw - 1`` a code ``k`` in ``[0, n]``
stands for the odd signed level ``q = 2k - n`` and the value ``alpha * q / n``.

Activations -- unipolar nested grid, one width ``ba[c]`` per input channel ``c``
and one step ``s_a = beta / 2**A`` per layer (``A`` is the high level of the
layer's activation palette). A ``ba[c]``-bit code ``k`` stands for
``s_a * (k << (A - ba[c]))``: a low-precision channel is a high-precision one
whose low bit planes are missing.

All arithmetic is float32 in the order written in each docstring; rounding is
round-half-to-even (``np.rint``). Weights are per output channel, axis 0
(``[N, K]``, ``[O, C, kh, kw]``); activations are per input channel, axis 1
(``[M, C]``, ``[B, C, H, W]``).
"""

from __future__ import annotations

import numpy as np

from . import checks

F32 = np.float32


def _per_channel(v: np.ndarray, ndim: int) -> np.ndarray:
    """Reshape a [C] vector so it broadcasts along axis 1 of an ``ndim`` array."""
    shape = [1] * ndim
    shape[1 if ndim > 1 else 0] = -1
    return v.reshape(shape)


def _per_row(v: np.ndarray, ndim: int) -> np.ndarray:
    """Reshape an [N] vector so it broadcasts along axis 0 of an ``ndim`` array."""
    return v.reshape([-1] + [1] * (ndim - 1))


# ----------------------------------------------------------------------------- weights

def weight_levels(bits: np.ndarray) -> np.ndarray:
    """``n = 2**bits - 1`` as int64: the largest code and the largest |level|."""
    return (np.int64(1) << bits.astype(np.int64)) - 1


def quantize_weights(w: np.ndarray, alpha: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """Weights -> codes.

    w: float32 [N, ...] (axis 0 = output channel); alpha: float32 [N], > 0;
    bits: uint8 [N] in 1..8. Returns uint8 codes of w's shape:

        t = w / alpha            (float32)
        t = t + 1                (float32)
        t = t * (n / 2)          (float32; n / 2 is exact)
        k = clip(rint(t), 0, n)
    """
    w = checks.as_array("w", w, np.float32)
    if w.ndim < 1:
        raise ValueError("w must have at least one dimension (output channels)")
    n_out = w.shape[0]
    alpha = checks.check_float32("alpha", alpha, n_out)
    if np.any(alpha <= 0):
        raise ValueError("alpha must be > 0 in every channel")
    bits = checks.check_bits("bits", bits, n_out)
    checks.check_finite("w", w)
    n = weight_levels(bits)
    t = w / _per_row(alpha, w.ndim)
    t = t + F32(1)
    t = t * _per_row((n / 2).astype(F32), w.ndim)
    k = np.clip(np.rint(t), 0, _per_row(n, w.ndim).astype(F32))
    return k.astype(np.uint8)


def signed_levels(codes: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """Codes -> odd signed levels ``q = 2k - n`` (int64, same shape; bits along axis 0)."""
    n = _per_row(weight_levels(bits), codes.ndim)
    return 2 * codes.astype(np.int64) - n


def dequantize_weights(codes: np.ndarray, alpha: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """Codes -> float32 values ``step * q`` with ``step = alpha / n`` (float32)."""
    step = weight_step(alpha, bits)
    q = signed_levels(codes, bits).astype(F32)
    return _per_row(step, codes.ndim) * q


def weight_step(alpha: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """float32 [N]: the value of one signed level, ``alpha / n``."""
    return (alpha.astype(F32) / weight_levels(bits).astype(F32)).astype(F32)


# ------------------------------------------------------------------------- activations

def act_step(beta, act_bits_hi: int) -> np.float32:
    """The layer's activation step ``s_a = beta / 2**A`` in float32."""
    return F32(beta) / F32(2.0 ** act_bits_hi)


def act_ratio(beta, bits: np.ndarray) -> np.ndarray:
    """float32 [C]: ``r_c = 2**bits[c] / beta`` (one float32 division)."""
    return (F32(2.0) ** bits.astype(F32)) / F32(beta)


def quantize_acts(x: np.ndarray, bits: np.ndarray, beta) -> np.ndarray:
    """Activations -> codes.

    x: float32 [M, C] or [B, C, H, W]; bits: uint8 [C]; beta: float32 clip > 0.
    Returns uint8 codes ``k = clip(rint(x * r_c), 0, 2**bits[c] - 1)``.
    """
    x = checks.as_array("x", x, np.float32)
    if x.ndim < 2:
        raise ValueError(f"x must be [M, C] or [B, C, H, W], got shape {x.shape}")
    bits = checks.check_bits("bits", bits, x.shape[1])
    checks.check_finite("x", x)
    if not np.isfinite(beta) or beta <= 0:
        raise ValueError(f"beta must be a finite float > 0, got {beta!r}")
    return codes_from_ratio(x, act_ratio(beta, bits), bits)


def codes_from_ratio(y: np.ndarray, ratio: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """``clip(rint(y * ratio[c]), 0, 2**bits[c] - 1)`` as uint8 (float32 multiply)."""
    top = ((1 << bits.astype(np.int64)) - 1).astype(F32)
    t = np.rint(y * _per_channel(ratio, y.ndim))
    return np.clip(t, F32(0), _per_channel(top, y.ndim)).astype(np.uint8)


def shifted_codes(codes: np.ndarray, bits: np.ndarray, act_bits_hi: int) -> np.ndarray:
    """int64 ``k << (A - bits[c])``: each code placed on the layer's A-bit grid."""
    shift = _per_channel(act_bits_hi - bits.astype(np.int64), codes.ndim)
    return codes.astype(np.int64) << shift


def dequantize_acts(codes: np.ndarray, bits: np.ndarray, beta, act_bits_hi: int) -> np.ndarray:
    """Codes -> float32 values ``s_a * float32(k << (A - bits[c]))``."""
    return act_step(beta, act_bits_hi) * shifted_codes(codes, bits, act_bits_hi).astype(F32)
