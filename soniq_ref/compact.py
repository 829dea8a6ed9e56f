"""Compact encodings of a ``.soniq`` file's tensors: what cannot be derived, densely.

Weight planes as one bit stream
    Output channel ``o`` of a layer with ``K`` weights per channel and ``b[o]``-bit
    codes contributes its bit planes ``0 .. b[o]-1``, each ``K`` bits (plane ``j``
    holds bit ``j`` of the channel's codes), channel after channel. The planes are
    laid end to end as one stream of ``K * sum(b)`` bits, packed LSB-first into
    bytes (bit ``t`` of the stream is bit ``t % 8`` of byte ``t // 8``); only the
    last byte has a zero tail. A weight costs exactly its bit width.

Bit widths as palette levels
    Every bit width of a layer is one of its palette's two levels ``(lo, hi)``, so
    it is stored as one selector bit (1: ``hi``, 0: ``lo``), packed LSB-first into
    bytes with a zero tail. A palette with one level (``lo == hi``) has every
    selector 0.
"""

from __future__ import annotations

import numpy as np

CHUNK_BYTES = 1 << 18       # temporaries of one decoding step, at most about this


def stream_bytes(k: int, total_bits: int) -> int:
    """Bytes of the weight stream of ``total_bits`` planes of ``k`` bits each."""
    return (k * total_bits + 7) // 8


def weight_stream(w_codes: np.ndarray, w_bits: np.ndarray) -> np.ndarray:
    """uint8 [stream_bytes(K, sum(w_bits))]: the codes' planes as one bit stream.

    w_codes: uint8 [O, ...] (K = the product of the trailing dimensions); w_bits: uint8 [O].
    """
    flat = w_codes.reshape(w_codes.shape[0], int(np.prod(w_codes.shape[1:])))
    k, total = flat.shape[1], int(w_bits.astype(np.int64).sum())
    out = np.zeros(stream_bytes(k, total), np.uint8)
    step = max(1, CHUNK_BYTES // max(1, 8 * k))          # channels per block
    bit = 0
    for o0 in range(0, len(flat), step):
        block, bits = flat[o0:o0 + step], w_bits[o0:o0 + step]
        shifts = np.arange(8, dtype=np.uint8)
        planes = (block[:, None, :] >> shifts[None, :, None]) & np.uint8(1)   # [n, 8, k]
        used = planes[shifts[None, :] < bits[:, None]]     # each channel's own planes
        _write_bits(out, bit, used.reshape(-1))
        bit += used.size
    return out


def _write_bits(out: np.ndarray, start: int, values: np.ndarray) -> None:
    """OR the {0, 1} ``values`` into the LSB-first bit stream ``out`` from bit ``start``."""
    if not values.size:
        return
    lead = start % 8
    packed = np.packbits(np.concatenate([np.zeros(lead, np.uint8), values]),
                         bitorder="little")
    out[start // 8:start // 8 + len(packed)] |= packed


def codes_from_stream(stream: np.ndarray, w_bits: np.ndarray, k: int) -> np.ndarray:
    """Inverse of :func:`weight_stream`: uint8 codes [O, k].

    Decodes a block of channels at a time (about CHUNK_BYTES of temporaries), so
    beyond the result a loader never multiplies the stream's size.
    """
    bits = w_bits.astype(np.int64)
    rows = np.concatenate([[0], np.cumsum(bits)])       # first plane of each channel
    codes = np.zeros((len(bits), k), np.uint8)
    step = max(1, CHUNK_BYTES // max(1, 8 * 8 * k))
    for o0 in range(0, len(bits), step):
        o1 = min(o0 + step, len(bits))
        begin, end = int(rows[o0]) * k, int(rows[o1]) * k
        raw = np.unpackbits(stream[begin // 8:(end + 7) // 8], bitorder="little")
        planes = raw[begin % 8:begin % 8 + end - begin].reshape(-1, k)
        block, first = bits[o0:o1], rows[o0:o1] - rows[o0]
        for j in range(int(block.max(initial=0))):
            sel = np.flatnonzero(block > j)
            codes[o0 + sel] |= planes[first[sel] + j] << np.uint8(j)
    return codes


def stream_tail_is_clear(stream: np.ndarray, k: int, total_bits: int) -> bool:
    """Whether the bits of the last byte past the ``k * total_bits`` stream bits are 0."""
    used = (k * total_bits) % 8
    return not used or not (int(stream[-1]) >> used)


def levels_from_bits(bits: np.ndarray, palette: tuple) -> np.ndarray:
    """uint8 [ceil(n/8)]: one selector bit per width (1: ``palette[1]``), LSB-first.

    Raises ValueError when a width is not a level of ``palette``."""
    lo, hi = (int(v) for v in palette)
    bits = np.asarray(bits)
    if not np.all((bits == lo) | (bits == hi)):
        raise ValueError(f"bit widths {sorted(set(np.unique(bits).tolist()))} are not all "
                         f"levels of the palette {[lo, hi]}")
    return np.packbits((bits == hi) & (hi != lo), bitorder="little")


def bits_from_levels(levels: np.ndarray, n: int, palette: tuple) -> np.ndarray:
    """uint8 [n]: the widths the selectors ``levels`` pick from ``palette``."""
    lo, hi = (int(v) for v in palette)
    chosen = np.unpackbits(levels, bitorder="little", count=n).astype(bool)
    return np.where(chosen, np.uint8(hi), np.uint8(lo)).astype(np.uint8)


def levels_are_canonical(levels: np.ndarray, n: int, palette: tuple) -> bool:
    """Whether no selector past the ``n`` widths is set, and none at all when the
    palette has one level."""
    chosen = np.unpackbits(levels, bitorder="little")
    return not chosen[n:].any() and (palette[0] != palette[1] or not chosen.any())
