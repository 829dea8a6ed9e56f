"""What a trained model records about itself, and reading it back.

A training run stores, in the ``.soniq`` file's ``metadata`` (see docs/file-format.md)
and in ``metrics.json``: the dataset, the input shape, the class names and the
training configuration (palettes, budgets, learning rate, batch size, epochs, seed,
validation fraction, SONIQ version, the backend and BLAS threads training ran on: float32
sums can depend on the thread count). ``soniq eval`` and
``soniq predict`` default to it; :func:`read_metadata` validates what a file holds.
"""

from __future__ import annotations

from dataclasses import dataclass

TRAINING_KEYS = ("model", "weight_palette", "act_palette", "target_weight_bits",
                 "target_act_bits", "lr", "batch_size", "epochs_phase1", "epochs_phase2",
                 "seed", "val_fraction", "optimizer", "fp32", "data_dir")
TRAIN_BACKEND = "ref"       # training runs the reference


def run_metadata(result) -> dict:
    """The metadata of a :class:`~soniq_ref.train.trainer.TrainResult`."""
    from .. import __version__
    from .trainer import blas_threads

    config = result.config
    training = {k: getattr(config, k) for k in TRAINING_KEYS}
    training.update(weight_palette=list(config.weight_palette),
                    act_palette=list(config.act_palette), backend=TRAIN_BACKEND,
                    threads=blas_threads(config))
    if config.model == "resnet":            # the network's shape options
        training.update(depth=config.model_depth, width=config.width)
    if config.model == "vit":
        training.update(depth=config.model_depth, dim=config.dim, heads=config.heads,
                        patch=int(result.model.layers[0].patch), pool=config.pool,
                        mlp_activation=config.mlp_activation)
    return {"dataset": result.dataset, "input_shape": list(result.input_shape),
            "class_names": list(result.class_names), "soniq_version": __version__,
            "training": training}


@dataclass
class ModelMetadata:
    """The parts of a model's metadata the command line uses (None: not recorded)."""

    dataset: str | None
    data_dir: str | None
    class_names: list


def read_metadata(model) -> ModelMetadata:
    """Validated :class:`ModelMetadata` of a loaded DeployModel; ValueError if malformed."""
    meta = getattr(model, "metadata", None) or {}
    dataset = meta.get("dataset")
    training = meta.get("training", {})
    names = meta.get("class_names")
    if dataset is not None and not isinstance(dataset, str):
        raise ValueError(f"the model's metadata names no valid dataset ({dataset!r})")
    if not isinstance(training, dict):
        raise ValueError("the model's metadata 'training' is not a JSON object")
    data_dir = training.get("data_dir")
    if data_dir is not None and not isinstance(data_dir, str):
        raise ValueError(f"the model's metadata data_dir is not a path ({data_dir!r})")
    if names is None:
        names = [str(c) for c in range(model.n_classes)]
    if not isinstance(names, list) or len(names) != model.n_classes or \
            not all(isinstance(n, str) for n in names):
        raise ValueError(f"the model's metadata class_names must be {model.n_classes} names")
    return ModelMetadata(dataset, data_dir, names)
