"""The Python API for your own data and model: fit() on NumPy arrays, callbacks, the
returned history and deploy model, input conversion, and DeployModel.predict/_proba."""

import numpy as np
import pytest

import soniq_ref as sq
from soniq_ref.train import EpochRecord


def toy_data(n=240, seed=0):
    """Bright-left vs bright-right 6x6 images, as float64 in [0, 1] with k/255 values."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.integers(0, 100, (n, 1, 6, 6))
    x[y == 0, :, :, :3] += 150
    x[y == 1, :, :, 3:] += 150
    return x / 255.0, y


def small_model(seed=0):
    return sq.Sequential([
        sq.QuantConv2d(1, 4, 3, padding=1, first_layer=True, weight_palette=(1, 4), seed=seed),
        sq.BatchNorm2d(4), sq.ReLU(), sq.MaxPool2d(2), sq.Flatten(),
        sq.QuantLinear(4 * 3 * 3, 2, weight_palette=(1, 4), act_palette=(2, 8), seed=seed + 1)])


CONFIG = dict(epochs_phase1=4, epochs_phase2=3, batch_size=32, lr=0.01)


@pytest.fixture(scope="module")
def fitted():
    x, y = toy_data()
    seen = []
    result = sq.fit(small_model(), x[:180], y[:180], x[180:], y[180:],
                    sq.TrainConfig(**CONFIG), class_names=["left", "right"],
                    callbacks=[seen.append])
    return result, seen, x, y


def test_fit_returns_history_and_a_deploy_model(fitted):
    result, seen, x, y = fitted
    assert len(result.history) == 7 and seen == result.history
    assert all(isinstance(r, EpochRecord) for r in seen)
    assert [r.phase for r in seen] == ["noise"] * 4 + ["exact"] * 3
    pixels = np.rint(x[180:] * 255).astype(np.uint8)
    pred = result.deploy.predict(pixels)
    assert 100.0 * np.mean(pred == y[180:]) == result.test_accuracy
    assert result.test_accuracy > 90
    meta = result.deploy.metadata
    assert meta["class_names"] == ["left", "right"] and meta["input_shape"] == [1, 6, 6]
    assert meta["training"]["epochs_phase1"] == 4 and meta["training"]["model"] == "custom"


def test_predict_proba_matches_predict(fitted):
    result, _, x, _ = fitted
    pixels = np.rint(x[:50] * 255).astype(np.uint8)
    p = result.deploy.predict_proba(pixels)
    assert p.shape == (50, 2) and np.allclose(p.sum(axis=1), 1)
    assert np.array_equal(p.argmax(axis=1), result.deploy.predict(pixels))


def test_float_pixels_are_the_same_as_uint8(fitted):
    x, y = toy_data(60, seed=1)
    config = sq.TrainConfig(epochs_phase1=1, epochs_phase2=1, batch_size=16)
    from_float = sq.fit(small_model(), x, y, config=config)
    from_uint8 = sq.fit(small_model(), np.rint(x * 255).astype(np.uint8), y.astype(np.int32),
                        config=config)
    assert sq.fileformat.to_bytes(from_float.deploy) == sq.fileformat.to_bytes(from_uint8.deploy)
    assert np.isnan(from_float.test_accuracy)          # no validation data given


@pytest.mark.parametrize("change, message", [
    (lambda m, x, y: (sq.Sequential([sq.Flatten(), sq.QuantLinear(36, 2)]), x, y),
     "first_layer=True"),
    (lambda m, x, y: (m, x * 2, y), "lie in [0, 1]"),
    (lambda m, x, y: (m, x, y + 1), "0..1"),
    (lambda m, x, y: (m, x, y[:-1]), "one label per image"),
    (lambda m, x, y: (m, x, y + 0.5), "integer class labels"),
])
def test_fit_refuses_bad_input_with_a_clear_message(change, message):
    x, y = toy_data(20)
    model, x, y = change(small_model(), x, y)
    with pytest.raises((ValueError, TypeError), match=message.replace("[", r"\[").replace(
            "]", r"\]").replace(".", r"\.")):
        sq.fit(model, x, y, config=sq.TrainConfig(epochs_phase1=1, epochs_phase2=0))
