"""The ``.soniq`` file: a deploy model in a safetensors container, stored compactly.

Container (the safetensors layout, parsed here with the stdlib and NumPy so that
every check is ours; the byte level is :mod:`soniq_ref.container`)::

    8 bytes   N, little-endian uint64: length of the JSON header (at most 1 MiB)
    N bytes   JSON header (UTF-8, padded with spaces to a multiple of 8), starting
              with the signature {"__metadata__":{"soniq_format":"3",
                { "__metadata__": {"soniq_format": "3",
                                   "soniq_manifest": "<manifest JSON>",
                                   "soniq_manifest_sha256": "<hex digest of it>"},
                  "<tensor>": {"data_offsets": [begin, end], "dtype": "U8"|"F32",
                               "shape": [...]}, ...,
                  "metadata": { free-form JSON object, optional } }
    rest      raw little-endian tensor bytes; the tensors tile it exactly

Manifest (JSON): ``format`` = "soniq", ``format_version`` = 3, ``input_shape``,
``n_classes``, ``stages`` (one object per deploy stage, written and read by the
stage's type, :mod:`soniq_ref.stages`), ``tensors_sha256`` (:func:`tensors_digest`:
the tensor table and every tensor byte) and, when the header has ``metadata`` (a
free-form object, not interpreted), ``metadata_sha256`` (the digest of its
canonical JSON). The manifest's own SHA-256 (of its UTF-8 text) sits beside it, so
that no flipped bit in the manifest can turn the file into a different valid model.

The file stores only what cannot be derived (:mod:`soniq_ref.compact`): a
quantized stage ``i`` keeps its weight planes at their bit widths as one bit
stream (``i.weight_planes``), its weight and input bit widths as one palette-level
bit each (``i.weight_levels``, ``i.input_levels``), ``i.scale`` and ``i.bias``, and
(all but the last stage) the float32 clip ``out_clip`` in its manifest entry (the
token stages of a Transformer store their maps the same way, each with its input
clip, and their LayerNorms, position table and class token as float32 tensors;
docs/file-format.md, "Transformer stages"). Its
requantization (``out_bits``, ``out_ratio``, per channel or per position) follows
from the next quantized stage's input bits and that clip and is rebuilt on load
(:mod:`soniq_ref.stages.link`); the writer refuses a model where it would not.

:func:`save` writes atomically (temporary file in the same folder, then rename).
:func:`load` validates everything -- signature and version first, container bounds,
the schema (nothing the format does not define), dtypes, shapes, digests, palettes,
bit widths, geometry, the shape chain, 8-bit pixels into the first layer, a
linear classifier at the end -- and raises :class:`SoniqFileError` (a
``ValueError``) naming the file and the problem. No declared size is ever allocated
before it is checked against the bytes present; the loader's peak stays within
32 x the header's bytes (the JSON objects) + 10 x the tensor bytes + 2 x the model's
weight count (one uint8 code per weight, and its derived requantization), see
docs/reliability.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from types import SimpleNamespace

import numpy as np

from . import container
from .atomic import atomic_write_bytes
from .container import DTYPES, MAX_HEADER_BYTES, SoniqFileError, fail as _fail
from .deploy import DeployModel
from .fileschema import StageEntry, exact_keys, int_list
from .quantizers import act_ratio
from .stages import STAGE_TYPES, check_size, link

FORMAT = "soniq"
FORMAT_VERSION = 3
META_KEY = "soniq_manifest"
META_DIGEST_KEY = "soniq_manifest_sha256"
TENSORS_DIGEST_KEY = "tensors_sha256"
MANIFEST_KEYS = {"format", "format_version", "input_shape", "n_classes", "stages",
                 TENSORS_DIGEST_KEY}
OPTIONAL_MANIFEST_KEYS = {"metadata_sha256"}
METADATA_KEY = container.METADATA_KEY
# a per-feature requantization (rebuilt on load) covers at most this many positions per
# feature it feeds: pooling windows of 8 x 8 in all, or 4 x 4 with unread edges
MAX_POSITIONS_PER_FEATURE = 64


# ------------------------------------------------------------------------------ both ways

def tensors_digest(entries: dict, data) -> str:
    """SHA-256 of the tensor table (its canonical JSON: sorted keys, no whitespace,
    non-ASCII escaped) followed by the data region's bytes."""
    table = json.dumps(entries, sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(table.encode())
    digest.update(data)
    return digest.hexdigest()


def quant_links(stages: list, input_shape: tuple):
    """(producer, its output shape, [(stage, input shape)] between, consumer) for each
    pair of consecutive quantized stages (``quantized``: a layer or a residual block);
    the first quantized stage comes with producer None (it reads the pixels)."""
    producer, producer_shape, between, shape = None, None, [], tuple(input_shape)
    for stage in stages:
        out = stage.output_shape(shape)
        if stage.quantized:
            yield producer, producer_shape, between, stage
            producer, producer_shape, between = stage, out, []
        else:
            between.append((stage, shape))
        shape = out


def _link_from_clip(producer, producer_shape, between, consumer) -> None:
    """The producer's requantization from its ``out_clip`` and the consumer's input bits;
    a consumer that needs the step of its input codes (a residual block's identity
    skip) gets it from the same clip (1/255 for pixels: no producer)."""
    if producer is not None:
        link(producer, producer_shape, between, consumer.a_bits,
             act_ratio(producer.out_clip, consumer.a_bits))
    if hasattr(consumer, "input_step") and getattr(consumer, "proj", None) is None:
        consumer.skip_step = consumer.input_step(
            None if producer is None else producer.out_clip)


# ------------------------------------------------------------------------------ writing

def _check_derivable(model: DeployModel) -> None:
    """What the file leaves out (each ``out_bits``, ``out_ratio``) follows exactly from
    what it stores (each producer's ``out_clip`` is there: ``to_file`` checked it);
    ValueError naming the stage otherwise."""
    index = {id(s): i for i, s in enumerate(model.stages)}
    for producer, shape, between, consumer in quant_links(model.stages, model.input_shape):
        if hasattr(consumer, "input_step") and getattr(consumer, "proj", None) is None:
            step = consumer.input_step(None if producer is None else producer.out_clip)
            if np.float32(consumer.skip_step).view(np.uint32) != step.view(np.uint32):
                raise ValueError(f"stage {index[id(consumer)]} ({consumer.kind}): its skip "
                                 f"step {float(consumer.skip_step)!r} is not the step of the "
                                 f"codes it reads ({float(step)!r}), which is all the file "
                                 f"stores")
        if producer is None:
            continue
        where = f"stage {index[id(producer)]} ({producer.kind})"
        probe = SimpleNamespace(out_clip=producer.out_clip)
        _link_from_clip(probe, shape, between, SimpleNamespace(a_bits=consumer.a_bits))
        if producer.out_bits is None or probe.per_feature != producer.per_feature or \
                not np.array_equal(probe.out_bits, producer.out_bits) or \
                not np.array_equal(probe.out_ratio.view(np.uint32),
                                   np.asarray(producer.out_ratio, np.float32).view(np.uint32)):
            raise ValueError(f"{where}: out_bits and out_ratio do not follow from the next "
                             f"quantized stage's input bits and out_clip "
                             f"({float(producer.out_clip)!r}), which is all the file stores")


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
    stages = [s.to_file(i, i == last, tensors) for i, s in enumerate(model.stages)]
    _check_derivable(model)
    blobs = {name: np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes()
             for name, arr in tensors.items()}
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION,
                "input_shape": list(model.input_shape), "n_classes": model.n_classes,
                "stages": stages}
    entries, offset = {}, 0
    text = "{}" if metadata is None else _metadata_text(metadata)
    if text != "{}":                    # an empty metadata is no metadata
        manifest["metadata_sha256"] = hashlib.sha256(text.encode()).hexdigest()
        entries[METADATA_KEY] = json.loads(text)
    for name in sorted(tensors):
        entries[name] = {"dtype": _dtype_name(tensors[name]), "shape": list(tensors[name].shape),
                         "data_offsets": [offset, offset + len(blobs[name])]}
        offset += len(blobs[name])
    data = b"".join(blobs[n] for n in sorted(tensors))
    manifest[TENSORS_DIGEST_KEY] = tensors_digest(
        {n: e for n, e in entries.items() if n != METADATA_KEY}, data)
    manifest_text = json.dumps(manifest, sort_keys=True, separators=(",", ":"))
    meta = {META_KEY: manifest_text,
            META_DIGEST_KEY: hashlib.sha256(manifest_text.encode()).hexdigest()}
    text = container.header_text(entries, meta, FORMAT_VERSION)
    if len(text) > MAX_HEADER_BYTES or container.nesting_depth(text) > container.MAX_JSON_DEPTH:
        raise ValueError(f"the file header would exceed the format's limits "
                         f"({MAX_HEADER_BYTES} bytes, {container.MAX_JSON_DEPTH} levels of "
                         f"nesting): too many stages or too large a metadata")
    return struct.pack("<Q", len(text)) + text + data


def save(model: DeployModel, path, metadata: dict | None = None) -> int:
    """Write ``model`` (and ``metadata``, see :func:`to_bytes`) to ``path`` atomically;
    returns the file size in bytes."""
    data = to_bytes(model, metadata)
    atomic_write_bytes(path, data)
    return len(data)


# ------------------------------------------------------------------------------ reading

def _manifest(header: dict) -> dict:
    meta = header.get("__metadata__")
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        _fail("header __metadata__ must be an object of strings")
    exact_keys(meta, {container.VERSION_KEY, META_KEY, META_DIGEST_KEY}, "header __metadata__")
    manifest = container.parse_json(meta[META_KEY], "manifest")
    if not isinstance(manifest, dict):
        _fail("manifest must be a JSON object")
    exact_keys(manifest, MANIFEST_KEYS, "manifest", OPTIONAL_MANIFEST_KEYS)
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


def _check_digest(manifest: dict, header: dict, data) -> None:
    entries = {k: v for k, v in header.items() if k not in ("__metadata__", METADATA_KEY)}
    if manifest.get(TENSORS_DIGEST_KEY) != tensors_digest(entries, data):
        _fail(f"the tensors fail their SHA-256 check ({TENSORS_DIGEST_KEY}): file corrupted "
              f"or tampered with")


def _stage(i: int, fields, tensors: dict, shape: tuple, last: bool, tokens: bool):
    """The stage ``fields`` describes (its keys, values and tensors checked); ``tokens``:
    whether the previous stage gives float32 tokens (then this one must read them)."""
    kind = fields.get("type") if isinstance(fields, dict) else None
    if not isinstance(kind, str) or kind not in STAGE_TYPES:
        _fail(f"stage {i}: unknown type {kind!r}"[:200])
    stage_type = STAGE_TYPES[kind]
    if stage_type.reads_tokens != tokens:
        _fail(f"stage {i} ({kind}): " + ("the previous stage gives float32 tokens, which only "
                                         "a transformer_block or token_head reads" if tokens
                                         else "it reads tokens, which only a patch_embed or "
                                         "transformer_block gives"))
    exact_keys(fields, stage_type.file_keys(kind, last), f"stage {i} ({kind})")
    return stage_type.from_file(StageEntry(i, fields, tensors, shape, last))


def _stages(manifest: dict, tensors: dict) -> list:
    input_shape = tuple(int_list(manifest["input_shape"], "manifest input_shape", least=1,
                                 length=(1, 3)))
    check_size(input_shape, "manifest input_shape")
    entries = manifest["stages"]
    if not isinstance(entries, list) or not entries:
        _fail("manifest 'stages' must be a non-empty list")
    expected, stages, shape = set(), [], input_shape
    for i, fields in enumerate(entries):
        last = i == len(entries) - 1
        stage = _stage(i, fields, tensors, shape, last,
                       bool(stages) and stages[-1].gives_tokens)
        out_shape = stage.output_shape(shape)
        check_size(out_shape, f"stage {i} output")
        expected |= type(stage).file_tensors(i, fields["type"], last)
        stages.append(stage)
        shape = out_shape
    _check_classifier(manifest, stages, shape)
    if expected != set(tensors):
        _fail(f"unexpected tensors: {', '.join(sorted(set(tensors) - expected))}"[:300])
    _check_pixels(stages)
    index = {id(s): i for i, s in enumerate(stages)}
    for producer, producer_shape, between, consumer in quant_links(stages, input_shape):
        if producer is None:
            _link_from_clip(None, None, between, consumer)
            continue
        where = f"stage {index[id(producer)]} ({producer.kind})"
        positions, features = check_size(producer_shape, where), len(consumer.a_bits)
        per_feature = len(producer_shape) == 3 and consumer.kind == "linear"
        if per_feature and positions > MAX_POSITIONS_PER_FEATURE * features:
            _fail(f"{where}: its output has {positions} positions for the {features} input "
                  f"features of the next quantized stage, more than the "
                  f"{MAX_POSITIONS_PER_FEATURE} per feature the format allows")
        try:
            _link_from_clip(producer, producer_shape, between, consumer)
        except ValueError as exc:
            _fail(f"{where}: {exc}"[:300])
    return stages


def _check_pixels(stages: list) -> None:
    """The first quantized stage reads 8-bit pixels (a model of token stages has none:
    its ``patch_embed`` checks its own)."""
    first = next((i for i, s in enumerate(stages) if s.quantized), None)
    if first is not None and np.any(stages[first].a_bits != 8):
        _fail(f"stage {first}: input bits must all be 8 (the first layer reads 8-bit pixels)")


def _check_classifier(manifest: dict, stages: list, shape: tuple) -> None:
    """The last stage is a linear layer giving logits [n_classes]."""
    if not stages[-1].gives_logits:
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
    data = source.read(data_start, source.size - data_start)
    tensors = container.tensors(spans, data)
    _check_digest(manifest, header, data)
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
