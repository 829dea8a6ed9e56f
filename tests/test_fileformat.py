"""The .soniq file: round trip, determinism, safetensors compatibility, atomic writes,
and refusal of truncated, tampered, mismatched or oversized files with SoniqFileError."""

import hashlib
import json
import os
import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from soniq_ref import compact, container, fileformat
from soniq_ref.fileformat import SoniqFileError
from soniq_ref.train import TrainConfig, train

X = np.random.default_rng(0).integers(0, 256, (5, 1, 8, 8)).astype(np.uint8)


@pytest.fixture(scope="module")
def model():
    config = TrainConfig(epochs_phase1=1, epochs_phase2=0, limit_train=64, channels=(3, 5),
                         batch_size=32, seed=2)
    return train(config).deploy


@pytest.fixture(scope="module")
def raw(model):
    return fileformat.to_bytes(model)


def _same_logits(a, b):
    return np.array_equal(a.forward(X).view(np.uint32), b.forward(X).view(np.uint32))


def test_round_trip_is_exact(model, raw, tmp_path):
    size = fileformat.save(model, tmp_path / "m.soniq")
    assert size == len(raw) == (tmp_path / "m.soniq").stat().st_size
    back = fileformat.load(tmp_path / "m.soniq")
    assert back.input_shape == model.input_shape and len(back.stages) == len(model.stages)
    for a, b in zip(model.quant_stages, back.quant_stages):
        for name in ("w_codes", "w_bits", "a_bits", "scale", "bias"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert _same_logits(model, back)
    assert fileformat.to_bytes(back) == raw


def test_bytes_are_deterministic(model, raw):
    assert fileformat.to_bytes(model) == raw


def test_a_safetensors_reader_sees_the_same_tensors(raw, tmp_path):
    st_numpy = pytest.importorskip("safetensors.numpy",
                                   reason="pip install safetensors to cross-check the container")
    path = tmp_path / "m.soniq"
    path.write_bytes(raw)
    tensors = st_numpy.load_file(str(path))
    header, start = container.read_header(container.BytesSource(raw), fileformat.FORMAT_VERSION)
    ours = container.tensors(container.tensor_spans(header, len(raw) - start),
                             memoryview(raw)[start:])
    assert set(tensors) == set(ours)
    for name in ours:
        np.testing.assert_array_equal(tensors[name], ours[name])


def test_weights_are_stored_bit_packed(model):
    stage = model.quant_stages[1]
    planes = compact.weight_stream(stage.w_codes, stage.w_bits)
    k = stage.w_codes[0].size
    assert planes.shape == ((k * int(stage.w_bits.sum()) + 7) // 8,)   # a weight: its bits
    codes = compact.codes_from_stream(planes, stage.w_bits, k)
    np.testing.assert_array_equal(codes.reshape(stage.w_codes.shape), stage.w_codes)


@given(st.data())
def test_any_truncation_is_refused(raw, data):
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(SoniqFileError):
        fileformat.from_bytes(raw[:cut])


@given(st.data())
def test_any_corrupted_byte_is_refused_or_harmless(model, raw, data):
    """Never a crash: a flipped byte is refused, or (a header byte that JSON ignores)
    changes nothing."""
    pos = data.draw(st.integers(0, len(raw) - 1))
    flip = data.draw(st.integers(1, 255))
    bad = bytearray(raw)
    bad[pos] ^= flip
    header_end = 8 + struct.unpack("<Q", raw[:8])[0]
    try:
        loaded = fileformat.from_bytes(bytes(bad))
    except SoniqFileError:
        return
    assert pos < header_end, "a changed tensor byte must fail its SHA-256 check"
    assert _same_logits(model, loaded)


def _rewrite(raw, edit_header=None, edit_manifest=None, rehash=True):
    """Decode, edit header / manifest dicts in place, encode again."""
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    data = raw[8 + n:]
    manifest = json.loads(header["__metadata__"]["soniq_manifest"])
    if edit_header:
        edit_header(header, manifest)
    if edit_manifest:
        edit_manifest(manifest)
    if rehash:      # the forger signs the tensors the file had (as docs/file-format.md says)
        known = {k: v for k, v in header.items() if k in _tensor_names(raw)}
        table = json.dumps(known, sort_keys=True, separators=(",", ":")).encode()
        manifest["tensors_sha256"] = hashlib.sha256(table + data).hexdigest()
    header["__metadata__"]["soniq_manifest"] = json.dumps(manifest)
    return container.encode_header(header) + data


def _tensor_names(raw):
    n = struct.unpack("<Q", raw[:8])[0]
    return set(json.loads(raw[8:8 + n])) - {"__metadata__", "metadata"}


def _set(path, value):
    def edit(manifest):
        target = manifest
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return edit


@pytest.mark.parametrize("edit, message", [
    (_set(["format_version"], 1), "format_version"),
    (_set(["format_version"], 2), "format_version"),
    (_set(["format_version"], 4), "format_version"),
    (_set(["format"], "onnx"), "format"),
    (_set(["n_classes"], 11), "n_classes"),
    (_set(["input_shape"], [1, 16, 16]), r"stage 5 \(linear\): weights expect input \[20\]"),
    (_set(["input_shape"], [1, 8]), "input_shape"),
    (_set(["stages", 0, "type"], "attention"), "unknown type"),
    (_set(["stages", 0, "weight_palette"], [1, 2]), "0.weight_planes"),
    (_set(["stages", 0, "weight_palette"], [4, 1]), "weight_palette"),
    (_set(["stages", 0, "act_bits_hi"], 7), "does not define: act_bits_hi"),
    (_set(["stages", 0, "stride"], 0), "stride"),
    (_set(["stages", 0, "weight_shape"], [3, 1, 3]), "weight_shape"),
    (_set(["stages", 0, "weight_shape"], [3, 2, 3, 3]), "input channels"),
    (_set(["stages", 1, "kernel"], 100), "kernel"),
    (_set(["stages", 0, "per_feature"], True), "does not define: per_feature"),
    (_set(["stages", 2, "per_feature"], False), "does not define: per_feature"),
    (_set(["stages", 0, "out_clip"], 0.1), "out_clip"),
    (_set(["stages", 0, "out_clip"], 1e-45), "out_clip|too small"),
    (lambda m: m["stages"].pop(), "n_classes|unexpected tensors|last stage"),
    (lambda m: m.pop("tensors_sha256"), "sha256"),
])
def test_inconsistent_manifests_are_refused(raw, edit, message):
    with pytest.raises(SoniqFileError, match=message):
        fileformat.from_bytes(_rewrite(raw, edit_manifest=edit))


def _first_tensor(header):
    return next(k for k in sorted(header) if k != "__metadata__")


@pytest.mark.parametrize("edit, message", [
    (lambda h, m: h[_first_tensor(h)].update(dtype="F64"), "dtype"),
    (lambda h, m: h[_first_tensor(h)].update(shape=[2 ** 62, 2 ** 62]), "needs"),
    (lambda h, m: h[_first_tensor(h)].update(data_offsets=[0, 2 ** 60]), "outside"),
    (lambda h, m: h["0.weight_levels"].update(shape=[1, h["0.weight_levels"]["shape"][0]]),
     "0.weight_levels"),
    (lambda h, m: h.pop("0.scale"), "contiguous"),
    (lambda h, m: h.__setitem__("9.extra", {"dtype": "U8", "shape": [0],
                                             "data_offsets": [0, 0]}), "sha256"),
])
def test_inconsistent_headers_are_refused(raw, edit, message):
    with pytest.raises(SoniqFileError, match=message):
        fileformat.from_bytes(_rewrite(raw, edit_header=edit))


def test_a_plain_safetensors_file_is_not_a_soniq_file(raw):
    text = json.dumps({"w": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]}}).encode()
    with pytest.raises(SoniqFileError, match="not a SONIQ model file"):
        fileformat.from_bytes(struct.pack("<Q", len(text)) + text + b"\x01\x02")


def test_tampered_tensor_values_are_refused_even_with_a_fresh_digest(raw, model):
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    b, e = header["0.weight_levels"]["data_offsets"]
    data = bytearray(raw[8 + n:])
    data[b] |= 0x80                           # a level for channel 7 of 3: no such channel
    bad = raw[:8 + n] + bytes(data)
    with pytest.raises(SoniqFileError, match="SHA-256"):
        fileformat.from_bytes(bad)
    with pytest.raises(SoniqFileError, match="0.weight_levels' selects levels beyond"):
        fileformat.from_bytes(_rewrite(bad))

    def pixels_at_two_bits(header, manifest):  # the first layer reading 2-bit codes
        manifest["stages"][0]["act_palette"] = [2, 8]
    b, e = header["0.input_levels"]["data_offsets"]
    data = bytearray(raw[8 + n:])
    data[b] = 0
    with pytest.raises(SoniqFileError, match="first layer reads 8-bit pixels"):
        fileformat.from_bytes(_rewrite(raw[:8 + n] + bytes(data),
                                       edit_header=pixels_at_two_bits))


def test_container_level_defects(raw, tmp_path):
    with pytest.raises(SoniqFileError, match="truncated"):
        fileformat.from_bytes(b"\x01\x02")
    signed = container.SIGNATURE + b'3"}'
    with pytest.raises(SoniqFileError, match="exceeds the limit"):
        fileformat.from_bytes(struct.pack("<Q", 2 ** 63) + signed)
    with pytest.raises(SoniqFileError, match="truncated"):
        fileformat.from_bytes(struct.pack("<Q", 1000) + signed)
    with pytest.raises(SoniqFileError, match="JSON"):
        fileformat.from_bytes(struct.pack("<Q", len(signed) + 4) + signed + b"{{{{")
    with pytest.raises(SoniqFileError, match="unexpected bytes"):
        fileformat.from_bytes(raw + b"\x00" * 8)
    with pytest.raises(SoniqFileError, match="cannot read"):
        fileformat.load(tmp_path / "missing.soniq")
    assert issubclass(SoniqFileError, ValueError)


def test_writes_are_atomic(model, raw, tmp_path, monkeypatch):
    path = tmp_path / "m.soniq"
    path.write_bytes(b"previous contents")

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        fileformat.save(model, path)
    assert path.read_bytes() == b"previous contents"
    assert os.listdir(tmp_path) == ["m.soniq"]          # no temporary file left behind
    monkeypatch.undo()
    fileformat.save(model, path)
    assert path.read_bytes() == raw and os.listdir(tmp_path) == ["m.soniq"]


# ------------------------------------------------------------------ compact version 3

def test_a_loaded_model_gives_bit_identical_float32_logits_on_every_backend(model, raw,
                                                                              backend):
    """What the file leaves out (each requantization) is rebuilt exactly."""
    back = fileformat.from_bytes(raw)
    for a, b in zip(model.quant_stages, back.quant_stages):
        assert a.per_feature == b.per_feature
        if a.out_bits is not None:
            np.testing.assert_array_equal(a.out_bits, b.out_bits)
            np.testing.assert_array_equal(a.out_ratio.view(np.uint32), b.out_ratio.view(np.uint32))
    assert any(s.per_feature for s in back.quant_stages)
    x = np.random.default_rng(3).integers(0, 256, (33, *model.input_shape)).astype(np.uint8)
    np.testing.assert_array_equal(back.forward(x, backend).view(np.uint32),
                                  model.forward(x, "ref").view(np.uint32))


def test_what_the_format_cannot_store_is_refused_on_save(model):
    import copy
    odd = copy.deepcopy(model)
    odd.quant_stages[0].out_ratio = odd.quant_stages[0].out_ratio * np.float32(1.5)
    with pytest.raises(ValueError, match="stage 0 .*out_ratio do not follow"):
        fileformat.to_bytes(odd)
    odd = copy.deepcopy(model)
    odd.quant_stages[0].out_clip = None
    with pytest.raises(ValueError, match="stage 0 .*no out_clip"):
        fileformat.to_bytes(odd)
    odd = copy.deepcopy(model)
    odd.quant_stages[1].w_bits = np.full_like(odd.quant_stages[1].w_bits, 3)
    with pytest.raises(ValueError, match="stage 2 .*not all levels of the palette"):
        fileformat.to_bytes(odd)


def test_the_default_fashion_mnist_cnn_at_two_weight_bits_is_12x_smaller():
    """The default CNN on 28 x 28 images, a third of its weights at 4 bits (2.0 mean
    weight bits), with a training run's metadata: at least 12x smaller than float32."""
    from soniq_ref.deploy import DeployModel
    from soniq_ref.models import cnn

    net = cnn((1, 28, 28), 10)
    rng = np.random.default_rng(0)
    net.set_mode("noise")
    net.eval()
    net.forward(rng.random((4, 1, 28, 28), np.float32))          # initialises the clips
    for layer in net.quant_layers():
        o, k = layer.params["weight"].shape[0], layer.params["weight"][0].size
        w_bits = np.ones(o, np.uint8)
        w_bits[:o // 3] = 4                                       # 1/3 at 4 bits: 2.0
        a_bits = None if layer.first_layer else \
            rng.choice(layer.act_palette, layer.params["theta_a"].shape[0]).astype(np.uint8)
        layer.set_bits(w_bits, a_bits)
    net.set_mode("exact")
    deploy = DeployModel.from_model(net, (1, 28, 28))
    assert deploy.mean_weight_bits() <= 2.0 + 1e-9
    metadata = {"dataset": "fashion-mnist", "input_shape": [1, 28, 28],
                "class_names": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"],
                "soniq_version": "0.1.0",
                "training": {"model": "cnn", "weight_palette": [1, 4], "act_palette": [2, 8],
                             "target_weight_bits": 2.0, "target_act_bits": 4.0, "lr": 0.003,
                             "batch_size": 64, "epochs_phase1": 30, "epochs_phase2": 15,
                             "seed": 0, "optimizer": "adam", "fp32": False,
                             "data_dir": "/usr/share/datasets/fashion-mnist",
                             "backend": "ref", "threads": 1}}
    size = len(fileformat.to_bytes(deploy, metadata))
    assert deploy.float32_bytes() / size >= 12, (deploy.float32_bytes(), size)
