"""Transformer layers (Linear, LayerNorm, GELU, MultiHeadSelfAttention, PatchEmbedding,
PositionEmbedding, ClassToken, TokenMean): hand-written backward passes against central
finite differences in float64, forward values against independent computations, and
float32 in normal use."""

import math

import numpy as np
import pytest

from gradcheck import check_module, numeric_grad
from soniq_ref.layers import (GELU, ClassToken, LayerNorm, Linear, MultiHeadSelfAttention,
                              PatchEmbedding, PositionEmbedding, QuantConv2d, QuantLinear,
                              TokenMean)
from soniq_ref.layers.attention import softmax, softmax_backward
from soniq_ref.models import Sequential

B, T, D = 2, 5, 6


def _randomize(layer, rng):
    """Random values in every parameter (biases and LayerNorm's scale start constant)."""
    for p in layer.params.values():
        p[...] = rng.uniform(0.5, 1.5, p.shape) * rng.choice([-1, 1], p.shape)


# ---------------------------------------------------------------- Linear


def test_linear_gradients():
    rng = np.random.default_rng(0)
    layer = Linear(4, 3, seed=1, dtype=np.float64)
    _randomize(layer, rng)
    check_module(layer, rng.standard_normal((7, 4)), rng)


def test_linear_is_quant_linear_in_float_mode():
    rng = np.random.default_rng(1)
    lin = Linear(5, 3, seed=[4, 2], dtype=np.float64)
    q = QuantLinear(5, 3, seed=[4, 2], dtype=np.float64)
    np.testing.assert_array_equal(lin.params["weight"], q.params["weight"])
    x, dy = rng.standard_normal((6, 5)), rng.standard_normal((6, 3))
    np.testing.assert_array_equal(lin.forward(x), q.forward(x))
    np.testing.assert_allclose(lin.backward(dy), q.backward(dy), rtol=1e-14)
    for name in ("weight", "bias"):
        np.testing.assert_allclose(lin.grads[name], q.grads[name], rtol=1e-14)


# ---------------------------------------------------------------- LayerNorm


@pytest.mark.parametrize("shape", [(B, T, D), (7, D), (D,)])
def test_layernorm_gradients(shape):
    rng = np.random.default_rng(2)
    ln = LayerNorm(D, dtype=np.float64)
    _randomize(ln, rng)
    check_module(ln, rng.standard_normal(shape) * 2 + 1, rng)


def test_layernorm_normalizes_each_token():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((B, T, D)) * 3 + rng.standard_normal((B, T, 1)) * 5
    ln = LayerNorm(D, dtype=np.float64)
    y = ln.forward(x)                        # weight 1, bias 0: y is x^ itself
    np.testing.assert_allclose(y.mean(axis=-1), 0, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=-1), 1, rtol=1e-4)
    assert (y < 0).any() and (y > 0).any()   # signed output
    _randomize(ln, rng)
    x_hat = (ln.forward(x) - ln.params["bias"]) / ln.params["weight"]
    np.testing.assert_allclose(x_hat, y, atol=1e-12)


def test_layernorm_rejects_wrong_width():
    with pytest.raises(ValueError, match=r"\[\.\.\., 6\]"):
        LayerNorm(D).forward(np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match="dim"):
        LayerNorm(0)


# ---------------------------------------------------------------- GELU


def test_gelu_gradients():
    rng = np.random.default_rng(4)
    check_module(GELU(), rng.standard_normal((B, T, D)) * 2, rng)


def test_gelu_is_close_to_the_exact_gelu():
    x = np.linspace(-8, 8, 3201)
    exact = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x])
    y = GELU().forward(x)
    assert np.abs(y - exact).max() < 5e-4
    assert y[x == 0] == 0
    np.testing.assert_allclose(y[-1], 8, rtol=1e-12)
    assert abs(y[0]) < 1e-12


# ---------------------------------------------------------------- softmax, attention


def test_softmax_is_stable_for_large_inputs():
    rng = np.random.default_rng(5)
    s = rng.standard_normal((3, 4, 5)) * 3 + 1e4
    with np.errstate(over="ignore", invalid="ignore"):
        naive = np.exp(s) / np.exp(s).sum(axis=-1, keepdims=True)
    assert not np.isfinite(naive).any()      # the unshifted form overflows here
    p = softmax(s)
    assert np.isfinite(p).all()
    shifted = s - s.max(axis=-1, keepdims=True)
    np.testing.assert_allclose(p, np.exp(shifted) / np.exp(shifted).sum(-1, keepdims=True),
                               rtol=1e-15)
    np.testing.assert_allclose(p, softmax(s - 1e4), rtol=1e-12)
    np.testing.assert_allclose(p.sum(axis=-1), 1, rtol=1e-15)


def test_softmax_backward():
    rng = np.random.default_rng(6)
    s, g = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 3, 4))
    numeric = numeric_grad(lambda: float((softmax(s) * g).sum()), s)
    np.testing.assert_allclose(softmax_backward(softmax(s), g), numeric, atol=1e-9)


def _attention(heads, seed=7):
    rng = np.random.default_rng(seed)
    attn = MultiHeadSelfAttention(D, heads, seed, dtype=np.float64)
    for p in attn.params.values():
        p[...] = rng.standard_normal(p.shape) * 0.5
    return attn, rng.standard_normal((B, T, D))


@pytest.mark.parametrize("heads", [1, 2, 3])
def test_attention_gradients(heads):
    attn, x = _attention(heads)
    assert set(attn.params) == {"qkv.weight", "qkv.bias", "out.weight", "out.bias"}
    check_module(attn, x, np.random.default_rng(heads), atol=1e-7)


def test_attention_matches_a_loop_over_batch_and_heads():
    heads = 3
    attn, x = _attention(heads, seed=8)
    w_qkv, b_qkv = attn.params["qkv.weight"], attn.params["qkv.bias"]
    w_out, b_out = attn.params["out.weight"], attn.params["out.bias"]
    d = D // heads
    want = np.empty_like(x)
    for b in range(B):
        qkv = x[b] @ w_qkv.T + b_qkv                                     # [T, 3D]
        concat = []
        for h in range(heads):
            q, k, v = (qkv[:, j * D + h * d: j * D + (h + 1) * d] for j in range(3))
            s = q @ k.T / math.sqrt(d)
            e = np.exp(s - s.max(axis=1, keepdims=True))
            concat.append(e / e.sum(axis=1, keepdims=True) @ v)
        want[b] = np.concatenate(concat, axis=1) @ w_out.T + b_out
    np.testing.assert_allclose(attn.forward(x), want, rtol=1e-12, atol=1e-12)


def test_attention_is_permutation_equivariant():
    attn, x = _attention(2, seed=9)
    order = np.array([3, 0, 4, 1, 2])
    np.testing.assert_allclose(attn.forward(x[:, order]), attn.forward(x)[:, order],
                               rtol=1e-12, atol=1e-12)


def test_attention_checks_its_arguments():
    with pytest.raises(ValueError, match="multiple of heads"):
        MultiHeadSelfAttention(6, 4)
    with pytest.raises(ValueError, match="multiple of heads"):
        MultiHeadSelfAttention(6, 0)
    with pytest.raises(ValueError, match=r"\[B, T, 6\]"):
        MultiHeadSelfAttention(6, 2).forward(np.zeros((2, 6), np.float32))


# ---------------------------------------------------------------- tokens


@pytest.mark.parametrize("shape", [(B, 1, 4, 6), (1, 3, 2, 4)])
def test_patch_embedding_gradients(shape):
    rng = np.random.default_rng(10)
    emb = PatchEmbedding(shape[1], 2, D, seed=3, dtype=np.float64)
    _randomize(emb, rng)
    check_module(emb, rng.standard_normal(shape), rng)


def test_patch_embedding_is_a_strided_convolution():
    rng = np.random.default_rng(11)
    x = rng.standard_normal((B, 3, 4, 6))
    emb = PatchEmbedding(3, 2, D, seed=5, dtype=np.float64)
    conv = QuantConv2d(3, D, 2, stride=2, seed=5, dtype=np.float64)
    emb.params["proj.bias"][...] = conv.params["bias"][...] = rng.standard_normal(D)
    y = emb.forward(x)
    assert y.shape == (B, 6, D)              # T = (4 / 2) * (6 / 2)
    np.testing.assert_allclose(y, conv.forward(x).transpose(0, 2, 3, 1).reshape(B, 6, D),
                               rtol=1e-12, atol=1e-12)


def test_patch_embedding_refuses_indivisible_sizes():
    emb = PatchEmbedding(1, 2, D)
    with pytest.raises(ValueError, match=r"H=5, W=6") as err:
        emb.forward(np.zeros((1, 1, 5, 6), np.float32))
    assert "patch=2" in str(err.value)
    with pytest.raises(ValueError, match=r"H=4, W=3"):
        emb.forward(np.zeros((1, 1, 4, 3), np.float32))
    with pytest.raises(ValueError, match=r"\[B, 1, H, W\]"):
        emb.forward(np.zeros((1, 2, 4, 6), np.float32))


def test_position_embedding():
    rng = np.random.default_rng(12)
    pos = PositionEmbedding(T, D, seed=1, dtype=np.float64)
    table = pos.params["table"]
    assert table.shape == (T, D) and 0 < np.abs(table).max() < 0.2
    x = rng.standard_normal((B, T, D))
    np.testing.assert_array_equal(pos.forward(x), x + table)
    check_module(pos, x, rng)
    with pytest.raises(ValueError, match=r"\[B, 5, 6\]"):
        pos.forward(np.zeros((B, T + 1, D)))


def test_class_token():
    rng = np.random.default_rng(13)
    cls = ClassToken(D, dtype=np.float64)
    _randomize(cls, rng)
    x = rng.standard_normal((B, T, D))
    y = cls.forward(x)
    assert y.shape == (B, T + 1, D)
    np.testing.assert_array_equal(y[:, 1:], x)
    np.testing.assert_array_equal(y[:, 0], np.broadcast_to(cls.params["token"], (B, D)))
    check_module(cls, x, rng)


def test_token_mean():
    rng = np.random.default_rng(14)
    x = rng.standard_normal((B, T, D))
    pool = TokenMean()
    np.testing.assert_allclose(pool.forward(x), x.sum(axis=1) / T, rtol=1e-14)
    check_module(pool, x, rng)


# ---------------------------------------------------------------- together


def _tiny_vit(dtype):
    """Patches -> class token -> positions -> LN -> attention -> GELU -> mean."""
    return Sequential([PatchEmbedding(1, 2, D, seed=1, dtype=dtype), ClassToken(D, dtype=dtype),
                       PositionEmbedding(7, D, seed=2, dtype=dtype), LayerNorm(D, dtype=dtype),
                       MultiHeadSelfAttention(D, 3, seed=3, dtype=dtype), GELU(), TokenMean()])


def test_layers_compose_with_gradients():
    rng = np.random.default_rng(15)
    model = _tiny_vit(np.float64)
    _randomize(model.layers[1], rng)
    _randomize(model.layers[3], rng)
    check_module(model, rng.standard_normal((B, 1, 4, 6)), rng, atol=1e-7)


def test_float32_in_float32_out():
    rng = np.random.default_rng(16)
    model = _tiny_vit(np.float32)
    x = rng.standard_normal((B, 1, 4, 6)).astype(np.float32)
    y = model.forward(x)
    assert y.dtype == np.float32 and y.shape == (B, D)
    dx = model.backward(rng.standard_normal(y.shape).astype(np.float32))
    assert dx.dtype == np.float32 and dx.shape == x.shape
    assert {g.dtype for g in model.grads.values()} == {np.dtype(np.float32)}
    assert set(model.grads) == set(model.params)
    for layer in model.layers:                       # the cached intermediates too
        for value in vars(layer).values():
            for v in value if isinstance(value, tuple) else (value,):
                assert not isinstance(v, np.ndarray) or v.dtype == np.float32
