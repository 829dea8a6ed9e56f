"""Sequential (parameter registry, forward/backward through a whole network) and the
stock mlp/cnn builders."""

import numpy as np
import pytest

from soniq_ref.layers import QuantConv2d, QuantLinear
from soniq_ref.layers.activations import ReLU
from soniq_ref.layers.batchnorm import BatchNorm1d, BatchNorm2d
from soniq_ref.layers.flatten import Flatten
from soniq_ref.layers.pooling import MaxPool2d
from soniq_ref.loss import softmax_cross_entropy
from soniq_ref.models import Sequential, build_model, cnn, mlp
from gradcheck import numeric_grad


def _conv_net():
    return Sequential([QuantConv2d(2, 3, 3, padding=1, first_layer=True, seed=1,
                                   dtype=np.float64),
                       BatchNorm2d(3, dtype=np.float64), ReLU(), MaxPool2d(2), Flatten(),
                       QuantLinear(3 * 2 * 2, 4, seed=2, dtype=np.float64)])


def _mlp_net():
    return Sequential([Flatten(), QuantLinear(6, 5, first_layer=True, seed=1, dtype=np.float64),
                       BatchNorm1d(5, dtype=np.float64), ReLU(),
                       QuantLinear(5, 3, seed=2, dtype=np.float64)])


def test_registry_names_point_at_the_layers_arrays():
    net = _conv_net()
    assert "0.weight" in net.params and "0.theta_w" in net.params and "5.theta_a" in net.params
    assert "0.theta_a" not in net.params          # the first layer reads pixels
    assert net.params["1.weight"] is net.layers[1].params["weight"]
    assert len(net.quant_layers()) == 2


@pytest.mark.parametrize("make, shape", [(_conv_net, (3, 2, 4, 5)), (_mlp_net, (4, 1, 2, 3))])
def test_whole_network_gradients_in_float_mode(make, shape):
    rng = np.random.default_rng(0)
    net = make()
    net.set_mode("float")
    x = rng.random(shape)
    labels = rng.integers(0, 3, shape[0])

    def loss():
        return softmax_cross_entropy(net.forward(x), labels)[0]

    _, dlogits = softmax_cross_entropy(net.forward(x), labels)
    dx = net.backward(dlogits)
    grads = {k: g.copy() for k, g in net.grads.items()}
    np.testing.assert_allclose(dx, numeric_grad(loss, x), atol=1e-6)
    first = next(i for i, l in enumerate(net.layers) if l.params)
    for name in (f"{first}.weight", f"{first}.bias", f"{len(net.layers) - 1}.weight"):
        np.testing.assert_allclose(grads[name], numeric_grad(loss, net.params[name]),
                                   atol=1e-6, err_msg=name)
    bn = next(i for i, l in enumerate(net.layers) if "running_mean" in vars(l))
    np.testing.assert_allclose(grads[f"{bn}.weight"], numeric_grad(loss, net.params[f"{bn}.weight"]),
                               atol=1e-6)


def test_set_mode_and_train_eval_reach_every_layer():
    net = _mlp_net()
    net.set_mode("noise")
    assert all(l.mode == "noise" for l in net.quant_layers())
    net.eval()
    assert not any(l.training for l in net.layers)
    with pytest.raises(ValueError, match="mode"):
        net.set_mode("fast")


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32), (1, 1, 1)])
def test_stock_models_shapes(shape):
    x = np.random.default_rng(0).random((2,) + shape).astype(np.float32)
    for net in (cnn(shape, 10, channels=(4, 6)), mlp(shape, 10, hidden=(8,))):
        assert net.forward(x).shape == (2, 10)
        assert net.quant_layers()[0].first_layer
        assert not any(l.first_layer for l in net.quant_layers()[1:])


def test_same_seed_same_model_and_different_seed_differs():
    a, b, c = (cnn((1, 8, 8), 10, seed=s) for s in (3, 3, 4))
    assert all(np.array_equal(a.params[k], b.params[k]) for k in a.params)
    assert not np.array_equal(a.params["0.weight"], c.params["0.weight"])


def test_build_model_by_name():
    assert isinstance(build_model("mlp", (1, 8, 8), 10), Sequential)
    assert isinstance(build_model("resnet", (1, 8, 8), 10, depth=8, width=2), Sequential)
    assert isinstance(build_model("vit", (1, 8, 8), 10, dim=8, heads=2, depth=1), Sequential)
    with pytest.raises(ValueError, match="model"):
        build_model("transformer", (1, 8, 8), 10)
    with pytest.raises(ValueError, match="input_shape"):
        cnn((8, 8), 10)
    with pytest.raises(TypeError, match="Module"):
        Sequential([np.zeros(3)])
