"""Checkpoints that lie: a real ``checkpoint.npz`` truncated, flipped, or with edited
members and meta document. Loading (and resuming from) it either works -- the same
state -- or is refused with ``CheckpointError`` naming the file; never a traceback of
another kind, never an allocation the file's bytes do not account for."""

import copy
import io
import json
import struct
import tracemalloc
import zipfile

import numpy as np
import pytest
from hypothesis import given, strategies as st

from soniq_ref.train import TrainConfig, checkpoint, train
from soniq_ref.train.checkpoint import CheckpointError
from strategies import json_paths

CONFIG = dict(model="mlp", hidden=(8,), epochs_phase1=1, epochs_phase2=1, limit_train=64,
              limit_test=32, batch_size=32)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    config = TrainConfig(**CONFIG)
    train(config, run_dir=out)
    return out


@pytest.fixture(scope="module")
def raw(run_dir):
    return (run_dir / checkpoint.FILE_NAME).read_bytes()


@pytest.fixture(scope="module")
def original(run_dir):
    return checkpoint.load(run_dir)


def _members(raw: bytes) -> dict:
    with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def _npz(members: dict) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **members)
    return buffer.getvalue()


def _with_meta(raw: bytes, edit) -> bytes:
    members = _members(raw)
    meta = json.loads(members["meta"].tobytes())
    edit(meta)
    members["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    return _npz(members)


def _load(tmp_path, data: bytes):
    """load() watched: -> (arrays, meta) or None when refused with a one-line message
    naming the file; the peak allocation stays within a few times the file's size."""
    (tmp_path / checkpoint.FILE_NAME).write_bytes(data)
    tracemalloc.start()
    try:
        return checkpoint.load(tmp_path)
    except CheckpointError as exc:
        message = str(exc)
        assert checkpoint.FILE_NAME in message and "\n" not in message, message
        return None
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak <= 4 * len(data) + (1 << 20), f"peak {peak} for {len(data)} bytes"


def _same(loaded, original):
    arrays, meta = loaded
    assert meta == original[1] and set(arrays) == set(original[0])
    for name, value in arrays.items():
        np.testing.assert_array_equal(value, original[0][name])


def test_the_original_loads(tmp_path, raw, original):
    _same(_load(tmp_path, raw), original)


@pytest.mark.parametrize("data", [b"", b"PK", b"\x00" * 100, b"PK\x03\x04" + b"\xff" * 60],
                         ids=["empty", "two-bytes", "zeros", "bad-zip"])
def test_not_a_checkpoint(tmp_path, data):
    assert _load(tmp_path, data) is None


@given(cut=st.integers(0, 10 ** 9))
def test_truncated_anywhere(tmp_path_factory, raw, cut):
    tmp = tmp_path_factory.mktemp("cut")
    assert _load(tmp, raw[:cut % len(raw)]) is None


@given(data=st.data())
def test_flipped_bytes_anywhere(tmp_path_factory, raw, original, data):
    """Refused, or (a byte the zip format ignores, e.g. a timestamp) the same state."""
    tmp = tmp_path_factory.mktemp("flip")
    pos = data.draw(st.integers(0, len(raw) - 1))
    bad = bytearray(raw)
    bad[pos] ^= data.draw(st.integers(1, 255))
    loaded = _load(tmp, bytes(bad))
    if loaded is not None:
        _same(loaded, original)


def _member_with_shape(raw, name, shape_text: bytes) -> bytes:
    """The checkpoint with member ``name``'s npy header declaring another shape."""
    members = _members(raw)
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, members[name])
    npy = buffer.getvalue()
    header_len = struct.unpack("<H", npy[8:10])[0]
    header = npy[10:10 + header_len]
    start = header.index(b"'shape': ") + len(b"'shape': ")
    end = header.index(b")", start) + 1
    new = header[:start] + shape_text + header[end:]
    new = new.rstrip(b" \n").ljust(header_len - 1) + b"\n"
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        for key, value in members.items():
            item = io.BytesIO()
            np.lib.format.write_array(item, value)
            body = item.getvalue()
            if key == name:
                body = npy[:8] + struct.pack("<H", header_len) + new + npy[10 + header_len:]
            archive.writestr(key + ".npy", body)
    return out.getvalue()


@pytest.mark.parametrize("shape", [b"(1099511627776,)", b"(4294967296, 4294967296)",
                                   b"(0,)", b"(-1,)", b"(3, 3)"])
def test_members_declaring_other_sizes_allocate_nothing(tmp_path, raw, shape):
    name = next(k for k in _members(raw) if k.startswith("param/"))
    assert _load(tmp_path, _member_with_shape(raw, name, shape)) is None


def test_compressed_members_are_refused(tmp_path, raw):
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **_members(raw))
    assert _load(tmp_path, buffer.getvalue()) is None


@pytest.mark.parametrize("edit", [
    lambda m: m.pop("progress"),
    lambda m: m.update(progress=None),
    lambda m: m["progress"].update(epoch=-5),
    lambda m: m["progress"].update(epoch=10 ** 6),
    lambda m: m["progress"].update(epoch=True),
    lambda m: m["progress"].update(phase_index=7),
    lambda m: m["progress"].pop("history"),
    lambda m: m["progress"]["history"].pop(),
    lambda m: m["progress"].update(train_seconds=float("nan")),
    lambda m: m["progress"]["config"].update(hidden=[2 ** 40]),
    lambda m: m["progress"]["config"].update(channels=[2 ** 20, 2 ** 20]),
    lambda m: m["progress"]["config"].update(batch_size=0),
    lambda m: m["progress"]["config"].update(unknown=1),
    lambda m: m["progress"]["config"].update(dataset="imagenet"),
    lambda m: m["progress"].update(config=[]),
    lambda m: m.update(layers={}),
    lambda m: m.update(optimizers=[]),
    lambda m: m.update(rng=3),
    lambda m: m.update(format_version=2),
    lambda m: m.update(extra=1),
], ids=lambda f: "")
def test_edited_meta_is_refused(tmp_path, raw, edit):
    assert _load(tmp_path, _with_meta(raw, edit)) is None


_HOSTILE = st.one_of(st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70),
                     st.floats(allow_nan=True), st.text(max_size=8),
                     st.lists(st.integers(-3, 2 ** 40), max_size=3),
                     st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


@given(data=st.data())
def test_random_meta_edits_are_refused_or_resume(tmp_path_factory, raw, original, data):
    """Any value of the meta document replaced: load() refuses it, or what it returns
    restores into the run's model or is refused by restore() -- both CheckpointError."""
    meta = json.loads(_members(raw)["meta"].tobytes())
    path = data.draw(st.sampled_from([p for p in json_paths(meta) if p]))
    value = data.draw(_HOSTILE)

    def edit(m):
        target = m
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    tmp = tmp_path_factory.mktemp("meta")
    loaded = _load(tmp, _with_meta(raw, edit))
    if loaded is not None:
        _restore_or_refuse(loaded)


def _restore_or_refuse(loaded):
    """Rebuild the run's model and optimizers the way the trainer does and restore."""
    from soniq_ref.data import load_dataset
    from soniq_ref.models import build_model
    from soniq_ref.train.trainer import _optimizers, _limit
    config = checkpoint.saved_config(loaded[1]["progress"]["config"])
    data = _limit(load_dataset(config.dataset, config.data_dir), config)
    model = build_model(config.model, data.input_shape, data.n_classes, hidden=config.hidden,
                        weight_palette=config.weight_palette, act_palette=config.act_palette,
                        seed=config.seed) if config.model == "mlp" else None
    if model is None:
        return None
    opt, theta_opt, _ = _optimizers(model, config, 1.0)
    try:
        checkpoint.restore(*copy.deepcopy(loaded), model=model, rng=np.random.default_rng(0),
                           optimizers={"main": opt, "theta": theta_opt}, path="ckpt")
    except CheckpointError as exc:
        assert "ckpt" in str(exc)
        return False
    return True


def test_the_original_restores(original):
    assert _restore_or_refuse(original)


def test_resume_from_an_edited_checkpoint_is_one_line(tmp_path, raw):
    """The command line: one line naming the checkpoint, no traceback."""
    import subprocess
    import sys
    (tmp_path / checkpoint.FILE_NAME).write_bytes(
        _with_meta(raw, lambda m: m["progress"].update(epoch=-5)))
    done = subprocess.run([sys.executable, "-m", "soniq_ref.cli", "train", "--quiet",
                           "--resume", str(tmp_path)], capture_output=True, text=True,
                          timeout=300)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1, done.stderr
    assert checkpoint.FILE_NAME in lines[0] and "epoch" in lines[0]
