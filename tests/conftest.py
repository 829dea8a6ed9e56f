"""Shared test set-up: Hypothesis profiles and the backend fixture.

Profiles (choose with SONIQ_HYPOTHESIS_PROFILE, default ``ci``):
  ci    -- bounded, what CI runs;
  dev   -- ten times the examples, for a local run before a push;
  long  -- for hunting bugs in a new kernel overnight.
"""

import os

import pytest
from hypothesis import HealthCheck, settings

from backends import ALL_IDS, load_backend

_COMMON = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                     HealthCheck.data_too_large])
settings.register_profile("ci", max_examples=25, **_COMMON)
settings.register_profile("dev", max_examples=250, **_COMMON)
settings.register_profile("long", max_examples=5000, **_COMMON)
settings.load_profile(os.environ.get("SONIQ_HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(params=ALL_IDS, scope="session")
def backend_id(request):
    """Each backend id in turn (tests/backends.py): every backend, variant and engine."""
    return request.param


@pytest.fixture(scope="session")
def backend(backend_id):
    """Each available backend in turn; unavailable ones are skipped with the reason."""
    return load_backend(backend_id)
