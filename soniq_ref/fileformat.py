"""The ``.soniq`` file: a deploy model in a safetensors container.

Container (the safetensors layout, parsed here with the stdlib and NumPy so that
every check is ours)::

    8 bytes   N, little-endian uint64: length of the JSON header
    N bytes   JSON header (UTF-8, padded with spaces to a multiple of 8):
                { "<tensor>": {"dtype": "U8"|"U64"|"F32", "shape": [...],
                               "data_offsets": [begin, end]}, ...,
                  "__metadata__": {"soniq_manifest": "<manifest JSON>",
                                   "soniq_manifest_sha256": "<hex digest of it>"},
                  "metadata": { free-form JSON object, optional } }
    rest      raw little-endian tensor bytes; the tensors tile it exactly

Manifest (JSON): ``format`` = "soniq", ``format_version`` = 1, ``input_shape``,
``n_classes``, ``stages`` (one object per deploy stage, see below) and
``sha256`` (tensor name -> hex digest of its bytes). The manifest's own
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
:func:`load` validates everything -- container bounds, dtypes, shapes, digests,
format version, palettes, bit widths, the shape chain and the bits handed from
stage to stage -- and raises :class:`SoniqFileError` (a ``ValueError``) naming
the problem. No declared size is ever allocated before it is checked against the
bytes present; the loader's peak stays within 32 x the header's bytes (the JSON
objects) + 10 x the tensor bytes (the model keeps one uint8 code per weight), see
docs/reliability.md.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import numpy as np

from .atomic import atomic_write_bytes
from .bitpack import pack_bits, unpack_bits, words_for, code_planes
from .deploy import DeployModel, FlattenStage, PoolStage, QuantStage, stage_output_shape

FORMAT = "soniq"
FORMAT_VERSION = 1
META_KEY = "soniq_manifest"
META_DIGEST_KEY = "soniq_manifest_sha256"
METADATA_KEY = "metadata"
MAX_HEADER_BYTES = 64 << 20
DTYPES = {"U8": np.dtype("<u1"), "U64": np.dtype("<u8"), "F32": np.dtype("<f4")}


class SoniqFileError(ValueError):
    """A .soniq file that is truncated, tampered with, of another version or inconsistent."""


# ------------------------------------------------------------------------------ writing

def weight_planes(w_codes: np.ndarray, w_bits: np.ndarray) -> np.ndarray:
    """uint64 [sum(w_bits), words]: each channel's own planes only (the compact form)."""
    flat = w_codes.reshape(w_codes.shape[0], -1)
    packed = pack_bits(code_planes(flat, 8))             # [O, 8, words]
    rows = [packed[o, :int(b)] for o, b in enumerate(w_bits)]
    return np.concatenate(rows, axis=0) if rows else np.zeros((0, words_for(flat.shape[1])),
                                                              np.uint64)


def codes_from_planes(planes: np.ndarray, w_bits: np.ndarray, k: int) -> np.ndarray:
    """Inverse of :func:`weight_planes`: uint8 codes [O, k].

    Unpacks one channel at a time, so beyond the result the only temporary is one
    channel's planes as uint8 bits (a loader must not multiply the file's size).
    """
    starts = np.concatenate([[0], np.cumsum(w_bits.astype(np.int64))])
    codes = np.zeros((len(w_bits), k), np.uint8)
    for o in range(len(w_bits)):
        for j, row in enumerate(unpack_bits(planes[starts[o]:starts[o + 1]], k)):
            codes[o] |= row << j
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


def to_bytes(model: DeployModel, metadata=None) -> bytes:
    """The complete .soniq file contents of ``model`` (deterministic).

    ``metadata``: an optional free-form JSON object stored under the header's
    top-level ``"metadata"`` key (e.g. ``model.metadata``: what the model was trained on
    and how).
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
    header, offset = {}, 0
    for name, arr in tensors.items():
        header[name] = {"dtype": _dtype_name(arr), "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(blobs[name])]}
        offset += len(blobs[name])
    manifest_text = json.dumps(manifest, sort_keys=True, separators=(",", ":"))
    header["__metadata__"] = {META_KEY: manifest_text,
                              META_DIGEST_KEY: hashlib.sha256(manifest_text.encode()).hexdigest()}
    if metadata:
        if not isinstance(metadata, dict):
            raise TypeError(f"metadata must be a dict, got {type(metadata).__name__}")
        header[METADATA_KEY] = json.loads(json.dumps(metadata))
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs[n] for n in tensors)


def save(model: DeployModel, path, metadata=None) -> int:
    """Write ``model`` (and ``metadata``, see :func:`to_bytes`) to ``path`` atomically;
    returns the file size in bytes."""
    data = to_bytes(model, metadata)
    atomic_write_bytes(path, data)
    return len(data)


# ------------------------------------------------------------------------------ reading

def _fail(msg: str):
    raise SoniqFileError(msg)


def _int(entry: dict, key: str, where: str, least: int = 0) -> int:
    value = entry.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        _fail(f"{where}: '{key}' must be an integer >= {least}, got {value!r}")
    return value


def _int_list(value, where: str, least: int = 1, length=None) -> list[int]:
    if not isinstance(value, list) or (length is not None and len(value) not in length) or \
            not all(isinstance(v, int) and not isinstance(v, bool) and v >= least for v in value):
        _fail(f"{where} must be a list of integers >= {least}"
              + (f" of length {' or '.join(map(str, length))}" if length else "")
              + f", got {value!r}")
    return value


def _palette(value, where: str) -> tuple[int, int]:
    lo, hi = _int_list(value, where, least=1, length=(2,))
    if not lo <= hi <= 8:
        _fail(f"{where} must satisfy 1 <= lo <= hi <= 8, got {value!r}")
    return lo, hi


def _unique_keys(pairs: list) -> dict:
    out = {}
    for key, value in pairs:
        if key in out:
            _fail(f"duplicate JSON key {key!r}")
        out[key] = value
    return out


def _json(text, what: str):
    """Parse ``text`` (bytes or str); duplicate keys, bad UTF-8, nesting too deep for
    the parser and over-long integers are all a :class:`SoniqFileError`."""
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        return json.loads(text, object_pairs_hook=_unique_keys)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        if isinstance(exc, SoniqFileError):
            raise SoniqFileError(f"{what}: {exc}") from None
        _fail(f"{what} is not valid JSON: {type(exc).__name__}: {str(exc)[:200]}")


def _split_container(raw: bytes) -> tuple[dict, memoryview]:
    """-> (header dict, data region); checks the length prefix and JSON."""
    if len(raw) < 8:
        _fail(f"file is truncated: {len(raw)} bytes, shorter than the 8-byte header length")
    (n,) = struct.unpack("<Q", raw[:8])
    if n > MAX_HEADER_BYTES:
        _fail(f"declared header length {n} exceeds the limit of {MAX_HEADER_BYTES} bytes")
    if 8 + n > len(raw):
        _fail(f"file is truncated: header declares {n} bytes but only {len(raw) - 8} follow")
    header = _json(bytes(raw[8:8 + n]), "header")
    if not isinstance(header, dict):
        _fail("header must be a JSON object")
    return header, memoryview(raw)[8 + n:]


def _tensors(header: dict, data: memoryview) -> dict[str, np.ndarray]:
    """Every tensor entry checked against the data region, which they must tile exactly."""
    spans, out = [], {}
    for name, entry in header.items():
        if name in ("__metadata__", METADATA_KEY):
            continue
        where = f"tensor {name!r}"
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            _fail(f"{where}: entry must have exactly dtype, shape and data_offsets")
        if not isinstance(entry["dtype"], str) or entry["dtype"] not in DTYPES:
            _fail(f"{where}: unsupported dtype {entry['dtype']!r} "
                  f"(expected one of {', '.join(DTYPES)})")
        shape = _int_list(entry["shape"], f"{where} shape", least=0)
        if len(shape) > 8:
            _fail(f"{where}: too many dimensions ({len(shape)})")
        begin, end = _int_list(entry["data_offsets"], f"{where} data_offsets", least=0,
                               length=(2,))
        if not begin <= end <= len(data):
            _fail(f"{where}: data_offsets [{begin}, {end}] fall outside the {len(data)} "
                  f"data bytes (file truncated?)")
        dtype = DTYPES[entry["dtype"]]
        if int(np.prod(shape, dtype=object)) * dtype.itemsize != end - begin:
            _fail(f"{where}: shape {shape} of {entry['dtype']} needs "
                  f"{int(np.prod(shape, dtype=object)) * dtype.itemsize} bytes, "
                  f"data_offsets give {end - begin}")
        spans.append((begin, end, name))
        try:
            out[name] = np.frombuffer(data[begin:end], dtype).reshape(shape)
        except ValueError:          # an empty tensor with a dimension beyond NumPy's range
            _fail(f"{where}: shape {shape} is not a valid array shape")
    position = 0
    for begin, end, name in sorted(spans):
        if begin != position:
            _fail(f"tensor data is not contiguous at tensor {name!r} (offset {begin}, "
                  f"expected {position})")
        position = end
    if position != len(data):
        _fail(f"{len(data) - position} unexpected bytes after the last tensor")
    return out


def _manifest(header: dict) -> dict:
    meta = header.get("__metadata__")
    if not isinstance(meta, dict) or not isinstance(meta.get(META_KEY), str):
        _fail(f"header lacks __metadata__.{META_KEY}: not a .soniq file")
    manifest = _json(meta[META_KEY], "manifest")
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        _fail("manifest 'format' is not 'soniq'")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        _fail(f"unsupported format_version {version!r}; this reader supports {FORMAT_VERSION}")
    return manifest


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


def _quant_stage(i, entry, tensors, shape, last) -> QuantStage:
    where = f"stage {i} ({entry['type']})"
    kind = entry["type"]
    wshape = _int_list(entry.get("weight_shape"), f"{where} weight_shape", least=1,
                       length=(2,) if kind == "linear" else (4,))
    o, k = wshape[0], int(np.prod(wshape[1:]))
    w_pal = _palette(entry.get("weight_palette"), f"{where} weight_palette")
    a_pal = _palette(entry.get("act_palette"), f"{where} act_palette")
    hi = _int(entry, "act_bits_hi", where, least=1)
    if hi != a_pal[1]:
        _fail(f"{where}: act_bits_hi {hi} differs from the act_palette high level {a_pal[1]}")
    stride, padding = _int(entry, "stride", where, 1), _int(entry, "padding", where, 0)
    per_feature = entry.get("per_feature")
    if not isinstance(per_feature, bool):
        _fail(f"{where}: 'per_feature' must be true or false")
    n_in = wshape[1]
    if kind == "linear" and shape != (n_in,):
        _fail(f"{where}: weights expect input [{n_in}], the previous stage gives {list(shape)}")
    if kind == "conv":
        if len(shape) != 3 or shape[0] != n_in:
            _fail(f"{where}: weights expect {n_in} input channels, previous stage gives "
                  f"{list(shape)}")
        if padding >= min(wshape[2:]) or shape[1] + 2 * padding < wshape[2] or \
                shape[2] + 2 * padding < wshape[3]:
            _fail(f"{where}: kernel {wshape[2:]} with padding {padding} does not fit input "
                  f"{list(shape)}")
    w_bits = _tensor(tensors, f"{i}.weight_bits", "U8", [o])
    _bits_in(w_bits, w_pal, f"{i}.weight_bits")
    planes = _tensor(tensors, f"{i}.weight_planes", "U64", [int(w_bits.sum()), words_for(k)])
    if k % 64 and np.any(planes[:, -1] >> np.uint64(k % 64)):
        _fail(f"tensor '{i}.weight_planes' has bits set beyond K = {k}")
    a_bits = _tensor(tensors, f"{i}.input_bits", "U8", [n_in])
    _bits_in(a_bits, range(a_pal[0], a_pal[1] + 1), f"{i}.input_bits")
    scale, bias = (_tensor(tensors, f"{i}.{n}", "F32", [o]) for n in ("scale", "bias"))
    _finite(scale, f"{i}.scale")
    _finite(bias, f"{i}.bias")
    stage = QuantStage(kind, codes_from_planes(planes, w_bits, k).reshape(wshape), w_bits,
                       a_bits, hi, w_pal, a_pal, stride, padding, scale, bias,
                       per_feature=per_feature)
    if not last:
        out_shape = stage_output_shape(stage, shape)
        n_out = int(np.prod(out_shape)) if per_feature else o
        if per_feature and len(out_shape) != 3:
            _fail(f"{where}: per_feature output needs a convolution")
        stage.out_bits = _tensor(tensors, f"{i}.out_bits", "U8", [n_out])
        _bits_in(stage.out_bits, range(1, 9), f"{i}.out_bits")
        stage.out_ratio = _tensor(tensors, f"{i}.out_ratio", "F32", [n_out])
        _finite(stage.out_ratio, f"{i}.out_ratio", positive=True)
    return stage


def _flowing_bits(stage: QuantStage, shape: tuple, pools: list) -> np.ndarray:
    """The bits of the codes ``stage`` hands on, after the pools between (per feature)."""
    if not stage.per_feature:
        return stage.out_bits
    grid = stage.out_bits.reshape(shape)
    for kernel, stride in pools:
        h, w = (grid.shape[1] - kernel) // stride + 1, (grid.shape[2] - kernel) // stride + 1
        grid = grid[:, :h * stride:stride, :w * stride:stride]
    return grid.reshape(-1)


def _stages(manifest: dict, tensors: dict) -> list:
    shape = tuple(_int_list(manifest.get("input_shape"), "manifest input_shape", least=1,
                            length=(1, 3)))
    entries = manifest.get("stages")
    if not isinstance(entries, list) or not entries:
        _fail("manifest 'stages' must be a non-empty list")
    used, stages, prev, prev_shape, pools = set(), [], None, None, []
    for i, entry in enumerate(entries):
        kind = entry.get("type") if isinstance(entry, dict) else None
        last = i == len(entries) - 1
        if kind == "flatten":
            stage = FlattenStage()
        elif kind == "maxpool":
            stage = PoolStage(_int(entry, "kernel", f"stage {i}", 1),
                              _int(entry, "stride", f"stage {i}", 1))
            if len(shape) != 3 or min(shape[1:]) < stage.kernel:
                _fail(f"stage {i} (maxpool): kernel {stage.kernel} does not fit input "
                      f"{list(shape)}")
            pools.append((stage.kernel, stage.stride))
        elif kind in ("linear", "conv"):
            stage = _quant_stage(i, entry, tensors, shape, last)
            expected = np.full(stage.a_bits.shape, 8, np.uint8) if prev is None else \
                _flowing_bits(prev, prev_shape, pools)
            if not np.array_equal(stage.a_bits, expected):
                _fail(f"stage {i}: input_bits do not match the bits the previous stage "
                      f"produces" + (" (the first layer reads 8-bit pixels)" if prev is None
                                     else ""))
            used.update(n for n in tensors if n.split(".", 1)[0] == str(i))
            prev, pools = stage, []
        else:
            _fail(f"stage {i}: unknown type {kind!r}")
        if kind in ("linear", "conv"):
            prev_shape = stage_output_shape(stage, shape)
        shape = stage_output_shape(stage, shape)
        stages.append(stage)
    if not isinstance(stages[-1], QuantStage):
        _fail("the last stage must be a linear or conv layer (the classifier)")
    if manifest.get("n_classes") != stages[-1].out_channels:
        _fail(f"manifest n_classes {manifest.get('n_classes')!r} differs from the last "
              f"layer's {stages[-1].out_channels} outputs")
    if used != set(tensors):
        _fail(f"unexpected tensors: {', '.join(sorted(set(tensors) - used))}")
    return stages


def from_bytes(raw: bytes) -> DeployModel:
    """Parse and validate the contents of a .soniq file."""
    header, data = _split_container(raw)
    tensors = _tensors(header, data)
    manifest = _manifest(header)
    _check_digests(manifest, tensors)
    try:
        stages = _stages(manifest, tensors)
    except SoniqFileError:
        raise
    except (KeyError, TypeError, ValueError, IndexError, OverflowError) as exc:
        raise SoniqFileError(f"inconsistent model description: {exc}") from None
    _check_manifest_digest(header)
    metadata = header.get(METADATA_KEY, {})
    if not isinstance(metadata, dict):
        _fail(f"header '{METADATA_KEY}' must be a JSON object")
    model = DeployModel(manifest["input_shape"], stages)
    model.metadata = metadata
    return model


def load(path) -> DeployModel:
    """Read and validate a .soniq file; raises SoniqFileError (a ValueError) on any defect."""
    try:
        if Path(path).exists() and not Path(path).is_file():
            _fail(f"cannot read {path}: not a regular file")
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise SoniqFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    return from_bytes(raw)
