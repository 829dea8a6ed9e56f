"""The two-phase trainer on tiny configurations: phases, budget, seeding (same seed ->
same metrics and byte-identical model file), the float baseline, config checks."""

import dataclasses

import numpy as np
import pytest

from soniq_ref import fileformat
from soniq_ref.train import TrainConfig, train

TINY = dict(epochs_phase1=1, epochs_phase2=1, limit_train=96, limit_test=60, channels=(3, 4),
            batch_size=32)


def _comparable(result):
    return [dataclasses.astuple(h) for h in result.history], result.test_accuracy, \
        result.mean_weight_bits, result.mean_act_bits


def test_phases_budget_and_export():
    result = train(TrainConfig(**TINY, seed=1))
    assert [h.phase for h in result.history] == ["noise", "exact"]
    assert result.mean_weight_bits <= 2.0 and result.mean_act_bits <= 4.0
    assert result.history[-1].mean_weight_bits == result.mean_weight_bits
    assert all(l.mode == "exact" for l in result.model.quant_layers())
    assert result.deploy is not None and 0 <= result.test_accuracy <= 100
    assert all(np.isfinite(h.loss) for h in result.history)


def test_same_seed_same_metrics_and_bytes():
    a, b = (train(TrainConfig(**TINY, seed=3)) for _ in range(2))
    assert _comparable(a) == _comparable(b)
    assert fileformat.to_bytes(a.deploy) == fileformat.to_bytes(b.deploy)
    c = train(TrainConfig(**TINY, seed=4))
    assert fileformat.to_bytes(c.deploy) != fileformat.to_bytes(a.deploy)


@pytest.mark.parametrize("threads", [1, 2])
def test_same_seed_and_threads_same_bytes(threads):
    """docs/cli.md, "Reproducible runs": at a given BLAS thread count, the same bytes. The
    default CNN widths and 173 training images (a last batch of 45), so that BLAS really
    splits the convolutions' matrix products, along a summed dimension it blocks unevenly."""
    small = dict(epochs_phase1=1, epochs_phase2=1, limit_train=192, limit_test=60, seed=2,
                 threads=threads)
    one, two = (train(TrainConfig(**small)) for _ in range(2))
    assert _comparable(one) == _comparable(two)
    assert fileformat.to_bytes(one.deploy) == fileformat.to_bytes(two.deploy)
    from soniq_ref.train.metadata import run_metadata
    assert run_metadata(one)["training"]["threads"] == threads
    fp32_one, fp32_two = (train(TrainConfig(**small, fp32=True)) for _ in range(2))
    assert _comparable(fp32_one) == _comparable(fp32_two)
    assert all(np.array_equal(fp32_one.model.params[k], fp32_two.model.params[k])
               for k in fp32_one.model.params)


@pytest.mark.parametrize("threads", [0, -1, 1.5, True, "2"])
def test_threads_must_be_a_positive_integer(threads):
    with pytest.raises(ValueError, match="threads"):
        TrainConfig(threads=threads).validate()


def test_default_threads_are_the_cores_not_the_load(monkeypatch):
    from soniq_ref.train import trainer

    monkeypatch.setattr(trainer.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3},
                        raising=False)
    monkeypatch.setattr(trainer.os, "getloadavg", lambda: (9.0, 9.0, 9.0), raising=False)
    assert trainer.blas_threads(TrainConfig()) == 4
    assert trainer.blas_threads(TrainConfig(threads=7)) == 7


def test_mlp_and_custom_palettes():
    config = TrainConfig(**{**TINY, "limit_train": 64}, model="mlp", hidden=(16,),
                         weight_palette=(2, 3), act_palette=(3, 5), target_weight_bits=2.5,
                         target_act_bits=3.5)
    result = train(config)
    assert result.mean_weight_bits <= 2.5 and result.mean_act_bits <= 3.5
    for layer in result.model.quant_layers():
        assert set(np.unique(layer.w_bits)) <= {2, 3}


def test_fp32_baseline_trains_the_float_network():
    result = train(TrainConfig(**TINY, fp32=True))
    assert [h.phase for h in result.history] == ["float", "float"]
    assert result.deploy is None and result.mean_weight_bits == 32.0
    assert all(l.mode == "float" for l in result.model.quant_layers())


def test_learning_happens():
    result = train(TrainConfig(epochs_phase1=2, epochs_phase2=1, limit_train=600,
                               channels=(16, 32), seed=0, val_fraction=0.0))
    losses = [h.loss for h in result.history]
    assert losses[2] < losses[1] < losses[0]
    assert result.test_accuracy > 25          # ten classes: chance is 10 %


def test_phase2_only_snaps_untrained_precisions():
    result = train(TrainConfig(**{**TINY, "epochs_phase1": 0}))
    assert [h.phase for h in result.history] == ["exact"]
    assert result.mean_weight_bits <= 2.0


@pytest.mark.parametrize("field, value, message", [
    ("dataset", "imagenet", "dataset"), ("model", "transformer", "model"),
    ("weight_palette", (0, 4), "weight_palette"), ("act_palette", (4, 2), "act_palette"),
    ("target_weight_bits", 0.0, "target_weight_bits"), ("lr", float("nan"), "lr"),
    ("epochs_phase1", -1, "epochs_phase1"), ("batch_size", 0, "batch_size"),
    ("seed", 1.5, "seed"), ("optimizer", "lbfgs", "optimizer"),
    ("lambda_w", -1.0, "lambda_w"), ("limit_train", 0, "limit_train"),
    ("heads", 3, "multiple of heads"), ("dim", 0, "dim"), ("pool", "max", "pool"),
    ("mlp_activation", "tanh", "mlp_activation"), ("patch", 0, "patch"),
    ("depth", 0, "depth"),
])
def test_config_is_validated(field, value, message):
    with pytest.raises(ValueError, match=message):
        train(TrainConfig(**{field: value}))
    with pytest.raises(ValueError, match="at least 1"):
        TrainConfig(epochs_phase1=0, epochs_phase2=0).validate()


def test_epochs_watch_the_validation_set_and_the_test_set_is_scored_once(monkeypatch):
    from soniq_ref.data import load_dataset
    from soniq_ref.train import trainer

    config = TrainConfig(**dict(TINY, limit_train=120), fp32=True, val_fraction=0.25)
    data = load_dataset("digits")
    test_images = data.x_test[:config.limit_test]
    seen = []
    real = trainer.predict
    monkeypatch.setattr(trainer, "predict", lambda model, x: seen.append(x) or real(model, x))
    result = train(config)
    held_out = data.x_train[90:120]                           # the last 25 % of 120 images
    assert [len(x) for x in seen[:2]] == [30, 30]             # one pass per epoch
    assert all(np.array_equal(x, held_out) for x in seen[:2])
    assert sum(np.array_equal(x, test_images) for x in seen) == 1    # at the end only
    model_pred = real(result.model, held_out)
    expected = 100.0 * np.mean(model_pred == data.y_train[90:120])
    assert result.val_accuracy == expected == result.history[-1].val_accuracy


def test_quantized_run_reports_the_deploy_models_validation_accuracy():
    from soniq_ref.data import load_dataset

    result = train(TrainConfig(**TINY, seed=2))
    data = load_dataset("digits")
    held_out, labels = data.x_train[86:96], data.y_train[86:96]    # round(0.1 * 96) = 10
    assert result.val_accuracy == 100.0 * np.mean(result.deploy.predict(held_out) == labels)
    test_pred = result.deploy.predict(data.x_test[:60])
    assert result.test_accuracy == 100.0 * np.mean(test_pred == data.y_test[:60])


def test_no_validation_split():
    result = train(TrainConfig(**TINY, val_fraction=0.0))
    assert all(np.isnan(h.val_accuracy) for h in result.history)
    assert np.isnan(result.val_accuracy) and 0 <= result.test_accuracy <= 100


@pytest.mark.parametrize("value", [-0.1, 1.0, 1.5, float("nan"), True, "0.1"])
def test_bad_val_fraction(value):
    with pytest.raises(ValueError, match="val_fraction"):
        TrainConfig(val_fraction=value).validate()


def test_defaults_per_dataset():
    from soniq_ref.train.config import DATASET_DEFAULTS

    digits = TrainConfig.for_dataset("digits")
    assert digits == TrainConfig()
    fashion = TrainConfig.for_dataset("fashion-mnist")
    assert fashion.dataset == "fashion-mnist"
    assert {k: getattr(fashion, k) for k in DATASET_DEFAULTS["fashion-mnist"]} == \
        DATASET_DEFAULTS["fashion-mnist"]
    assert (fashion.epochs_phase1, fashion.epochs_phase2) != (30, 15)
    given = TrainConfig.for_dataset("fashion-mnist", epochs_phase1=2, lr=0.01)
    assert given.epochs_phase1 == 2 and given.lr == 0.01
    assert given.epochs_phase2 == fashion.epochs_phase2
