"""BatchNorm, ReLU, MaxPool2d, Flatten and softmax cross-entropy: forward values and
hand-written backward passes against central finite differences in float64.

The finite-difference helpers live in ``gradcheck.py``."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gradcheck import check_module, numeric_grad
from soniq_ref.layers.activations import ReLU
from soniq_ref.layers.batchnorm import BatchNorm1d, BatchNorm2d
from soniq_ref.layers.flatten import Flatten
from soniq_ref.layers.pooling import MaxPool2d, max_pool_codes
from soniq_ref.loss import softmax_cross_entropy
from soniq_ref.quantizers import quantize_acts


def _bn(cls, channels, rng):
    bn = cls(channels, dtype=np.float64)
    bn.params["weight"][...] = rng.uniform(0.5, 2.0, channels)
    bn.params["bias"][...] = rng.standard_normal(channels)
    return bn


@pytest.mark.parametrize("cls, shape", [(BatchNorm1d, (7, 3)), (BatchNorm2d, (3, 2, 3, 5))])
@pytest.mark.parametrize("training", [True, False])
def test_batchnorm_gradients(cls, shape, training):
    rng = np.random.default_rng(1)
    bn = _bn(cls, shape[1], rng)
    bn.running_mean[...] = rng.standard_normal(shape[1])
    bn.running_var[...] = rng.uniform(0.5, 2.0, shape[1])
    bn.train(training)
    x = rng.standard_normal(shape) * 2 + 1
    stats = bn.running_mean.copy(), bn.running_var.copy()
    check_module(bn, x, rng)
    if not training:
        np.testing.assert_array_equal(bn.running_mean, stats[0])


def test_batchnorm_train_normalizes_and_updates_running_stats():
    rng = np.random.default_rng(2)
    bn = BatchNorm2d(4, momentum=0.1, dtype=np.float64)
    x = rng.standard_normal((8, 4, 3, 3)) * 3 + 5
    y = bn.forward(x)
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=(0, 2, 3)), 1, rtol=1e-4)
    n = 8 * 9
    np.testing.assert_allclose(bn.running_mean, 0.1 * x.mean(axis=(0, 2, 3)))
    np.testing.assert_allclose(bn.running_var,
                               0.9 + 0.1 * x.var(axis=(0, 2, 3)) * n / (n - 1))


def test_batchnorm_eval_is_the_folded_affine_map():
    rng = np.random.default_rng(3)
    bn = _bn(BatchNorm1d, 5, rng)
    bn.running_mean[...] = rng.standard_normal(5)
    bn.running_var[...] = rng.uniform(0.1, 3.0, 5)
    bn.eval()
    x = rng.standard_normal((6, 5))
    a, b = bn.folded()
    np.testing.assert_allclose(bn.forward(x), a * x + b, rtol=1e-12)


def test_batchnorm_rejects_wrong_shape():
    with pytest.raises(ValueError, match="channels"):
        BatchNorm2d(3).forward(np.zeros((2, 4, 2, 2), np.float32))
    with pytest.raises(ValueError, match="channels"):
        BatchNorm1d(0)


def test_relu_forward_and_gradient():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((5, 7))
    x[np.abs(x) < 1e-3] = 0.5          # keep finite differences away from the kink
    relu = ReLU()
    np.testing.assert_array_equal(relu.forward(x), np.maximum(x, 0))
    check_module(relu, x, rng)


@pytest.mark.parametrize("kernel, stride, shape", [(2, 2, (2, 3, 4, 6)), (2, 2, (1, 2, 5, 5)),
                                                    (3, 1, (2, 1, 5, 4)), (3, 2, (1, 2, 7, 7))])
def test_maxpool_gradient(kernel, stride, shape):
    rng = np.random.default_rng(5)
    x = rng.permutation(np.prod(shape)).reshape(shape).astype(np.float64) * 0.1  # no ties
    check_module(MaxPool2d(kernel, stride), x, rng)


def test_maxpool_forward_values():
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    np.testing.assert_array_equal(MaxPool2d(2).forward(x)[0, 0], [[5, 7], [13, 15]])
    odd = np.arange(25, dtype=np.float32).reshape(1, 1, 5, 5)
    assert MaxPool2d(2).forward(odd).shape == (1, 1, 2, 2)


def test_maxpool_ties_route_to_first_maximum():
    pool = MaxPool2d(2)
    pool.forward(np.ones((1, 1, 2, 2)))
    np.testing.assert_array_equal(pool.backward(np.ones((1, 1, 1, 1)))[0, 0], [[1, 0], [0, 0]])


@given(st.integers(1, 8), st.integers(2, 7), st.integers(2, 7), st.integers(0, 2 ** 31 - 1))
def test_pooling_codes_equals_quantizing_pooled_values(bits, h, w, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((2, 3, h, w)) * 2).astype(np.float32)
    b = np.full(3, bits, np.uint8)
    beta = np.float32(2.5)
    pooled_codes = max_pool_codes(quantize_acts(x, b, beta), 2)
    np.testing.assert_array_equal(pooled_codes, quantize_acts(MaxPool2d(2).forward(x), b, beta))


def test_pool_arguments_are_checked():
    with pytest.raises(ValueError, match="kernel"):
        MaxPool2d(0)
    with pytest.raises(TypeError, match="codes"):
        max_pool_codes(np.zeros((1, 1, 2, 2), np.int64), 2)
    with pytest.raises(ValueError, match="smaller"):
        max_pool_codes(np.zeros((1, 1, 1, 3), np.uint8), 2)


def test_flatten_round_trip():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 3, 4, 5))
    f = Flatten()
    y = f.forward(x)
    assert y.shape == (2, 60)
    np.testing.assert_array_equal(y[1], x[1].reshape(-1))
    check_module(f, x, rng)


def test_cross_entropy_value_and_gradient():
    rng = np.random.default_rng(7)
    logits = rng.standard_normal((6, 4)) * 3
    labels = rng.integers(0, 4, 6)
    loss, grad = softmax_cross_entropy(logits, labels)
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert loss == pytest.approx(-np.log(p[np.arange(6), labels]).mean(), rel=1e-12)
    numeric = numeric_grad(lambda: softmax_cross_entropy(logits, labels)[0], logits)
    np.testing.assert_allclose(grad, numeric, atol=1e-8)


def test_cross_entropy_is_stable_and_checks_labels():
    loss, grad = softmax_cross_entropy(np.array([[1000.0, -1000.0]]), np.array([0]))
    assert loss == 0.0 and np.all(np.isfinite(grad))
    with pytest.raises(ValueError, match="labels"):
        softmax_cross_entropy(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(ValueError, match="labels"):
        softmax_cross_entropy(np.zeros((2, 3)), np.array([0.0, 1.0]))
