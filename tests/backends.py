"""Which backends the differential tests run against, and how each is loaded.

An id is ``name`` or ``name:variant``; the variant picks an ISA path (cpu) or a
thread schedule (cuda-emu) through the backend's ``variant(v)`` method. A backend
that cannot run here is skipped with the reason and what would make it run.
"""

import pytest

from soniq_ref import get_backend

BACKEND_IDS = [
    "ref",
    "cpu:scalar", "cpu:avx2", "cpu:avx512",
    "cuda-emu:forward", "cuda-emu:reverse", "cuda-emu:random",
    "cuda",
]

_cache = {}


def load_backend(backend_id):
    if backend_id not in _cache:
        name, _, variant = backend_id.partition(":")
        try:
            backend = get_backend(name)
            if variant:
                backend = backend.variant(variant)
            _cache[backend_id] = (backend, None)
        except RuntimeError as exc:
            _cache[backend_id] = (None, str(exc))
    backend, reason = _cache[backend_id]
    if backend is None:
        pytest.skip(f"{backend_id}: {reason}")
    return backend
