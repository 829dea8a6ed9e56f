"""Checkpoints: all a training run needs to continue exactly where it stopped.

The trainer writes ``checkpoint.npz`` into the run's folder after every epoch,
atomically (temp file + rename), so a run killed at any moment leaves the last
complete epoch behind. Resuming restores every array and every random state --
parameters, batch-norm statistics, clips and snapped bits, the noise generators
of the quantized layers, the batch-order generator, the optimizers' moments --
so a resumed run produces the same metrics and a byte-identical model file as
one that was never interrupted.

The file is a NumPy ``.npz`` of plain arrays (uncompressed members) plus one JSON
document stored as a uint8 array under ``meta``. Reading validates the whole file
before anything is restored -- every member's declared shape and dtype against its
stored bytes (so nothing larger than the file is ever allocated), the JSON schema,
the trainer position and the run's options (through ``TrainConfig.validate``) -- and
refuses with :class:`CheckpointError` naming the file and the problem.
"""

from __future__ import annotations

import io
import json
import math
import zipfile
import zlib
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_bytes
from ..layers import QuantLayer
from ..layers.batchnorm import BatchNorm
from ..optim import SGD

FILE_NAME = "checkpoint.npz"
FORMAT_VERSION = 1
MAX_MEMBERS = 100_000
META_KEYS = {"format_version", "progress", "layers", "optimizers", "rng"}
PROGRESS_KEYS = {"phase_index", "epoch", "history", "config", "train_seconds"}
DTYPES = {np.dtype(t) for t in ("<f4", "<f8", "|u1", "<i8", "<u8", "|b1")}
# what a broken zip, npy or JSON member can raise while it is read
_READ_ERRORS = (OSError, EOFError, ValueError, KeyError, TypeError, IndexError,
                OverflowError, RecursionError, NotImplementedError, UnicodeDecodeError,
                zipfile.BadZipFile, zlib.error)


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable or does not fit the run."""


# ------------------------------------------------------------------------------ capture

def _layer_state(model, arrays: dict) -> list:
    """Copy the model's arrays into ``arrays``; return per-layer JSON state."""
    for name, p in model.params.items():
        arrays[f"param/{name}"] = p
    layers = []
    for i, layer in model.named_layers():
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
    """Read and validate ``run_dir/checkpoint.npz`` -> (arrays, meta); CheckpointError
    naming the file and the problem if it is unusable (nothing is restored yet)."""
    path = Path(run_dir) / FILE_NAME
    if not path.is_file():
        raise CheckpointError(f"no checkpoint to resume from: {path} does not exist")
    try:
        arrays = _read_arrays(path)
        meta = json.loads(arrays.pop("meta").tobytes().decode("utf-8"))
        _check_meta(meta)
    except CheckpointError as exc:
        raise CheckpointError(f"checkpoint {path}: {exc}") from None
    except _READ_ERRORS as exc:
        raise CheckpointError(f"checkpoint {path} is unreadable ({type(exc).__name__}: "
                              f"{str(exc)[:200]})") from None
    return arrays, meta


def _read_arrays(path: Path) -> dict:
    """Every member as an array; each declared size is checked against the member's stored
    bytes (uncompressed, so within the file's size) before anything is allocated."""
    size = path.stat().st_size
    with open(path, "rb") as f, zipfile.ZipFile(f) as archive:
        infos = archive.infolist()
        if len(infos) > MAX_MEMBERS or sum(i.file_size for i in infos) > size or any(
                i.compress_type != zipfile.ZIP_STORED or not i.filename.endswith(".npy")
                for i in infos):
            raise CheckpointError("not a checkpoint this trainer writes (compressed, "
                                  "oversized or foreign members)")
        arrays = {info.filename[:-4]: _read_member(archive, info) for info in infos}
    if "meta" not in arrays or arrays["meta"].dtype != np.uint8 or arrays["meta"].ndim != 1:
        raise CheckpointError("the meta document is missing")
    return arrays


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
    fmt = np.lib.format
    with archive.open(info) as member:
        version = fmt.read_magic(member)
        read_header = fmt.read_array_header_1_0 if version == (1, 0) else \
            fmt.read_array_header_2_0
        shape, fortran, dtype = read_header(member, max_header_size=10_000)
        count = math.prod(shape)
        if dtype not in DTYPES or count * dtype.itemsize != info.file_size - member.tell():
            raise CheckpointError(f"member {info.filename!r} declares {dtype} {list(shape)}, "
                                  f"which its stored bytes do not hold")
        data = member.read(count * dtype.itemsize)
        member.read()                       # to the end: the CRC check
    return np.frombuffer(data, dtype).reshape(shape, order="F" if fortran else "C").copy()


def _expect(condition: bool, what: str) -> None:
    if not condition:
        raise CheckpointError(what)


def _is_int(value, least: int = 0) -> bool:
    return type(value) is int and value >= least


def _check_meta(meta) -> None:
    """The JSON document's schema and the trainer position it records."""
    _expect(isinstance(meta, dict) and set(meta) == META_KEYS,
            f"the meta document must have exactly {', '.join(sorted(META_KEYS))}")
    _expect(meta["format_version"] == FORMAT_VERSION and _is_int(meta["format_version"]),
            "unsupported format version")
    _expect(isinstance(meta["layers"], list) and all(isinstance(v, dict)
                                                     for v in meta["layers"]),
            "'layers' must be a list of objects")
    _expect(isinstance(meta["optimizers"], dict) and all(
        isinstance(v, dict) and v.get("kind") in ("sgd", "adam")
        for v in meta["optimizers"].values()), "'optimizers' must map names to sgd/adam states")
    _expect(isinstance(meta["rng"], dict), "'rng' must be a generator state")
    progress = meta["progress"]
    _expect(isinstance(progress, dict) and set(progress) == PROGRESS_KEYS,
            f"'progress' must have exactly {', '.join(sorted(PROGRESS_KEYS))}")
    config = saved_config(progress["config"])
    _check_position(progress, config)


def saved_config(saved) -> "TrainConfig":
    """The run's options as recorded, validated (``TrainConfig.validate``)."""
    from .config import TrainConfig
    _expect(isinstance(saved, dict), "'config' must be an object")
    try:
        return TrainConfig.from_dict(saved).validate()
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"its run options are invalid ({str(exc)[:200]})") from None


def _check_position(progress: dict, config) -> None:
    """phase, epoch and history agree with each other and with the options."""
    phases = ([config.epochs_phase1 + config.epochs_phase2] if config.fp32 else
              [config.epochs_phase1, config.epochs_phase2])
    index, epoch = progress["phase_index"], progress["epoch"]
    _expect(_is_int(index) and index < len(phases), f"phase_index {index!r} is out of range")
    _expect(_is_int(epoch) and epoch <= phases[index],
            f"epoch {epoch!r} is out of range 0..{phases[index]}")
    history = progress["history"]
    _expect(isinstance(history, list) and len(history) == sum(phases[:index]) + epoch
            and all(isinstance(r, dict) for r in history),
            "the history does not match the epochs done")
    seconds = progress["train_seconds"]
    _expect(type(seconds) in (int, float) and math.isfinite(seconds) and seconds >= 0,
            "train_seconds must be a finite number >= 0")


def _put(name: str, target: np.ndarray, arrays: dict) -> None:
    """Copy a saved array into ``target`` in place (optimizers hold references to it)."""
    saved = arrays.get(name)
    if saved is None or saved.shape != target.shape or saved.dtype != target.dtype:
        raise CheckpointError(f"it does not fit this model: {name} is missing or has "
                              "another shape")
    target[...] = saved


def restore(arrays: dict, meta: dict, *, model, optimizers: dict, rng, path=None) -> dict:
    """Put the saved state back into ``model``, ``optimizers`` and ``rng``; return progress.
    ``path``: the checkpoint's, for the messages."""
    where = f"checkpoint {path}" if path is not None else "checkpoint"
    try:
        for name, p in model.params.items():
            _put(f"param/{name}", p, arrays)
        for (i, layer), state in zip(model.named_layers(), meta["layers"], strict=True):
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
                if not _is_int(state["t"]):
                    raise CheckpointError(f"optimizer {key!r}: step count must be an "
                                          f"integer >= 0")
                opt.t = state["t"]
                for name in opt.m:
                    _put(f"{prefix}/m/{name}", opt.m[name], arrays)
                    _put(f"{prefix}/v/{name}", opt.v[name], arrays)
        rng.bit_generator.state = meta["rng"]
        return meta["progress"]
    except CheckpointError as exc:
        raise CheckpointError(f"{where}: {exc}") from None
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError) as exc:
        raise CheckpointError(f"{where} does not fit this run ({type(exc).__name__}: "
                              f"{str(exc)[:200]})") from None


__all__ = ["FILE_NAME", "CheckpointError", "save", "load", "restore", "saved_config"]
