"""Central finite differences in float64, shared by the gradient-check tests."""

import numpy as np


def numeric_grad(f, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """d f / d x of a scalar function ``f()`` that reads ``x`` (perturbed in place)."""
    grad = np.zeros_like(x, dtype=np.float64)
    flat, out = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        keep = flat[i]
        flat[i] = keep + eps
        up = f()
        flat[i] = keep - eps
        down = f()
        flat[i] = keep
        out[i] = (up - down) / (2 * eps)
    return grad


def away_from_kinks(v, kinks, gap=0.02):
    """Move entries within ``gap`` of any kink to ``kink + gap`` (same side)."""
    v = v.copy()
    for k in kinks:
        near = np.abs(v - k) < gap
        v[near] = k + np.where(v[near] >= k, gap, -gap)
    return v


def check_module(layer, x: np.ndarray, rng, *, atol=1e-6, rtol=1e-5, forward_kwargs=None):
    """Compare ``layer.backward`` with finite differences of ``sum(forward(x) * g)``.

    Checks dx and the gradient of every parameter in ``layer.params``.
    """
    y = layer.forward(x)
    g = rng.standard_normal(y.shape)
    dx = layer.backward(g)
    analytic = {name: layer.grads[name].copy() for name in layer.params}

    def objective():
        return float((layer.forward(x) * g).sum())

    np.testing.assert_allclose(dx, numeric_grad(objective, x), atol=atol, rtol=rtol)
    for name, p in layer.params.items():
        np.testing.assert_allclose(analytic[name], numeric_grad(objective, p), atol=atol,
                                   rtol=rtol, err_msg=f"gradient of {name}")
