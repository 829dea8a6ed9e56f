"""A real .soniq file under attack: truncation at every section boundary and at random
offsets, flipped bits and overwritten bytes anywhere, edited header and manifest fields
(with and without recomputed digests), wrong versions, shapes that disagree with bits,
huge declared sizes, duplicate and missing tensors, hostile JSON.

Every attempt must end in one of two ways, both checked here:

* refused with :class:`SoniqFileError` (a ``ValueError``) and a one-line message; or
* accepted, and then the loaded model computes the original's logits bit for bit
  (only bytes the format ignores, such as JSON whitespace, may change silently).

Any other exception fails the test. Each load also runs under ``tracemalloc`` and a
clock: the loader's peak must stay within :func:`loader_peak_bound` (docs/reliability.md)
and a load must finish in seconds, not hang.
"""

import hashlib
import json
import re
import struct
import time
import tracemalloc

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from soniq_ref import container, fileformat
from soniq_ref.container import MAX_HEADER_BYTES, SIGNATURE
from soniq_ref.deploy import DeployModel, QuantStage
from soniq_ref.fileformat import SoniqFileError
from soniq_ref.train import TrainConfig, train
from strategies import json_paths

SLOW_LOAD_SECONDS = 10.0      # the tiny model loads in milliseconds; this catches hangs
JSON_FACTOR = 32              # Python objects per byte of header JSON, at worst
DATA_FACTOR = 10              # tensor copies + uint8 codes (8 per packed 1-bit weight)
SLACK_BYTES = 1 << 20
# the field-editing tests have the most ground to cover: twice the profile's examples
MORE_EXAMPLES = settings(max_examples=2 * settings.default.max_examples)


def loader_peak_bound(raw: bytes) -> int:
    """Documented loader bound: 32 x header bytes + 10 x tensor bytes + 1 MiB."""
    declared = struct.unpack("<Q", raw[:8])[0] if len(raw) >= 8 else 0
    header = min(declared, max(len(raw) - 8, 0))
    return JSON_FACTOR * header + DATA_FACTOR * (len(raw) - 8 - header) + SLACK_BYTES


def _images(input_shape, n=48, seed=0):
    """Random pixels plus the extremes (all 0, all 255)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, *input_shape)).astype(np.uint8)
    x[0], x[1] = 0, 255
    return x


@pytest.fixture(scope="module")
def model():
    config = TrainConfig(epochs_phase1=1, epochs_phase2=1, limit_train=96, channels=(3, 5),
                         batch_size=32, seed=11)
    return train(config).deploy


@pytest.fixture(scope="module")
def raw(model):
    return fileformat.to_bytes(model)


@pytest.fixture(scope="module")
def logits(model):
    return model.forward(_images(model.input_shape))


def attempt(data: bytes):
    """Load ``data`` watched: -> (model, None), or (None, message) when refused with
    SoniqFileError. Any other exception propagates and fails the test."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        loaded, message = fileformat.from_bytes(data), None
    except SoniqFileError as exc:
        loaded, message = None, str(exc)
        assert message.strip() and "\n" not in message, f"unclear message {message!r}"
    finally:
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert elapsed < SLOW_LOAD_SECONDS, f"load took {elapsed:.1f} s"
    assert peak <= loader_peak_bound(data), \
        f"loader peak {peak} bytes exceeds the bound {loader_peak_bound(data)} " \
        f"for a {len(data)}-byte file"
    return loaded, message


def assert_refused_or_same(data: bytes, logits) -> None:
    loaded, _ = attempt(data)
    if loaded is not None:
        got = loaded.forward(_images(loaded.input_shape))
        assert got.shape == logits.shape
        np.testing.assert_array_equal(got.view(np.uint32), logits.view(np.uint32))


def assert_refused(data: bytes, match: str | None = None) -> None:
    loaded, message = attempt(data)
    assert loaded is None, "a corrupted file was accepted"
    assert match is None or re.search(match, message), f"{message!r} does not match {match!r}"


# ------------------------------------------------------------------------- helpers

def _split(raw):
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    manifest = json.loads(header["__metadata__"]["soniq_manifest"])
    return header, manifest, raw[8 + n:]


def _pack(header, manifest, data, resign=True, text=None, unsigned=()):
    """Encode again; ``resign`` recomputes every digest as a forger would (the tensor
    digest over the tensor table, less the entries named in ``unsigned``, and the data)."""
    header = json.loads(json.dumps(header))
    if resign and isinstance(manifest, dict) and "tensors_sha256" in manifest:
        table = {k: v for k, v in header.items()
                 if k not in ("__metadata__", "metadata") and k not in unsigned}
        manifest["tensors_sha256"] = hashlib.sha256(
            json.dumps(table, sort_keys=True, separators=(",", ":")).encode() + data).hexdigest()
    manifest_text = json.dumps(manifest, sort_keys=True, separators=(",", ":"))
    meta = header.setdefault("__metadata__", {})
    if isinstance(meta, dict):
        meta["soniq_manifest"] = manifest_text
        if resign:
            meta["soniq_manifest_sha256"] = hashlib.sha256(manifest_text.encode()).hexdigest()
    if text is None:
        return container.encode_header(header) + data
    return struct.pack("<Q", len(text)) + text + data


def _boundaries(raw):
    """Every section boundary: length prefix, header end, each tensor's start and end."""
    n = struct.unpack("<Q", raw[:8])[0]
    header, _, _ = _split(raw)
    cuts = {0, 1, 7, 8, 9, 8 + n - 1, 8 + n, 8 + n + 1}
    for name, entry in header.items():
        if name != "__metadata__":
            for offset in entry["data_offsets"]:
                cuts.update({8 + n + offset - 1, 8 + n + offset, 8 + n + offset + 1})
    return sorted(c for c in cuts if 0 <= c < len(raw))


def _get(value, path):
    for key in path:
        value = value[key]
    return value


HOSTILE_INTS = [0, 1, -1, 2, 3, 7, 8, 9, 63, 64, 65, 255, 256, 2 ** 31, 2 ** 32, 2 ** 53 + 1,
                2 ** 63, 2 ** 64 + 5, -2 ** 63, 10 ** 30]


def hostile_values(original):
    """Values an attacker or a bit rot might put in place of ``original``."""
    near = []
    if isinstance(original, int) and not isinstance(original, bool):
        near = [original - 1, original + 1, 2 * original, -original]
    if isinstance(original, list) and original:
        near = [original[:-1], original + original[-1:], original[::-1],
                [v + 1 if isinstance(v, int) else v for v in original]]
    scalars = st.one_of(st.sampled_from(HOSTILE_INTS), st.integers(-2 ** 70, 2 ** 70),
                        st.booleans(), st.none(), st.floats(allow_nan=True),
                        st.text(max_size=6), st.sampled_from(["U8", "U64", "F32", "F64",
                                                               "linear", "conv", "flatten",
                                                               "maxpool", "soniq", "residual",
                                                               "residual_projection",
                                                               "avgpool_linear"]))
    lists = st.lists(st.one_of(st.sampled_from(HOSTILE_INTS), st.integers(-3, 300)),
                     max_size=5)
    return st.one_of(st.sampled_from(near) if near else st.nothing(), scalars, lists,
                     st.dictionaries(st.text(max_size=4), scalars, max_size=2))


@st.composite
def edits(draw, document):
    """(path, operation, value): replace a value, delete a key or item, add a key."""
    paths = [p for p in json_paths(document) if p]
    path = draw(st.sampled_from(paths))
    op = draw(st.sampled_from(["replace", "replace", "replace", "delete", "add"]))
    value = draw(hostile_values(_get(document, path))) if op != "delete" else None
    return path, op, value


def _apply(document, edit):
    path, op, value = edit
    parent = _get(document, path[:-1])
    if op == "replace":
        parent[path[-1]] = value
    elif op == "delete":
        del parent[path[-1]]
    elif isinstance(parent, dict):
        parent[f"extra_{path[-1]}"] = value
    else:
        parent.insert(path[-1], value)


# ------------------------------------------------------------------------- the model itself

def test_the_original_loads_and_round_trips(model, raw, logits):
    loaded, message = attempt(raw)
    assert message is None and fileformat.to_bytes(loaded) == raw
    np.testing.assert_array_equal(loaded.forward(_images(model.input_shape)).view(np.uint32),
                                  logits.view(np.uint32))
    kinds = [type(s).__name__ for s in model.stages]
    assert kinds.count("QuantStage") == 3 and "PoolStage" in kinds and "FlattenStage" in kinds
    assert any(s.per_feature for s in model.quant_stages)


# ------------------------------------------------------------------------- truncation

def test_truncation_at_every_section_boundary(raw):
    cuts = _boundaries(raw)
    assert len(cuts) > 40
    for cut in cuts:
        assert_refused(raw[:cut])


@given(st.data())
def test_truncation_at_random_offsets_and_trailing_bytes(raw, data):
    assert_refused(raw[:data.draw(st.integers(0, len(raw) - 1))])
    tail = data.draw(st.binary(min_size=1, max_size=64))
    assert_refused(raw + tail, "unexpected bytes|JSON|truncated|contiguous")


# ------------------------------------------------------------------------- bit rot

@given(st.lists(st.tuples(st.integers(0, 2 ** 31), st.integers(0, 7)), min_size=1,
                max_size=3))
def test_flipped_bits_anywhere(raw, logits, flips):
    bad = bytearray(raw)
    for position, bit in flips:
        bad[position % len(raw)] ^= 1 << bit
    assert_refused_or_same(bytes(bad), logits)


@given(st.data())
def test_overwritten_bytes_anywhere(raw, logits, data):
    start = data.draw(st.integers(0, len(raw) - 1))
    junk = data.draw(st.binary(min_size=1, max_size=16))
    bad = bytearray(raw)
    bad[start:start + len(junk)] = junk[:len(raw) - start]
    assert_refused_or_same(bytes(bad), logits)


@given(st.data())
def test_any_changed_tensor_byte_is_refused(raw, data):
    """The tensor bytes are digest-protected: no change there may load."""
    n = struct.unpack("<Q", raw[:8])[0]
    position = data.draw(st.integers(8 + n, len(raw) - 1))
    bad = bytearray(raw)
    bad[position] ^= data.draw(st.integers(1, 255))
    assert_refused(bytes(bad), "SHA-256")


# ------------------------------------------------------------------------- edited fields

@MORE_EXAMPLES
@given(st.data())
def test_edited_manifest_fields_without_fresh_digests_are_refused(raw, data):
    header, manifest, tensors = _split(raw)
    before = json.dumps(manifest, sort_keys=True)
    _apply(manifest, data.draw(edits(manifest)))
    assume(json.dumps(manifest, sort_keys=True) != before)   # not the same value written back
    assert_refused(_pack(header, manifest, tensors, resign=False))


@MORE_EXAMPLES
@given(st.data())
def test_edited_manifest_fields_with_fresh_digests(raw, logits, data):
    """A forger who recomputes every digest: the edit is refused, or it changed nothing
    the model computes, or it describes another consistent model that runs cleanly."""
    header, manifest, tensors = _split(raw)
    _apply(manifest, data.draw(edits(manifest)))
    loaded, _ = attempt(_pack(header, manifest, tensors))
    if loaded is None:
        return
    x = _images(loaded.input_shape)
    again = fileformat.to_bytes(loaded)
    if again == raw:
        np.testing.assert_array_equal(loaded.forward(x).view(np.uint32), logits.view(np.uint32))
        return
    out = loaded.forward(x)                     # runs; a consistent model of its own
    assert out.dtype == np.float32 and out.shape == (len(x), loaded.n_classes)
    reloaded = fileformat.from_bytes(again)
    np.testing.assert_array_equal(reloaded.forward(x).view(np.uint32), out.view(np.uint32))


@MORE_EXAMPLES
@given(st.data())
def test_edited_tensor_entries(raw, logits, data):
    """dtype, shape and data_offsets of the header's tensor entries, digests fresh."""
    header, manifest, tensors = _split(raw)
    entries = {k: v for k, v in header.items() if k != "__metadata__"}
    _apply(entries, data.draw(edits(entries)))
    entries["__metadata__"] = header["__metadata__"]
    assert_refused_or_same(_pack(entries, manifest, tensors), logits)


# ------------------------------------------------------------------------- named attacks

def _edit_manifest(raw, edit):
    header, manifest, tensors = _split(raw)
    edit(manifest)
    return _pack(header, manifest, tensors)


@pytest.mark.parametrize("version", [0, 1, 2, 4, -1, "3", 3.0, True, None, [3], 2 ** 64])
def test_wrong_format_version(raw, version):
    assert_refused(_edit_manifest(raw, lambda m: m.update(format_version=version)),
                   "format_version")


def _tensor_data(raw, name):
    header, _, tensors = _split(raw)
    begin, end = header[name]["data_offsets"]
    return header, tensors, begin, end


def _replace_tensor(raw, name, dtype, shape, blob):
    """Put ``blob`` in place of tensor ``name`` (re-tiling the rest), digests fresh."""
    header, manifest, tensors = _split(raw)
    pieces, offset = [], 0
    for entry_name in sorted((k for k in header if k != "__metadata__"),
                             key=lambda k: header[k]["data_offsets"][0]):
        begin, end = header[entry_name]["data_offsets"]
        piece = blob if entry_name == name else tensors[begin:end]
        if entry_name == name:
            header[name].update(dtype=dtype, shape=shape)
        header[entry_name]["data_offsets"] = [offset, offset + len(piece)]
        pieces.append(piece)
        offset += len(piece)
    return _pack(header, manifest, b"".join(pieces))


def test_weight_planes_that_disagree_with_the_bits(raw):
    header, tensors, begin, end = _tensor_data(raw, "0.weight_planes")
    (length,) = header["0.weight_planes"]["shape"]
    blob = tensors[begin:end]
    assert_refused(_replace_tensor(raw, "0.weight_planes", "U8", [length - 1], blob[:-1]),
                   "0.weight_planes")
    assert_refused(_replace_tensor(raw, "0.weight_planes", "U8", [length + 1], blob + b"\0"),
                   "0.weight_planes")
    padded = blob + b"\0" * (-len(blob) % 4)
    assert_refused(_replace_tensor(raw, "0.weight_planes", "F32", [len(padded) // 4], padded),
                   "0.weight_planes")


def test_weight_bits_that_disagree_with_the_planes(raw):
    header, tensors, begin, end = _tensor_data(raw, "2.weight_levels")
    levels = np.frombuffer(tensors[begin:end], np.uint8).copy()
    channels = json.loads(header["__metadata__"]["soniq_manifest"])["stages"][2][
        "weight_shape"][0]
    assert channels < 8 * len(levels)
    levels[0] ^= 1                                  # a palette level, wrong plane count
    assert_refused(_replace_tensor(raw, "2.weight_levels", "U8", [len(levels)],
                                   levels.tobytes()), "weight_planes")
    levels[0] ^= 1
    levels[-1] |= 0x80                              # a level for a channel that is not there
    assert_refused(_replace_tensor(raw, "2.weight_levels", "U8", [len(levels)],
                                   levels.tobytes()), "selects levels beyond")


def test_bits_set_beyond_k_in_the_zero_tail(raw):
    header, tensors, begin, end = _tensor_data(raw, "0.weight_planes")
    stream = np.frombuffer(tensors[begin:end], np.uint8).copy()
    assert stream[-1] < 0x80                        # K = 9: the stream ends inside a byte
    stream[-1] |= 0x80
    assert_refused(_replace_tensor(raw, "0.weight_planes", "U8",
                                   header["0.weight_planes"]["shape"], stream.tobytes()),
                   "beyond K")


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_epilogue_values(raw, value):
    for name in ("0.scale", "5.bias"):
        header, tensors, begin, end = _tensor_data(raw, name)
        arr = np.frombuffer(tensors[begin:end], "<f4").copy()
        arr[-1] = value
        assert_refused(_replace_tensor(raw, name, "F32", header[name]["shape"],
                                       arr.tobytes()), name)
    assert_refused(_edit_manifest(raw, lambda m: m["stages"][2].update(out_clip=float(value))),
                   "out_clip")


@pytest.mark.parametrize("shape, offsets", [
    ([2 ** 40], None), ([2 ** 31, 2 ** 31], None), ([2 ** 62, 2 ** 62, 2 ** 62], None),
    ([2 ** 64 + 1], None), ([1], [0, 2 ** 62]), ([2 ** 40], [0, 2 ** 40]),
    ([0, 2 ** 70], [0, 0]), ([-1], None), ([1] * 9, None),
])
def test_huge_declared_sizes_allocate_nothing(raw, shape, offsets):
    header, manifest, tensors = _split(raw)
    entry = header["5.weight_planes"]
    entry["shape"] = shape
    if offsets is not None:
        entry["data_offsets"] = offsets
    assert_refused(_pack(header, manifest, tensors))


def test_missing_extra_renamed_and_duplicate_tensors(raw):
    header, manifest, tensors = _split(raw)
    gone = dict(header)
    del gone["2.scale"]
    assert_refused(_pack(gone, manifest, tensors), "contiguous|unexpected|sha256")
    manifest_gone = json.loads(json.dumps(manifest))
    assert_refused(_pack(gone, manifest_gone, tensors), "contiguous|unexpected|2.scale")
    extra = dict(header, **{"9.extra": {"dtype": "U8", "shape": [0], "data_offsets": [0, 0]}})
    assert_refused(_pack(extra, manifest, tensors, unsigned={"9.extra"}), "sha256")
    manifest_extra = json.loads(json.dumps(manifest))
    assert_refused(_pack(extra, manifest_extra, tensors), "unexpected tensors")
    renamed = dict(header)
    renamed["2.scalE"] = renamed.pop("2.scale")
    manifest_renamed = json.loads(json.dumps(manifest))
    assert_refused(_pack(renamed, manifest_renamed, tensors), "2.scale")
    # the same name twice in the header JSON: which one a reader keeps must not matter
    text = container.encode_header(header)[8:].decode().rstrip()
    entry = '"2.scale":' + json.dumps(header["2.scale"], sort_keys=True, separators=(",", ":"))
    twice = text.replace(entry, entry + "," + entry).encode()
    assert_refused(_pack(header, manifest, tensors, text=twice), "duplicate")
    dup_manifest = json.dumps(manifest, sort_keys=True, separators=(",", ":")).replace(
        '"format":"soniq"', '"format":"soniq","format":"soniq"')
    meta = dict(header["__metadata__"], soniq_manifest=dup_manifest)
    dup_text = container.encode_header(dict(header, __metadata__=meta))[8:]
    assert_refused(_pack(header, manifest, tensors, text=dup_text), "duplicate")


def _with_header(text: bytes, data: bytes = b"") -> bytes:
    return struct.pack("<Q", len(text)) + text + data


def _signed(rest: bytes, data: bytes = b"") -> bytes:
    """A header that starts with the SONIQ signature, then ``rest`` (more members, '}')."""
    return _with_header(SIGNATURE + b'3"},' + rest, data)


_SIGNED_META = SIGNATURE + b'3"'


@pytest.mark.parametrize("data, match", [
    (b"", "truncated"),
    (b"\x00" * 7, "truncated"),
    (struct.pack("<Q", 2 ** 64 - 1) + SIGNATURE + b'3"}', "exceeds the limit"),
    (struct.pack("<Q", MAX_HEADER_BYTES + 1) + SIGNATURE + b'3"}', "exceeds the limit"),
    (struct.pack("<Q", 10 ** 6) + SIGNATURE + b'3"}' * 100, "truncated"),
    (struct.pack("<Q", 100) + SIGNATURE + b'3"}', "truncated"),
    (struct.pack("<Q", 2 ** 63) + b"{}", "not a SONIQ model file"),
    (b"\x00" * 4096, "not a SONIQ model file"),
    (b"PK\x03\x04" + b"\x00" * 100, "not a SONIQ model file"),
    (_with_header(SIGNATURE + b'1"}'), "format version '1' is not supported"),
    (_with_header(SIGNATURE + b'2"}'), "format version '2' is not supported.*export"),
    (_signed(b"\xff\xfe}"), "JSON"),
    (_signed(b'"a": "\xc3\x28"}'), "JSON"),
    (_signed(b"not json"), "JSON"),
    (_with_header(b"[]"), "not a SONIQ model file"),
    (_with_header(b"null"), "not a SONIQ model file"),
    (_with_header(b"{}"), "not a SONIQ model file"),
    (_with_header(b'{"__metadata__": []}'), "not a SONIQ model file"),
    (_with_header(_SIGNED_META + b',"soniq_manifest": 1}}'), "__metadata__"),
    (_with_header(_SIGNED_META + b',"soniq_manifest": "{", "soniq_manifest_sha256": ""}}'),
     "manifest"),
    (_with_header(_SIGNED_META + b',"soniq_manifest": "[]", "soniq_manifest_sha256": ""}}'),
     "manifest"),
    (_with_header(_SIGNED_META + b',"soniq_manifest": "{}", "soniq_manifest_sha256": "",'
                  b'"x": ""}}'), "does not define"),
    (_signed(b'"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}"), "nested"),
    (_signed(b'"a":' + b"[" * 33 + b"]" * 33 + b"}"), "nested"),
    (_signed(b'"a": ' + b"9" * 5000 + b"}"), "JSON"),
    (_with_header(_SIGNED_META + b',"soniq_manifest":' + json.dumps("[" * 100_000).encode()
                  + b',"soniq_manifest_sha256": ""}}'), "nested"),
    (_signed(b'"t": {"dtype": ["U8"], "shape": [1], "data_offsets": [0, 1]}}', b"x"),
     "dtype"),
    (_signed(b'"t": {"dtype": "U8", "shape": "ab", "data_offsets": [0, 1]}}', b"x"),
     "shape"),
    (_signed(b'"t": {"dtype": "U8", "shape": [1], "data_offsets": [1, 0]}}', b"x"),
     "outside"),
    (_signed(b'"t": {"dtype": "U8", "shape": [true], "data_offsets": [0, 1]}}', b"x"),
     "shape"),
    (_signed(b'"t": {"dtype": "U8", "shape": [1.0], "data_offsets": [0, 1]}}', b"x"),
     "shape"),
    (_signed(b'"t": [1, 2, 3]}', b"x"), "exactly dtype"),
])
def test_hostile_containers(data, match):
    assert_refused(data, match)


@pytest.mark.parametrize("payload", [
    b'"a": [' + b",".join([b"[]"] * 340_000) + b"]}",
    b'"a": [' + b",".join([b"{}"] * 340_000) + b"]}",
    json.dumps(
        {"__metadata__": {"soniq_format": "3",
                          "soniq_manifest": "[" + ",".join(["[]"] * 150_000) + "]"}}).encode(),
    json.dumps({f"t{i}": {"dtype": "U8", "shape": [0], "data_offsets": [0, 0]}
                for i in range(15_000)}).encode()[1:],
    b'"a": [' + b",".join([b"[]"] * 400_000) + b"]}",
], ids=["nested-lists", "empty-dicts", "manifest-lists", "many-tensors", "over-the-limit"])
def test_header_json_built_to_blow_up_memory_stays_bounded(payload):
    """Objects the JSON parser builds are what a large header costs; they stay within
    the bound (checked in ``attempt``) and the file is refused."""
    data = _with_header(payload) if payload.startswith(b"{") else _signed(payload)
    assert_refused(data)


def _large_model(o=512, k=4096):
    """One linear layer, 1-bit weights: the largest codes-to-file ratio the format has."""
    rng = np.random.default_rng(5)
    w_bits = np.ones(o, np.uint8)
    codes = rng.integers(0, 2, (o, k)).astype(np.uint8)
    stage = QuantStage("linear", codes, w_bits, np.full(k, 8, np.uint8), 8, (1, 4), (8, 8), 1, 0,
                       rng.standard_normal(o).astype(np.float32),
                       rng.standard_normal(o).astype(np.float32))
    return DeployModel((k,), [stage])


def test_loading_a_large_model_stays_within_the_bound():
    big = _large_model()
    data = fileformat.to_bytes(big)
    loaded, message = attempt(data)       # asserts the peak bound
    assert message is None
    x = np.random.default_rng(1).integers(0, 256, (4, 4096)).astype(np.uint8)
    np.testing.assert_array_equal(loaded.forward(x).view(np.uint32),
                                  big.forward(x).view(np.uint32))


def test_special_files_are_refused_without_reading_forever(tmp_path):
    with pytest.raises(SoniqFileError, match="not a regular file"):
        fileformat.load(tmp_path)
    with pytest.raises(SoniqFileError, match="not a regular file"):
        fileformat.load("/dev/zero")


# ------------------------------------------------------------------------- residual stages

@pytest.fixture(scope="module")
def resnet_model():
    """A small trained ResNet: conv, residual, two residual_projection, avgpool_linear."""
    config = TrainConfig(model="resnet", width=3, depth=8, epochs_phase1=1, epochs_phase2=1,
                         limit_train=96, batch_size=32, seed=12)
    return train(config).deploy


@pytest.fixture(scope="module")
def resnet_raw(resnet_model):
    return fileformat.to_bytes(resnet_model)


@pytest.fixture(scope="module")
def resnet_logits(resnet_model):
    return resnet_model.forward(_images(resnet_model.input_shape))


@MORE_EXAMPLES
@given(st.data())
def test_edited_residual_fields_with_fresh_digests(resnet_raw, resnet_logits, data):
    """The forger's edits of the previous test, aimed at the residual and pooled stages."""
    test_edited_manifest_fields_with_fresh_digests.hypothesis.inner_test(
        resnet_raw, resnet_logits, data)


@given(st.lists(st.tuples(st.integers(0, 2 ** 31), st.integers(0, 7)), min_size=1,
                max_size=3))
def test_flipped_bits_in_a_resnet_file(resnet_raw, resnet_logits, flips):
    test_flipped_bits_anywhere.hypothesis.inner_test(resnet_raw, resnet_logits, flips)


def _entry_edit(raw, index, edit):
    header, manifest, tensors = _split(raw)
    edit(manifest["stages"][index])
    return _pack(header, manifest, tensors)


def _index(raw, kind):
    _, manifest, _ = _split(raw)
    return next(i for i, s in enumerate(manifest["stages"]) if s["type"] == kind)


@pytest.mark.parametrize("edit, match", [
    (lambda s: s.pop("projection"), "missing projection"),
    (lambda s: s.update(type="residual"), "keys the format does not define: projection"),
    (lambda s: s["conv1"].update(type="linear"), "conv1 must be an object of type 'conv'"),
    (lambda s: s.update(conv2=[]), "conv2 must be an object of type 'conv'"),
    (lambda s: s["conv1"].pop("out_clip"), "conv1: missing out_clip"),
    (lambda s: s["conv2"].update(out_clip=1.0), "conv2: keys the format does not"),
    (lambda s: s["projection"].update(stride=1), "the branches cannot be added"),
    (lambda s: s["conv2"].update(stride=2), "the branches cannot be added"),
    (lambda s: s["conv1"].update(weight_shape=[8, 5, 3, 3]), "input channels"),
    (lambda s: s["conv2"].update(padding=0), "cannot be added|does not fit"),
    (lambda s: s["conv1"].update(out_clip=-1.0), "out_clip"),
    (lambda s: s.update(out_clip=float("nan")), "out_clip"),
    (lambda s: s["projection"].update(act_palette=[1, 8]), "act_palette and input bits"),
])
def test_inconsistent_residual_stages_are_refused(resnet_raw, edit, match):
    raw = resnet_raw
    assert_refused(_entry_edit(raw, _index(raw, "residual_projection"), edit), match)


@pytest.mark.parametrize("edit, match", [
    (lambda s: s.update(type="residual_projection",
                        projection=dict(s["conv2"])), "missing tensor '1.projection"),
    (lambda s: s["conv2"]["weight_shape"].__setitem__(0, s["conv2"]["weight_shape"][0] + 1),
     "identity skip|must be U8"),
])
def test_inconsistent_identity_blocks_are_refused(resnet_raw, edit, match):
    raw = resnet_raw
    assert_refused(_entry_edit(raw, _index(raw, "residual"), edit), match)


def test_a_classifier_that_is_not_last_and_renamed_tensors_are_refused(resnet_raw):
    raw = resnet_raw
    last = _index(raw, "avgpool_linear")
    assert_refused(_entry_edit(raw, last, lambda s: s.update(type="linear")),
                   "linear.: keys the format does not define: positions")
    assert_refused(_entry_edit(raw, last, lambda s: s.pop("positions") and s.update(
        type="linear")), "weights expect input")
    assert_refused(_entry_edit(raw, last, lambda s: s.update(positions=s["positions"] + 1)),
                   "averages")
    assert_refused(_edit_manifest(raw, lambda m: m["input_shape"].__setitem__(1, 16)),
                   "averages")
    header, manifest, tensors = _split(raw)
    header["1.conv2.scale_"] = header.pop("1.conv2.scale")
    assert_refused(_pack(header, manifest, tensors), "missing tensor '1.conv2.scale'")


def test_a_save_refuses_a_skip_step_the_file_cannot_rebuild(resnet_model):
    deploy = resnet_model
    stage = next(s for s in deploy.stages if s.kind == "residual")
    keep = stage.skip_step
    try:
        stage.skip_step = np.float32(keep * 2)
        with pytest.raises(ValueError, match="skip step"):
            fileformat.to_bytes(deploy)
    finally:
        stage.skip_step = keep


# ------------------------------------------------------------------------- a ViT file

@pytest.fixture(scope="module")
def vit_model():
    """A small ViT in exact mode (class token, GELU, two blocks): patch_embed_cls,
    transformer_block x 2, token_head."""
    from random_deploy import random_vit
    net, x = random_vit(2, "cls", "gelu", depth=2)
    return DeployModel.from_model(net, x.shape[1:])


@pytest.fixture(scope="module")
def vit_raw(vit_model):
    return fileformat.to_bytes(vit_model)


@pytest.fixture(scope="module")
def vit_logits(vit_model):
    return vit_model.forward(_images(vit_model.input_shape))


def test_the_vit_file_loads_round_trips_and_is_cut_everywhere(vit_raw, vit_logits):
    loaded, message = attempt(vit_raw)
    assert message is None and fileformat.to_bytes(loaded) == vit_raw
    np.testing.assert_array_equal(loaded.forward(_images(loaded.input_shape)).view(np.uint32),
                                  vit_logits.view(np.uint32))
    for cut in _boundaries(vit_raw):
        assert_refused(vit_raw[:cut])


@given(st.lists(st.tuples(st.integers(0, 2 ** 31), st.integers(0, 7)), min_size=1,
                max_size=3))
def test_flipped_bits_in_a_vit_file(vit_raw, vit_logits, flips):
    test_flipped_bits_anywhere.hypothesis.inner_test(vit_raw, vit_logits, flips)


@given(st.data())
def test_any_changed_tensor_byte_of_a_vit_file_is_refused(vit_raw, data):
    test_any_changed_tensor_byte_is_refused.hypothesis.inner_test(vit_raw, data)


@MORE_EXAMPLES
@given(st.data())
def test_edited_vit_fields_without_fresh_digests_are_refused(vit_raw, data):
    test_edited_manifest_fields_without_fresh_digests_are_refused.hypothesis.inner_test(
        vit_raw, data)


@MORE_EXAMPLES
@given(st.data())
def test_edited_vit_fields_with_fresh_digests(vit_raw, vit_logits, data):
    """The forger's edits aimed at the token stages: refused, or a model that runs."""
    test_edited_manifest_fields_with_fresh_digests.hypothesis.inner_test(
        vit_raw, vit_logits, data)


@MORE_EXAMPLES
@given(st.data())
def test_edited_vit_tensor_entries(vit_raw, vit_logits, data):
    test_edited_tensor_entries.hypothesis.inner_test(vit_raw, vit_logits, data)


@pytest.mark.parametrize("index, edit, match", [
    (1, lambda s: s.update(heads=3), "not divisible by heads = 3"),
    (1, lambda s: s.update(heads=0), "'heads' must be an integer"),
    (1, lambda s: s.update(heads=2 ** 20), "not divisible|'heads'"),
    (1, lambda s: s.update(activation="tanh"), "'activation' must be one of relu, gelu"),
    (1, lambda s: s.update(activation=["gelu"]), "'activation' must be one of"),
    (1, lambda s: s.update(ln_eps=0.0), "ln_eps"),
    (1, lambda s: s.update(ln_eps=1e-5), "ln_eps"),               # not a float32
    (1, lambda s: s["qkv"].update(input_clip=-1.0), "input_clip"),
    (1, lambda s: s["qkv"].update(input_clip=float(np.float32(1e-40))),
     "input_clip: beta .* too small"),
    (1, lambda s: s["qkv"].pop("input_clip"), "qkv: missing input_clip"),
    (1, lambda s: s["fc1"].update(act_palette=[1, 6]), "signed values.*lo >= 2"),
    (1, lambda s: s["fc1"].update(act_palette=[2, 9]), "act_palette"),
    (1, lambda s: s["fc2"].update(type="conv"), "fc2 must be an object of type 'linear'"),
    (1, lambda s: s["out"].update(weight_shape=[9, 8]), "weight_levels"),
    (1, lambda s: s["fc1"].update(out_clip=1.0), "keys the format does not define: out_clip"),
    (1, lambda s: s.pop("fc2"), "missing fc2"),
    (0, lambda s: s.update(patch=4), "weights expect input"),
    (0, lambda s: s.update(patch=3), "does not divide"),
    (0, lambda s: s.update(type="patch_embed"), "position.table' must be F32 \\[16, 8\\]"),
    (0, lambda s: s["proj"].update(input_clip=1.0), "keys the format does not define"),
    (0, lambda s: s["proj"].update(act_palette=[2, 8]), "act_palette must be \\[8, 8\\]"),
    (3, lambda s: s.update(pool="max"), "'pool' must be one of mean, cls"),
    (3, lambda s: s.update(pool=[]), "'pool' must be one of"),
    (3, lambda s: s["classifier"].update(act_palette=[1, 6]), "lo >= 2"),
])
def test_inconsistent_token_stages_are_refused(vit_raw, index, edit, match):
    assert_refused(_entry_edit(vit_raw, index, edit), match)


@pytest.mark.parametrize("edit, match", [
    (lambda m: m["stages"].insert(1, {"type": "flatten"}), "gives float32 tokens"),
    (lambda m: m["stages"].insert(0, m["stages"].pop(1)), "reads tokens"),
    (lambda m: m["stages"].insert(1, m["stages"].pop(3)), "must be the last stage"),
    (lambda m: m["stages"].pop(3), "cannot end the model"),
    (lambda m: m["stages"].pop(0), "reads tokens"),
    (lambda m: m.update(input_shape=[64]), "patch_embed.*3-D input"),
    (lambda m: m.update(input_shape=[1, 10, 10]), "does not divide|position.table"),
    (lambda m: m.update(n_classes=4), "n_classes"),
])
def test_token_stages_in_the_wrong_places_are_refused(vit_raw, edit, match):
    assert_refused(_edit_manifest(vit_raw, edit), match)


@pytest.mark.parametrize("name, change, match", [
    ("0.position.table", "rows", "0.position.table' must be F32"),
    ("1.ln1.weight", "length", "1.ln1.weight' must be F32"),
    ("3.ln.bias", "dtype", "3.ln.bias' must be F32"),
    ("0.class_token.token", "nan", "0.class_token.token' must be finite"),
    ("0.position.table", "inf", "0.position.table' must be finite"),
    ("2.ln2.bias", "nan", "2.ln2.bias' must be finite"),
    ("1.qkv.scale", "inf", "1.qkv.scale' must be finite"),
])
def test_bad_float_tensors_of_token_stages_are_refused(vit_raw, name, change, match):
    header, tensors, begin, end = _tensor_data(vit_raw, name)
    arr = np.frombuffer(tensors[begin:end], "<f4").copy()
    shape = header[name]["shape"]
    if change == "rows":
        blob, shape = arr[:-shape[-1]].tobytes(), [shape[0] - 1] + shape[1:]
    elif change == "length":
        blob, shape = np.append(arr, 1).astype("<f4").tobytes(), [shape[0] + 1]
    elif change == "dtype":
        blob, shape, dtype = arr.tobytes(), [len(arr) * 4], "U8"
    else:
        arr[-1] = np.nan if change == "nan" else np.inf
        blob = arr.tobytes()
    assert_refused(_replace_tensor(vit_raw, name, "U8" if change == "dtype" else "F32",
                                   shape, blob), match)


def test_attention_scores_beyond_the_geometry_limit_are_refused(vit_raw):
    """A 364 x 364 image in 2 x 2 patches: 33,125 tokens, and 2 heads of 33,125^2 scores
    per sample, more than any backend runs; the table is there, so only that is wrong."""
    side, tokens = 364, (364 // 2) ** 2 + 1
    table = np.zeros((tokens, 8), "<f4").tobytes()
    raw = _replace_tensor(vit_raw, "0.position.table", "F32", [tokens, 8], table)
    assert_refused(_edit_manifest(raw, lambda m: m.update(input_shape=[1, side, side])),
                   "attention scores")
