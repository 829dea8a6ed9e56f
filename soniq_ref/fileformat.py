"""The ``.soniq`` file: a deploy model in a safetensors container.

Container (the safetensors layout, parsed here with the stdlib and NumPy so that
every check is ours; the byte level is :mod:`soniq_ref.container`)::

    8 bytes   N, little-endian uint64: length of the JSON header (at most 1 MiB)
    N bytes   JSON header (UTF-8, padded with spaces to a multiple of 8), starting
              with the signature {"__metadata__":{"soniq_format":"2",
                { "__metadata__": {"soniq_format": "2",
                                   "soniq_manifest": "<manifest JSON>",
                                   "soniq_manifest_sha256": "<hex digest of it>"},
                  "<tensor>": {"data_offsets": [begin, end], "dtype": "U8"|"U64"|"F32",
                               "shape": [...]}, ...,
                  "metadata": { free-form JSON object, optional } }
    rest      raw little-endian tensor bytes; the tensors tile it exactly

Manifest (JSON): ``format`` = "soniq", ``format_version`` = 2, ``input_shape``,
``n_classes``, ``stages`` (one object per deploy stage, see below),
``sha256`` (tensor name -> hex digest of its bytes) and, when the header has
``metadata`` (a free-form object, not interpreted), ``metadata_sha256`` (the digest
of its canonical JSON). The manifest's own
SHA-256 (of its UTF-8 text) sits beside it, so that no flipped bit in the
manifest can turn the file into a different valid model.

Stage ``i`` of type ``linear``/``conv`` stores ``weight_shape``, ``stride``,
``padding``, ``act_bits_hi``, ``weight_palette``, ``act_palette``, ``per_feature``
and the tensors::

    i.weight_planes  U64 [sum_o weight_bits[o], ceil(K/64)]  channel o's bit planes
                     0 .. weight_bits[o]-1 in order, LSB-first along K, zero tail
    i.weight_bits    U8  [O]       i.input_bits  U8 [C or K]
    i.scale, i.bias  F32 [O]
    i.out_bits       U8  [L]       i.out_ratio   F32 [L]   (all but the last stage;
                                   L = O, or O*H*W when per_feature)

``maxpool`` stores ``kernel`` and ``stride``; ``flatten`` nothing.

:func:`save` writes atomically (temporary file in the same folder, then rename).
:func:`load` validates everything -- signature and version first, container bounds,
the schema (nothing the format does not define), dtypes, shapes, digests, palettes,
bit widths, geometry, the shape chain and the bits handed from stage to stage, a
linear classifier at the end -- and raises :class:`SoniqFileError` (a
``ValueError``) naming the file and the problem. No declared size is ever allocated before it is checked against the
bytes present; the loader's peak stays within 32 x the header's bytes (the JSON
objects) + 10 x the tensor bytes (the model keeps one uint8 code per weight), see
docs/reliability.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct

import numpy as np

from . import checks, container
from .atomic import atomic_write_bytes
from .bitpack import pack_bits, unpack_bits, words_for, code_planes
from .container import DTYPES, MAX_HEADER_BYTES, SoniqFileError, fail as _fail
from .deploy import (MAX_GEOMETRY, DeployModel, FlattenStage, PoolStage, QuantStage,
                     check_size, stage_output_shape)
from .layers.pooling import max_pool_codes

FORMAT = "soniq"
FORMAT_VERSION = 2
META_KEY = "soniq_manifest"
META_DIGEST_KEY = "soniq_manifest_sha256"
MANIFEST_KEYS = {"format", "format_version", "input_shape", "n_classes", "stages", "sha256"}
OPTIONAL_MANIFEST_KEYS = {"metadata_sha256"}
METADATA_KEY = container.METADATA_KEY
QUANT_KEYS = {"type", "weight_shape", "stride", "padding", "act_bits_hi", "weight_palette",
              "act_palette", "per_feature"}
STAGE_KEYS = {"linear": QUANT_KEYS, "conv": QUANT_KEYS, "maxpool": {"type", "kernel", "stride"},
              "flatten": {"type"}}
CHUNK_BYTES = 1 << 18
QUANT_TENSORS = ("weight_planes", "weight_bits", "input_bits", "scale", "bias")
OUT_TENSORS = ("out_bits", "out_ratio")
# ------------------------------------------------------------------------------ writing

def weight_planes(w_codes: np.ndarray, w_bits: np.ndarray) -> np.ndarray:
    """uint64 [sum(w_bits), words]: each channel's own planes only (the compact form)."""
    flat = checks.rows(w_codes)
    packed = pack_bits(code_planes(flat, 8))             # [O, 8, words]
    rows = [packed[o, :int(b)] for o, b in enumerate(w_bits)]
    return np.concatenate(rows, axis=0) if rows else np.zeros((0, words_for(flat.shape[1])),
                                                              np.uint64)


def codes_from_planes(planes: np.ndarray, w_bits: np.ndarray, k: int) -> np.ndarray:
    """Inverse of :func:`weight_planes`: uint8 codes [O, k].

    Unpacks a block of channels per plane index at a time (about CHUNK_BYTES of
    temporaries), so beyond the result a loader never multiplies the file's size.
    """
    starts = np.concatenate([[0], np.cumsum(w_bits.astype(np.int64))])[:-1]
    codes = np.zeros((len(w_bits), k), np.uint8)
    step = max(1, CHUNK_BYTES // max(1, 64 * words_for(k)))
    for o0 in range(0, len(w_bits), step):
        block, first = w_bits[o0:o0 + step], starts[o0:o0 + step]
        for j in range(int(block.max(initial=0))):
            rows = np.flatnonzero(block > j)
            codes[o0 + rows] |= unpack_bits(planes[first[rows] + j], k) << np.uint8(j)
    return codes


def _stage_entry(i: int, stage, last: bool, tensors: dict) -> dict:
    if isinstance(stage, FlattenStage):
        return {"type": "flatten"}
    if isinstance(stage, PoolStage):
        return {"type": "maxpool", "kernel": stage.kernel, "stride": stage.stride}
    tensors[f"{i}.weight_planes"] = weight_planes(stage.w_codes, stage.w_bits)
    tensors[f"{i}.weight_bits"] = stage.w_bits
    tensors[f"{i}.input_bits"] = stage.a_bits
    tensors[f"{i}.scale"] = stage.scale
    tensors[f"{i}.bias"] = stage.bias
    if not last:
        tensors[f"{i}.out_bits"] = stage.out_bits
        tensors[f"{i}.out_ratio"] = stage.out_ratio
    return {"type": stage.kind, "weight_shape": list(stage.w_codes.shape),
            "stride": stage.stride, "padding": stage.padding, "act_bits_hi": stage.act_bits_hi,
            "weight_palette": list(stage.weight_palette), "act_palette": list(stage.act_palette),
            "per_feature": bool(stage.per_feature)}


def _dtype_name(arr: np.ndarray) -> str:
    for name, dt in DTYPES.items():
        if arr.dtype == dt:
            return name
    raise TypeError(f"unsupported tensor dtype {arr.dtype}")


def _metadata_text(metadata) -> str:
    """The canonical JSON of a ``metadata`` dict (what its digest covers)."""
    if not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict, got {type(metadata).__name__}")
    try:
        return json.dumps(metadata, allow_nan=False, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"metadata must be JSON-serializable: {exc}") from None


def to_bytes(model: DeployModel, metadata: dict | None = None) -> bytes:
    """The complete .soniq file contents of ``model`` (deterministic).

    ``metadata``: an optional free-form JSON object stored under the header's top-level
    ``"metadata"`` key (e.g. ``model.metadata``: what the model was trained on and how),
    its SHA-256 in the manifest; written only when given.
    """
    tensors: dict[str, np.ndarray] = {}
    last = len(model.stages) - 1
    stages = [_stage_entry(i, s, i == last, tensors) for i, s in enumerate(model.stages)]
    blobs = {name: np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes()
             for name, arr in tensors.items()}
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION,
                "input_shape": list(model.input_shape), "n_classes": model.n_classes,
                "stages": stages,
                "sha256": {n: hashlib.sha256(b).hexdigest() for n, b in blobs.items()}}
    entries, offset = {}, 0
    text = "{}" if metadata is None else _metadata_text(metadata)
    if text != "{}":                    # an empty metadata is no metadata
        manifest["metadata_sha256"] = hashlib.sha256(text.encode()).hexdigest()
        entries[METADATA_KEY] = json.loads(text)
    for name in sorted(tensors):
        entries[name] = {"dtype": _dtype_name(tensors[name]), "shape": list(tensors[name].shape),
                         "data_offsets": [offset, offset + len(blobs[name])]}
        offset += len(blobs[name])
    manifest_text = json.dumps(manifest, sort_keys=True, separators=(",", ":"))
    meta = {META_KEY: manifest_text,
            META_DIGEST_KEY: hashlib.sha256(manifest_text.encode()).hexdigest()}
    text = container.header_text(entries, meta, FORMAT_VERSION)
    if len(text) > MAX_HEADER_BYTES or container.nesting_depth(text) > container.MAX_JSON_DEPTH:
        raise ValueError(f"the file header would exceed the format's limits "
                         f"({MAX_HEADER_BYTES} bytes, {container.MAX_JSON_DEPTH} levels of "
                         f"nesting): too many stages or too large a metadata")
    return struct.pack("<Q", len(text)) + text + b"".join(blobs[n] for n in sorted(tensors))


def save(model: DeployModel, path, metadata: dict | None = None) -> int:
    """Write ``model`` (and ``metadata``, see :func:`to_bytes`) to ``path`` atomically;
    returns the file size in bytes."""
    data = to_bytes(model, metadata)
    atomic_write_bytes(path, data)
    return len(data)


# ------------------------------------------------------------------------------ reading

def _int(entry: dict, key: str, where: str, least: int = 0, most: int = MAX_GEOMETRY) -> int:
    value = entry.get(key)
    if type(value) is not int or not least <= value <= most:
        _fail(f"{where}: '{key}' must be an integer in {least}..{most}, got {value!r}"[:300])
    return value


def _int_list(value, where: str, least: int = 1, length=None) -> list[int]:
    if not isinstance(value, list) or (length is not None and len(value) not in length) or \
            not all(type(v) is int and least <= v <= MAX_GEOMETRY for v in value):
        _fail((f"{where} must be a list of integers in {least}..{MAX_GEOMETRY}"
               + (f" of length {' or '.join(map(str, length))}" if length else "")
               + f", got {value!r}")[:300])
    return value


def _palette(value, where: str) -> tuple[int, int]:
    lo, hi = _int_list(value, where, least=1, length=(2,))
    if not lo <= hi <= 8:
        _fail(f"{where} must satisfy 1 <= lo <= hi <= 8, got {value!r}")
    return lo, hi


def _keys(entry: dict, allowed: set, where: str, optional: set = frozenset()) -> None:
    """``entry`` has exactly the keys ``allowed`` (plus any of ``optional``)."""
    missing, extra = allowed - set(entry), set(entry) - allowed - optional
    if missing or extra:
        _fail(f"{where}: " + "; ".join(
            part for part in (f"missing {', '.join(sorted(missing))}" if missing else "",
                              f"keys the format does not define: {', '.join(sorted(extra))}"
                              if extra else "") if part)[:300])


def _manifest(header: dict) -> dict:
    meta = header.get("__metadata__")
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        _fail("header __metadata__ must be an object of strings")
    _keys(meta, {container.VERSION_KEY, META_KEY, META_DIGEST_KEY}, "header __metadata__")
    manifest = container.parse_json(meta[META_KEY], "manifest")
    if not isinstance(manifest, dict):
        _fail("manifest must be a JSON object")
    _keys(manifest, MANIFEST_KEYS, "manifest", OPTIONAL_MANIFEST_KEYS)
    if manifest["format"] != FORMAT:
        _fail("manifest 'format' is not 'soniq'")
    version = manifest["format_version"]
    if type(version) is not int or version != FORMAT_VERSION:
        _fail(f"unsupported format_version {version!r}; this reader supports {FORMAT_VERSION}")
    return manifest


def _metadata(header: dict, manifest: dict) -> dict:
    """The header's free-form ``metadata`` object ({} when absent), checked against the
    manifest's ``metadata_sha256`` (so a changed byte of it is refused too)."""
    if METADATA_KEY not in header:
        if "metadata_sha256" in manifest:
            _fail("the manifest lists a metadata digest but the header has no 'metadata'")
        return {}
    metadata = header[METADATA_KEY]
    if not isinstance(metadata, dict):
        _fail(f"header '{METADATA_KEY}' must be a JSON object")
    digest = hashlib.sha256(_metadata_text(metadata).encode()).hexdigest()
    if manifest.get("metadata_sha256") != digest:
        _fail("the header's 'metadata' fails its SHA-256 check (metadata_sha256): file "
              "corrupted or tampered with")
    return metadata


def _check_manifest_digest(header: dict) -> None:
    """Checked after every other check, so that a hand-edited manifest is reported by
    its first inconsistency rather than only by its digest."""
    meta = header["__metadata__"]
    digest = hashlib.sha256(meta[META_KEY].encode("utf-8", "surrogatepass")).hexdigest()
    if meta.get(META_DIGEST_KEY) != digest:
        _fail(f"the manifest fails its SHA-256 check ({META_DIGEST_KEY}): file corrupted "
              f"or tampered with")


def _check_digests(manifest: dict, tensors: dict) -> None:
    digests = manifest.get("sha256")
    if not isinstance(digests, dict) or set(digests) != set(tensors):
        _fail("manifest sha256 must list exactly the file's tensors")
    for name, arr in tensors.items():
        if hashlib.sha256(arr.tobytes()).hexdigest() != digests[name]:
            _fail(f"tensor {name!r} fails its SHA-256 check (file corrupted or tampered with)")


def _tensor(tensors, name, dtype_name, shape):
    if name not in tensors:
        _fail(f"missing tensor {name!r}")
    arr = tensors[name]
    if arr.dtype != DTYPES[dtype_name] or arr.shape != tuple(shape):
        _fail(f"tensor {name!r} must be {dtype_name} {list(shape)}, got "
              f"{arr.dtype} {list(arr.shape)}")
    return arr.astype(arr.dtype.newbyteorder("="))


def _bits_in(arr, levels, name):
    if not np.all(np.isin(arr, levels)):
        _fail(f"tensor {name!r} holds bit widths outside {list(levels)}")


def _finite(arr, name, positive=False):
    if not np.all(np.isfinite(arr)) or (positive and np.any(arr <= 0)):
        _fail(f"tensor {name!r} must be finite" + (" and > 0" if positive else ""))


def _check_fit(where: str, kind: str, wshape: list, shape: tuple, stride: int,
               padding: int) -> None:
    """The stage's weights fit the input ``shape`` the previous stage gives."""
    n_in = wshape[1]
    if kind == "linear":
        if shape != (n_in,):
            _fail(f"{where}: weights expect input [{n_in}], the previous stage gives "
                  f"{list(shape)}")
        if stride != 1 or padding != 0:
            _fail(f"{where}: a linear stage has stride 1 and padding 0")
        return
    if len(shape) != 3 or shape[0] != n_in:
        _fail(f"{where}: weights expect {n_in} input channels, previous stage gives "
              f"{list(shape)}")
    if padding >= min(wshape[2:]) or shape[1] + 2 * padding < wshape[2] or \
            shape[2] + 2 * padding < wshape[3]:
        _fail(f"{where}: kernel {wshape[2:]} with padding {padding} does not fit input "
              f"{list(shape)}")


def _quant_stage(i, entry, tensors, shape, last) -> QuantStage:
    where = f"stage {i} ({entry['type']})"
    kind = entry["type"]
    wshape = _int_list(entry["weight_shape"], f"{where} weight_shape", least=1,
                       length=(2,) if kind == "linear" else (4,))
    o, k = wshape[0], check_size(wshape[1:], f"{where} weight_shape")
    w_pal = _palette(entry["weight_palette"], f"{where} weight_palette")
    a_pal = _palette(entry["act_palette"], f"{where} act_palette")
    hi = _int(entry, "act_bits_hi", where, least=1, most=8)
    if hi != a_pal[1]:
        _fail(f"{where}: act_bits_hi {hi} differs from the act_palette high level {a_pal[1]}")
    stride, padding = _int(entry, "stride", where, 1), _int(entry, "padding", where, 0)
    per_feature = entry["per_feature"]
    if not isinstance(per_feature, bool):
        _fail(f"{where}: 'per_feature' must be true or false")
    _check_fit(where, kind, wshape, shape, stride, padding)
    w_bits = _tensor(tensors, f"{i}.weight_bits", "U8", [o])
    _bits_in(w_bits, w_pal, f"{i}.weight_bits")
    planes = _tensor(tensors, f"{i}.weight_planes", "U64", [int(w_bits.sum()), words_for(k)])
    if k % 64 and np.any(planes[:, -1] >> np.uint64(k % 64)):
        _fail(f"tensor '{i}.weight_planes' has bits set beyond K = {k}")
    a_bits = _tensor(tensors, f"{i}.input_bits", "U8", [wshape[1]])
    _bits_in(a_bits, range(a_pal[0], a_pal[1] + 1), f"{i}.input_bits")
    scale, bias = (_tensor(tensors, f"{i}.{n}", "F32", [o]) for n in ("scale", "bias"))
    _finite(scale, f"{i}.scale")
    _finite(bias, f"{i}.bias")
    stage = QuantStage(kind, codes_from_planes(planes, w_bits, k).reshape(wshape), w_bits,
                       a_bits, hi, w_pal, a_pal, stride, padding, scale, bias,
                       per_feature=per_feature)
    if per_feature and (last or kind != "conv"):
        _fail(f"{where}: per_feature output needs a convolution that is not the last stage")
    if not last:
        n_out = check_size(stage_output_shape(stage, shape), where) if per_feature else o
        stage.out_bits = _tensor(tensors, f"{i}.out_bits", "U8", [n_out])
        _bits_in(stage.out_bits, range(1, 9), f"{i}.out_bits")
        stage.out_ratio = _tensor(tensors, f"{i}.out_ratio", "F32", [n_out])
        _finite(stage.out_ratio, f"{i}.out_ratio", positive=True)
    return stage


def _stage_tensors(i: int, last: bool) -> set:
    """The tensor names stage ``i`` (a linear or conv stage) must have, and no others."""
    return {f"{i}.{name}" for name in QUANT_TENSORS + (() if last else OUT_TENSORS)}


def _flowing_bits(stage: QuantStage, shape: tuple, pools: list, i: int) -> np.ndarray:
    """The bits of the codes ``stage`` hands on, after the pools between (per feature).

    Every position a pooling window reads must carry the same bits (the pooled
    feature's); otherwise no input could ever run, and the file is refused."""
    if not stage.per_feature:
        return stage.out_bits
    grid = stage.out_bits.reshape(shape)
    for kernel, stride in pools:
        high = max_pool_codes(grid[None], kernel, stride)[0]
        low = ~max_pool_codes(~grid[None], kernel, stride)[0]
        if not np.array_equal(high, low):
            _fail(f"stage {i}: per-feature out_bits differ inside a pooling window "
                  f"(every position of a window must carry its pooled feature's bits)")
        grid = high
    return grid.reshape(-1)


def _stage(i: int, entry, tensors: dict, shape: tuple, last: bool):
    """The stage ``entry`` describes (its keys, values and tensors checked)."""
    kind = entry.get("type") if isinstance(entry, dict) else None
    if kind not in STAGE_KEYS:
        _fail(f"stage {i}: unknown type {kind!r}"[:200])
    _keys(entry, STAGE_KEYS[kind], f"stage {i} ({kind})")
    if kind == "flatten":
        return FlattenStage()
    if kind == "maxpool":
        stage = PoolStage(_int(entry, "kernel", f"stage {i}", 1),
                          _int(entry, "stride", f"stage {i}", 1))
        if len(shape) != 3 or min(shape[1:]) < stage.kernel:
            _fail(f"stage {i} (maxpool): kernel {stage.kernel} does not fit input "
                  f"{list(shape)}")
        return stage
    return _quant_stage(i, entry, tensors, shape, last)


def _stages(manifest: dict, tensors: dict) -> list:
    shape = tuple(_int_list(manifest["input_shape"], "manifest input_shape", least=1,
                            length=(1, 3)))
    check_size(shape, "manifest input_shape")
    entries = manifest["stages"]
    if not isinstance(entries, list) or not entries:
        _fail("manifest 'stages' must be a non-empty list")
    expected, stages, pools = set(), [], []
    prev = prev_index = prev_shape = None
    for i, entry in enumerate(entries):
        last = i == len(entries) - 1
        stage = _stage(i, entry, tensors, shape, last)
        out_shape = stage_output_shape(stage, shape)
        check_size(out_shape, f"stage {i} output")
        if isinstance(stage, PoolStage):
            pools.append((stage.kernel, stage.stride))
        elif isinstance(stage, QuantStage):
            bits = np.full(stage.a_bits.shape, 8, np.uint8) if prev is None else \
                _flowing_bits(prev, prev_shape, pools, prev_index)
            if not np.array_equal(stage.a_bits, bits):
                _fail(f"stage {i}: input_bits do not match the bits the previous stage "
                      f"produces" + (" (the first layer reads 8-bit pixels)" if prev is None
                                     else ""))
            expected |= _stage_tensors(i, last)
            prev, prev_index, prev_shape, pools = stage, i, out_shape, []
        stages.append(stage)
        shape = out_shape
    _check_classifier(manifest, stages, shape)
    if expected != set(tensors):
        _fail(f"unexpected tensors: {', '.join(sorted(set(tensors) - expected))}"[:300])
    return stages


def _check_classifier(manifest: dict, stages: list, shape: tuple) -> None:
    """The last stage is a linear layer giving logits [n_classes]."""
    if not isinstance(stages[-1], QuantStage) or stages[-1].kind != "linear":
        _fail(f"the last stage must be a linear layer (the classifier) giving logits "
              f"[B, n_classes]; this file's gives [B, {', '.join(map(str, shape))}]")
    n_classes = manifest["n_classes"]
    if type(n_classes) is not int or n_classes != stages[-1].out_channels:
        _fail(f"manifest n_classes {n_classes!r} differs from the last layer's "
              f"{stages[-1].out_channels} outputs"[:300])


def _read(source) -> DeployModel:
    """Parse and validate a file from ``source`` (see :mod:`soniq_ref.container`)."""
    header, data_start = container.read_header(source, FORMAT_VERSION)
    spans = container.tensor_spans(header, source.size - data_start)
    manifest = _manifest(header)
    tensors = container.tensors(spans, source.read(data_start, source.size - data_start))
    _check_digests(manifest, tensors)
    try:
        stages = _stages(manifest, tensors)
    except SoniqFileError:
        raise
    except (KeyError, TypeError, ValueError, IndexError, OverflowError) as exc:
        raise SoniqFileError(f"inconsistent model description: {exc}") from None
    metadata = _metadata(header, manifest)
    _check_manifest_digest(header)
    return DeployModel(manifest["input_shape"], stages, metadata)


def from_bytes(raw: bytes) -> DeployModel:
    """Parse and validate the contents of a .soniq file."""
    return _read(container.BytesSource(raw))


def load(path) -> DeployModel:
    """Read and validate a .soniq file; raises SoniqFileError (a ValueError) naming
    ``path`` and the defect. The file is opened once and read bounded: signature and
    header first, the tensor bytes only when the header accounts for every one."""
    try:
        fd, size = container.open_regular(path)
        try:
            return _read(container.FileSource(fd, size))
        finally:
            os.close(fd)
    except SoniqFileError as exc:
        raise SoniqFileError(f"{path}: {exc}") from None
    except OSError as exc:
        raise SoniqFileError(f"{path}: cannot read it: {exc.strerror or exc}") from None
