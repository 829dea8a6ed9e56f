"""Checkpoints: all a training run needs to continue exactly where it stopped.

The trainer writes ``checkpoint.npz`` into the run's folder after every epoch,
atomically (temp file + rename), so a run killed at any moment leaves the last
complete epoch behind. Resuming restores every array and every random state --
parameters, batch-norm statistics, clips and snapped bits, the noise generators
of the quantized layers, the batch-order generator, the optimizers' moments --
so a resumed run produces the same metrics and a byte-identical model file as
one that was never interrupted.

The file is a NumPy ``.npz`` of plain arrays (loaded with ``allow_pickle=False``)
plus one JSON document stored as a uint8 array under ``meta``.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_bytes
from ..layers import QuantLayer
from ..layers.batchnorm import BatchNorm
from ..optim import SGD

FILE_NAME = "checkpoint.npz"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable or does not fit the run."""


# ------------------------------------------------------------------------------ capture

def _layer_state(model, arrays: dict) -> list:
    """Copy the model's arrays into ``arrays``; return per-layer JSON state."""
    for name, p in model.params.items():
        arrays[f"param/{name}"] = p
    layers = []
    for i, layer in enumerate(model.layers):
        state = {}
        if isinstance(layer, BatchNorm):
            arrays[f"bn/{i}/running_mean"] = layer.running_mean
            arrays[f"bn/{i}/running_var"] = layer.running_var
        if isinstance(layer, QuantLayer):
            state = {"mode": layer.mode, "clips_ready": layer.clips_ready,
                     "act_channel_size": layer.act_channel_size,
                     "noise_rng": layer.noise_rng.bit_generator.state}
            if layer.w_bits is not None:
                arrays[f"bits/{i}/w"] = layer.w_bits
            if layer.a_bits is not None:
                arrays[f"bits/{i}/a"] = layer.a_bits
        layers.append(state)
    return layers


def _optimizer_state(prefix: str, opt, arrays: dict) -> dict:
    if isinstance(opt, SGD):
        for name, v in opt.velocity.items():
            arrays[f"{prefix}/velocity/{name}"] = v
        return {"kind": "sgd"}
    for name in opt.m:
        arrays[f"{prefix}/m/{name}"] = opt.m[name]
        arrays[f"{prefix}/v/{name}"] = opt.v[name]
    return {"kind": "adam", "t": opt.t}


def save(run_dir, *, model, optimizers: dict, rng, progress: dict) -> Path:
    """Write ``run_dir/checkpoint.npz`` atomically and return its path.

    optimizers: name -> SGD/Adam; rng: the batch-order generator;
    progress: JSON-able trainer position (phase, epoch, history, config, ...).
    """
    arrays: dict = {}
    meta = {"format_version": FORMAT_VERSION, "progress": progress,
            "layers": _layer_state(model, arrays),
            "optimizers": {k: _optimizer_state(f"opt/{k}", o, arrays)
                           for k, o in optimizers.items()},
            "rng": rng.bit_generator.state}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode("utf-8"), np.uint8)
    path = Path(run_dir) / FILE_NAME
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())
    return path


# ------------------------------------------------------------------------------ restore

def load(run_dir) -> tuple[dict, dict]:
    """Read ``run_dir/checkpoint.npz`` -> (arrays, meta); CheckpointError if unusable."""
    path = Path(run_dir) / FILE_NAME
    if not path.is_file():
        raise CheckpointError(f"no checkpoint to resume from: {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        meta = json.loads(arrays.pop("meta").tobytes().decode("utf-8"))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, UnicodeDecodeError) as exc:
        raise CheckpointError(f"checkpoint {path} is unreadable ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path} has an unsupported format version")
    return arrays, meta


def _put(name: str, target: np.ndarray, arrays: dict) -> None:
    """Copy a saved array into ``target`` in place (optimizers hold references to it)."""
    saved = arrays.get(name)
    if saved is None or saved.shape != target.shape or saved.dtype != target.dtype:
        raise CheckpointError(f"checkpoint does not fit this model: {name} is missing or has "
                              "another shape")
    target[...] = saved


def restore(arrays: dict, meta: dict, *, model, optimizers: dict, rng) -> dict:
    """Put the saved state back into ``model``, ``optimizers`` and ``rng``; return progress."""
    try:
        for name, p in model.params.items():
            _put(f"param/{name}", p, arrays)
        for i, (layer, state) in enumerate(zip(model.layers, meta["layers"], strict=True)):
            if isinstance(layer, BatchNorm):
                _put(f"bn/{i}/running_mean", layer.running_mean, arrays)
                _put(f"bn/{i}/running_var", layer.running_var, arrays)
            if isinstance(layer, QuantLayer):
                if f"bits/{i}/w" in arrays:
                    layer.set_bits(arrays[f"bits/{i}/w"], arrays.get(f"bits/{i}/a"))
                layer.clips_ready = bool(state["clips_ready"])
                layer.act_channel_size = int(state["act_channel_size"])
                layer.noise_rng.bit_generator.state = state["noise_rng"]
                layer.set_mode(state["mode"])
        for key, opt in optimizers.items():
            prefix, state = f"opt/{key}", meta["optimizers"][key]
            if isinstance(opt, SGD):
                for name, v in opt.velocity.items():
                    _put(f"{prefix}/velocity/{name}", v, arrays)
            else:
                opt.t = int(state["t"])
                for name in opt.m:
                    _put(f"{prefix}/m/{name}", opt.m[name], arrays)
                    _put(f"{prefix}/v/{name}", opt.v[name], arrays)
        rng.bit_generator.state = meta["rng"]
        return meta["progress"]
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(f"checkpoint does not fit this run ({exc})") from None


__all__ = ["FILE_NAME", "CheckpointError", "save", "load", "restore"]
