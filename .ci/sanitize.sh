#!/usr/bin/env bash
# CI: build the cpu extension with AddressSanitizer + UndefinedBehaviorSanitizer in a
# temporary copy of the tree and run the cpu kernel tests against that build.
# Python itself is not instrumented, so the ASan runtime is preloaded and leak checks
# (Python's own allocations at exit) are off; any UB aborts the run.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
[ -n "${SONIQ_KEEP_SANITIZE_DIR:-}" ] && trap - EXIT && echo "kept $work"

git ls-files -z -- soniq_ref soniq_fast tests setup.py pyproject.toml README.md \
    | (cd "$root" && xargs -0 cp --parents -t "$work")
cd "$work"
# the build requirements live in pip's isolated build environment, not necessarily here
python -c "import Cython, setuptools" 2>/dev/null \
    || python -m pip install -q "Cython>=3.0" "setuptools>=68"
SONIQ_CPU_SANITIZE=1 python setup.py -q build_ext --inplace >build.log 2>&1 \
    || { cat build.log; exit 1; }

export LD_PRELOAD="$(gcc -print-file-name=libasan.so)"
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:strict_string_checks=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export PYTHONPATH="$work${PYTHONPATH:+:$PYTHONPATH}"
python - <<'PY'
import os, soniq_fast.cpu._kernels as k
assert os.path.realpath(k.__file__).startswith(os.path.realpath(os.getcwd())), k.__file__
print("sanitized build:", k.__file__)
from soniq_fast.cpu import isa
print("code paths tested:", ", ".join(n for n in isa.ISA_NAMES if isa.supported(n)))
PY
python -m pytest -q -p no:cacheprovider tests/test_cpu_backend.py tests/test_contract.py \
    tests/test_cpu_deploy_paths.py tests/test_packed_attacks.py \
    tests/test_concurrency.py tests/test_residual_deploy.py -k "cpu or test_cpu_backend"
