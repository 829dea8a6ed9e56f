"""Optimizers and the learning-rate schedule.

Each optimizer owns a set of named parameters (``name -> ndarray``, updated in
place) and a state per name. ``step(grads, lr)`` applies one update; names with
no gradient are left alone.

SGD with momentum ``mu`` and weight decay ``wd`` (decay only on arrays with two
or more dimensions -- conv and linear weights, not biases, clips or batch-norm
parameters)::

    v <- mu * v + (g + wd * p)
    p <- p - lr * v

Adam (Kingma & Ba), bias-corrected, same decay rule (L2 added to the gradient)::

    m <- b1 m + (1 - b1) g;   v <- b2 v + (1 - b2) g^2
    p <- p - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)

Cosine schedule over ``total`` steps: ``lr(t) = lr_min + (lr0 - lr_min) (1 + cos(pi t / total)) / 2``.

The trainer gives the precision parameters ``theta_w`` / ``theta_a`` their own
Adam (as in SMOL, the method's predecessor), separate from the weights' optimizer.
"""

from __future__ import annotations

import math

import numpy as np


def _decays(p: np.ndarray) -> bool:
    return p.ndim >= 2


def _check_lr(lr) -> float:
    if not np.isfinite(lr) or lr < 0:
        raise ValueError(f"lr must be a finite number >= 0, got {lr!r}")
    return float(lr)


class SGD:
    """Stochastic gradient descent with momentum and weight decay."""

    def __init__(self, params: dict, *, momentum: float = 0.9, weight_decay: float = 0.0):
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
        self.params = params
        self.momentum, self.weight_decay = float(momentum), float(weight_decay)
        self.velocity = {k: np.zeros_like(p) for k, p in params.items()}

    def step(self, grads: dict, lr: float) -> None:
        lr = _check_lr(lr)
        for name, g in grads.items():
            if name not in self.params:
                continue
            p = self.params[name]
            if self.weight_decay and _decays(p):
                g = g + self.weight_decay * p
            v = self.velocity[name]
            v *= self.momentum
            v += g
            p -= (lr * v).astype(p.dtype)


class Adam:
    """Adam with bias correction and optional L2 weight decay."""

    def __init__(self, params: dict, *, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        b1, b2 = betas
        if not (0 <= b1 < 1 and 0 <= b2 < 1):
            raise ValueError(f"betas must be in [0, 1), got {betas!r}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
        self.params = params
        self.b1, self.b2, self.eps, self.weight_decay = float(b1), float(b2), float(eps), \
            float(weight_decay)
        self.m = {k: np.zeros_like(p) for k, p in params.items()}
        self.v = {k: np.zeros_like(p) for k, p in params.items()}
        self.t = 0

    def step(self, grads: dict, lr: float) -> None:
        lr = _check_lr(lr)
        self.t += 1
        c1, c2 = 1 - self.b1 ** self.t, 1 - self.b2 ** self.t
        for name, g in grads.items():
            if name not in self.params:
                continue
            p = self.params[name]
            if self.weight_decay and _decays(p):
                g = g + self.weight_decay * p
            m, v = self.m[name], self.v[name]
            m *= self.b1
            m += (1 - self.b1) * g
            v *= self.b2
            v += (1 - self.b2) * g * g
            p -= (lr * (m / c1) / (np.sqrt(v / c2) + self.eps)).astype(p.dtype)


def cosine_lr(step: int, total: int, lr0: float, lr_min: float = 0.0) -> float:
    """Cosine decay from ``lr0`` at step 0 to ``lr_min`` at step ``total``."""
    if total <= 0:
        return float(lr0)
    t = min(max(step, 0), total)
    return float(lr_min + (lr0 - lr_min) * 0.5 * (1.0 + math.cos(math.pi * t / total)))
