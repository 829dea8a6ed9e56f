"""The two input quantizers (PixelInput, LearnedActivations): gradient checks of their
phase-1 forward and backward, and the rules that tie their codes to the deploy model.

Gradient checks use central finite differences in float64 on L = sum(x~ * g) with the
noise held fixed; inputs are kept away from the clip kinks (x = 0, x = beta).
"""

import numpy as np
import pytest
from hypothesis import given, strategies as st

from gradcheck import away_from_kinks, numeric_grad
from soniq_ref import noise
from soniq_ref.layers import LearnedActivations, PixelInput, QuantConv2d, QuantLinear
from soniq_ref.quantizers import codes_from_ratio, shifted_codes

SEEDS = st.integers(0, 2 ** 32 - 1)
SHAPES = [(5, 4), (2, 3, 4, 5)]           # [M, C] (linear) and [B, C, H, W] (conv)


def learned(channels, seed, dtype=np.float64, beta=2.0):
    rng = np.random.default_rng(seed)
    params = {}
    quantizer = LearnedActivations(params, channels, (2, 6), 0.3, dtype)
    params["beta"][...] = beta
    params["theta_a"][...] = rng.standard_normal(channels)
    return quantizer


def quantizers(channels, seed, dtype=np.float64):
    """Both kinds, the learned one with snapped widths."""
    rng = np.random.default_rng(seed)
    q = learned(channels, seed, dtype, beta=float(rng.uniform(0.5, 3.0)))
    q.set_bits(rng.choice(q.palette, channels))
    return [PixelInput(channels), q]


@pytest.mark.parametrize("shape", SHAPES)
@given(seed=SEEDS)
def test_learned_activations_noise_gradients_match_finite_differences(shape, seed):
    rng = np.random.default_rng(seed)
    q = learned(shape[1], seed)
    x = away_from_kinks(rng.standard_normal(shape) * 1.5, [0.0, 2.0])
    u = q.draw_noise(rng, x.shape, np.float64)
    g = rng.standard_normal(shape)
    x_t, cache = q.noisy(x, u)
    dx, grads = q.noisy_backward(g, cache)
    assert set(grads) == {"beta", "theta_a"}

    def f():
        return float(np.sum(q.noisy(x, u)[0] * g))

    np.testing.assert_allclose(dx, numeric_grad(f, x), rtol=1e-5, atol=1e-6, err_msg="x")
    for name in ("beta", "theta_a"):
        np.testing.assert_allclose(grads[name], numeric_grad(f, q.params[name]), rtol=1e-5,
                                   atol=1e-6, err_msg=name)


@pytest.mark.parametrize("shape", SHAPES)
@given(seed=SEEDS)
def test_pixel_input_noise_gradients_match_finite_differences(shape, seed):
    rng = np.random.default_rng(seed)
    q = PixelInput(shape[1])
    x, g = rng.random(shape), rng.standard_normal(shape)
    assert q.draw_noise(rng, x.shape, np.float64) is None
    x_t, cache = q.noisy(x, None)
    dx, grads = q.noisy_backward(g, cache)
    assert grads == {} and q.soft_bits() is None

    def f():
        return float(np.sum(q.noisy(x, None)[0] * g))

    np.testing.assert_allclose(dx, numeric_grad(f, x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", SHAPES)
@given(seed=SEEDS)
def test_codes_are_the_requantization_of_the_deploy_model(shape, seed):
    """A layer's input codes are ``clip(rint(x * ratio), 0, 2**bits - 1)`` with its own
    ``ratio()`` and ``bits``, which is what the stage before it requantizes to; the values
    they stand for are ``step() * (k << (A - bits))``, bit for bit."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 2.0).astype(np.float32)
    for q in quantizers(shape[1], seed):
        codes = q.codes(x)
        assert codes.dtype == np.uint8 and codes.shape == x.shape
        np.testing.assert_array_equal(codes, codes_from_ratio(x, q.ratio(), q.bits))
        values = q.dequantized(codes, np.float32)
        want = q.step() * shifted_codes(codes, q.bits, q.palette[1]).astype(np.float32)
        np.testing.assert_array_equal(values.view(np.uint32), want.view(np.uint32))


def test_pixels_are_their_own_codes():
    q = PixelInput(1)
    k = np.arange(256, dtype=np.uint8).reshape(256, 1)
    x = k.astype(np.float32) / np.float32(255)
    np.testing.assert_array_equal(q.codes(x), k)
    assert q.step() == np.float32(1 / 255) and q.clip() is None and q.palette == (8, 8)
    dx, grads = q.ste_backward(x, x, x)
    assert dx is x and grads == {}


@pytest.mark.parametrize("first", [True, False])
def test_parameter_names_and_order_are_the_checkpoint_keys(first):
    """Checkpoints and the model registry name parameters ``i.name`` in this order."""
    for layer in (QuantLinear(6, 3, first_layer=first),
                  QuantConv2d(2, 3, 3, first_layer=first)):
        want = ["weight", "bias", "alpha", "theta_w"] + ([] if first else ["beta", "theta_a"])
        assert list(layer.params) == want
        assert layer.first_layer is first
        assert isinstance(layer.input_quantizer, PixelInput if first else LearnedActivations)
        for name in want[4:]:
            assert layer.input_quantizer.params[name] is layer.params[name]


def test_set_bits_is_checked():
    q = PixelInput(3)
    q.set_bits(None)
    q.set_bits(np.full(3, 8))
    with pytest.raises(ValueError, match="a_bits"):
        q.set_bits(np.array([8, 8, 4]))
    with pytest.raises(ValueError, match="a_bits"):
        learned(3, 0).set_bits(np.array([2, 6]))
    with pytest.raises(ValueError, match="act_palette"):
        LearnedActivations({}, 3, (6, 2), 0.0, np.float32)


def test_noise_draws_follow_the_weight_noise():
    """The activation noise comes from the layer's generator after the weight noise
    (the order every recorded run depends on)."""
    layer = QuantLinear(4, 3, seed=5)
    layer.set_mode("noise")
    x = np.random.default_rng(0).random((2, 4)).astype(np.float32)
    layer.forward(x)
    rng = np.random.default_rng(np.random.SeedSequence(5).spawn(2)[1])
    np.testing.assert_array_equal(layer.last_noise[0], noise.uniform_noise(rng, (3, 4),
                                                                           np.float32))
    np.testing.assert_array_equal(layer.last_noise[1], noise.uniform_noise(rng, (2, 4),
                                                                           np.float32))
