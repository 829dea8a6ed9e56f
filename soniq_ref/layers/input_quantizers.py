"""A quantized layer's input quantizer: what happens to ``x`` before the affine map.

Two kinds, one interface. ``x`` is ``[M, C]`` (linear) or ``[B, C, H, W]`` (conv),
channels on axis 1; ``A`` is the high level of the input's palette.

:class:`PixelInput`  the network's first layer. Its input is an 8-bit image read as
    ``x = k / 255``; the codes are the pixels themselves, ``s_a = 1/255``, every
    channel 8 bits. Nothing to learn: no clip, no precision, no noise; gradients
    pass through unchanged.

:class:`LearnedActivations`  every later layer. Channel ``c`` has a learned
    precision ``b~_c = lo + (hi - lo) * sigmoid(theta_a[c])`` (:mod:`soniq_ref.noise`)
    and all channels share one learned clip ``beta``::

        noise   x~ = clip(x, 0, beta) + (beta / 2**b~_c) * u       u ~ U[-1/2, 1/2)
        exact   k  = clip(rint(x * r_c), 0, 2**ba[c] - 1)          r_c = float32(2**ba[c] / beta)
                x^ = s_a * (k << (A - ba[c]))                      s_a = beta / 2**A

    phase 1 differentiates the noise exactly; phase 2 uses the straight-through
    rule of :mod:`soniq_ref.ste`.

The interface (each forward with its backward beside it)::

    palette, bits                      (lo, hi); the fixed widths uint8 [C] (None until set_bits)
    soft_bits()                        continuous b~ [C], or None (nothing learned)
    set_bits(bits), init_clip(x)       fix the widths (snapping); the clip from data
    draw_noise(rng, shape, dtype)      phase-1 noise u for x, or None
    noisy(x, u) / noisy_backward       (x~, cache) / (dx, {name: grad})
    codes(x)                           uint8 codes of x (exact mode, deploy)
    step(), ratio(), clip()            s_a; float32 r_c [C]; beta (float32) or None
    dequantized(codes, dtype)          x^ (phase 2)
    ste_backward(dx^, x, x^)           (dx, {name: grad}) (phase 2)

:class:`SignedActivations`  a learned quantizer for *signed* inputs (a LayerNorm's
    output), the same per-channel precision and one clip with the grid moved to
    ``[-beta, beta)`` by a zero point::

        noise   x~ = clip(x, -beta, beta) + (2 beta / 2**b~_c) * u
        exact   k  = clip(rint(x * r_c) + 2**(ba[c]-1), 0, 2**ba[c] - 1)    r_c = float32(2**(ba[c]-1) / beta)
                x^ = s_a * ((k << (A - ba[c])) - 2**(A-1))                  s_a = beta / 2**(A-1)

A quantizer keeps its parameters (``beta``, ``theta_a``) in the layer's ``params``
dict, under those names, so optimizers, checkpoints and the budget see them like
the layer's own.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .. import noise, ste
from ..quantizers import (SIGNED_MIN_BITS, act_ratio, act_step, quantize_acts,
                          quantize_signed_acts, signed_act_ratio, signed_act_step)
from .precision import MIN_CLIP, check_levels, check_palette

PIXEL_STEP = np.float32(1.0 / 255.0)
PIXEL_BITS = 8


class PixelInput:
    """8-bit pixels as codes: ``k = clip(rint(x * 255), 0, 255)``, ``s_a = 1/255``.

    ``x = k / 255`` comes back exactly as ``k``; every channel is 8 bits (palette
    (8, 8)). The input is data, not a learned activation: ``x~ = x`` in phase 1,
    ``x^ = k / 255`` in phase 2, and ``dx = dx~`` (``dx = dx^``) in both.
    """

    palette = (PIXEL_BITS, PIXEL_BITS)
    signed = False

    def __init__(self, n_in: int):
        self.bits = np.full(n_in, PIXEL_BITS, np.uint8)

    def soft_bits(self):
        """None: there is no precision to learn."""
        return None

    def set_bits(self, bits=None) -> None:
        """Accepts None or the widths it has (all 8)."""
        if bits is not None:
            check_levels("a_bits", bits, self.palette, len(self.bits))

    def init_clip(self, x) -> None:
        """Nothing to initialise: pixels have no clip."""

    # phase 1 -----------------------------------------------------------------

    def draw_noise(self, rng, shape, dtype):
        """None: pixels get no noise (and draw nothing from ``rng``)."""
        return None

    def noisy(self, x, u):
        """``x~ = x`` -> (x~, cache None)."""
        return x, None

    def noisy_backward(self, dx_tilde, cache):
        """``dx = dx~``; no parameters -> (dx, {})."""
        return dx_tilde, {}

    # phase 2 and deploy --------------------------------------------------------

    def codes(self, x) -> np.ndarray:
        """uint8 ``clip(rint(float32(x) * 255), 0, 255)``, same shape as ``x``."""
        x = np.asarray(x, np.float32)
        return np.clip(np.rint(x * np.float32(255.0)), 0, 255).astype(np.uint8)

    def step(self) -> np.float32:
        """``s_a = 1/255``."""
        return PIXEL_STEP

    def ratio(self) -> np.ndarray:
        """float32 [C], all 255: what turns ``x`` into codes."""
        return np.full(self.bits.shape, 255.0, np.float32)

    def clip(self):
        """None: pixels have no clip."""
        return None

    def dequantized(self, codes, dtype) -> np.ndarray:
        """``x^ = float32(k) * (1/255)`` in float32, then ``dtype``."""
        return (codes.astype(np.float32) * PIXEL_STEP).astype(dtype)

    def ste_backward(self, dx_hat, x, x_hat):
        """``dx = dx^``; no parameters -> (dx, {})."""
        return dx_hat, {}


class ActNoiseCache(NamedTuple):
    """What :meth:`LearnedActivations.noisy` keeps for its backward."""

    x: np.ndarray                 # the input [M, C] or [B, C, H, W]
    bits: np.ndarray              # continuous precision b~ [C]
    beta: np.ndarray              # the clip, params["beta"][0] as it was
    u: np.ndarray                 # the noise, shaped like x


class LearnedActivations:
    """Per-channel learned precision ``theta_a`` [C] and one learned clip ``beta`` [1].

    Phase 1 (:func:`soniq_ref.noise.act_noise`, exact gradients)::

        x~ = clip(x, 0, beta) + (beta / 2**b~) u          b~ = lo + (hi - lo) sigmoid(theta_a)
        dx = dx~ [0 < x < beta]
        dbeta = sum dx~ ([x >= beta] + u / 2**b~)
        dtheta_a[c] = (d b~_c / d theta_a[c]) * sum_c dx~ (-beta u ln2 / 2**b~_c)

    (``sum_c``: over every element of channel ``c``).

    Phase 2 (:mod:`soniq_ref.ste`, straight-through), with ``beta`` read as at least
    ``MIN_CLIP`` and ``r_c = float32(2**ba[c] / beta)``::

        k  = clip(rint(x * r_c), 0, 2**ba[c] - 1)          x^ = (beta / 2**A) (k << (A - ba[c]))
        dx = dx^ [0 <= x r_c <= 2**ba[c] - 1]
        dbeta = sum dx^ (x^ / beta - [inside] x / beta)

    The clip starts at the 99.9th percentile of ``max(x, 0)`` of the first batch
    (at least 1e-3).
    """

    signed = False

    def __init__(self, params: dict, n_in: int, palette, theta_init: float, dtype):
        self.palette = check_palette("act_palette", palette)
        self.params, self.dtype = params, np.dtype(dtype)
        params["beta"] = np.ones(1, self.dtype)
        params["theta_a"] = np.full(n_in, theta_init, self.dtype)
        self.bits = None

    def soft_bits(self) -> np.ndarray:
        """Continuous precision ``b~`` per channel, [C]."""
        return noise.soft_bits(self.params["theta_a"], *self.palette)

    def set_bits(self, bits) -> None:
        """Fix the widths, each one of the palette's two levels, uint8 [C]."""
        self.bits = check_levels("a_bits", bits, self.palette, len(self.params["theta_a"]))

    def init_clip(self, x) -> None:
        """``beta`` = the 99.9th percentile of ``max(x, 0)``, at least 1e-3."""
        self.params["beta"][...] = max(float(np.percentile(np.maximum(x, 0), 99.9)), 1e-3)

    # phase 1 -----------------------------------------------------------------

    def draw_noise(self, rng, shape, dtype) -> np.ndarray:
        """``u ~ U[-1/2, 1/2)`` of ``shape`` (the input's), drawn from ``rng``."""
        return noise.uniform_noise(rng, shape, dtype)

    def noisy(self, x, u):
        """-> (x~, :class:`ActNoiseCache`)."""
        bits, beta = self.soft_bits(), self.params["beta"][0]
        return noise.act_noise(x, beta, bits, u), ActNoiseCache(x, bits, beta, u)

    def noisy_backward(self, dx_tilde, cache: ActNoiseCache):
        """-> (dx, {"beta": [1], "theta_a": [C]})."""
        dx, dbeta, dbits = noise.act_noise_backward(dx_tilde, cache.x, cache.beta,
                                                    cache.bits, cache.u)
        return dx, {"beta": np.array([dbeta], self.dtype),
                    "theta_a": dbits * noise.soft_bits_grad(self.params["theta_a"],
                                                            *self.palette)}

    # phase 2 and deploy --------------------------------------------------------

    def codes(self, x) -> np.ndarray:
        """uint8 ``clip(rint(float32(x) * r_c), 0, 2**ba[c] - 1)`` (``quantize_acts``)."""
        return quantize_acts(np.asarray(x, np.float32), self.bits, self.clip())

    def step(self) -> np.float32:
        """``s_a = beta / 2**A`` (``act_step``)."""
        return act_step(self.clip(), self.palette[1])

    def ratio(self) -> np.ndarray:
        """float32 [C]: ``r_c = 2**ba[c] / beta`` (``act_ratio``)."""
        return act_ratio(self.clip(), self.bits)

    def clip(self) -> np.float32:
        """``beta`` as float32, at least ``MIN_CLIP``."""
        return np.float32(max(float(self.params["beta"][0]), MIN_CLIP))

    def dequantized(self, codes, dtype) -> np.ndarray:
        """``x^ = s_a * (k << (A - ba))`` (float32, then ``dtype``)."""
        return ste.dequantized_acts(codes, self.bits, self.clip(), self.palette[1], dtype)

    def ste_backward(self, dx_hat, x, x_hat):
        """-> (dx, {"beta": [1]}) by :func:`soniq_ref.ste.act_ste_backward`."""
        dx, dbeta = ste.act_ste_backward(dx_hat, x, x_hat, self.clip(), self.bits)
        return dx, {"beta": dbeta}


class SignedActivations(LearnedActivations):
    """Like :class:`LearnedActivations` (``theta_a`` [C], one clip ``beta``), for signed
    inputs: the grid is ``[-beta, beta)`` with an exact zero. Every width is at least 2
    (at 1 bit the grid would be {-beta, 0}); codes stay unsigned, the zero point
    ``2**(ba-1)`` is subtracted where they are read.

    Phase 1 (:func:`soniq_ref.noise.signed_act_noise`)::

        x~ = clip(x, -beta, beta) + (2 beta / 2**b~) u
        dx = dx~ [|x| < beta]
        dbeta = sum dx~ (sign(x) [|x| >= beta] + 2 u / 2**b~)
        dtheta_a[c] = (d b~_c / d theta_a[c]) * sum_c dx~ (-2 beta u ln2 / 2**b~_c)

    Phase 2 (:func:`soniq_ref.ste.signed_act_ste_backward`), ``r_c = 2**(ba-1) / beta``::

        k  = clip(rint(x * r_c) + 2**(ba-1), 0, 2**ba - 1)
        x^ = (beta / 2**(A-1)) ((k << (A - ba)) - 2**(A-1))
        dx = dx^ [-2**(ba-1) <= x r_c <= 2**(ba-1) - 1]
        dbeta = sum dx^ (x^ / beta - [inside] x / beta)

    The clip starts at the 99.9th percentile of ``|x|`` of the first batch (at least
    1e-3).
    """

    signed = True

    def __init__(self, params: dict, n_in: int, palette, theta_init: float, dtype):
        super().__init__(params, n_in, palette, theta_init, dtype)
        if self.palette[0] < SIGNED_MIN_BITS:
            raise ValueError(f"act_palette for signed inputs needs lo >= {SIGNED_MIN_BITS} "
                             f"(at 1 bit the grid is {{-beta, 0}}), got {self.palette}")

    def init_clip(self, x) -> None:
        """``beta`` = the 99.9th percentile of ``|x|``, at least 1e-3."""
        self.params["beta"][...] = max(float(np.percentile(np.abs(x), 99.9)), 1e-3)

    def noisy(self, x, u):
        """-> (x~, :class:`ActNoiseCache`)."""
        bits, beta = self.soft_bits(), self.params["beta"][0]
        return noise.signed_act_noise(x, beta, bits, u), ActNoiseCache(x, bits, beta, u)

    def noisy_backward(self, dx_tilde, cache: ActNoiseCache):
        """-> (dx, {"beta": [1], "theta_a": [C]})."""
        dx, dbeta, dbits = noise.signed_act_noise_backward(dx_tilde, cache.x, cache.beta,
                                                           cache.bits, cache.u)
        return dx, {"beta": np.array([dbeta], self.dtype),
                    "theta_a": dbits * noise.soft_bits_grad(self.params["theta_a"],
                                                            *self.palette)}

    def codes(self, x) -> np.ndarray:
        """uint8 ``clip(rint(x * r_c) + 2**(ba-1), 0, 2**ba - 1)`` (``quantize_signed_acts``)."""
        return quantize_signed_acts(np.asarray(x, np.float32), self.bits, self.clip())

    def step(self) -> np.float32:
        """``s_a = beta / 2**(A-1)`` (``signed_act_step``)."""
        return signed_act_step(self.clip(), self.palette[1])

    def ratio(self) -> np.ndarray:
        """float32 [C]: ``r_c = 2**(ba-1) / beta`` (``signed_act_ratio``)."""
        return signed_act_ratio(self.clip(), self.bits)

    def dequantized(self, codes, dtype) -> np.ndarray:
        """``x^ = s_a * ((k << (A - ba)) - 2**(A-1))`` (float32, then ``dtype``)."""
        return ste.dequantized_signed_acts(codes, self.bits, self.clip(), self.palette[1],
                                           dtype)

    def ste_backward(self, dx_hat, x, x_hat):
        """-> (dx, {"beta": [1]}) by :func:`soniq_ref.ste.signed_act_ste_backward`."""
        dx, dbeta = ste.signed_act_ste_backward(dx_hat, x, x_hat, self.clip(), self.bits)
        return dx, {"beta": dbeta}
