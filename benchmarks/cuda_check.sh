#!/usr/bin/env bash
# On a machine with an NVIDIA GPU and CuPy: the cuda backend's hardware tests (the b1
# mma fragment probe against its CPU model, every engine bit for bit), the contract and
# deploy tests on the `cuda` id, then the GEMM benchmark against cuBLAS FP16 and INT8
# and the peak rates of the mma.sync instructions (b1, s8, f16).
# Logs and JSON go to the folder given as the first argument (default: cuda-check/).
#
# Usage: bash benchmarks/cuda_check.sh [OUT_DIR]
# Runs from the source tree (no install needed: the cuda backend is pure Python + CuPy).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-cuda-check}"
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
py="${PYTHON:-python3}"

{ nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv
  "$py" -c "import cupy, numpy, hypothesis; print('cupy', cupy.__version__, 'numpy', numpy.__version__, 'hypothesis', hypothesis.__version__)"
  "$py" -c "import torch; print('torch', torch.__version__)" || true
  nvcc --version | tail -1; g++ --version | head -1; } >"$out/machine.txt" 2>&1
cat "$out/machine.txt"

status=0
SONIQ_HYPOTHESIS_PROFILE="${SONIQ_HYPOTHESIS_PROFILE:-ci}" timeout "${TEST_TIMEOUT:-300}" \
    "$py" -m pytest -q -p no:cacheprovider --hypothesis-seed=0 -o addopts="" -rs \
    tests/test_cuda_hardware.py tests/test_contract.py tests/test_deploy.py \
    -k "hardware or (cuda and not emu)" 2>&1 | tee "$out/tests.log" || status=1

timeout "${BENCH_TIMEOUT:-420}" "$py" benchmarks/cuda_gemm.py --json "$out/cuda_gemm.json" \
    ${BENCH_ARGS:-} 2>&1 | tee "$out/cuda_gemm.log" || status=1
# the engine thresholds: plane pairs 8, 16, 32 (W1A8, W2A8, W4A8) on the large shapes
timeout 120 "$py" benchmarks/cuda_gemm.py --json "$out/cuda_gemm_pairs.json" --shapes 4,5 \
    --configs W1A8,W2A8,W4A8,W8A4 --engines mma,bitserial,int8 ${BENCH_ARGS:-} 2>&1 \
    | tee "$out/cuda_gemm_pairs.log" || status=1
timeout 120 "$py" benchmarks/cuda_mma_peak.py --json "$out/cuda_mma_peak.json" 2>&1 \
    | tee "$out/cuda_mma_peak.log" || status=1
exit $status
