"""Bad input at the command line, as a new user types it: each mistake prints exactly
one line on stderr naming the problem and a way forward, exits non-zero, and shows no
traceback. Runs the real ``soniq`` entry point in a subprocess."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from soniq_ref import fileformat, get_backend
from soniq_ref.train import TrainConfig, train

ROOT = Path(__file__).resolve().parent.parent


def soniq(*argv, cwd):
    """Run ``python -m soniq_ref.cli ARGV`` -> (exit status, stdout, stderr)."""
    env = dict(os.environ)
    env.pop("SONIQ_DEBUG", None)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-m", "soniq_ref.cli", *map(str, argv)],
                          capture_output=True, text=True, cwd=cwd, env=env, timeout=120)
    return proc.returncode, proc.stdout, proc.stderr


def assert_one_line_error(result, problem: str, way_forward: str) -> None:
    status, out, err = result
    assert status != 0
    assert "Traceback" not in out + err
    assert err.count("\n") == 1 and err.startswith("soniq: error: "), err
    assert problem in err, f"{problem!r} not named in {err!r}"
    assert way_forward in err, f"no way forward ({way_forward!r}) in {err!r}"


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    config = TrainConfig(epochs_phase1=1, epochs_phase2=0, limit_train=64, channels=(3, 5),
                         batch_size=32, seed=4)
    path = tmp_path_factory.mktemp("model") / "digits.soniq"
    fileformat.save(train(config).deploy, path)
    return path


@pytest.mark.parametrize("argv, problem, way_forward", [
    (["train", "--dataset", "digitz"], "'digitz'", "choose from 'digits'"),
    (["train", "--dataset", "MNIST"], "'MNIST'", "choose from"),
    (["train", "--weight-palette", "1,9"], "--weight-palette", "1 <= lo <= hi <= 8"),
    (["train", "--weight-palette", "4,1"], "--weight-palette", "1 <= lo <= hi <= 8"),
    (["train", "--weight-palette", "x"], "--weight-palette", "like 1,4"),
    (["train", "--act-palette", "0,4"], "--act-palette", "1 <= lo <= hi <= 8"),
    (["train", "--act-palette", "2,4,8"], "--act-palette", "like 1,4"),
    (["train", "--target-weight-bits", "9"], "--target-weight-bits", "between the palette's"),
    (["train", "--target-weight-bits", "0.5"], "1..4", "between the palette's"),
    (["train", "--act-palette", "2,8", "--target-act-bits", "1"], "--target-act-bits",
     "between the palette's"),
    (["train", "--weight-palette", "2,3", "--target-weight-bits", "3.5"], "2..3",
     "between the palette's"),
    (["train", "--target-weight-bits", "nan"], "--target-weight-bits", "finite number"),
    (["train", "--epochs-phase1", "two"], "--epochs-phase1", "invalid int value"),
    (["train", "--model", "resnet", "--depth", "9"], "depth", "8, 14, 20"),
    (["train", "--model", "resnet", "--depth", "2"], "--depth", ">= 8"),
    (["train", "--model", "resnet", "--width", "0"], "--width", ">= 1"),
    (["train", "--dim", "8"], "--dim", "needs --model vit"),
    (["train", "--model", "resnet", "--pool", "cls"], "--pool", "needs --model vit"),
    (["train", "--model", "vit", "--dim", "10", "--heads", "4"], "--dim", "multiple of --heads"),
    (["train", "--model", "vit", "--depth", "17"], "--depth", "at most 16"),
    (["train", "--model", "vit", "--depth", "0"], "--depth", ">= 1"),
    (["train", "--model", "vit", "--pool", "max"], "'max'", "choose from"),
    (["train", "--model", "vit", "--mlp-activation", "tanh"], "'tanh'", "choose from"),
    (["train", "--model", "resnet", "--width", "5000"], "width", "1..1024"),
    (["train", "--dataset", "mnist"], "mnist", "--data-dir"),
    (["train", "--dataset", "cifar10"], "cifar10", "--data-dir"),
    (["eval", "missing.soniq", "--dataset", "digits"], "missing.soniq", "soniq train"),
    (["info", "missing.soniq"], "No such file", "check the path"),
    (["info", "."], "not a regular file", "check the path"),
    (["info", "/dev/zero"], "not a regular file", "check the path"),
    (["info"], "MODEL", "required"),
    (["frobnicate"], "'frobnicate'", "choose from"),
])
def test_argument_and_file_mistakes(tmp_path, argv, problem, way_forward):
    assert_one_line_error(soniq(*argv, cwd=tmp_path), problem, way_forward)


@pytest.mark.parametrize("dataset", ["mnist", "cifar10"])
def test_missing_or_empty_data_dir(tmp_path, model_file, dataset):
    for command in (["train", "--quiet"], ["eval", model_file]):
        result = soniq(*command, "--dataset", dataset, "--data-dir", tmp_path / "nowhere",
                       cwd=tmp_path)
        assert_one_line_error(result, "does not exist", "--data-dir must hold")
    (tmp_path / "empty").mkdir()
    result = soniq("eval", model_file, "--dataset", dataset, "--data-dir", tmp_path / "empty",
                   cwd=tmp_path)
    assert_one_line_error(result, "missing", "--data-dir must hold")


@pytest.mark.parametrize("keep", ["nothing", "length prefix", "half the header", "all but 1"])
def test_truncated_model_file(tmp_path, model_file, keep):
    raw = model_file.read_bytes()
    size = {"nothing": 0, "length prefix": 8, "half the header": 8 + len(raw[8:]) // 4,
            "all but 1": len(raw) - 1}[keep]
    bad = tmp_path / "bad.soniq"
    bad.write_bytes(raw[:size])
    for command in (["info", bad], ["eval", bad, "--dataset", "digits"]):
        assert_one_line_error(soniq(*command, cwd=tmp_path), "truncated",
                              "write a new model with 'soniq train'")


def test_tampered_model_file(tmp_path, model_file):
    raw = bytearray(model_file.read_bytes())
    raw[-3] ^= 0x10
    bad = tmp_path / "tampered.soniq"
    bad.write_bytes(bytes(raw))
    assert_one_line_error(soniq("eval", bad, "--dataset", "digits", cwd=tmp_path), "SHA-256",
                          "soniq train")


def test_unknown_backend(tmp_path, model_file):
    result = soniq("eval", model_file, "--dataset", "digits", "--backend", "tpu", cwd=tmp_path)
    assert_one_line_error(result, "unknown backend 'tpu'", "choose one of ref")


@pytest.mark.parametrize("name, way_forward", [("cpu", "pip install -e ."),
                                                ("cuda", "cuda-emu")])
def test_a_backend_that_is_not_built(tmp_path, model_file, name, way_forward):
    try:
        get_backend(name)
    except RuntimeError:
        pass
    else:
        pytest.skip(f"backend {name!r} loads on this machine, so its not-available message "
                    f"cannot be shown here; a machine without it runs this test")
    result = soniq("eval", model_file, "--dataset", "digits", "--backend", name, cwd=tmp_path)
    assert_one_line_error(result, f"backend {name!r} is not available", way_forward)


def test_a_good_command_still_works(tmp_path, model_file):
    status, out, err = soniq("info", model_file, cwd=tmp_path)
    assert status == 0 and err == "" and "compression" in out
