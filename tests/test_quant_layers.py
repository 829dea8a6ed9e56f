"""QuantLinear / QuantConv2d: gradient checks (float, noise), exact-mode forward and STE.

Gradient checks use central finite differences in float64 on L = sum(y * g) with
the noise held fixed. Inputs are kept away from the clip kinks (|w| = alpha,
x = 0, x = beta), where the loss is not differentiable.
"""

import numpy as np
import pytest
from hypothesis import given, strategies as st

from gradcheck import away_from_kinks, numeric_grad
from soniq_ref import budget
from soniq_ref.layers import QuantConv2d, QuantLinear
from soniq_ref.quantizers import (act_ratio, dequantize_acts, dequantize_weights,
                                  quantize_acts, quantize_weights, weight_step)

SEEDS = st.integers(0, 2 ** 32 - 1)


def make_layer(kind, first, seed, dtype=np.float64):
    rng = np.random.default_rng(seed)
    kw = dict(weight_palette=(1, 4), act_palette=(2, 6), first_layer=first, seed=seed,
              dtype=dtype, theta_init=0.3)
    if kind == "linear":
        layer = QuantLinear(7, 5, **kw)
        x = rng.standard_normal((4, 7)) * 1.5
    else:
        layer = QuantConv2d(3, 4, 3, stride=int(rng.integers(1, 3)), padding=1, **kw)
        x = rng.standard_normal((2, 3, 5, 6)) * 1.5
    if first:
        x = rng.random(x.shape)
    p = layer.params
    p["bias"][...] = rng.standard_normal(p["bias"].shape)
    p["theta_w"][...] = rng.standard_normal(p["theta_w"].shape)
    w = p["weight"]
    p["alpha"][...] = 0.8 * np.abs(w).reshape(w.shape[0], -1).max(axis=1)
    alpha = p["alpha"].reshape([-1] + [1] * (w.ndim - 1))
    p["weight"][...] = np.sign(w) * away_from_kinks(np.abs(w) / alpha, [1.0]) * alpha
    if not first:
        p["beta"][...] = 2.0
        p["theta_a"][...] = rng.standard_normal(p["theta_a"].shape)
        x = away_from_kinks(x, [0.0, 2.0])
    layer.clips_ready = True
    return layer, x.astype(dtype)


def loss_and_grads(layer, x, g):
    y = layer.forward(x)
    dx = layer.backward(g)
    return float(np.sum(y * g)), dx, layer.grads


@pytest.mark.parametrize("kind", ["linear", "conv"])
@pytest.mark.parametrize("first", [False, True])
@pytest.mark.parametrize("mode", ["float", "noise"])
@given(seed=SEEDS)
def test_gradients_match_finite_differences(kind, first, mode, seed):
    layer, x = make_layer(kind, first, seed)
    layer.set_mode(mode)
    y = layer.forward(x)
    layer.fixed_noise = layer.last_noise                  # hold the noise fixed
    g = np.random.default_rng(seed + 1).standard_normal(y.shape)
    _, dx, grads = loss_and_grads(layer, x, g)

    def f():
        return float(np.sum(layer.forward(x) * g))

    checked = ["weight", "bias"] + (["alpha", "theta_w"] if mode == "noise" else [])
    if mode == "noise" and not first:
        checked += ["beta", "theta_a"]
    for name in checked:
        num = numeric_grad(f, layer.params[name])
        np.testing.assert_allclose(grads[name], num, rtol=1e-5, atol=1e-6, err_msg=name)
    np.testing.assert_allclose(dx, numeric_grad(f, x), rtol=1e-5, atol=1e-6, err_msg="x")


def test_noise_is_replayable_from_the_seed():
    a, x = make_layer("conv", False, 3, np.float32)
    b, _ = make_layer("conv", False, 3, np.float32)
    a.set_mode("noise")
    b.set_mode("noise")
    for _ in range(2):
        assert np.array_equal(a.forward(x), b.forward(x))
    assert not np.array_equal(a.forward(x), a.forward(x))   # fresh noise every step


def test_noise_has_one_step_of_amplitude():
    layer, x = make_layer("linear", False, 0, np.float64)
    layer.set_mode("noise")
    layer.forward(x)
    u_w, u_a = layer.last_noise
    assert u_w.min() >= -0.5 and u_w.max() < 0.5 and u_a.min() >= -0.5 and u_a.max() < 0.5


def _snap(layer, seed):
    rng = np.random.default_rng(seed)
    w_bits = rng.choice(layer.weight_palette, layer.params["weight"].shape[0])
    a_bits = None if layer.first_layer else rng.choice(layer.act_palette,
                                                       layer.params["theta_a"].shape[0])
    layer.set_bits(w_bits, a_bits)
    layer.set_mode("exact")


@pytest.mark.parametrize("kind", ["linear", "conv"])
@pytest.mark.parametrize("first", [False, True])
@given(seed=SEEDS)
def test_exact_forward_equals_dequantized_float64_product(kind, first, seed):
    """y == float32(scale) * float32(acc) + bias, with acc recovered from the float64
    product of the dequantized values, i.e. the integer core computes that product."""
    layer, x = make_layer(kind, first, seed, np.float32)
    _snap(layer, seed)
    y = layer.forward(x)
    a_codes, w_codes, s_a = layer._cache.a_codes, layer._cache.w_codes, layer._cache.s_a
    w_step = weight_step(layer.params["alpha"], layer.w_bits)
    n = (2 ** layer.w_bits.astype(np.int64)) - 1
    w_hat = (2 * w_codes.astype(np.int64) - n.reshape([-1] + [1] * (w_codes.ndim - 1))) \
        * w_step.astype(np.float64).reshape([-1] + [1] * (w_codes.ndim - 1))
    shift = (layer.act_bits_hi - layer.a_bits.astype(np.int64)).reshape(
        [1, -1] + [1] * (a_codes.ndim - 2))
    x_hat = (a_codes.astype(np.int64) << shift) * np.float64(s_a)
    if kind == "linear":
        prod = x_hat @ w_hat.T
    else:
        probe = QuantConv2d(3, 4, 3, stride=layer.stride, padding=1, dtype=np.float64)
        prod = probe._affine(x_hat, w_hat) - probe.params["bias"].reshape(1, -1, 1, 1)
    unit = (w_step.astype(np.float64) * np.float64(s_a)).reshape([1, -1] + [1] * (y.ndim - 2))
    acc = np.rint(prod / unit)
    scale = (w_step * s_a).astype(np.float32).reshape(unit.shape)
    want = scale * acc.astype(np.float32) + layer.params["bias"].reshape(unit.shape)
    np.testing.assert_array_equal(y.view(np.uint32), want.astype(np.float32).view(np.uint32))


@pytest.mark.parametrize("kind", ["linear", "conv"])
@given(seed=SEEDS)
def test_exact_backward_is_the_straight_through_estimator(kind, seed):
    layer, x = make_layer(kind, False, seed, np.float32)
    _snap(layer, seed)
    y = layer.forward(x)
    g = np.random.default_rng(seed).standard_normal(y.shape).astype(np.float32)
    dx = layer.backward(g)
    p, alpha, beta = layer.params, layer.params["alpha"], np.float32(layer.params["beta"][0])
    w = p["weight"].astype(np.float64)
    codes = quantize_weights(p["weight"], alpha, layer.w_bits)
    w_hat = dequantize_weights(codes, alpha, layer.w_bits).astype(np.float64)
    a_codes = quantize_acts(x, layer.a_bits, beta)
    x_hat = dequantize_acts(a_codes, layer.a_bits, beta, layer.act_bits_hi).astype(np.float64)
    ref = QuantLinear(7, 5, dtype=np.float64) if kind == "linear" else \
        QuantConv2d(3, 4, 3, stride=layer.stride, padding=1, dtype=np.float64)
    dx_hat, dw_hat = ref._affine_backward(g.astype(np.float64), x_hat, w_hat)
    a = alpha.astype(np.float64).reshape([-1] + [1] * (w.ndim - 1))
    inside_w = np.abs(w) <= a
    # d w_hat / d w = 1 inside the clip, 0 outside; d w_hat / d alpha = q/n - w/alpha inside,
    # q/n (= +-1) outside (LSQ).
    want_dw = dw_hat * inside_w
    want_dalpha = (dw_hat * (w_hat / a - inside_w * w / a)).reshape(w.shape[0], -1).sum(1)
    # d x_hat / d x = 1 where the unrounded code x * r lies in [0, 2**b - 1]; d x_hat / d beta
    # = x_hat / beta - [inside] x / beta (LSQ/PACT).
    shape = [1, -1] + [1] * (x.ndim - 2)
    r = act_ratio(beta, layer.a_bits).astype(np.float64).reshape(shape)
    top = (2.0 ** layer.a_bits - 1).reshape(shape)
    inside_x = (x * r >= 0) & (x * r <= top)
    want_dx = dx_hat * inside_x
    want_dbeta = np.sum(dx_hat * (x_hat / beta - inside_x * x / beta))
    for got, want, name in [(dx, want_dx, "x"), (layer.grads["weight"], want_dw, "weight"),
                            (layer.grads["alpha"], want_dalpha, "alpha"),
                            (layer.grads["beta"][0], want_dbeta, "beta"),
                            (layer.grads["bias"], g.reshape(g.shape[0], g.shape[1], -1)
                             .sum(axis=(0, 2)), "bias")]:
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4, err_msg=name)
    assert not layer.grads["theta_w"].any() and not layer.grads["theta_a"].any()


@given(seed=SEEDS)
def test_budget_gradient_matches_finite_differences(seed):
    layers = [make_layer("conv", True, seed)[0], make_layer("conv", False, seed + 1)[0],
              make_layer("linear", False, seed + 2)[0]]
    layers[1].act_channel_size = 30
    lw, la = 0.7, 0.3
    for l in layers:
        l.grads = {name: np.zeros_like(v) for name, v in l.params.items()}
    budget.add_budget_grads(layers, lw, la)

    def f():
        mw, ma = budget.soft_mean_bits(layers)
        return lw * mw + la * ma

    for l in layers:
        for name in ("theta_w", "theta_a"):
            if name in l.params:
                np.testing.assert_allclose(l.grads[name], numeric_grad(f, l.params[name]),
                                           rtol=1e-5, atol=1e-9)


def test_budget_means_are_weighted_by_channel_size():
    a, _ = make_layer("conv", False, 1)
    a.act_channel_size = 10
    a.set_bits(np.array([1, 1, 4, 4]), np.array([2, 6, 6]))
    mw, ma = budget.hard_mean_bits([a])
    assert mw == 2.5 and ma == pytest.approx(14 / 3)


def test_invalid_configuration_is_refused():
    with pytest.raises(ValueError, match="weight_palette"):
        QuantLinear(3, 2, weight_palette=(4, 1))
    with pytest.raises(ValueError, match="act_palette"):
        QuantLinear(3, 2, act_palette=(0, 8))
    layer = QuantLinear(3, 2)
    with pytest.raises(ValueError, match="set_bits"):
        layer.set_mode("exact")
    with pytest.raises(ValueError, match="mode"):
        layer.set_mode("int8")
    with pytest.raises(ValueError, match="w_bits"):
        layer.set_bits(np.array([1, 3]), np.array([2, 8, 2]))
