"""The byte level of a ``.soniq`` file: signature, header and tensor bytes, read bounded.

Layout (a safetensors container whose header starts with a fixed signature)::

    8 bytes   N, little-endian uint64: length of the JSON header
    N bytes   JSON header, starting with SIGNATURE + "<version>" (the
              ``__metadata__.soniq_format`` entry comes first), padded with spaces
    rest      the tensors' raw bytes; the header's entries tile them exactly

Reading checks, in this order and before reading any further: the signature and
version (bytes 8 to 64), the header length against the limit and the file size,
the header's JSON (size and nesting depth bounded before it is parsed), the tensor
entries against the data region; only then are the tensor bytes read, exactly the
bytes the entries account for. A file is opened once (non-blocking) and only a
regular file is read, so a path swapped for a pipe or a device never blocks.
"""

from __future__ import annotations

import json
import os
import re
import stat
import struct

import numpy as np

VERSION_KEY = "soniq_format"
METADATA_KEY = "metadata"          # the optional free-form object beside the tensors
# Every .soniq header starts with these bytes, followed by the version and a quote.
SIGNATURE = b'{"__metadata__":{"' + VERSION_KEY.encode() + b'":"'
PREFIX_BYTES = 64
MAX_HEADER_BYTES = 1 << 20
MAX_JSON_DEPTH = 32
DTYPES = {"U8": np.dtype("<u1"), "U64": np.dtype("<u8"), "F32": np.dtype("<f4")}
# the tail of a version-1 header (sorted keys, the manifest digest last)
_V1_TAIL = re.compile(rb'"soniq_manifest_sha256":"[0-9a-f]{64}"\}\} *$')
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)


class SoniqFileError(ValueError):
    """A .soniq file that is truncated, tampered with, of another version or inconsistent."""


def fail(msg: str):
    raise SoniqFileError(msg)


# ------------------------------------------------------------------------------ sources

class BytesSource:
    """The contents of a file already in memory."""

    def __init__(self, raw):
        self.view = memoryview(raw).cast("B")
        self.size = len(self.view)

    def read(self, offset: int, n: int):
        return self.view[offset:offset + n]


class FileSource:
    """An open regular file, read with ``pread`` (never past what the caller asks)."""

    def __init__(self, fd: int, size: int):
        self.fd, self.size = fd, size

    def read(self, offset: int, n: int):
        n = max(0, min(n, self.size - offset))
        buf = bytearray(n)
        view, done = memoryview(buf), 0
        while done < n:
            got = os.preadv(self.fd, [view[done:]], offset + done)
            if got == 0:
                fail(f"file is truncated: it shrank while being read ({offset + done} bytes)")
            done += got
        return memoryview(buf)


def open_regular(path) -> tuple[int, int]:
    """(descriptor, size) of ``path`` opened once, non-blocking; refuses non-regular files."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        fail(f"cannot read it: {exc.strerror or exc}")
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        fail("cannot read it: not a regular file")
    return fd, st.st_size


# ------------------------------------------------------------------------------ header

def _unique_keys(pairs: list) -> dict:
    out = {}
    for key, value in pairs:
        if key in out:
            fail(f"duplicate JSON key {key!r}")
        out[key] = value
    return out


def nesting_depth(text: bytes) -> int:
    """The deepest nesting of JSON arrays and objects in ``text`` (strings skipped)."""
    bare = np.frombuffer(_JSON_STRING.sub(b"", text), np.uint8)
    step = (bare == ord("{")).astype(np.int32) + (bare == ord("["))
    step -= (bare == ord("}")).astype(np.int32) + (bare == ord("]"))
    return int(np.cumsum(step).max(initial=0))


def parse_json(text, what: str):
    """Parse ``text`` (bytes or str), nested at most MAX_JSON_DEPTH deep; duplicate keys,
    bad UTF-8 and over-long integers are all a :class:`SoniqFileError`."""
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else bytes(text)
    if nesting_depth(raw) > MAX_JSON_DEPTH:
        fail(f"{what} is nested more than {MAX_JSON_DEPTH} levels deep")
    try:
        return json.loads(raw.decode("utf-8"), object_pairs_hook=_unique_keys)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        if isinstance(exc, SoniqFileError):
            raise SoniqFileError(f"{what}: {exc}") from None
        fail(f"{what} is not valid JSON: {type(exc).__name__}: {str(exc)[:200]}")


def _check_signature(source, version: int) -> None:
    prefix = bytes(source.read(0, PREFIX_BYTES))
    body = prefix[8:]
    if body.startswith(SIGNATURE):
        rest = body[len(SIGNATURE):]
        if b'"' not in rest:
            fail("file is truncated inside its SONIQ signature" if len(prefix) < PREFIX_BYTES
                 else "not a SONIQ model file (its signature has no version)")
        found = rest.split(b'"', 1)[0]
        if found != str(version).encode():
            older = found.isdigit() and len(found) < 4 and int(found) < version
            fail(f"format version {found.decode('ascii', 'replace')[:16]!r} is not supported; "
                 f"this reader reads version {version}" + (
                     ": the file was written by an older SONIQ; export the model again with "
                     "this one (soniq train, or soniq_ref.fileformat.save of its DeployModel)"
                     if older else ""))
        return
    if len(prefix) < PREFIX_BYTES and SIGNATURE.startswith(body) and len(body) < len(SIGNATURE):
        fail(f"file is truncated: {len(prefix)} bytes, too short for a SONIQ header")
    if _older_version(source, prefix):
        fail(f"written in format version 1, which this reader no longer reads (it reads "
             f"version {version}): export the model again with this version")
    fail("not a SONIQ model file (it does not start with the SONIQ signature)")


def _older_version(source, prefix: bytes) -> bool:
    """Whether the file looks like a version-1 .soniq file (its header ends in the
    manifest digest); reads at most 128 bytes."""
    if len(prefix) < 10 or prefix[8:10] != b'{"':
        return False
    (n,) = struct.unpack("<Q", prefix[:8])
    if n > 64 << 20 or 8 + n > source.size or n < 128:
        return False
    return bool(_V1_TAIL.search(bytes(source.read(8 + n - 128, 128))))


def read_header(source, version: int) -> tuple[dict, int]:
    """-> (header dict, offset of the data region) after the signature and length checks."""
    _check_signature(source, version)
    (n,) = struct.unpack("<Q", bytes(source.read(0, 8)))
    if n > MAX_HEADER_BYTES:
        fail(f"declared header length {n} exceeds the limit of {MAX_HEADER_BYTES} bytes")
    if 8 + n > source.size:
        fail(f"file is truncated: header declares {n} bytes but only {source.size - 8} follow")
    header = parse_json(source.read(8, n), "header")
    if not isinstance(header, dict):
        fail("header must be a JSON object")
    return header, 8 + n


def header_text(entries: dict, meta: dict, version: int) -> bytes:
    """The header bytes: ``__metadata__`` first (its version entry first: the signature),
    then the tensor entries by name; padded with spaces to a multiple of 8."""
    return encode_header({"__metadata__": {VERSION_KEY: str(version), **meta},
                          **entries})[8:]


def encode_header(header: dict) -> bytes:
    """Length prefix and header bytes of any ``header`` dict, in the writer's order:
    ``__metadata__`` first with its version entry first (when they are there), every
    other key (and the keys of tensor entries) sorted; padded with spaces to a multiple of 8."""
    meta = header.get("__metadata__")
    if isinstance(meta, dict):
        meta = {**{k: meta[k] for k in (VERSION_KEY,) if k in meta},
                **dict(sorted((k, v) for k, v in meta.items() if k != VERSION_KEY))}
    ordered = {**({"__metadata__": meta} if "__metadata__" in header else {}),
               **{k: dict(sorted(v.items())) if isinstance(v, dict) else v
                  for k, v in sorted(header.items()) if k != "__metadata__"}}
    text = json.dumps(ordered, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text


# ------------------------------------------------------------------------------ tensors

def _int_list(value, where: str, length=None) -> list[int]:
    if not isinstance(value, list) or (length is not None and len(value) != length) or \
            not all(type(v) is int and v >= 0 for v in value):
        fail(f"{where} must be a list of integers >= 0"
             + (f" of length {length}" if length else "") + f", got {value!r}"[:200])
    return value


def _span(name: str, entry, data_len: int) -> tuple:
    where = f"tensor {name!r}"
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        fail(f"{where}: entry must have exactly dtype, shape and data_offsets")
    if not isinstance(entry["dtype"], str) or entry["dtype"] not in DTYPES:
        fail(f"{where}: unsupported dtype {entry['dtype']!r} "
             f"(expected one of {', '.join(DTYPES)})"[:300])
    shape = _int_list(entry["shape"], f"{where} shape")
    if len(shape) > 8:
        fail(f"{where}: too many dimensions ({len(shape)})")
    begin, end = _int_list(entry["data_offsets"], f"{where} data_offsets", length=2)
    if not begin <= end <= data_len:
        fail(f"{where}: data_offsets [{begin}, {end}] fall outside the {data_len} "
             f"data bytes (file truncated?)")
    dtype = DTYPES[entry["dtype"]]
    size = 1
    for dim in shape:
        size *= dim
    if size * dtype.itemsize != end - begin:
        fail(f"{where}: shape {shape} of {entry['dtype']} needs {size * dtype.itemsize} "
             f"bytes, data_offsets give {end - begin}")
    return begin, end, name, dtype, shape


def tensor_spans(header: dict, data_len: int) -> list[tuple]:
    """[(begin, end, name, dtype, shape)] of every tensor entry, checked to tile the
    ``data_len`` bytes of the data region exactly (nothing is read yet)."""
    spans = sorted(_span(name, entry, data_len) for name, entry in header.items()
                   if name not in ("__metadata__", METADATA_KEY))
    position = 0
    for begin, end, name, _, _ in spans:
        if begin != position:
            fail(f"tensor data is not contiguous at tensor {name!r} (offset {begin}, "
                 f"expected {position})")
        position = end
    if position != data_len:
        fail(f"{data_len - position} unexpected bytes after the last tensor")
    return spans


def tensors(spans: list, data) -> dict[str, np.ndarray]:
    """name -> read-only array over ``data`` (the data region's bytes)."""
    out = {}
    for begin, end, name, dtype, shape in spans:
        try:
            out[name] = np.frombuffer(data[begin:end], dtype).reshape(shape)
        except ValueError:          # an empty tensor with a dimension beyond NumPy's range
            fail(f"tensor {name!r}: shape {shape} is not a valid array shape")
    return out
