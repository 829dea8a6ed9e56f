"""``model_fp32.npz``: the float model a ``--fp32`` run writes (docs/cli.md).

A NumPy ``.npz`` of float32 arrays: every parameter under its registry name
(``"0.weight"``, ``"1.gamma"``, ...), every batch norm's running statistics
(``"<i>.running_mean"``, ``"<i>.running_var"``), and ``metadata``, the UTF-8 bytes of
the run's metadata JSON (the same object a ``.soniq`` file records). Written
atomically; :func:`load_float_model` puts the arrays back into a network built the
same way.
"""

from __future__ import annotations

import io
import json

import numpy as np

from ..atomic import atomic_write_bytes
from ..layers.batchnorm import BatchNorm

FILE_NAME = "model_fp32.npz"


def _arrays(model) -> dict:
    arrays = {name: np.asarray(p, np.float32) for name, p in model.params.items()}
    for i, layer in model.named_layers():
        if isinstance(layer, BatchNorm):
            arrays[f"{i}.running_mean"] = layer.running_mean.astype(np.float32)
            arrays[f"{i}.running_var"] = layer.running_var.astype(np.float32)
    return arrays


def save_float_model(model, path, metadata: dict) -> int:
    """Write ``model``'s float32 arrays and ``metadata``; returns the file size."""
    arrays = _arrays(model)
    arrays["metadata"] = np.frombuffer(json.dumps(metadata, sort_keys=True).encode(), np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())
    return len(buffer.getvalue())


def load_float_model(model, path) -> dict:
    """Copy the arrays of ``path`` into ``model`` (same architecture); returns the metadata."""
    with np.load(path, allow_pickle=False) as saved:
        for name, target in _arrays(model).items():
            if name not in saved or saved[name].shape != target.shape:
                raise ValueError(f"{path} does not fit this model: {name} is missing or has "
                                 f"another shape")
        for name, p in model.params.items():
            p[...] = saved[name]
        for i, layer in model.named_layers():
            if isinstance(layer, BatchNorm):
                layer.running_mean[...] = saved[f"{i}.running_mean"]
                layer.running_var[...] = saved[f"{i}.running_var"]
        return json.loads(saved["metadata"].tobytes().decode("utf-8"))
