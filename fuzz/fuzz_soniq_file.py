"""Coverage-guided fuzzing of the .soniq loader with Atheris (libFuzzer for Python).

Not part of CI: tests/test_fileformat_attacks.py runs bounded Hypothesis attacks there.
This harness is for long runs::

    pip install atheris
    python fuzz/fuzz_soniq_file.py fuzz/corpus -max_total_time=3600 \\
        -rss_limit_mb=2048 -timeout=10

The first run writes seed files (real models) into the empty corpus folder. Every
input must either be refused with ``SoniqFileError`` or load as one of the seed
models, bit for bit: since the tensors and the manifest carry a SHA-256, a mutated
file that loads as anything else has slipped past a check.

With ``SONIQ_FUZZ_RESIGN=1`` the harness plays a forger instead: it recomputes every
digest of a mutated file before loading it, so that mutations reach the consistency
checks behind the digests. An accepted file must then be a model that runs: its
forward pass (when it is small enough to run quickly) gives float32 logits of the
right shape, and saving and loading it again gives the same logits. libFuzzer reports any
other exception as a crash, ``-timeout`` catches hangs and ``-rss_limit_mb`` an
allocation far beyond the input's size; the failing input is saved as ``crash-*``,
``timeout-*`` or ``oom-*``. Reproduce one with::

    python fuzz/fuzz_soniq_file.py crash-<hash>
"""

import hashlib
import json
import os
import struct
import sys
from pathlib import Path

import atheris
import numpy as np

with atheris.instrument_imports(include=["soniq_ref"]):
    from soniq_ref import container, fileformat
    from soniq_ref.deploy import DeployModel, QuantStage
    from soniq_ref.fileformat import SoniqFileError


def _linear_model() -> DeployModel:
    """One linear layer with mixed 1- and 4-bit weights, K ragged (70)."""
    rng = np.random.default_rng(0)
    bits = np.array([1, 4, 4, 1, 4], np.uint8)
    codes = (rng.integers(0, 16, (5, 70)) % (1 << bits.astype(np.int64))[:, None])
    stage = QuantStage("linear", codes.astype(np.uint8), bits, np.full(70, 8, np.uint8), 8,
                       (1, 4), (8, 8), 1, 0, rng.standard_normal(5).astype(np.float32),
                       rng.standard_normal(5).astype(np.float32))
    return DeployModel((70,), [stage])


def _trained_cnn() -> DeployModel:
    """conv, pool, conv (per-feature precision), pool, flatten, linear."""
    from soniq_ref.train import TrainConfig, train
    config = TrainConfig(epochs_phase1=1, epochs_phase2=1, limit_train=64, channels=(3, 5),
                         batch_size=32, seed=1)
    return train(config).deploy


def _trained_resnet() -> DeployModel:
    """conv, residual, residual_projection (x2), avgpool_linear."""
    from soniq_ref.train import TrainConfig, train
    config = TrainConfig(model="resnet", width=3, depth=8, epochs_phase1=1, epochs_phase2=1,
                         limit_train=64, batch_size=32, seed=1)
    return train(config).deploy


def _trained_vit() -> DeployModel:
    """patch_embed_cls, transformer_block (GELU), token_head."""
    from soniq_ref.train import TrainConfig, train
    config = TrainConfig(model="vit", dim=8, heads=2, depth=1, pool="cls",
                         mlp_activation="gelu", epochs_phase1=1, epochs_phase2=1,
                         limit_train=64, batch_size=32, seed=1)
    return train(config).deploy


SEEDS = {"linear.soniq": fileformat.to_bytes(_linear_model()),
         "cnn.soniq": fileformat.to_bytes(_trained_cnn()),
         "resnet.soniq": fileformat.to_bytes(_trained_resnet()),
         "vit.soniq": fileformat.to_bytes(_trained_vit())}
IMAGES = {}
LOGITS = {}
for _name, _raw in SEEDS.items():
    _model = fileformat.from_bytes(_raw)
    IMAGES[_raw] = np.random.default_rng(0).integers(0, 256, (16, *_model.input_shape)
                                                     ).astype(np.uint8)
    LOGITS[_raw] = _model.forward(IMAGES[_raw])


RESIGN = os.environ.get("SONIQ_FUZZ_RESIGN") == "1"
MAX_MACS = 10 ** 7          # forward passes larger than this are not run (time, not bugs)


def resign(data: bytes) -> bytes:
    """Recompute the tensor and manifest digests of ``data`` where its structure allows."""
    try:
        n = struct.unpack("<Q", data[:8])[0]
        header = json.loads(data[8:8 + n])
        meta = header["__metadata__"]
        manifest = json.loads(meta["soniq_manifest"])
        body = data[8 + n:]
        table = {k: v for k, v in header.items() if k not in ("__metadata__", "metadata")}
        manifest["tensors_sha256"] = hashlib.sha256(
            json.dumps(table, sort_keys=True, separators=(",", ":")).encode() + body
        ).hexdigest()
        meta["soniq_manifest"] = json.dumps(manifest)
        meta["soniq_manifest_sha256"] = hashlib.sha256(
            meta["soniq_manifest"].encode()).hexdigest()
        return container.encode_header(header) + body
    except Exception:       # not structured enough to re-sign: fuzz it as it is
        return data


def _macs(model) -> int:
    return sum(int(np.prod(s.w_codes.shape)) * 64 for s in model.quant_stages)


def check_forged(model) -> None:
    if _macs(model) > MAX_MACS or np.prod(model.input_shape) > 10 ** 5:
        return
    x = np.random.default_rng(0).integers(0, 256, (2, *model.input_shape)).astype(np.uint8)
    logits = model.forward(x)
    if logits.dtype != np.float32 or logits.shape != (2, model.n_classes):
        raise AssertionError(f"forward gave {logits.dtype} {logits.shape}")
    again = fileformat.from_bytes(fileformat.to_bytes(model)).forward(x)
    if not np.array_equal(again.view(np.uint32), logits.view(np.uint32)):
        raise AssertionError("save and load changed the logits")


def test_one_input(data: bytes) -> None:
    if RESIGN:
        data = resign(data)
    try:
        model = fileformat.from_bytes(data)
    except SoniqFileError:
        return
    if RESIGN:
        check_forged(model)
        return
    canonical = fileformat.to_bytes(model)
    if canonical not in LOGITS:
        raise AssertionError("a mutated file loaded as a model that is none of the seeds")
    logits = model.forward(IMAGES[canonical])
    if not np.array_equal(logits.view(np.uint32), LOGITS[canonical].view(np.uint32)):
        raise AssertionError("a mutated file loaded with different logits")


def _write_seeds(argv) -> None:
    """Fill an empty corpus folder (the first non-flag argument) with the seeds."""
    folders = [Path(a) for a in argv[1:] if not a.startswith("-")]
    if folders and (not folders[0].exists() or not any(folders[0].iterdir())):
        folders[0].mkdir(parents=True, exist_ok=True)
        for name, raw in SEEDS.items():
            (folders[0] / name).write_bytes(raw)


if __name__ == "__main__":
    _write_seeds(sys.argv)
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
