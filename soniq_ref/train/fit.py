"""Train your own network on your own arrays: :func:`fit`.

::

    import soniq_ref as sq

    model = sq.Sequential([sq.QuantConv2d(1, 8, 3, padding=1, first_layer=True), ...,
                           sq.Flatten(), sq.QuantLinear(8 * 4 * 4, 3)])
    result = sq.fit(model, x_train, y_train, x_val, y_val,
                    sq.TrainConfig(epochs_phase1=10, epochs_phase2=5))
    result.history         # one EpochRecord per epoch
    result.deploy          # the DeployModel: .predict(x), .predict_proba(x), save_model(...)

Any :class:`~soniq_ref.models.Sequential` of the reference layers works whose first
quantized layer reads the pixels (``first_layer=True``) and whose last layer is a
quantized layer (the classifier); it runs the same two phases as ``soniq train``.

Inputs: images ``x`` ``[N, *input_shape]`` as uint8 pixels, integers in 0..255, or
floats in [0, 1], which are rounded to 8-bit pixels ``rint(x * 255)`` (exact for
values ``k / 255``; the network reads 8-bit pixels, like the deployed model).
Labels: integers (any integer or integral float dtype) in ``0..n_classes-1``.
Bit widths and palettes are plain Python ints. ``x_val``/``y_val`` are the held-out
arrays: every epoch reports its accuracy on them (``EpochRecord.val_accuracy``) and
the final ``test_accuracy`` and ``val_accuracy`` are the deploy model's on them (no
images are held out of ``x_train``: ``config.val_fraction`` is not used). Without
``x_val`` these accuracies are NaN.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..data import Dataset
from ..images import to_pixels
from ..layers import QuantLayer
from .config import TrainConfig
from .trainer import TrainResult, run_training

ARRAYS = "arrays"      # the dataset name a run on arrays records


def _labels(y, n: int, n_classes: int, name: str) -> np.ndarray:
    y = np.asarray(y)
    if y.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},) (one label per image), got {y.shape}")
    if not (np.issubdtype(y.dtype, np.integer) or
            (np.issubdtype(y.dtype, np.floating) and np.all(y == np.round(y)))):
        raise TypeError(f"{name} must hold integer class labels, got dtype {y.dtype}")
    if n and (y.min() < 0 or y.max() >= n_classes):
        raise ValueError(f"{name} must lie in 0..{n_classes - 1} (the classifier's outputs)")
    return y.astype(np.int64)


def _images(x, name: str, shape=None) -> np.ndarray:
    x = to_pixels(x, name)
    if x.ndim < 2:
        raise ValueError(f"{name} must be [N, *input_shape], got shape {x.shape}")
    if shape is not None and x.shape[1:] != shape:
        raise ValueError(f"{name} images have shape {x.shape[1:]}, x_train's {shape}")
    return x


def _check_model(model) -> list:
    layers = model.quant_layers() if hasattr(model, "quant_layers") else []
    if not layers:
        raise TypeError("model must be a soniq_ref Sequential with quantized layers")
    if not layers[0].first_layer:
        raise ValueError("the first quantized layer reads 8-bit pixels: build it with "
                         "first_layer=True")
    if not isinstance(model.layers[-1], QuantLayer):
        raise ValueError("the model must end with a quantized layer (the classifier)")
    return layers


def _palettes(layers) -> dict:
    """The widest weight and activation palettes of the model (where budgets must lie)."""
    acts = [l.act_palette for l in layers if not l.first_layer] or [(8, 8)]
    return {"weight_palette": (min(l.weight_palette[0] for l in layers),
                               max(l.weight_palette[1] for l in layers)),
            "act_palette": (min(p[0] for p in acts), max(p[1] for p in acts))}


def fit(model, x_train, y_train, x_val=None, y_val=None, config: TrainConfig | None = None,
        *, class_names=None, callbacks=(), progress: bool = False,
        run_dir=None) -> TrainResult:
    """Train ``model`` on arrays; returns the TrainResult (``history``, ``deploy``, ...).

    ``config`` sets epochs, budgets, learning rate, batch size and seed (its
    ``dataset``, ``model``, ``val_fraction`` and palettes are not used: the layers
    carry their own palettes, ``x_val`` is the validation set). Each of ``callbacks`` is called with every epoch's EpochRecord;
    ``run_dir`` keeps a checkpoint and ``history.csv`` there as ``soniq train`` does.
    """
    layers = _check_model(model)
    n_classes = int(model.layers[-1].params["weight"].shape[0])
    x = _images(x_train, "x_train")
    y = _labels(y_train, len(x), n_classes, "y_train")
    if (x_val is None) != (y_val is None):
        raise ValueError("give both x_val and y_val, or neither")
    xv = np.zeros((0,) + x.shape[1:], np.uint8) if x_val is None else \
        _images(x_val, "x_val", x.shape[1:])
    yv = np.zeros(0, np.int64) if y_val is None else _labels(y_val, len(xv), n_classes, "y_val")
    names = tuple(str(n) for n in class_names) if class_names is not None else ()
    if names and len(names) != n_classes:
        raise ValueError(f"class_names must name the {n_classes} classes, got {len(names)}")
    config = replace(config or TrainConfig(), **_palettes(layers)).validate()
    data = Dataset(ARRAYS, x, y, xv, yv, n_classes, names, x_val=xv, y_val=yv)
    result = run_training(model, data, config, progress=progress, run_dir=run_dir,
                          callbacks=callbacks)
    if result.deploy is not None:
        result.deploy.metadata["training"]["model"] = "custom"   # not a stock network
    return result
