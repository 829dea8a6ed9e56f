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

Signed activations -- the same nested grid with a zero point, for inputs that
are signed (a LayerNorm's output): a ``ba[c]``-bit code ``k`` in ``[0, 2**ba - 1]``
stands for ``s_a * ((k << (A - ba[c])) - 2**(A-1))`` with ``s_a = beta / 2**(A-1)``,
the levels ``-beta .. beta - step`` around an exact zero (code ``2**(ba-1)``).
Codes stay unsigned, so the integer core is the same; see
:func:`soniq_ref.integer_core.signed_input_offset` for the one constant it adds.

All arithmetic is float32 in the order written in each docstring; rounding is
round-half-to-even (``np.rint``). Weights are per output channel, axis 0
(``[N, K]``, ``[O, C, kh, kw]``); activations are per input channel, axis 1
(``[M, C]``, ``[B, C, H, W]``).
"""

from __future__ import annotations

import numpy as np

from . import checks
from .parallel import elementwise, into

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

def weight_levels(bits) -> np.ndarray:
    """``n = 2**bits - 1`` as int64: the largest code and the largest |level|.

    ``bits``: integer widths in 1..8 (array or scalar); anything else is refused."""
    bits = np.asarray(bits)
    if bits.dtype.kind not in "iu":
        raise TypeError(f"bits must be integer bit widths in 1..8, got dtype {bits.dtype}")
    if bits.size and (bits.min() < checks.MIN_BITS or bits.max() > checks.MAX_BITS):
        raise ValueError(f"bits entries must be in 1..8, got {int(bits.min())}.."
                         f"{int(bits.max())}")
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
    """Codes -> odd signed levels ``q = 2k - n`` (int64, same shape; bits along axis 0).

    codes: uint8 [N, ...], each within its row's bits; bits: uint8 [N] in 1..8."""
    codes = checks.as_array("codes", codes, np.uint8)
    if codes.ndim < 1:
        raise ValueError("codes must have at least one dimension (output channels)")
    bits = checks.check_bits("bits", bits, codes.shape[0])
    checks.check_codes("codes", codes, bits, axis=0)
    n = _per_row(weight_levels(bits), codes.ndim)
    return 2 * codes.astype(np.int64) - n


def dequantize_weights(codes: np.ndarray, alpha: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """Codes -> float32 values ``step * q`` with ``step = alpha / n`` (float32).

    Arguments as :func:`signed_levels`, plus alpha: float32 [N], finite, > 0."""
    q = signed_levels(codes, bits).astype(F32)
    alpha = checks.check_float32("alpha", alpha, q.shape[0])
    if np.any(alpha <= 0):
        raise ValueError("alpha must be > 0 in every channel")
    step = weight_step(alpha, bits)
    return _per_row(step, codes.ndim) * q


def weight_step(alpha: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """float32 [N]: the value of one signed level, ``alpha / n``."""
    return (alpha.astype(F32) / weight_levels(bits).astype(F32)).astype(F32)


# ------------------------------------------------------------------------- activations

def check_beta(beta) -> np.float32:
    """The activation clip: a real scalar, finite and > 0 as float32 (1e39 is not)."""
    if isinstance(beta, (bool, np.bool_)) or \
            not isinstance(beta, (int, float, np.integer, np.floating)):
        raise TypeError(f"beta must be a real number (the activation clip), got "
                        f"{type(beta).__name__}")
    with np.errstate(over="ignore"):
        try:
            value = F32(beta)
        except OverflowError:           # an int beyond float range
            value = F32(np.inf)
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"beta must be finite and > 0 in float32, got {beta!r}")
    return value


def act_step(beta, act_bits_hi: int) -> np.float32:
    """The layer's activation step ``s_a = beta / 2**A`` in float32."""
    act_bits_hi = checks.check_bits_value("act_bits_hi", act_bits_hi)
    step = check_beta(beta) / F32(2.0 ** act_bits_hi)
    if step == 0:
        raise ValueError(f"beta = {float(beta)!r} is too small: beta / 2**A underflows float32")
    return step


def act_ratio(beta, bits: np.ndarray) -> np.ndarray:
    """float32 [C]: ``r_c = 2**bits[c] / beta`` (one float32 division); bits uint8 [C] in
    1..8; a beta so small that a ratio overflows float32 is refused."""
    beta = check_beta(beta)
    bits = checks.as_array("bits", bits, np.uint8, ndim=1)
    bits = checks.check_bits("bits", bits, bits.shape[0])
    with np.errstate(over="ignore"):
        ratio = (F32(2.0) ** bits.astype(F32)) / beta
    if not np.all(np.isfinite(ratio)):
        raise ValueError(f"beta = {float(beta)!r} is too small: 2**bits / beta overflows "
                         f"float32")
    return ratio


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
    return codes_from_ratio(x, act_ratio(beta, bits), bits)


def codes_from_ratio(y: np.ndarray, ratio: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """``clip(rint(y * ratio[c]), 0, 2**bits[c] - 1)`` as uint8 (float32 multiply)."""
    top = ((1 << bits.astype(np.int64)) - 1).astype(F32)
    return elementwise(lambda y, r, top, out=None:
                       into(np.clip(np.rint(y * r), F32(0), top).astype(np.uint8), out),
                       y, _per_channel(ratio, y.ndim), _per_channel(top, y.ndim))


def shifted_codes(codes: np.ndarray, bits: np.ndarray, act_bits_hi: int) -> np.ndarray:
    """int64 ``k << (A - bits[c])``: each code placed on the layer's A-bit grid."""
    shift = _per_channel(act_bits_hi - bits.astype(np.int64), codes.ndim)
    return codes.astype(np.int64) << shift


def dequantize_acts(codes: np.ndarray, bits: np.ndarray, beta, act_bits_hi: int) -> np.ndarray:
    """Codes -> float32 values ``s_a * float32(k << (A - bits[c]))``."""
    step = act_step(beta, act_bits_hi)
    shift = _per_channel(act_bits_hi - bits.astype(np.int64), codes.ndim)
    return elementwise(lambda k, shift, out=None:
                       np.multiply(step, (k.astype(np.int64) << shift).astype(F32), out=out),
                       codes, shift)


# ------------------------------------------------------------------- signed activations

SIGNED_MIN_BITS = 2       # at 1 bit the offset grid is {-beta, 0}: no positive level


def signed_act_step(beta, act_bits_hi: int) -> np.float32:
    """The signed activation step ``s_a = beta / 2**(A-1)`` in float32 (``A >= 2``)."""
    act_bits_hi = checks.check_bits_value("act_bits_hi", act_bits_hi)
    if act_bits_hi < SIGNED_MIN_BITS:
        raise ValueError(f"signed activations need at least {SIGNED_MIN_BITS} bits, got "
                         f"act_bits_hi = {act_bits_hi}")
    return act_step(beta, act_bits_hi - 1)


def signed_act_ratio(beta, bits: np.ndarray) -> np.ndarray:
    """float32 [C]: ``r_c = 2**(bits[c] - 1) / beta``, what turns a signed ``x`` into the
    level ``rint(x * r_c)``; bits uint8 [C] in 2..8."""
    bits = checks.as_array("bits", bits, np.uint8, ndim=1)
    bits = checks.check_bits("bits", bits, bits.shape[0])
    if bits.size and bits.min() < SIGNED_MIN_BITS:
        raise ValueError(f"signed activations need at least {SIGNED_MIN_BITS} bits per "
                         f"channel, got {int(bits.min())}")
    return act_ratio(beta, bits - np.uint8(1))


def quantize_signed_acts(x: np.ndarray, bits: np.ndarray, beta) -> np.ndarray:
    """Signed activations -> codes.

    x: float32 [M, C]; bits: uint8 [C] in 2..8; beta: float32 clip > 0. Returns uint8
    codes ``k = clip(rint(x * r_c) + 2**(bits[c]-1), 0, 2**bits[c] - 1)``: the level
    ``rint(x * r_c)`` (float32 multiply, half to even) moved up by the zero point.
    """
    x = checks.as_array("x", x, np.float32)
    if x.ndim < 2:
        raise ValueError(f"x must be [M, C] or [B, C, H, W], got shape {x.shape}")
    bits = checks.check_bits("bits", bits, x.shape[1])
    checks.check_finite("x", x)
    ratio = signed_act_ratio(beta, bits)
    zero = (1 << (bits.astype(np.int64) - 1)).astype(F32)
    top = ((1 << bits.astype(np.int64)) - 1).astype(F32)
    return elementwise(lambda y, r, zero, top, out=None:
                       into(np.clip(np.rint(y * r) + zero, F32(0), top).astype(np.uint8),
                            out),
                       x, _per_channel(ratio, x.ndim), _per_channel(zero, x.ndim),
                       _per_channel(top, x.ndim))


def dequantize_signed_acts(codes: np.ndarray, bits: np.ndarray, beta,
                           act_bits_hi: int) -> np.ndarray:
    """Codes -> float32 values ``s_a * float32((k << (A - bits[c])) - 2**(A-1))``."""
    step = signed_act_step(beta, act_bits_hi)
    shift = _per_channel(act_bits_hi - bits.astype(np.int64), codes.ndim)
    zero = np.int64(1) << (act_bits_hi - 1)
    return elementwise(lambda k, shift, out=None:
                       np.multiply(step, ((k.astype(np.int64) << shift) - zero).astype(F32),
                                   out=out),
                       codes, shift)
