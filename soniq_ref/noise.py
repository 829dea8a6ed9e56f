"""Phase 1: simulating quantization by injecting noise of one quantization step.

A channel's precision is a continuous, trainable value between the palette's
two levels ``lo <= hi``::

    b~ = lo + (hi - lo) * sigmoid(theta)

Instead of rounding, the forward pass adds uniform noise ``u ~ U[-1/2, 1/2)``
scaled to the step a ``b~``-bit quantizer would have::

    weights      w~ = clip(w, -alpha, alpha) + (2 alpha / (2**b~ - 1)) * u    (per output channel)
    activations  x~ = clip(x, 0, beta)      + (beta / 2**b~) * u              (per input channel)
    signed       x~ = clip(x, -beta, beta)  + (2 beta / 2**b~) * u            (per input channel)

Everything is differentiable, so ``w``, ``alpha``, ``beta`` and ``theta`` get
exact gradients -- no straight-through estimator. A wider step (fewer bits)
means more noise, hence a higher task loss: that is the force pushing bits up,
against the bit-budget penalty pushing them down.

Each function works in the dtype of its inputs (float32 for training, float64
for gradient checks). Channel axis: 0 for weights, 1 for activations. The
activation functions split their channels between workers
(:mod:`soniq_ref.parallel`); the noise itself is drawn in one call.
"""

from __future__ import annotations

import numpy as np

from .parallel import elementwise, per_channel

LN2 = np.log(2.0)


def _sigmoid(t: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * t))     # stable for large |t|


def soft_bits(theta: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """``b~ = lo + (hi - lo) * sigmoid(theta)``, same shape and dtype as ``theta``."""
    return (lo + (hi - lo) * _sigmoid(theta)).astype(theta.dtype)


def soft_bits_grad(theta: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """``d b~ / d theta = (hi - lo) * s * (1 - s)`` with ``s = sigmoid(theta)``."""
    s = _sigmoid(theta)
    return ((hi - lo) * s * (1.0 - s)).astype(theta.dtype)


def _rows(v: np.ndarray, ndim: int) -> np.ndarray:
    return v.reshape([-1] + [1] * (ndim - 1))


def _cols(v: np.ndarray, ndim: int) -> np.ndarray:
    return v.reshape([1, -1] + [1] * (ndim - 2))


def _sum_except(a: np.ndarray, axis: int) -> np.ndarray:
    return a.sum(axis=tuple(i for i in range(a.ndim) if i != axis))


# ------------------------------------------------------------------------------ weights

def weight_noise(w, alpha, bits, u):
    """w~ = clip(w, -alpha, alpha) + (2 alpha / (2**b - 1)) u.

    w, u: [O, ...]; alpha, bits (continuous b~): [O].
    """
    a = _rows(alpha, w.ndim)
    step = 2.0 * a / (2.0 ** _rows(bits, w.ndim) - 1.0)
    return np.clip(w, -a, a) + step * u


def weight_noise_backward(dw_tilde, w, alpha, bits, u):
    """Gradients of :func:`weight_noise` -> (dw, dalpha [O], dbits [O]).

    d w~/d w     = 1 where |w| < alpha, else 0
    d w~/d alpha = sign(w) [|w| >= alpha] + 2 u / (2**b - 1)
    d w~/d b     = -2 alpha u ln2 2**b / (2**b - 1)**2
    """
    a = _rows(alpha, w.ndim)
    p = 2.0 ** _rows(bits, w.ndim)
    inside = np.abs(w) < a
    dw = dw_tilde * inside
    dclip_da = np.where(inside, 0.0, np.sign(w))
    dalpha = _sum_except(dw_tilde * (dclip_da + 2.0 * u / (p - 1.0)), 0)
    dbits = _sum_except(dw_tilde * (-2.0 * a * u * LN2 * p / (p - 1.0) ** 2), 0)
    return dw, dalpha.astype(w.dtype), dbits.astype(w.dtype)


# -------------------------------------------------------------------------- activations

def act_noise(x, beta, bits, u):
    """x~ = clip(x, 0, beta) + (beta / 2**b) u.

    x, u: [M, C] or [B, C, H, W]; beta: scalar clip; bits (continuous b~): [C].
    """
    step = beta / 2.0 ** _cols(bits, x.ndim)
    return elementwise(lambda x, step, u, out=None:
                       np.add(np.clip(x, 0.0, beta), step * u, out=out), x, step, u)


def act_noise_backward(dx_tilde, x, beta, bits, u):
    """Gradients of :func:`act_noise` -> (dx, dbeta (scalar), dbits [C]).

    d x~/d x    = 1 where 0 < x < beta, else 0
    d x~/d beta = [x >= beta] + u / 2**b
    d x~/d b    = -beta u ln2 / 2**b
    """
    p = 2.0 ** _cols(bits, x.ndim)
    dx = elementwise(lambda d, x, out=None: np.multiply(d, (x > 0) & (x < beta), out=out),
                     dx_tilde, x)
    dbeta = np.sum(elementwise(
        lambda d, x, u, p, out=None: np.multiply(d, (x >= beta) + u / p, out=out),
        dx_tilde, x, u, p))
    dbits = per_channel(lambda d, u, p: _sum_except(d * (-beta * u * LN2 / p), 1),
                        dx_tilde, u, p)
    return dx, dbeta, dbits.astype(x.dtype)


def signed_act_noise(x, beta, bits, u):
    """x~ = clip(x, -beta, beta) + (2 beta / 2**b) u: a signed input, the same number of
    levels spread over twice the range.

    x, u: [M, C] or [B, C, H, W]; beta: scalar clip; bits (continuous b~): [C].
    """
    step = 2.0 * beta / 2.0 ** _cols(bits, x.ndim)
    return elementwise(lambda x, step, u, out=None:
                       np.add(np.clip(x, -beta, beta), step * u, out=out), x, step, u)


def signed_act_noise_backward(dx_tilde, x, beta, bits, u):
    """Gradients of :func:`signed_act_noise` -> (dx, dbeta (scalar), dbits [C]).

    d x~/d x    = 1 where -beta < x < beta, else 0
    d x~/d beta = sign(x) [|x| >= beta] + 2 u / 2**b
    d x~/d b    = -2 beta u ln2 / 2**b
    """
    p = 2.0 ** _cols(bits, x.ndim)
    dx = elementwise(lambda d, x, out=None: np.multiply(d, np.abs(x) < beta, out=out),
                     dx_tilde, x)
    dbeta = np.sum(elementwise(
        lambda d, x, u, p, out=None:
            np.multiply(d, np.sign(x) * (np.abs(x) >= beta) + 2.0 * u / p, out=out),
        dx_tilde, x, u, p))
    dbits = per_channel(lambda d, u, p: _sum_except(d * (-2.0 * beta * u * LN2 / p), 1),
                        dx_tilde, u, p)
    return dx, dbeta, dbits.astype(x.dtype)


def uniform_noise(rng: np.random.Generator, shape, dtype) -> np.ndarray:
    """``u ~ U[-1/2, 1/2)`` of the given shape and dtype (float32 or float64), from ``rng``."""
    dt = np.float32 if np.dtype(dtype) == np.float32 else np.float64
    u = rng.random(shape, dtype=dt)          # drawn in one call, on the calling thread
    u -= dt(0.5)
    return u
