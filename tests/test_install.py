"""Installing without a C compiler: the compiled backend is optional, the reference is not
affected, and asking for the missing backend says how to build it."""

import os
import subprocess
import sys

import pytest

from soniq_ref import get_backend

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _build(tmp_path, **extra_env):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SONIQ_")}
    env.update(CC="/bin/false", **extra_env)
    return subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--force",
                           "--build-lib", str(tmp_path / "lib"),
                           "--build-temp", str(tmp_path / "tmp")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_a_build_without_compiler_warns_and_succeeds(tmp_path):
    pytest.importorskip("Cython")
    done = _build(tmp_path)
    assert done.returncode == 0, done.stderr
    assert "WARNING: the cpu backend's C extension" in done.stderr
    assert "apt-get install build-essential" in " ".join(done.stderr.split())
    assert not list(tmp_path.rglob("_kernels*.so"))


def test_a_required_build_without_compiler_fails(tmp_path):
    pytest.importorskip("Cython")
    done = _build(tmp_path, SONIQ_REQUIRE_CPU_BACKEND="1")
    assert done.returncode != 0


def test_the_missing_backend_says_how_to_build_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "soniq_fast.cpu", None)     # import fails
    with pytest.raises(RuntimeError) as err:
        get_backend("cpu")
    message = str(err.value)
    assert "backend 'cpu' is not available" in message
    assert "C compiler" in message and "pip install -e ." in message
