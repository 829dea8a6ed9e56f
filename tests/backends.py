"""Which backends the differential tests run against, and how each is loaded.

An id is ``name``, ``name:variant``, ``name+engine`` or ``name:variant+engine``: the
variant pins a way of running that must not change any result (an ISA path on cpu, a
thread schedule on cuda-emu) through the backend's ``variant(v)``; the engine pins
every GEMM to one engine through ``with_engine(e)`` (no engine: the backend's automatic
choice). So the contract tests, run on every id, are also the tests of every engine.
A backend that cannot run here is skipped with the reason and what would make it run.
"""

import pytest

from soniq_ref import get_backend

CPU_ISAS = ("scalar", "avx2", "avx512")
CPU_ENGINES = ("popcount", "int8", "lut")
EMU_SCHEDULES = ("forward", "reverse", "random")
CUDA_ENGINES = ("popcount", "mma", "int8")

# every backend and variant, engines chosen automatically
BACKEND_IDS = (["ref"] + [f"cpu:{isa}" for isa in CPU_ISAS]
               + [f"cuda-emu:{schedule}" for schedule in EMU_SCHEDULES] + ["cuda"])
# every engine pinned: on each cpu path; on cuda-emu under two schedules
ENGINE_IDS = ([f"cpu:{isa}+{engine}" for isa in CPU_ISAS for engine in CPU_ENGINES]
              + [f"cuda-emu:{schedule}+{engine}" for schedule in ("random", "reverse")
                 for engine in CUDA_ENGINES])
ALL_IDS = BACKEND_IDS + ENGINE_IDS

_cache = {}


def parse_id(backend_id: str) -> tuple:
    """'name:variant+engine' -> (name, variant or '', engine or '')."""
    name_variant, _, engine = backend_id.partition("+")
    name, _, variant = name_variant.partition(":")
    return name, variant, engine


def backend_from_id(backend_id: str):
    """The backend an id names (RuntimeError when it cannot run here)."""
    name, variant, engine = parse_id(backend_id)
    backend = get_backend(name)
    if variant:
        backend = backend.variant(variant)
    if engine:
        backend = backend.with_engine(engine)
    return backend


def load_backend(backend_id):
    if backend_id not in _cache:
        try:
            _cache[backend_id] = (backend_from_id(backend_id), None)
        except RuntimeError as exc:
            _cache[backend_id] = (None, str(exc))
    backend, reason = _cache[backend_id]
    if backend is None:
        pytest.skip(f"{backend_id}: {reason}")
    return backend
