"""Files that are huge, odd or lie consistently: the signature checked first, bounded
reads, one descriptor, strict schema, geometry and sizes every backend can run, a
classifier at the end, per-feature bits constant in every pooling window, free-form
metadata that round-trips. Time and memory to refuse are checked against
docs/reliability.md: a file whose header does not account for its bytes is refused
after reading at most 64 bytes + the header (<= 1 MiB), whatever its size."""

import hashlib
import json
import os
import struct
import threading
import time
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, strategies as st

from soniq_ref import compact, container, fileformat
from soniq_ref.container import MAX_HEADER_BYTES, SIGNATURE
from soniq_ref.deploy import MAX_PREPARED, DeployModel, FlattenStage, QuantStage
from soniq_ref.fileformat import SoniqFileError
from test_fileformat_attacks import model, raw  # noqa: F401 (the trained model's fixtures)

REFUSE_SECONDS = 2.0
REFUSE_PEAK = 32 * MAX_HEADER_BYTES + (1 << 20)     # header JSON at worst + slack


def _images(shape, n=16):
    return np.random.default_rng(0).integers(0, 256, (n, *shape)).astype(np.uint8)


def _split(raw):
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    return header, json.loads(header["__metadata__"]["soniq_manifest"]), raw[8 + n:]


def _resigned(header, manifest, data, tensors=None):
    """Encode again with every digest recomputed, as a forger would; ``tensors`` (name ->
    bytes) replaces the data region."""
    if tensors is not None:
        data, offset = b"", 0
        for name in sorted(tensors):
            header[name]["data_offsets"] = [offset, offset + len(tensors[name])]
            offset += len(tensors[name])
            data += tensors[name]
    table = {name: e for name, e in header.items() if name not in ("__metadata__", "metadata")}
    manifest["tensors_sha256"] = hashlib.sha256(
        json.dumps(table, sort_keys=True, separators=(",", ":")).encode() + data).hexdigest()
    text = json.dumps(manifest, sort_keys=True, separators=(",", ":"))
    header["__metadata__"]["soniq_manifest"] = text
    header["__metadata__"]["soniq_manifest_sha256"] = hashlib.sha256(text.encode()).hexdigest()
    return container.encode_header(header) + data


def _tensor_bytes(header, data):
    return {name: data[slice(*e["data_offsets"])] for name, e in header.items()
            if name != "__metadata__"}


def _refused(data: bytes, match: str):
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(SoniqFileError, match=match) as info:
            fileformat.from_bytes(data)
    finally:
        elapsed, peak = time.perf_counter() - start, tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert "\n" not in str(info.value)
    assert elapsed < REFUSE_SECONDS and peak < REFUSE_PEAK, (elapsed, peak)


# ------------------------------------------------------------------- signature, version

@given(st.binary(min_size=0, max_size=300))
def test_anything_without_the_signature_is_not_a_soniq_file(blob):
    if len(blob) >= 8 + len(SIGNATURE) and blob[8:].startswith(SIGNATURE):
        return
    with pytest.raises(SoniqFileError, match="not a SONIQ model file|truncated"):
        fileformat.from_bytes(blob)


def test_a_version_1_file_is_refused_with_its_version(raw):
    header, manifest, data = _split(raw)
    del header["__metadata__"]["soniq_format"]
    manifest["format_version"] = 1
    header["__metadata__"]["soniq_manifest"] = json.dumps(manifest, sort_keys=True)
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    _refused(struct.pack("<Q", len(text)) + text + data, "format version 1")


def test_a_later_version_is_refused_with_its_version(raw):
    _refused(raw.replace(SIGNATURE + b'3"', SIGNATURE + b'4"', 1), "version '4'")


def test_a_version_2_file_is_refused_saying_what_to_do(raw):
    _refused(raw.replace(SIGNATURE + b'3"', SIGNATURE + b'2"', 1),
             "format version '2' is not supported; this reader reads version 3: the file was "
             "written by an older SONIQ; export the model again")


# ------------------------------------------------------------------------- huge files

@pytest.mark.parametrize("size", [3 << 30, 100 << 30])
def test_huge_sparse_files_are_refused_reading_almost_nothing(tmp_path, raw, size):
    for name, head in (("zeros", b""), ("model", raw)):
        path = tmp_path / f"{name}.soniq"
        path.write_bytes(head)
        try:
            os.truncate(path, size)
        except OSError as exc:
            pytest.skip(f"no sparse files here: {exc}")
        tracemalloc.start()
        start = time.perf_counter()
        with pytest.raises(SoniqFileError, match="not a SONIQ|unexpected bytes") as info:
            fileformat.load(path)
        elapsed, peak = time.perf_counter() - start, tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert str(path) in str(info.value)
        assert elapsed < REFUSE_SECONDS and peak < 2 * len(raw) + (1 << 20), (elapsed, peak)


@pytest.mark.parametrize("depth", [33, 1000, 300_000])
def test_deeply_nested_headers_are_refused_before_parsing(depth):
    payload = b'"a":' + b'{"a":' * depth + b"1" + b"}" * depth + b"}"
    _refused(struct.pack("<Q", len(SIGNATURE) + 4 + len(payload)) + SIGNATURE + b'3"},'
             + payload, "nested|exceeds the limit")


def test_a_header_over_the_limit_is_not_read(tmp_path):
    path = tmp_path / "big.soniq"
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", MAX_HEADER_BYTES + 8) + SIGNATURE + b'3"}')
    os.truncate(path, 60 << 20)
    tracemalloc.start()
    with pytest.raises(SoniqFileError, match="exceeds the limit"):
        fileformat.load(path)
    assert tracemalloc.get_traced_memory()[1] < 1 << 20
    tracemalloc.stop()


# ----------------------------------------------------------------------- special files

def _load_in_thread(path):
    result = {}
    thread = threading.Thread(target=lambda: result.update(
        error=pytest.raises(SoniqFileError, fileformat.load, path)), daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), f"load({path}) hangs"
    return result["error"].value


def test_fifos_and_links_to_them_never_block(tmp_path):
    fifo = tmp_path / "pipe.soniq"
    os.mkfifo(fifo)
    link = tmp_path / "link.soniq"
    link.symlink_to(fifo)
    for path in (fifo, link):
        assert "not a regular file" in str(_load_in_thread(path))


def test_load_opens_the_path_once(tmp_path, raw, monkeypatch):
    path = tmp_path / "m.soniq"
    path.write_bytes(raw)
    opened = []
    real_open = os.open
    monkeypatch.setattr(os, "open", lambda *a, **k: opened.append(a[0]) or real_open(*a, **k))
    fileformat.load(path)
    assert opened == [path]


# ----------------------------------------------------------------------- strict schema

def test_the_original_round_trips(model, raw):
    loaded = fileformat.from_bytes(raw)
    assert fileformat.to_bytes(loaded) == raw and loaded.metadata == {}


@pytest.mark.parametrize("edit, match", [
    (lambda h, m, t: t.update({"0.payload": b"\x00" * 8}) or h.update(
        {"0.payload": {"dtype": "U8", "shape": [8], "data_offsets": [0, 0]}}),
     "unexpected tensors.*0.payload"),
    (lambda h, m, t: m.update(n_classes=10.0), "n_classes"),
    (lambda h, m, t: m.update(format_version=True), "format_version"),
    (lambda h, m, t: m.update(format_version=3.0), "format_version"),
    (lambda h, m, t: m.update(comment="hi"), "does not define: comment"),
    (lambda h, m, t: m["stages"][1].update(note=1), "does not define: note"),
    (lambda h, m, t: m["stages"][-1].update(stride=2), "does not define: stride"),
    (lambda h, m, t: m.update(metadata=[1, 2]), "metadata"),
    (lambda h, m, t: h["__metadata__"].update(extra="x"), "does not define: extra"),
    (lambda h, m, t: m["stages"][1].update(stride=2 ** 31), "stride"),
    (lambda h, m, t: m["stages"][1].update(stride=2 ** 63), "stride"),
    (lambda h, m, t: m["stages"][0].update(stride=2 ** 31), "stride"),
    (lambda h, m, t: m["stages"][0].update(padding=2 ** 63), "padding"),
])
def test_content_outside_the_schema_is_refused(raw, edit, match):
    header, manifest, data = _split(raw)
    tensors = _tensor_bytes(header, data)
    edit(header, manifest, tensors)
    _refused(_resigned(header, manifest, data, tensors), match)


def test_out_bits_on_the_classifier_are_refused(raw):
    header, manifest, data = _split(raw)
    tensors = _tensor_bytes(header, data)
    last = len(manifest["stages"]) - 1
    n = manifest["n_classes"]
    tensors[f"{last}.out_bits"] = b"\x01" * n
    tensors[f"{last}.out_ratio"] = np.ones(n, "<f4").tobytes()
    header[f"{last}.out_bits"] = {"dtype": "U8", "shape": [n], "data_offsets": [0, 0]}
    header[f"{last}.out_ratio"] = {"dtype": "F32", "shape": [n], "data_offsets": [0, 0]}
    _refused(_resigned(header, manifest, data, tensors), "unexpected tensors")


def _linear(o, k, a_bits=8, seed=0):
    rng = np.random.default_rng(seed)
    return QuantStage("linear", rng.integers(0, 2, (o, k)).astype(np.uint8), np.ones(o, np.uint8),
                      np.full(k, a_bits, np.uint8), 8, (1, 4), (8, 8), 1, 0,
                      np.ones(o, np.float32), np.zeros(o, np.float32))


def test_a_convolution_as_the_last_stage_is_refused():
    rng = np.random.default_rng(0)
    conv = QuantStage("conv", rng.integers(0, 2, (10, 1, 4, 4)).astype(np.uint8),
                      np.ones(10, np.uint8), np.full(1, 8, np.uint8), 8, (1, 4), (8, 8), 1, 0,
                      np.ones(10, np.float32), np.zeros(10, np.float32))
    model = DeployModel((1, 4, 4), [conv])
    _refused(fileformat.to_bytes(model), "last stage must be a linear layer")
    with pytest.raises(ValueError, match="logits"):
        model.predict(_images((1, 4, 4)))


def test_an_input_shape_whose_size_wraps_int64_is_refused():
    model = DeployModel((1, 4, 4), [FlattenStage(), _linear(10, 16)])
    header, manifest, data = _split(fileformat.to_bytes(model))
    assert 16777232 * 1099510579201 % 2 ** 64 == 16
    manifest["input_shape"] = [1, 16777232, 1099510579201]
    _refused(_resigned(header, manifest, data), "elements|input_shape")


def test_per_feature_bits_through_overlapping_pooling_are_refused(raw):
    """A position read by two windows would need two features' bits at once."""
    header, manifest, data = _split(raw)
    per_feature = next(i for i, s in enumerate(manifest["stages"])
                       if s["type"] == "conv" and manifest["stages"][i + 2]["type"] == "flatten")
    assert manifest["stages"][per_feature + 1] == {"type": "maxpool", "kernel": 2, "stride": 2}
    manifest["stages"][per_feature + 1].update(kernel=3, stride=1)   # 4x4 -> 2x2 as before
    _refused(_resigned(header, manifest, data),
             f"stage {per_feature} \\(conv\\): per-feature precision through overlapping "
             f"pooling is not supported")


# ---------------------------------------------------------------------------- metadata

def test_metadata_round_trips(model, tmp_path):
    meta = {"dataset": "digits", "input_shape": [1, 8, 8], "class_names": list("0123456789"),
            "training": {"epochs": [1, 1], "lr": 0.003, "nested": {"a": [None, True]}}}
    path = tmp_path / "m.soniq"
    fileformat.save(model, path, metadata=meta)
    loaded = fileformat.load(path)
    assert loaded.metadata == meta
    np.testing.assert_array_equal(loaded.forward(_images(model.input_shape)),
                                  model.forward(_images(model.input_shape)))
    assert fileformat.to_bytes(loaded, loaded.metadata) == path.read_bytes()
    assert fileformat.to_bytes(loaded) == fileformat.to_bytes(model)   # only when given
    assert fileformat.from_bytes(fileformat.to_bytes(model)).metadata == {}


@pytest.mark.parametrize("edit", [
    lambda h, m: h["metadata"].update(dataset="mnist"),         # digest not recomputed
    lambda h, m: m.pop("metadata_sha256"),
    lambda h, m: h.pop("metadata"),
    lambda h, m: h.update(metadata=[1, 2]),
])
def test_edited_metadata_is_refused(model, edit):
    raw = fileformat.to_bytes(model, metadata={"dataset": "digits", "classes": 10})
    header, manifest, data = _split(raw)
    edit(header, manifest)
    text = json.dumps(manifest, sort_keys=True, separators=(",", ":"))
    header["__metadata__"]["soniq_manifest"] = text
    header["__metadata__"]["soniq_manifest_sha256"] = hashlib.sha256(text.encode()).hexdigest()
    _refused(container.encode_header(header) + data, "metadata")


@pytest.mark.parametrize("meta, error", [
    ([1], TypeError), ({"x": float("nan")}, ValueError), ({"x": object()}, ValueError),
    ({"x": "y" * MAX_HEADER_BYTES}, ValueError),
    ({"deep": json.loads("[" * 40 + "]" * 40)}, ValueError),
])
def test_metadata_that_cannot_be_recorded_is_refused_on_save(model, meta, error):
    with pytest.raises(error, match="metadata|header"):
        fileformat.to_bytes(model, metadata=meta)


# ------------------------------------------------------------------ wide files, caches

def test_a_wide_file_loads_fast():
    model = DeployModel((1,), [_linear(10 ** 6, 1)])
    data = fileformat.to_bytes(model)
    start = time.perf_counter()
    loaded = fileformat.from_bytes(data)
    assert time.perf_counter() - start < 3.0
    np.testing.assert_array_equal(loaded.stages[0].w_codes, model.stages[0].w_codes)


def test_codes_from_planes_inverts_weight_planes_for_mixed_bits():
    rng = np.random.default_rng(2)
    for o, k in ((0, 5), (1, 1), (7, 64), (300, 131)):
        bits = rng.integers(1, 9, o).astype(np.uint8)
        codes = (rng.integers(0, 256, (o, k)) % (1 << bits.astype(np.int64))[:, None]).astype(
            np.uint8)
        planes = compact.weight_stream(codes, bits)
        np.testing.assert_array_equal(compact.codes_from_stream(planes, bits, k), codes)


def test_the_backend_cache_of_a_deploy_model_is_bounded(model, backend):
    x = _images(model.input_shape, 2)
    want = model.forward(x, backend)
    for _ in range(3 * MAX_PREPARED):
        variant = backend.variant(backend.isa) if hasattr(backend, "isa") else \
            type(backend)(backend.runtime, backend.name) if hasattr(backend, "runtime") else backend
        np.testing.assert_array_equal(model.forward(x, variant), want)
    assert len(model._packed) <= MAX_PREPARED


def test_an_empty_batch_gives_empty_logits(model, backend):
    got = model.forward(np.zeros((0, *model.input_shape), np.uint8), backend)
    assert got.shape == (0, model.n_classes) and got.dtype == np.float32


def test_a_file_cut_inside_its_signature_is_truncated(raw):
    for cut in range(9, 8 + len(SIGNATURE) + 3):
        _refused(raw[:cut], "truncated")


def test_the_deepest_metadata_the_reader_takes_is_the_deepest_the_writer_writes(model):
    # header { metadata { "deep": [ ... ] } }: 2 + lists levels
    deepest = container.MAX_JSON_DEPTH - 2
    meta = {"deep": json.loads("[" * deepest + "]" * deepest)}
    assert fileformat.from_bytes(fileformat.to_bytes(model, metadata=meta)).metadata == meta
    with pytest.raises(ValueError, match="nesting"):
        fileformat.to_bytes(model, metadata={"deep": [meta["deep"]]})


def test_a_per_feature_requantization_wider_than_the_format_allows_is_refused(raw):
    """The loader rebuilds per-position bits and ratios; a tiny file must not make it
    allocate them for a huge feature map (pooling windows beyond 8 x 8 per feature)."""
    header, manifest, data = _split(raw)
    per_feature = next(i for i, s in enumerate(manifest["stages"])
                       if s["type"] == "conv" and manifest["stages"][i + 2]["type"] == "flatten")
    c, h, w = manifest["input_shape"]
    manifest["input_shape"] = [c, 40 * h, 40 * w]            # feature maps 40 x 40 larger,
    manifest["stages"][per_feature + 1].update(kernel=80, stride=80)   # pooled to 2 x 2
    _refused(_resigned(header, manifest, data),
             f"stage {per_feature} \\(conv\\): its output has .* per feature the format allows")
