"""Threads for the work between the matrix products: one array, contiguous slices.

BLAS threads speed up only a training step's matrix products. The rest -- building
patch columns and scattering them back, max pooling, batch norm, ReLU, the noise and
its gradient, the quantizers, the epilogue -- is NumPy loops over whole arrays, and
NumPy releases the GIL inside them. :func:`split` runs one function on contiguous
slices of an array's axis on a few threads at once: the channel axis (axis 1) for the
layers, whose [B, C, H, W] arrays are stored channel by channel, or the batch axis.

**The rule that keeps results exact.** A computation may be split along an axis when
each output element is computed from the inputs at the same index of that axis only,
by the same operations in the same order: elementwise arithmetic, copies and casts
(:func:`elementwise`), and per-channel reductions over the other axes
(:func:`per_channel`). Every element then sees the same numbers in the same order
whatever the number of slices, so the result is **bit-identical at any worker count**
(tests check each split function at 1, 2 and 3 workers against the unsplit
computation). Two details make it so:

- an output is allocated in the memory layout NumPy would give the whole-array
  expression (:func:`elementwise` asks NumPy on a tiny probe with the same strides),
  because a later sum over the array runs in memory order;
- a per-channel reduction gets at least two channels per slice: NumPy may reduce a
  single channel of a batch-major array in another order than it reduces that
  channel inside the whole array.

A sum to one number (over the split axis itself) is not split: it runs on the whole
array after the slices are done. Random numbers are never drawn in slices: a
generator's stream is consumed on the calling thread, in one call, as before.

**How many workers.** ``--threads`` (``TrainConfig.threads``) sets BLAS threads and
these workers alike: the trainer and :func:`soniq_ref.fit` run training inside
:func:`workers`, and the previous setting comes back when they return (a context
variable: other threads and other runs are not affected). Outside it, and inside a
worker, everything runs on the calling thread. Slices below ``MIN_SLICE`` elements do
not pay for handing them to a thread and waiting for it, so a small array is cut into
fewer slices, down to one (which runs the expression on the whole array, as before).
"""

from __future__ import annotations

import contextlib
import contextvars
import queue
import threading
from typing import NamedTuple

import numpy as np

MIN_SLICE = 1 << 16          # elements a slice must have to be given to a thread


class _Threads:
    """``count`` threads, each waiting on its own queue for ``(body, s, reply)``: it
    calls ``body(s)`` and puts None (or the exception raised) on ``reply``."""

    def __init__(self, count: int):
        self.inboxes = [queue.SimpleQueue() for _ in range(count)]
        self.threads = [threading.Thread(target=self._serve, args=(inbox,), daemon=True,
                                         name=f"soniq-worker-{i + 1}")
                        for i, inbox in enumerate(self.inboxes)]
        for thread in self.threads:
            thread.start()

    @staticmethod
    def _serve(inbox):
        while (job := inbox.get()) is not None:
            body, s, reply = job
            try:
                body(s)
                reply.put(None)
            except BaseException as exc:        # handed to the caller
                reply.put(exc)

    def close(self):
        for inbox in self.inboxes:
            inbox.put(None)
        for thread in self.threads:
            thread.join()


class _Setting(NamedTuple):
    count: int                            # workers, the calling thread included
    threads: _Threads | None              # count - 1 threads (None for one worker)
    min_slice: int                        # elements per slice, at least


_SETTING: contextvars.ContextVar = contextvars.ContextVar("soniq_ref_parallel", default=None)


@contextlib.contextmanager
def workers(count: int, *, min_slice: int = MIN_SLICE):
    """Run the block with ``count`` workers (the calling thread and ``count - 1``
    threads); the previous setting is restored on exit. ``min_slice``: the fewest
    elements a slice is given to a thread for (tests pass 1 to split everything)."""
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
        raise ValueError(f"count must be an integer >= 1 (workers), got {count!r}")
    if isinstance(min_slice, bool) or not isinstance(min_slice, (int, np.integer)) \
            or min_slice < 1:
        raise ValueError(f"min_slice must be an integer >= 1, got {min_slice!r}")
    threads = _Threads(int(count) - 1) if count > 1 else None
    token = _SETTING.set(_Setting(int(count), threads, int(min_slice)))
    try:
        yield int(count)
    finally:
        _SETTING.reset(token)
        if threads is not None:
            threads.close()


def worker_count() -> int:
    """The workers :func:`split` uses here (1 outside :func:`workers`)."""
    setting = _SETTING.get()
    return 1 if setting is None else setting.count


def slices(length: int, parts: int) -> list[slice]:
    """``parts`` contiguous slices covering ``range(length)``, lengths differing by at
    most one: slice ``i`` is ``[length * i // parts, length * (i + 1) // parts)``."""
    return [slice(length * i // parts, length * (i + 1) // parts) for i in range(parts)]


def _parts(length: int, elements: int, min_items: int = 1) -> int:
    """How many slices :func:`split` cuts ``range(length)`` into here."""
    setting = _SETTING.get()
    if setting is None or setting.count == 1:
        return 1
    return max(1, min(setting.count, length // max(1, min_items),
                      elements // setting.min_slice))


def split(body, length: int, elements: int, *, min_items: int = 1) -> None:
    """Call ``body(s)`` for contiguous slices ``s`` covering ``range(length)``, one per
    worker, concurrently, and return when all have returned (the first exception
    raised, if any, is raised here after every slice has finished).

    ``elements``: how many array elements the whole call touches (slices get at least
    ``MIN_SLICE`` of them); ``min_items``: the fewest indices a slice may hold.
    ``body`` must write disjoint parts of its outputs for disjoint slices.
    """
    parts = _parts(length, elements, min_items)
    if parts <= 1:
        body(slice(0, length))
        return
    cuts = slices(length, parts)
    reply = queue.SimpleQueue()
    for inbox, s in zip(_SETTING.get().threads.inboxes, cuts[1:]):
        inbox.put((body, s, reply))
    errors = []
    try:
        body(cuts[0])
    except BaseException as exc:        # finish the others before raising
        errors.append(exc)
    errors += [e for e in (reply.get() for _ in cuts[1:]) if e is not None]
    if errors:
        raise errors[0]


def _probe(value):
    """A view of at most 2 elements per axis with ``value``'s strides (so NumPy picks
    the same memory layout for an expression of probes as for the full arrays)."""
    if not isinstance(value, np.ndarray) or value.ndim == 0:
        return value
    return value[(slice(0, 2),) * value.ndim]


def _along(value, ndim: int, axis: int, s: slice):
    """``value``'s part for slice ``s`` of ``axis`` of an ``ndim`` result (broadcasting:
    arrays are aligned at the right; an axis of length 1 is not sliced)."""
    if not isinstance(value, np.ndarray):
        return value
    own = axis - (ndim - value.ndim)
    if own < 0 or value.shape[own] == 1:
        return value
    index = [slice(None)] * value.ndim
    index[own] = s
    return value[tuple(index)]


def elementwise(expr, *operands, axis: int = 1, out=None) -> np.ndarray:
    """``expr(*operands)`` -- an elementwise NumPy expression of arrays that broadcast
    together (and scalars) -- computed on slices of ``axis`` in parallel, with the
    values and the memory layout of the whole-array expression.

    ``expr`` takes an ``out`` keyword, as a ufunc does: given an array, it writes its
    result there (a slice of the result, allocated in the layout NumPy gives the
    whole-array expression, or of ``out`` when one is passed -- possibly an operand:
    ``elementwise(np.multiply, x, s, out=x)`` is ``x *= s``). On one slice this is
    exactly ``expr(*operands)`` (or ``expr(*operands, out=out)``): no overhead.
    """
    shape = np.broadcast_shapes(*(np.shape(v) for v in operands))
    ndim = len(shape)
    if ndim <= axis or _parts(shape[axis], int(np.prod(shape))) <= 1:
        if out is None:
            return expr(*operands)
        expr(*operands, out=out)
        return out
    if out is None:
        out = np.empty_like(np.asarray(expr(*(_probe(v) for v in operands))), shape=shape)

    def body(s):
        expr(*(_along(v, ndim, axis, s) for v in operands), out=out[_index(ndim, axis, s)])

    split(body, shape[axis], int(np.prod(shape)))
    return out


def copy(src: np.ndarray, out: np.ndarray, *, axis: int = 1) -> np.ndarray:
    """``out[...] = src`` (NumPy's assignment cast, e.g. float to int64) on slices of
    ``axis`` in parallel; returns ``out``."""
    return elementwise(_assign, src, axis=axis, out=out)


def _assign(src, out):
    out[...] = src


def into(value: np.ndarray, out=None) -> np.ndarray:
    """``value``, or with ``out`` a copy of it there (NumPy's assignment cast): the
    ``out`` keyword for an expression whose last step is not a ufunc (e.g. ``astype``)."""
    if out is None:
        return value
    out[...] = value
    return out


def _index(ndim: int, axis: int, s: slice) -> tuple:
    return (slice(None),) * axis + (s,)


def per_channel(reduce, *operands, axis: int = 1) -> np.ndarray:
    """``reduce(*operands)`` -- a reduction to one value per index of ``axis`` (e.g. a
    sum over every other axis) -- computed on slices of at least two indices in
    parallel: ``reduce(*parts)[i]`` must depend on the operands at index ``i`` only."""
    arrays = [v for v in operands if isinstance(v, np.ndarray) and v.ndim > axis]
    length = arrays[0].shape[axis]
    ndim = max(v.ndim for v in arrays)
    parts = {}

    def body(s):
        parts[s.start] = reduce(*(_along(v, ndim, axis, s) for v in operands))

    split(body, length, sum(v.size for v in arrays), min_items=2)
    return np.concatenate([parts[k] for k in sorted(parts)]) if len(parts) > 1 \
        else parts[0]
