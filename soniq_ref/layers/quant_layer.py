"""What QuantLinear and QuantConv2d share: the quantizers around an affine map.

A quantized layer computes ``y = f(x~, w~) + bias`` where ``f`` is a matmul
(linear) or a convolution, ``w~`` is the weight and ``x~`` the layer's *input*
activation, each transformed according to the layer's mode:

``float``  no quantization: ``x~ = x``, ``w~ = w`` (the full-precision baseline).
``noise``  phase 1: noise of one quantization step at the learned precision
           (:mod:`soniq_ref.noise`); gradients to w, bias, alpha, beta, theta.
``exact``  phase 2: real codes through the integer core and the epilogue
           (:mod:`soniq_ref.integer_core`, :mod:`soniq_ref.epilogue`); backward by
           the straight-through estimator, LSQ-style gradients for alpha and beta
           (:mod:`soniq_ref.ste`).

The weight side is written here; the input side is the layer's *input quantizer*
(:mod:`.input_quantizers`), one of two objects with one interface:

``LearnedActivations``  (the default) learns a clip ``beta`` [1] and a precision
           ``theta_a`` [C] per input channel;
``PixelInput``  (``first_layer=True``, the network's first layer) reads pixels
           ``k / 255`` as 8-bit codes with ``s_a = 1/255``: no activation clip, no
           noise, no precision to learn;
``SignedActivations``  (``signed_input=True``, linear layers only) like the default
           on the grid ``[-beta, beta)`` with a zero point, for signed inputs such as
           a LayerNorm's output.

Parameters (``params``): ``weight``, ``bias``, ``alpha`` [O] (weight clip),
``theta_w`` [O] (weight precision), then the input quantizer's (``beta``,
``theta_a``, or none for pixels).

Clips are initialised from the data on the first non-float forward pass
(``alpha[o] = max |w[o]|``; the input quantizer's ``init_clip``), so a float
warm-up can precede phase 1.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .. import noise, ste
from ..backend import get_backend
from ..quantizers import quantize_weights, weight_step
from .input_quantizers import LearnedActivations, PixelInput, SignedActivations
from .module import Module
from .precision import MIN_CLIP, check_levels, check_palette

MODES = ("float", "noise", "exact")


class FloatCache(NamedTuple):
    """What a float-mode forward keeps for the backward."""

    x: np.ndarray                 # the layer's input


class NoiseCache(NamedTuple):
    """What a noise-mode forward keeps for the backward (:mod:`soniq_ref.noise`)."""

    x_t: np.ndarray               # the input quantizer's x~
    w_t: np.ndarray               # the noisy weights w~
    bw: np.ndarray                # continuous weight bits b~ [O]
    u_w: np.ndarray               # the weight noise u
    act: object                   # the input quantizer's cache for its noisy_backward


class ExactCache(NamedTuple):
    """What an exact-mode forward keeps for the backward (:mod:`soniq_ref.ste`)."""

    x: np.ndarray                 # the layer's input
    a_codes: np.ndarray           # its codes, uint8
    w_codes: np.ndarray           # the weight codes, uint8
    s_a: np.float32               # the activation step


class QuantLayer(Module):
    """Base class; subclasses supply the affine map and its integer version."""

    def __init__(self, n_in: int, n_out: int, weight_shape: tuple, *, weight_palette=(1, 4),
                 act_palette=(2, 8), first_layer=False, signed_input=False, seed=0,
                 dtype=np.float32, theta_init=0.0):
        super().__init__()
        self.weight_palette = check_palette("weight_palette", weight_palette)
        self.dtype = np.dtype(dtype)
        init_rng, self.noise_rng = (np.random.default_rng(s)
                                    for s in np.random.SeedSequence(seed).spawn(2))
        fan_in = int(np.prod(weight_shape[1:]))
        self.params["weight"] = (init_rng.standard_normal(weight_shape)
                                 * np.sqrt(2.0 / fan_in)).astype(self.dtype)
        self.params["bias"] = np.zeros(n_out, self.dtype)
        self.params["alpha"] = np.ones(n_out, self.dtype)
        self.params["theta_w"] = np.full(n_out, theta_init, self.dtype)
        if first_layer and signed_input:
            raise ValueError("first_layer reads pixels, which are not signed: pass one of "
                             "first_layer, signed_input")
        if first_layer:
            self.input_quantizer = PixelInput(n_in)
        else:
            kind = SignedActivations if signed_input else LearnedActivations
            self.input_quantizer = kind(self.params, n_in, act_palette, theta_init, self.dtype)
        self.mode = "float"
        self.backend = "ref"             # backend for the integer core in exact mode
        self.clips_ready = False
        self.fixed_noise = None          # (u_w, u_a) to replay instead of drawing
        self.last_noise = None
        self.w_bits = None
        self.weight_channel_size = fan_in
        self.act_channel_size = 1
        self._cache = None

    # ---------------------------------------------------------------- configuration

    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if mode == "exact" and self.w_bits is None:
            raise ValueError("exact mode needs fixed bit widths: call set_bits() first")
        self.mode = mode

    @property
    def first_layer(self) -> bool:
        """Whether the layer reads pixels (its input quantizer is a ``PixelInput``)."""
        return isinstance(self.input_quantizer, PixelInput)

    @property
    def signed_input(self) -> bool:
        """Whether the input is quantized on the signed grid (``SignedActivations``)."""
        return self.input_quantizer.signed

    @property
    def act_palette(self) -> tuple[int, int]:
        """The input's palette ``(lo, hi)``; (8, 8) for pixels."""
        return self.input_quantizer.palette

    @property
    def act_bits_hi(self) -> int:
        return self.act_palette[1]

    @property
    def a_bits(self):
        """The input's fixed widths, uint8 [C] (None before ``set_bits``; all 8 for pixels)."""
        return self.input_quantizer.bits

    def soft_weight_bits(self) -> np.ndarray:
        """Continuous weight precision b~ per output channel, [O]."""
        return noise.soft_bits(self.params["theta_w"], *self.weight_palette)

    def soft_act_bits(self):
        """Continuous activation precision b~ per input channel, [C] (None: pixels)."""
        return self.input_quantizer.soft_bits()

    def set_bits(self, w_bits, a_bits=None) -> None:
        """Fix the precisions (each entry one of the palette's two levels; ``a_bits``
        may be None for pixels)."""
        self.w_bits = check_levels("w_bits", w_bits, self.weight_palette,
                                   self.params["weight"].shape[0])
        self.input_quantizer.set_bits(a_bits)

    def init_clips(self, x: np.ndarray) -> None:
        """alpha = max |w| per output channel; the input quantizer's clip from ``x``."""
        w = self.params["weight"]
        peak = np.abs(w).reshape(w.shape[0], -1).max(axis=1)
        self.params["alpha"][...] = np.maximum(peak, MIN_CLIP)
        self.input_quantizer.init_clip(x)
        self.clips_ready = True

    # ---------------------------------------------------------------- export

    def quantized_weights(self):
        """(codes uint8, bits uint8 [O], step float32 [O]) for the fixed bits."""
        alpha = self._alpha().astype(np.float32)
        codes = quantize_weights(self.params["weight"].astype(np.float32), alpha, self.w_bits)
        return codes, self.w_bits, weight_step(alpha, self.w_bits)

    def act_step(self) -> np.float32:
        """The input activation step s_a (1/255 for pixels)."""
        return self.input_quantizer.step()

    def act_ratio(self) -> np.ndarray:
        """float32 [C]: ``2**a_bits / beta`` (255 for pixels), what quantizes this
        layer's input."""
        return self.input_quantizer.ratio()

    def act_clip(self):
        """The input activation clip beta (float32) that :meth:`act_ratio` divides by;
        None for pixels."""
        return self.input_quantizer.clip()

    def _alpha(self) -> np.ndarray:
        return np.maximum(self.params["alpha"], MIN_CLIP)

    # ---------------------------------------------------------------- forward / backward

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.act_channel_size = int(np.prod(x.shape[2:])) if x.ndim > 2 else 1
        if self.mode != "float" and not self.clips_ready:
            self.init_clips(x)
        if self.mode == "float":
            return self._forward_float(x)
        if self.mode == "noise":
            return self._forward_noise(x)
        return self._forward_exact(x)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        grads = {name: np.zeros_like(p) for name, p in self.params.items()}
        grads["bias"] = self._bias_grad(dy).astype(self.dtype)
        if isinstance(self._cache, FloatCache):
            dx, grads["weight"] = self._affine_backward(dy, self._cache.x,
                                                        self.params["weight"])
        elif isinstance(self._cache, NoiseCache):
            dx = self._backward_noise(dy, grads)
        else:
            dx = self._backward_exact(dy, grads)
        self.grads = {k: v.astype(self.dtype, copy=False) for k, v in grads.items()}
        return dx

    # float ----------------------------------------------------------------

    def _forward_float(self, x):
        self._cache = FloatCache(x)
        return self._affine(x, self.params["weight"])

    # noise ----------------------------------------------------------------

    def _draw_noise(self, x):
        if self.fixed_noise is not None:
            return self.fixed_noise
        u_w = noise.uniform_noise(self.noise_rng, self.params["weight"].shape, self.dtype)
        return u_w, self.input_quantizer.draw_noise(self.noise_rng, x.shape, self.dtype)

    def _forward_noise(self, x):
        u_w, u_a = self.last_noise = self._draw_noise(x)
        bw = self.soft_weight_bits()
        w_t = noise.weight_noise(self.params["weight"], self.params["alpha"], bw, u_w)
        x_t, act = self.input_quantizer.noisy(x, u_a)
        self._cache = NoiseCache(x_t, w_t, bw, u_w, act)
        return self._affine(x_t, w_t)

    def _backward_noise(self, dy, grads):
        c = self._cache
        dx_t, dw_t = self._affine_backward(dy, c.x_t, c.w_t)
        grads["weight"], grads["alpha"], dbw = noise.weight_noise_backward(
            dw_t, self.params["weight"], self.params["alpha"], c.bw, c.u_w)
        grads["theta_w"] = dbw * noise.soft_bits_grad(self.params["theta_w"],
                                                      *self.weight_palette)
        dx, act_grads = self.input_quantizer.noisy_backward(dx_t, c.act)
        grads.update(act_grads)
        return dx

    # exact ----------------------------------------------------------------

    def _forward_exact(self, x):
        a_codes = self.input_quantizer.codes(x)
        w_codes, w_bits, w_step = self.quantized_weights()
        s_a = self.act_step()
        backend = get_backend(self.backend)
        acc = self._integer_affine(backend, a_codes, w_codes)
        scale = (w_step * s_a).astype(np.float32)
        y = backend.epilogue(acc, scale, self.params["bias"].astype(np.float32))
        self._cache = ExactCache(x, a_codes, w_codes, s_a)
        return y.astype(self.dtype, copy=False)

    def _backward_exact(self, dy, grads):
        """Straight-through gradients (:mod:`soniq_ref.ste`) through the values the
        codes stand for (the input quantizer's ``dequantized`` / ``ste_backward``)."""
        c = self._cache
        alpha = self._alpha()
        w_hat = ste.dequantized_weights(c.w_codes, alpha, self.w_bits, dy.dtype)
        x_hat = self.input_quantizer.dequantized(c.a_codes, dy.dtype)
        dx_hat, dw_hat = self._affine_backward(dy, x_hat, w_hat)
        grads["weight"], grads["alpha"] = ste.weight_ste_backward(
            dw_hat, self.params["weight"], w_hat, alpha)
        dx, act_grads = self.input_quantizer.ste_backward(dx_hat, c.x, x_hat)
        grads.update(act_grads)
        return dx

    # subclass hooks ------------------------------------------------------------

    def _affine(self, x, w):
        """y = f(x, w) + bias."""
        raise NotImplementedError

    def _affine_backward(self, dy, x, w):
        """-> (dx, dw) of f(x, w)."""
        raise NotImplementedError

    def _bias_grad(self, dy):
        raise NotImplementedError

    def _integer_affine(self, backend, a_codes, w_codes):
        """The integer accumulator of f on codes, through ``backend``."""
        raise NotImplementedError
