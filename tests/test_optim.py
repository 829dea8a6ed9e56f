"""SGD with momentum and weight decay, Adam, and the cosine schedule, against the
formulas in soniq_ref.optim's docstring, step by step."""

import math

import numpy as np
import pytest

from soniq_ref.optim import SGD, Adam, cosine_lr


def _params(rng):
    return {"0.weight": rng.standard_normal((3, 4)), "0.bias": rng.standard_normal(3)}


def test_sgd_momentum_and_decay_follow_the_formula():
    rng = np.random.default_rng(0)
    params = _params(rng)
    expect = {k: v.copy() for k, v in params.items()}
    velocity = {k: np.zeros_like(v) for k, v in params.items()}
    opt = SGD(params, momentum=0.8, weight_decay=0.1)
    for step in range(4):
        grads = {k: rng.standard_normal(v.shape) for k, v in params.items()}
        opt.step(grads, lr=0.05)
        for k in params:
            g = grads[k] + (0.1 * expect[k] if expect[k].ndim >= 2 else 0)   # no decay on biases
            velocity[k] = 0.8 * velocity[k] + g
            expect[k] = expect[k] - 0.05 * velocity[k]
            np.testing.assert_allclose(params[k], expect[k], rtol=1e-12)


def test_adam_follows_the_formula():
    rng = np.random.default_rng(1)
    params = _params(rng)
    expect = {k: v.copy() for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v = {k: np.zeros_like(p) for k, p in params.items()}
    opt = Adam(params, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.01)
    for t in range(1, 5):
        grads = {k: rng.standard_normal(p.shape) for k, p in params.items()}
        opt.step(grads, lr=0.01)
        for k in params:
            g = grads[k] + (0.01 * expect[k] if expect[k].ndim >= 2 else 0)
            m[k] = 0.9 * m[k] + 0.1 * g
            v[k] = 0.99 * v[k] + 0.01 * g * g
            m_hat, v_hat = m[k] / (1 - 0.9 ** t), v[k] / (1 - 0.99 ** t)
            expect[k] = expect[k] - 0.01 * m_hat / (np.sqrt(v_hat) + 1e-8)
            np.testing.assert_allclose(params[k], expect[k], rtol=1e-12)


@pytest.mark.parametrize("make", [lambda p: SGD(p, momentum=0.9), lambda p: Adam(p)])
def test_optimizers_minimize_a_quadratic(make):
    target = np.array([1.0, -2.0, 3.0])
    params = {"x": np.zeros(3)}
    opt = make(params)
    for _ in range(2000):
        opt.step({"x": 2 * (params["x"] - target)}, lr=0.01)
    np.testing.assert_allclose(params["x"], target, atol=1e-2)


def test_optimizers_update_in_place_and_skip_unknown_names():
    params = {"w": np.ones((2, 2), np.float32)}
    alias = params["w"]
    opt = Adam(params)
    opt.step({"w": np.ones((2, 2), np.float32), "other": np.ones(3)}, lr=0.1)
    assert alias is params["w"] and alias.dtype == np.float32 and np.all(alias < 1)


def test_optimizer_arguments_are_checked():
    with pytest.raises(ValueError, match="momentum"):
        SGD({}, momentum=1.0)
    with pytest.raises(ValueError, match="weight_decay"):
        Adam({}, weight_decay=-1)
    with pytest.raises(ValueError, match="betas"):
        Adam({}, betas=(1.0, 0.9))
    with pytest.raises(ValueError, match="lr"):
        SGD({"x": np.zeros(1)}).step({"x": np.zeros(1)}, lr=float("nan"))


def test_cosine_schedule():
    assert cosine_lr(0, 100, 0.1) == pytest.approx(0.1)
    assert cosine_lr(50, 100, 0.1) == pytest.approx(0.05)
    assert cosine_lr(100, 100, 0.1, lr_min=0.001) == pytest.approx(0.001)
    assert cosine_lr(25, 100, 1.0) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert cosine_lr(500, 100, 1.0) == pytest.approx(0.0)       # clamped past the end
    assert cosine_lr(3, 0, 0.2) == 0.2
    lrs = [cosine_lr(t, 40, 1.0) for t in range(41)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


@pytest.mark.parametrize("name", ["cnn", "resnet"])
def test_every_parameter_has_exactly_one_optimizer(name):
    """The precisions (theta_w, theta_a), nested in blocks or not, go to their own Adam
    and nowhere else; every other parameter to the main optimizer."""
    from soniq_ref.models import build_model
    from soniq_ref.train.trainer import TrainConfig, _optimizers
    model = build_model(name, (1, 8, 8), 3)
    opt, theta_opt, _ = _optimizers(model, TrainConfig(), 1.0)
    main, theta = set(opt.params), set(theta_opt.params)
    assert not main & theta and main | theta == set(model.params)
    assert theta == {k for k in model.params if k.endswith((".theta_w", ".theta_a"))}
    assert any(k.count(".") > 1 for k in theta) == (name == "resnet")
