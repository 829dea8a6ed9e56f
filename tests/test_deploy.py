"""The deploy model: batch norm and scales folded into the epilogue, requantization
fused, pooling on codes, per-feature precision after Flatten -- checked against a
hand computation with the independent integer core, against the trained model's
exact mode, and across every available backend (bit for bit)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import independent
from soniq_ref.deploy import DeployModel, PoolStage, QuantStage
from soniq_ref.layers import QuantConv2d, QuantLinear
from soniq_ref.layers.activations import ReLU
from soniq_ref.layers.batchnorm import BatchNorm1d, BatchNorm2d
from soniq_ref.layers.flatten import Flatten
from soniq_ref.layers.pooling import MaxPool2d
from soniq_ref.models import Sequential, cnn, mlp
from soniq_ref.train import TrainConfig, train


def _random_bits(rng, layer):
    w = rng.choice(layer.weight_palette, layer.params["weight"].shape[0]).astype(np.uint8)
    a = None if layer.first_layer else \
        rng.choice(layer.act_palette, layer.params["theta_a"].shape[0]).astype(np.uint8)
    layer.set_bits(w, a)


def _prepare(net, x_uint8, rng):
    """Random BN statistics, clips from data, random palette bits, exact mode, eval."""
    x = x_uint8.astype(np.float32) / np.float32(255)
    net.set_mode("noise")
    net.eval()
    net.forward(x)                                  # initialises the clips
    for layer in net.layers:
        if isinstance(layer, (BatchNorm1d, BatchNorm2d)):
            layer.running_mean[...] = rng.standard_normal(layer.channels)
            layer.running_var[...] = rng.uniform(0.5, 2.0, layer.channels)
            layer.params["weight"][...] = rng.uniform(-1.5, 1.5, layer.channels)
            layer.params["bias"][...] = rng.standard_normal(layer.channels)
        if hasattr(layer, "set_bits"):
            layer.params["bias"][...] = rng.standard_normal(layer.params["bias"].shape)
            _random_bits(rng, layer)
    net.set_mode("exact")
    return x


def _folded(layer, bn):
    codes, bits, step = layer.quantized_weights()
    a, b = bn.folded() if bn is not None else (1.0, 0.0)
    scale = (a * step.astype(np.float64) * np.float64(layer.act_step())).astype(np.float32)
    bias = (a * layer.params["bias"].astype(np.float64) + b).astype(np.float32)
    return codes, bits, scale, bias


def test_linear_network_equals_hand_computation():
    rng = np.random.default_rng(0)
    l0, bn, l1 = QuantLinear(12, 7, first_layer=True, seed=1), BatchNorm1d(7), \
        QuantLinear(7, 5, seed=2)
    net = Sequential([Flatten(), l0, bn, ReLU(), l1])
    x = rng.integers(0, 256, (9, 1, 3, 4)).astype(np.uint8)
    _prepare(net, x, rng)
    logits = DeployModel.from_model(net, (1, 3, 4)).forward(x)

    codes0, bits0, scale0, bias0 = _folded(l0, bn)
    acc0 = independent.linear_acc(x.reshape(9, 12), np.full(12, 8), codes0, bits0, 8)
    k1 = independent.requantize(acc0, scale0, bias0, l1.a_bits, l1.act_ratio())
    codes1, bits1, scale1, bias1 = _folded(l1, None)
    acc1 = independent.linear_acc(k1, l1.a_bits, codes1, bits1, l1.act_bits_hi)
    expected = independent.epilogue(acc1, scale1, bias1)
    assert logits.dtype == np.float32
    np.testing.assert_array_equal(logits.view(np.uint32), expected.view(np.uint32))


def _conv_net():
    c0, c1 = QuantConv2d(1, 4, 3, padding=1, first_layer=True, seed=1), \
        QuantConv2d(4, 5, 3, padding=1, seed=2)
    lin = QuantLinear(5 * 2 * 1, 3, seed=3)
    layers = [c0, BatchNorm2d(4), ReLU(), MaxPool2d(2), c1, BatchNorm2d(5), ReLU(), MaxPool2d(2),
              Flatten(), lin]
    return Sequential(layers), c0, c1, lin


def test_conv_network_with_per_feature_bits_equals_hand_computation():
    """Pool-then-quantize in float (by hand) equals the deploy model's quantize-then-pool."""
    rng = np.random.default_rng(1)
    net, c0, c1, lin = _conv_net()
    bns = [net.layers[1], net.layers[5]]
    x = rng.integers(0, 256, (6, 1, 9, 7)).astype(np.uint8)      # odd sizes: pooling drops edges
    _prepare(net, x, rng)
    assert len(np.unique(lin.a_bits)) == 2                       # mixed per-feature bits
    deploy = DeployModel.from_model(net, (1, 9, 7))
    assert deploy.quant_stages[1].per_feature and not deploy.quant_stages[0].per_feature

    codes, bits, scale, bias = _folded(c0, bns[0])
    k = independent.requantize(  # per channel: quantize, then pool the codes
        independent.conv_acc(x, np.full(1, 8), codes, bits, 8, 1, 1), scale, bias,
        c1.a_bits, c1.act_ratio())
    k = MaxPool2d(2).forward(k.astype(np.float64)).astype(np.uint8)
    codes, bits, scale, bias = _folded(c1, bns[1])
    y = independent.epilogue(independent.conv_acc(k, c1.a_bits, codes, bits, c1.act_bits_hi,
                                                  1, 1), scale, bias)
    pooled = MaxPool2d(2).forward(y).reshape(6, -1)                 # pool in float, then
    ratio, top = lin.act_ratio(), (1 << lin.a_bits.astype(np.int64)) - 1
    k = np.clip(np.rint(np.multiply(pooled, ratio, dtype=np.float32)), 0, top).astype(np.uint8)
    codes, bits, scale, bias = _folded(lin, None)
    expected = independent.epilogue(independent.linear_acc(k, lin.a_bits, codes, bits,
                                                           lin.act_bits_hi), scale, bias)
    np.testing.assert_array_equal(deploy.forward(x).view(np.uint32), expected.view(np.uint32))


@pytest.fixture(scope="module")
def trained():
    config = TrainConfig(epochs_phase1=1, epochs_phase2=1, limit_train=160, channels=(4, 8),
                         batch_size=32, seed=5)
    return train(config)


def test_deploy_agrees_with_the_trained_exact_model(trained):
    from soniq_ref.data import load_dataset

    data = load_dataset("digits")
    deploy_pred = trained.deploy.predict(data.x_test)
    trained.model.eval()
    exact_pred = trained.model.forward(data.x_test.astype(np.float32) / np.float32(255)).argmax(1)
    # Only float rounding differs (folded BN vs BN after the epilogue), moving a code
    # across a rounding boundary now and then.
    assert np.mean(deploy_pred == exact_pred) >= 0.95


def test_every_backend_gives_the_reference_logits(trained, backend):
    x = np.random.default_rng(2).integers(0, 256, (7, 1, 8, 8)).astype(np.uint8)
    ref = trained.deploy.forward(x, backend="ref")
    got = np.asarray(trained.deploy.forward(x, backend=backend))
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got.view(np.uint32), ref.view(np.uint32))


def test_forward_checks_its_input(trained):
    with pytest.raises(TypeError, match="uint8"):
        trained.deploy.forward(np.zeros((2, 1, 8, 8), np.float32))
    with pytest.raises(ValueError, match="shape"):
        trained.deploy.forward(np.zeros((2, 1, 8, 7), np.uint8))
    with pytest.raises(ValueError, match="unknown backend"):
        trained.deploy.forward(np.zeros((2, 1, 8, 8), np.uint8), backend="tpu")


def test_export_refuses_what_it_cannot_fold():
    net, *_ = _conv_net()
    with pytest.raises(ValueError, match="fixed bits"):
        DeployModel.from_model(net, (1, 9, 7))
    rng = np.random.default_rng(3)
    bad = Sequential([QuantConv2d(1, 2, 3, first_layer=True), MaxPool2d(2), BatchNorm2d(2),
                      Flatten(), QuantLinear(2, 2)])
    _prepare(bad, rng.integers(0, 256, (2, 1, 4, 4)).astype(np.uint8), rng)
    with pytest.raises(ValueError, match="batch norm"):
        DeployModel.from_model(bad, (1, 4, 4))


def test_describe_lists_every_stage(trained):
    rows = trained.deploy.describe()
    assert [r["kind"] for r in rows] == ["conv", "maxpool", "conv", "maxpool", "flatten", "linear"]
    assert rows[-1]["output_shape"] == [10]
    assert sum(rows[0]["weight_bits"].values()) == 4
    assert isinstance(trained.deploy.stages[1], PoolStage)
    assert isinstance(trained.deploy.stages[0], QuantStage)


@st.composite
def deploy_case(draw):
    """A random stock network with random mixed palette bits, and a random input batch."""
    h, w = draw(st.integers(3, 11)), draw(st.integers(3, 11))
    lo_w, hi_w = draw(st.integers(1, 4)), draw(st.integers(4, 8))
    lo_a, hi_a = draw(st.integers(1, 4)), draw(st.integers(4, 8))
    seed = draw(st.integers(0, 2 ** 16))
    kwargs = dict(weight_palette=(lo_w, hi_w), act_palette=(lo_a, hi_a), seed=seed)
    if draw(st.booleans()):
        net = cnn((1, h, w), 4, channels=(draw(st.integers(1, 5)), draw(st.integers(1, 6))),
                  **kwargs)
    else:
        net = mlp((1, h, w), 4, hidden=(draw(st.integers(1, 70)),), **kwargs)
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (draw(st.integers(1, 5)), 1, h, w)).astype(np.uint8)
    if draw(st.booleans()):
        x[:, :, ::2] = draw(st.sampled_from([0, 255]))           # extreme codes
    _prepare(net, x, rng)
    return DeployModel.from_model(net, (1, h, w)), x


def test_random_networks_give_the_reference_logits_on_every_backend(backend):

    @given(deploy_case())
    def check(case):
        deploy, x = case
        ref = deploy.forward(x)
        got = np.asarray(deploy.forward(x, backend=backend))
        np.testing.assert_array_equal(got.view(np.uint32), ref.view(np.uint32))

    check()
