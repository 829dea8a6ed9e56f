#!/usr/bin/env bash
# CI: the lowest runtime dependency versions pyproject.toml declares really work.
# Installs exactly those versions (">=X" becomes "==X") into a fresh virtual environment
# and runs the reference's fast tests, the Python API and the tutorials (blocks that
# need a compiled backend skip themselves: nothing is compiled here).
set -euo pipefail
cd "$(dirname "$0")/.."
venv="$(mktemp -d)/venv"
trap 'rm -rf "$(dirname "$venv")"' EXIT
python -m venv "$venv"
pins=$(python - <<'PY'
import re, tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
print(" ".join(re.sub(r"\s*>=\s*", "==", d) for d in deps))
PY
)
echo "lowest declared versions: $pins"
"$venv/bin/python" -m pip install -q --upgrade pip
# shellcheck disable=SC2086
"$venv/bin/python" -m pip install -q $pins pytest hypothesis pytest-timeout onnx onnxruntime
PYTHONPATH="$PWD" "$venv/bin/python" -m pytest -q -p no:cacheprovider \
    tests/test_quantizers.py tests/test_integer_core.py tests/test_reference_stands_alone.py \
    tests/test_fit.py tests/test_plots.py \
    tests/test_docs.py -k "not site and not broken_link"
