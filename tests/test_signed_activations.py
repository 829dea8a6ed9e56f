"""Signed activations: the grid with a zero point (quantizers), its phase-1 noise and
phase-2 straight-through gradients (SignedActivations, QuantLinear(signed_input=True)),
and the one integer the integer core adds for it, on every backend.

Gradient checks use central finite differences in float64 with the noise held fixed;
inputs are kept away from the clip kinks (x = -beta, x = beta).
"""

import numpy as np
import pytest
from hypothesis import given, strategies as st

from gradcheck import away_from_kinks, numeric_grad
from soniq_ref.integer_core import linear_int, signed_input_offset
from soniq_ref.layers import QuantConv2d, QuantLinear, SignedActivations
from soniq_ref.quantizers import (dequantize_signed_acts, quantize_signed_acts,
                                  shifted_codes, signed_act_ratio, signed_act_step,
                                  signed_levels, weight_step)
from strategies import linear_case

SEEDS = st.integers(0, 2 ** 32 - 1)
SHAPES = [(5, 4), (3, 6, 4)]              # [M, C] rows and [B, T, D] tokens (channels axis 1)


# ------------------------------------------------------------------------------ the grid

def test_signed_grid_by_hand():
    """beta = 2, A = 3; channel 0 at 2 bits (r = 1, levels -2..1 of step 1), channel 1 at
    3 bits (r = 2, levels -4..3 of step 0.5); ties round to even."""
    x = np.array([-2.5, -2, -1.4, -0.3, 0, 0.25, 0.75, 1.9, 3], np.float32)
    codes = quantize_signed_acts(np.stack([x, x], 1), np.array([2, 3], np.uint8), 2.0)
    assert codes[:, 0].tolist() == [0, 0, 1, 2, 2, 2, 3, 3, 3]
    assert codes[:, 1].tolist() == [0, 0, 1, 3, 4, 4, 6, 7, 7]
    values = dequantize_signed_acts(codes, np.array([2, 3], np.uint8), 2.0, 3)
    assert values[:, 0].tolist() == [-2, -2, -1, 0, 0, 0, 1, 1, 1]
    assert values[:, 1].tolist() == [-2, -2, -1.5, -0.5, 0, 0, 1, 1.5, 1.5]
    assert signed_act_step(2.0, 3) == np.float32(0.5)


@given(seed=SEEDS, hi=st.integers(2, 8))
def test_signed_codes_round_to_the_nearest_level_around_an_exact_zero(seed, hi):
    rng = np.random.default_rng(seed)
    c = int(rng.integers(1, 9))
    bits = rng.integers(2, hi + 1, c).astype(np.uint8)
    beta = np.float32(rng.uniform(0.1, 4.0))
    x = (rng.standard_normal((7, c)) * beta).astype(np.float32)
    x[0] = 0
    codes = quantize_signed_acts(x, bits, beta)
    assert codes.dtype == np.uint8 and np.all(codes < (1 << bits.astype(np.int64)))
    values = dequantize_signed_acts(codes, bits, beta, hi).astype(np.float64)
    assert not values[0].any()                           # zero is a level
    step = beta / 2.0 ** (bits.astype(np.float64) - 1)
    inside = (x >= -beta) & (x <= beta - step)
    err = np.abs(values - x)
    assert np.all(err[inside] <= (step / 2 * (1 + 1e-5) + 1e-7)[np.nonzero(inside)[1]])
    # the b-bit grid is the A-bit grid's every 2**(A-b)-th level (nested)
    levels = (shifted_codes(codes, bits, hi) - (1 << (hi - 1)))
    assert np.all(levels % (1 << (hi - bits.astype(np.int64))) == 0)


def test_signed_grid_refuses_one_bit():
    with pytest.raises(ValueError, match="at least 2 bits"):
        signed_act_ratio(1.0, np.array([1, 4], np.uint8))
    with pytest.raises(ValueError, match="at least 2 bits"):
        signed_act_step(1.0, 1)
    with pytest.raises(ValueError, match="lo >= 2"):
        SignedActivations({}, 3, (1, 8), 0.0, np.float32)
    with pytest.raises(ValueError, match="QuantLinear"):
        QuantConv2d(3, 4, 3, signed_input=True)
    with pytest.raises(ValueError, match="first_layer"):
        QuantLinear(3, 4, signed_input=True, first_layer=True)


# ------------------------------------------------------------------ the integer core

@given(case=linear_case())
def test_signed_offset_turns_the_accumulator_into_the_signed_sum(backend, case):
    """backend.linear_int(codes) - signed_input_offset == sum_c q (k << (A - b) - 2**(A-1)),
    computed in int64 from the definitions, on every backend."""
    a, a_bits, w, w_bits, hi = case
    hi = max(hi, 2)
    a_bits = np.maximum(a_bits, 2).astype(np.uint8)
    want = (shifted_codes(a, a_bits, hi) - (1 << (hi - 1))) @ signed_levels(w, w_bits).T
    got = backend.linear_int(a, a_bits, w, w_bits, hi) - signed_input_offset(w, w_bits, hi)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, want)


def test_signed_offset_refuses_bad_arguments():
    w, bits = np.zeros((2, 3), np.uint8), np.array([1, 2], np.uint8)
    with pytest.raises(ValueError, match="act_bits_hi >= 2"):
        signed_input_offset(w, bits, 1)
    with pytest.raises(ValueError, match="w_codes"):
        signed_input_offset(np.full((2, 3), 4, np.uint8), bits, 4)


# --------------------------------------------------------------- phase 1 and phase 2

def quantizer(channels, seed, beta=2.0, dtype=np.float64):
    params = {}
    q = SignedActivations(params, channels, (2, 6), 0.3, dtype)
    params["beta"][...] = beta
    params["theta_a"][...] = np.random.default_rng(seed).standard_normal(channels)
    return q


@pytest.mark.parametrize("shape", SHAPES)
@given(seed=SEEDS)
def test_signed_noise_gradients_match_finite_differences(shape, seed):
    rng = np.random.default_rng(seed)
    q = quantizer(shape[1], seed)
    x = away_from_kinks(rng.standard_normal(shape) * 1.5, [-2.0, 2.0])
    u = q.draw_noise(rng, x.shape, np.float64)
    g = rng.standard_normal(shape)
    _, cache = q.noisy(x, u)
    dx, grads = q.noisy_backward(g, cache)

    def f():
        return float(np.sum(q.noisy(x, u)[0] * g))

    np.testing.assert_allclose(dx, numeric_grad(f, x), rtol=1e-5, atol=1e-6, err_msg="x")
    for name in ("beta", "theta_a"):
        np.testing.assert_allclose(grads[name], numeric_grad(f, q.params[name]), rtol=1e-5,
                                   atol=1e-6, err_msg=name)


def test_signed_noise_is_one_step_around_the_clipped_input():
    q = quantizer(3, 0)
    q.params["theta_a"][...] = [-50, 0, 50]             # b~ = 2, 4, 6
    x = np.array([[-3.0, 0.5, 1.0]])
    u = np.full_like(x, 0.25)
    x_t, _ = q.noisy(x, u)
    np.testing.assert_allclose(x_t, [[-2 + 4 / 4 * 0.25, 0.5 + 4 / 16 * 0.25,
                                      1 + 4 / 64 * 0.25]])


def signed_layer(seed, dtype=np.float64):
    rng = np.random.default_rng(seed)
    layer = QuantLinear(7, 5, weight_palette=(1, 4), act_palette=(2, 6), signed_input=True,
                        seed=seed, dtype=dtype, theta_init=0.3)
    p = layer.params
    p["bias"][...] = rng.standard_normal(5)
    p["theta_w"][...] = rng.standard_normal(5)
    p["theta_a"][...] = rng.standard_normal(7)
    w = p["weight"]
    p["alpha"][...] = 0.8 * np.abs(w).max(axis=1)
    a = p["alpha"][:, None]
    p["weight"][...] = np.sign(w) * away_from_kinks(np.abs(w) / a, [1.0]) * a
    p["beta"][...] = 2.0
    layer.clips_ready = True
    x = away_from_kinks(rng.standard_normal((4, 7)) * 1.5, [-2.0, 2.0])
    return layer, x.astype(dtype)


@given(seed=SEEDS)
def test_signed_quant_linear_noise_gradients_match_finite_differences(seed):
    layer, x = signed_layer(seed)
    layer.set_mode("noise")
    y = layer.forward(x)
    layer.fixed_noise = layer.last_noise
    g = np.random.default_rng(seed + 1).standard_normal(y.shape)
    layer.forward(x)
    dx = layer.backward(g)
    grads = layer.grads

    def f():
        return float(np.sum(layer.forward(x) * g))

    for name in ("weight", "bias", "alpha", "theta_w", "beta", "theta_a"):
        np.testing.assert_allclose(grads[name], numeric_grad(f, layer.params[name]),
                                   rtol=1e-5, atol=1e-6, err_msg=name)
    np.testing.assert_allclose(dx, numeric_grad(f, x), rtol=1e-5, atol=1e-6, err_msg="x")


def _snap(layer, seed):
    rng = np.random.default_rng(seed)
    layer.set_bits(rng.choice(layer.weight_palette, 5), rng.choice(layer.act_palette, 7))
    layer.set_mode("exact")


@given(seed=SEEDS)
def test_signed_exact_forward_is_the_product_of_the_signed_levels(seed):
    """y == float32(scale) * float32(acc) + bias with acc the int64 sum over signed
    activation levels and odd weight levels, scale = weight step * beta / 2**(A-1)."""
    layer, x = signed_layer(seed, np.float32)
    x *= np.float32(1.3)                                 # some inputs beyond the clip
    _snap(layer, seed)
    y = layer.forward(x)
    beta, hi = np.float32(2.0), layer.act_bits_hi
    codes = quantize_signed_acts(x, layer.a_bits, beta)
    w_codes = layer._cache.w_codes
    acc = (shifted_codes(codes, layer.a_bits, hi) - (1 << (hi - 1))) \
        @ signed_levels(w_codes, layer.w_bits).T
    scale = (weight_step(layer.params["alpha"], layer.w_bits)
             * signed_act_step(beta, hi)).astype(np.float32)
    want = scale * acc.astype(np.float32) + layer.params["bias"]
    np.testing.assert_array_equal(y.view(np.uint32), want.astype(np.float32).view(np.uint32))


@given(seed=SEEDS)
def test_signed_exact_backward_is_the_straight_through_estimator(seed):
    layer, x = signed_layer(seed, np.float32)
    x *= np.float32(1.3)
    _snap(layer, seed)
    y = layer.forward(x)
    g = np.random.default_rng(seed).standard_normal(y.shape).astype(np.float32)
    dx = layer.backward(g)
    beta = np.float32(2.0)
    x_hat = dequantize_signed_acts(quantize_signed_acts(x, layer.a_bits, beta), layer.a_bits,
                                   beta, layer.act_bits_hi).astype(np.float64)
    w_codes = layer._cache.w_codes
    w_hat = (signed_levels(w_codes, layer.w_bits)
             * weight_step(layer.params["alpha"], layer.w_bits)[:, None].astype(np.float64))
    dx_hat = g.astype(np.float64) @ w_hat
    r = signed_act_ratio(beta, layer.a_bits).astype(np.float64)
    half = 2.0 ** (layer.a_bits.astype(np.float64) - 1)
    inside = (x * r >= -half) & (x * r <= half - 1)
    np.testing.assert_allclose(dx, dx_hat * inside, rtol=2e-4, atol=2e-4)
    want_dbeta = np.sum(dx_hat * (x_hat / beta - inside * x / beta))
    np.testing.assert_allclose(layer.grads["beta"][0], want_dbeta, rtol=2e-4, atol=2e-4)


def test_signed_clip_starts_at_the_magnitude_percentile():
    layer = QuantLinear(4, 2, signed_input=True)
    x = np.linspace(-3, 1, 4000, dtype=np.float32).reshape(1000, 4)
    layer.set_mode("noise")
    layer.forward(x)
    assert layer.params["beta"][0] == pytest.approx(np.percentile(np.abs(x), 99.9))
    assert layer.signed_input and not QuantLinear(4, 2).signed_input


def test_the_worked_example_of_docs_semantics():
    """docs/semantics.md, "Signed inputs", by hand: acc -20, offset -4, signed sum -16."""
    from soniq_ref.quantizers import quantize_weights
    w_bits = np.array([2], np.uint8)
    w_codes = quantize_weights(np.array([[0.5, -0.1, -0.6]], np.float32),
                               np.array([0.6], np.float32), w_bits)
    assert w_codes.tolist() == [[3, 1, 0]]
    a_bits = np.array([2, 3, 3], np.uint8)
    codes = quantize_signed_acts(np.array([[-0.7, 0.3, 1.2]], np.float32), a_bits, 1.0)
    assert codes.tolist() == [[1, 5, 7]]
    assert dequantize_signed_acts(codes, a_bits, 1.0, 3).tolist() == [[-0.5, 0.25, 0.75]]
    acc = linear_int(codes, a_bits, w_codes, w_bits, 3)
    offset = signed_input_offset(w_codes, w_bits, 3)
    assert (int(acc[0, 0]), int(offset[0])) == (-20, -4)
    layer = QuantLinear(3, 1, weight_palette=(2, 2), act_palette=(2, 3), signed_input=True)
    layer.params["weight"][...] = [[0.5, -0.1, -0.6]]
    layer.params["alpha"][...] = 0.6
    layer.params["beta"][...] = 1.0
    layer.clips_ready = True
    layer.set_bits(w_bits, a_bits)
    layer.set_mode("exact")
    y = layer.forward(np.array([[-0.7, 0.3, 1.2]], np.float32))
    assert y[0, 0] == np.float32(np.float32(0.2) * np.float32(0.25)) * np.float32(-16)
