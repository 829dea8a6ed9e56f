"""ResidualBlock, global average pooling and PooledQuantLinear: gradient checks (float64
central differences), the skip's three modes, the budget and snapping inside blocks, and
the resnet model."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from gradcheck import check_module
from soniq_ref import budget
from soniq_ref.layers.global_pool import GlobalAvgPool, PooledQuantLinear, global_avg_pool
from soniq_ref.layers.residual import ResidualBlock
from soniq_ref.models import RESNET_DEPTHS, resnet
from soniq_ref.quantizers import dequantize_acts, quantize_acts
from soniq_ref.train.snapping import snap
from test_quant_layers import away_from_kinks

SEEDS = st.integers(0, 2 ** 32 - 1)


def make_block(seed, projection, first=False):
    """A float64 block with clips set, random BN and precision parameters, and an input
    kept away from its clip's kinks (0 and beta = 2)."""
    rng = np.random.default_rng(seed)
    c, o, stride = (3, 4, 2) if projection else (3, 3, 1)
    block = ResidualBlock(c, o, stride=stride, weight_palette=(1, 4), act_palette=(2, 6),
                          seed=seed, first_layer=first, dtype=np.float64, theta_init=0.3)
    for _, layer in block.named_layers():
        for name, p in layer.params.items():
            if name in ("bias", "theta_w", "theta_a"):
                p[...] = rng.standard_normal(p.shape)
            elif name == "weight" and p.ndim == 1:       # batch norm scale
                p[...] = rng.uniform(0.5, 1.5, p.shape)
    for layer in block.quant_layers():
        w = layer.params["weight"]
        layer.params["alpha"][...] = 0.8 * np.abs(w).reshape(w.shape[0], -1).max(axis=1)
        alpha = layer.params["alpha"].reshape(-1, 1, 1, 1)
        w[...] = np.sign(w) * away_from_kinks(np.abs(w) / alpha, [1.0]) * alpha
        if "beta" in layer.params:
            layer.params["beta"][...] = 2.0
        layer.clips_ready = True
    x = rng.random((2, c, 5, 5)) if first else away_from_kinks(
        rng.standard_normal((2, c, 5, 5)) * 1.5, [0.0, 2.0])
    return block, x


@pytest.mark.parametrize("projection", [False, True])
@pytest.mark.parametrize("mode", ["float", "noise"])
@pytest.mark.parametrize("first", [False, True])
@settings(max_examples=4, deadline=None)
@given(seed=SEEDS)
def test_residual_block_gradients(projection, mode, first, seed):
    block, x = make_block(seed, projection, first)
    for layer in block.quant_layers():
        layer.set_mode(mode)
    block.forward(x)
    for layer in block.quant_layers():       # hold the noise fixed (the projection's
        layer.fixed_noise = layer.last_noise  # carries conv1's activation noise)
    check_module(block, x, np.random.default_rng(seed), atol=1e-5, rtol=1e-4)


def test_the_projection_shares_conv1s_input_quantizer():
    block, x = make_block(1, projection=True)
    assert block.proj.params["beta"] is block.conv1.params["beta"]
    assert block.proj.params["theta_a"] is block.conv1.params["theta_a"]
    assert block.proj.input_source is block.conv1
    assert not any(k.startswith("proj.") and k.endswith(("beta", "theta_a"))
                   for k in block.params)
    for layer in block.quant_layers():
        layer.set_mode("noise")
    block.forward(x)
    np.testing.assert_array_equal(block.proj.last_noise[1], block.conv1.last_noise[1])


def test_the_exact_skip_is_the_value_of_conv1s_input_codes():
    block, x = make_block(2, projection=False)
    for layer in block.quant_layers():
        layer.set_bits(np.full(layer.params["weight"].shape[0], 4, np.uint8),
                       np.array([2, 6, 6], np.uint8)[:layer.params["theta_a"].shape[0]])
        layer.set_mode("exact")
    block.eval()
    y = block.forward(x)
    c1 = block.conv1
    codes = quantize_acts(x.astype(np.float32), c1.a_bits, c1.act_clip())
    skip = dequantize_acts(codes, c1.a_bits, c1.act_clip(), c1.act_bits_hi)
    main = block.bn2.forward(block.conv2.forward(block.relu1.forward(
        block.bn1.forward(block.conv1.forward(x)))))
    np.testing.assert_array_equal(y, np.maximum(main + skip.astype(np.float64), 0))


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (1, 2, 1, 1)])
def test_global_avg_pool_gradient(shape):
    rng = np.random.default_rng(0)
    check_module(GlobalAvgPool(), rng.standard_normal(shape), rng)
    x = rng.standard_normal(shape)
    np.testing.assert_allclose(global_avg_pool(x), x.mean(axis=(2, 3)))


@pytest.mark.parametrize("mode", ["float", "noise"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pooled_linear_gradients(mode, seed):
    rng = np.random.default_rng(seed)
    layer = PooledQuantLinear(3, 4, 6, weight_palette=(1, 4), act_palette=(2, 6), seed=seed,
                              dtype=np.float64, theta_init=0.3)
    p = layer.params
    for name in ("bias", "theta_w", "theta_a"):
        p[name][...] = rng.standard_normal(p[name].shape)
    w = p["weight"]
    p["alpha"][...] = 0.8 * np.abs(w).max(axis=1)
    w[...] = np.sign(w) * away_from_kinks(np.abs(w) / p["alpha"][:, None], [1.0]) \
        * p["alpha"][:, None]
    p["beta"][...] = 2.0
    layer.clips_ready = True
    layer.set_mode(mode)
    x = away_from_kinks(rng.standard_normal((3, 3, 2, 3)) * 1.5, [0.0, 2.0])
    layer.forward(x)
    layer.fixed_noise = layer.last_noise
    check_module(layer, x, rng)


def test_pooled_linear_exact_forward_averages_the_dequantized_inputs():
    rng = np.random.default_rng(3)
    layer = PooledQuantLinear(5, 3, 12, act_palette=(2, 4), seed=3)
    x = np.abs(rng.standard_normal((4, 5, 3, 4))).astype(np.float32)
    layer.forward(x)                          # float mode: nothing to initialise
    layer.set_mode("noise")
    layer.forward(x)                          # initialises the clips
    layer.set_bits(np.array([1, 4, 4], np.uint8), np.array([2, 4, 2, 4, 4], np.uint8))
    layer.set_mode("exact")
    y = layer.forward(x)
    codes, w_bits, w_step = layer.quantized_weights()
    w_hat = (codes.astype(np.float64) * 2 - ((1 << w_bits.astype(np.int64)) - 1)[:, None]) \
        * w_step[:, None]
    beta = layer.act_clip()
    x_hat = dequantize_acts(quantize_acts(x, layer.a_bits, beta), layer.a_bits, beta, 4)
    want = x_hat.astype(np.float64).mean(axis=(2, 3)) @ w_hat.T + layer.params["bias"]
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)


def test_budget_and_snapping_count_the_shared_input_once():
    net = resnet((1, 8, 8), 10, depth=8, width=4, act_palette=(2, 8), seed=0)
    layers = net.quant_layers()
    blocks = [l for l in net.layers if isinstance(l, ResidualBlock)]
    assert len(layers) == 1 + sum(len(b.quant_layers()) for b in blocks) + 1
    projections = [b.proj for b in blocks if b.proj is not None]
    assert len(projections) == 2
    acts = budget._act_layers(layers)
    assert not any(p in acts for p in projections)
    net.set_mode("noise")
    net.forward(np.random.default_rng(0).random((2, 1, 8, 8)).astype(np.float32))
    for l in layers:
        l.params["theta_w"][...] = np.random.default_rng(1).standard_normal(
            l.params["theta_w"].shape)
    snap(layers, 2.0, 4.0)
    for b in blocks:
        if b.proj is not None:
            np.testing.assert_array_equal(b.proj.a_bits, b.conv1.a_bits)
    w, a = budget.hard_mean_bits(layers)
    assert w <= 2.0 and a <= 4.0


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (1, 8, 8)])
def test_resnet_shapes_and_depths(shape):
    for depth in RESNET_DEPTHS[:3]:
        net = resnet(shape, 10, depth=depth, width=2)
        assert len(net.quant_layers()) == depth + 2   # + the two projections
        y = net.forward(np.zeros((2,) + shape, np.float32))
        assert y.shape == (2, 10)
    with pytest.raises(ValueError, match="depth must be one of"):
        resnet(shape, 10, depth=9)
