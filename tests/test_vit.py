"""The Transformer block and the quantized ViT: gradient checks (float64, central
differences, the noise held fixed), which maps read signed inputs, exact mode, and
the named errors of the model's options."""

import numpy as np
import pytest

from gradcheck import check_module, numeric_grad
from soniq_ref import budget
from soniq_ref.layers.transformer_block import TransformerBlock
from soniq_ref.models import vit


@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_transformer_block_gradients_match_finite_differences(activation):
    rng = np.random.default_rng(3)
    block = TransformerBlock(6, 2, mlp_ratio=2, activation=activation, seed=5,
                             dtype=np.float64)
    for p in block.params.values():
        p[...] += 0.1 * rng.standard_normal(p.shape)
    check_module(block, rng.standard_normal((2, 5, 6)), rng)


def tiny_vit(pool, activation, seed=0):
    return vit((1, 8, 8), 3, dim=8, heads=2, depth=1, pool=pool, activation=activation,
               act_palette=(2, 6), seed=seed, dtype=np.float64)


@pytest.mark.parametrize("pool, activation", [("mean", "relu"), ("cls", "gelu")])
def test_vit_noise_mode_gradients_match_finite_differences(pool, activation):
    """The whole network in phase 1, every parameter, with the noise of every quantized
    map held fixed: the learned clips and precisions of signed and unsigned inputs get
    the exact gradient of the loss."""
    rng = np.random.default_rng(11)
    model = tiny_vit(pool, activation)
    x = rng.random((3, 1, 8, 8))
    model.set_mode("noise")
    model.forward(x)                                  # clips from data, noise drawn
    for layer in model.quant_layers():
        layer.fixed_noise = layer.last_noise
    for name, p in model.params.items():
        if name.endswith(("theta_w", "theta_a")):
            p[...] = rng.standard_normal(p.shape)
        elif name.endswith((".beta", ".alpha")):
            p[...] *= 1.5                 # off the kink at the first batch's largest value
    y = model.forward(x)
    g = rng.standard_normal(y.shape)
    model.backward(g)
    grads = {k: v.copy() for k, v in model.grads.items()}

    def f():
        return float(np.sum(model.forward(x) * g))

    assert set(grads) == set(model.params)
    for name, p in model.params.items():
        np.testing.assert_allclose(grads[name], numeric_grad(f, p), rtol=1e-4, atol=1e-6,
                                   err_msg=name)


def test_vit_maps_and_their_inputs():
    model = vit((1, 28, 28), 10, depth=2)
    names = [n for n, _ in model.named_layers()]
    assert names[:2] == ["0.proj", "1"] and names[-3:] == ["4", "5", "6"]
    quant = model.quant_layers()
    assert len(quant) == 1 + 4 * 2 + 1
    assert quant[0].first_layer and not quant[0].signed_input
    kinds = [(l.signed_input, l.first_layer) for l in quant[1:]]
    # per block: qkv, out, fc1 signed; fc2 after the ReLU unsigned; the head signed
    assert kinds == [(True, False)] * 3 + [(False, False)] + [(True, False)] * 3 + \
        [(False, False)] + [(True, False)]
    assert quant[0].params["weight"].shape == (64, 49)      # 4 x 4 patches of 7 x 7
    gelu = vit((1, 28, 28), 10, depth=1, activation="gelu").quant_layers()
    assert all(l.signed_input for l in gelu[1:])


def test_vit_counts_tokens_in_the_activation_budget():
    model = vit((1, 8, 8), 3, dim=8, heads=2, depth=1)
    model.set_mode("noise")
    model.forward(np.random.default_rng(0).random((2, 1, 8, 8)).astype(np.float32))
    sizes = [l.act_channel_size for l in model.quant_layers()]
    assert sizes == [16] * 5 + [1]                  # 16 tokens; the head reads one vector
    w, a = budget.soft_mean_bits(model.quant_layers())
    assert 1 <= w <= 4 and 2 <= a <= 8


def test_vit_exact_mode_runs_on_snapped_bits_and_backpropagates():
    rng = np.random.default_rng(2)
    model = vit((1, 8, 8), 3, dim=8, heads=2, depth=1, seed=4)
    x = rng.random((4, 1, 8, 8)).astype(np.float32)
    model.set_mode("noise")
    model.forward(x)
    for layer in model.quant_layers():
        n_out = layer.params["weight"].shape[0]
        a = None if layer.first_layer else rng.choice(layer.act_palette,
                                                      len(layer.params["theta_a"]))
        layer.set_bits(rng.choice(layer.weight_palette, n_out), a)
    model.set_mode("exact")
    y = model.forward(x)
    assert y.shape == (4, 3) and y.dtype == np.float32 and np.all(np.isfinite(y))
    assert np.array_equal(y, model.forward(x))            # no noise in phase 2
    dx = model.backward(np.ones_like(y))
    assert dx.shape == x.shape
    assert all(np.isfinite(g).all() for g in model.grads.values())


@pytest.mark.parametrize("kwargs, match", [
    (dict(patch=5), "patch must be a positive integer dividing"),
    (dict(pool="max"), "pool must be one of mean, cls"),
    (dict(activation="tanh"), "activation must be one of relu, gelu"),
    (dict(dim=10, heads=4), "dim must be a multiple of heads"),
    (dict(depth=0), "depth must be a positive integer"),
    (dict(mlp_ratio=0), "mlp_ratio must be a positive integer"),
    (dict(act_palette=(1, 8)), "lo >= 2"),
])
def test_vit_options_are_checked(kwargs, match):
    with pytest.raises(ValueError, match=match):
        vit((1, 28, 28), 10, **kwargs)


def test_vit_default_patch_needs_sides_divisible_by_four():
    with pytest.raises(ValueError, match="pass patch"):
        vit((3, 30, 30), 10)
    assert vit((3, 30, 30), 10, patch=6, depth=1).quant_layers()[0].params["weight"].shape \
        == (64, 3 * 6 * 6)
