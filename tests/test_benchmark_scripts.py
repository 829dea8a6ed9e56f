"""Smoke tests of the end-to-end and bit-width benchmark scripts on tiny sizes: they run,
print their tables, and check exactness on the way (timings are not asserted)."""

import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("soniq_fast.cpu", reason="the cpu extension is not built; "
                                             "run: python setup.py build_ext --inplace")

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)


def run_script(name: str, *args: str) -> str:
    done = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", name), *args],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return done.stdout


def needs_baselines():
    for name, extra in (("onnx", "bench"), ("onnxruntime", "bench"), ("torch", "bench-torch")):
        pytest.importorskip(name, reason=f"{name} is not installed: pip install -e '.[{extra}]'")


def test_deploy_models_default_network():
    needs_baselines()
    out = run_script("deploy_models.py", "--batches", "1,3", "--threads", "1", "--repeats", "1",
                     "--clock", "thread")
    assert "| 1 | 1 (thread) |" in out and "| 3 | 1 (thread) |" in out
    # the exact ONNX export equals soniq's logits wherever ORT's integer ops are exact; the
    # uniform INT8 networks cannot be (per-tensor activation scales)
    assert "| ORT exact | 1 | yes |" in out or "| ORT exact | 1 | no |" in out
    assert "| ORT QDQ | 1 | no |" in out


def test_deploy_models_resnet_against_onnx_runtime():
    """The residual network: soniq's logits equal the reference's (the script asserts it),
    the exact ONNX export's equal soniq's bit for bit, the QDQ network runs beside them,
    and the fbgemm columns say it was not built."""
    needs_baselines()
    out = run_script("deploy_models.py", "--network", "resnet", "--width", "4", "--batches",
                     "2", "--threads", "1", "--repeats", "1", "--clock", "thread")
    assert "| 2 | 1 (thread) |" in out and "| - | - |" in out
    assert "| ORT exact | 1 | yes |" in out and "| ORT QDQ | 1 | no |" in out


def test_deploy_models_reads_a_model_file(tmp_path):
    needs_baselines()
    from random_deploy import random_cnn_deploy
    from soniq_ref.fileformat import save

    deploy, _ = random_cnn_deploy(3, (1, 8, 8), 4, (4, 6), (2, 8), 2)
    path = tmp_path / "tiny.soniq"
    save(deploy, path)
    out = run_script("deploy_models.py", "--model", str(path), "--batches", "2",
                     "--threads", "1", "--repeats", "1", "--stages")
    assert "| 2 | 1 (wall) |" in out and "conv + requantize" in out


@pytest.mark.parametrize("model", ["cnn", "vit"])
def test_train_speed_times_every_mode_and_pytorch(model):
    pytest.importorskip("torch", reason="torch is not installed: pip install -e '.[bench-torch]'")
    out = run_script("train_speed.py", "--model", model, "--batches", "2", "--repeats", "1",
                     "--threads", "1", "--clock", "thread")
    assert f"one epoch, {model}, digits" in out
    rows = [line.split("|")[1].strip() for line in out.splitlines() if line.startswith("| ")]
    assert rows[1:] == ["PyTorch float32", "soniq_ref float", "soniq_ref noise",
                        "soniq_ref exact"]
    assert "1 thread (thread): s / epoch" in out


def test_bit_curve_grid():
    out = run_script("bit_curve.py", "--shape", "3,70,5", "--bits", "1,8", "--isas", "scalar",
                     "--repeats", "1", "--clock", "thread")
    assert "| scalar: ns / output | A1 | A8 |" in out
    rows = [line for line in out.splitlines() if line.startswith("| W")]
    assert [r.split("|")[1].strip() for r in rows] == ["W1", "W8"]
    assert all(np.isfinite(float(v)) for r in rows for v in r.split("|")[2:4])


def test_engine_cost_table():
    # Every engine forced on the scalar path, checked against the reference on the way.
    out = run_script("engine_cost.py", "--shapes", "5x70x19", "--configs", "W1A2,W4A8",
                     "--engines", "popcount,lut,int8,auto", "--isa", "scalar", "--repeats",
                     "1", "--clock", "thread")
    assert "| M x K x N | config | popcount ms | lut ms | int8 ms | auto ms |" in out
    rows = [line for line in out.splitlines() if line.startswith("| 5x70x19")]
    assert [r.split("|")[2].strip() for r in rows] == ["W1A2", "W4A8"]
    assert "(popcount)" in rows[0] and "(lut)" in rows[0] and "(int8)" in rows[1]


def test_deploy_models_says_what_is_missing():
    """Without the baselines' packages the script names them and exits 2 (run with torch
    hidden, whether or not it is installed)."""
    code = ("import sys; sys.modules['torch'] = None; sys.path.insert(0, 'benchmarks'); "
            "import deploy_models; sys.exit(deploy_models.main([]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert done.returncode == 2
    assert "torch (pip install -e \".[bench-torch]\")" in done.stderr
