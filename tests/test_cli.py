"""The ``soniq`` command: train -> eval reproduces test_accuracy exactly, info, the fp32
baseline, seeded byte-identical output, and one-line user errors without a traceback."""

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from soniq_ref import get_backend
from soniq_ref.cli import main
from soniq_ref.data import load_dataset
from soniq_ref.fileformat import load
from soniq_ref.train.outputs import METRIC_KEYS

QUICK = ["--epochs-phase1", "1", "--epochs-phase2", "1", "--quiet"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert main(["train", "--seed", "7", "--out", str(out), *QUICK]) == 0
    return out


def test_train_writes_every_output(run_dir):
    assert sorted(p.name for p in run_dir.iterdir()) == ["bits.png", "checkpoint.npz",
                                                         "curves.png", "history.csv",
                                                         "metrics.json", "model.soniq"]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert tuple(metrics) == METRIC_KEYS
    assert metrics["model_bytes"] == (run_dir / "model.soniq").stat().st_size
    assert metrics["mean_weight_bits"] <= 2.0 and metrics["mean_act_bits"] <= 4.0
    assert metrics["compression_vs_fp32"] > 1
    assert (metrics["seed"], metrics["dataset"], metrics["model"]) == (7, "digits", "cnn")
    assert (run_dir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_reproduces_test_accuracy_exactly(run_dir, capsys):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    capsys.readouterr()
    assert main(["eval", str(run_dir / "model.soniq"), "--dataset", "digits", "--backend", "ref",
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["test_accuracy"] == metrics["test_accuracy"]
    model = load(run_dir / "model.soniq")
    logits = model.logits(load_dataset("digits").x_test)
    assert report["logits_sha256"] == hashlib.sha256(logits.astype("<f4").tobytes()).hexdigest()
    assert main(["eval", str(run_dir / "model.soniq"), "--dataset", "digits"]) == 0
    assert f"test accuracy {metrics['test_accuracy']:.2f}% " in capsys.readouterr().out


@pytest.mark.parametrize("backend", ["cpu", "cuda-emu"])
def test_eval_logits_digest_is_the_same_on_every_backend(run_dir, backend, capsys):
    try:
        get_backend(backend)
    except RuntimeError as exc:
        pytest.skip(str(exc))
    digests = []
    for name in ("ref", backend):
        assert main(["eval", str(run_dir / "model.soniq"), "--backend", name, "--json"]) == 0
        digests.append(json.loads(capsys.readouterr().out)["logits_sha256"])
    assert digests[0] == digests[1]


def test_info_describes_the_model(run_dir, capsys):
    capsys.readouterr()
    assert main(["info", str(run_dir / "model.soniq")]) == 0
    text = capsys.readouterr().out
    assert "conv" in text and "linear" in text and "compression" in text
    assert main(["info", str(run_dir / "model.soniq"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["bytes"] == (run_dir / "model.soniq").stat().st_size
    assert [s["kind"] for s in info["stages"]][-1] == "linear"


def test_same_seed_gives_identical_files(run_dir, tmp_path):
    assert main(["train", "--seed", "7", "--out", str(tmp_path), *QUICK]) == 0
    assert (tmp_path / "model.soniq").read_bytes() == (run_dir / "model.soniq").read_bytes()
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (run_dir, tmp_path))
    a.pop("train_seconds"), b.pop("train_seconds")
    assert a == b


def test_fp32_baseline(tmp_path):
    assert main(["train", "--fp32", "--epochs-phase1", "1", "--epochs-phase2", "0", "--quiet",
                 "--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.npz", "curves.png",
                                                          "history.csv", "metrics.json",
                                                          "model_fp32.npz"]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["mean_weight_bits"] == 32.0 and metrics["compression_vs_fp32"] == 1.0
    # the float model file reproduces the reported accuracy
    from soniq_ref import cnn
    from soniq_ref.data import load_dataset
    from soniq_ref.train.float_model import load_float_model
    from soniq_ref.train.trainer import accuracy, predict

    model = cnn((1, 8, 8), 10)
    model.set_mode("float")
    meta = load_float_model(model, tmp_path / "model_fp32.npz")
    assert meta["dataset"] == "digits" and meta["training"]["fp32"] is True
    data = load_dataset("digits")
    assert accuracy(predict(model, data.x_test), data.y_test) == metrics["test_accuracy"]


@pytest.mark.parametrize("argv, message", [
    (["train", "--weight-palette", "1,9"], "weight-palette"),
    (["train", "--dataset", "imagenet"], "dataset"),
    (["train", "--dataset", "mnist"], "--data-dir"),
    (["train", "--epochs-phase1", "-2"], "--epochs-phase1"),
    (["train", "--val-fraction", "1"], "--val-fraction"),
    (["train", "--val-fraction", "-0.1"], "--val-fraction"),
    (["eval", "missing.soniq", "--dataset", "digits"], "cannot read"),
    (["info", "missing.soniq"], "cannot read"),
    (["frobnicate"], "invalid choice"),
])
def test_user_errors_are_one_line(argv, message, capsys):
    status = main(argv)
    err = capsys.readouterr().err
    assert status != 0
    assert err.count("\n") == 1 and err.startswith("soniq: error:") and message in err


def test_bad_model_and_mismatched_dataset(run_dir, tmp_path, capsys):
    bad = tmp_path / "bad.soniq"
    bad.write_bytes((run_dir / "model.soniq").read_bytes()[:100])
    assert main(["info", str(bad)]) == 1
    assert "truncated" in capsys.readouterr().err
    (tmp_path / "mnist").mkdir()
    assert main(["eval", str(run_dir / "model.soniq"), "--dataset", "mnist", "--data-dir",
                 str(tmp_path / "mnist")]) == 1
    assert "missing train-images-idx3-ubyte" in capsys.readouterr().err
    assert main(["eval", str(run_dir / "model.soniq"), "--dataset", "digits",
                 "--backend", "tpu"]) == 1
    assert "unknown backend" in capsys.readouterr().err


def test_train_and_eval_on_an_mnist_folder(tmp_path, capsys):
    from test_data import make_mnist

    (tmp_path / "mnist").mkdir()
    make_mnist(tmp_path / "mnist", n_train=40, n_test=9, compress=True, size=(10, 9))
    out = tmp_path / "run"
    assert main(["train", "--dataset", "mnist", "--data-dir", str(tmp_path / "mnist"),
                 "--model", "mlp", "--epochs-phase1", "1", "--epochs-phase2", "1", "--quiet",
                 "--batch-size", "16", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["dataset"], metrics["model"]) == ("mnist", "mlp")
    capsys.readouterr()
    assert main(["eval", str(out / "model.soniq"), "--dataset", "mnist", "--data-dir",
                 str(tmp_path / "mnist"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["test_accuracy"] == metrics["test_accuracy"]
    assert main(["eval", str(out / "model.soniq"), "--dataset", "digits"]) == 1
    assert "expects [1, 10, 9]" in capsys.readouterr().err


def test_no_traceback_from_the_command_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "soniq_ref.cli", "info",
                           str(tmp_path / "nothing.soniq")], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parent.parent)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1


def test_console_script_is_installed():
    beside = Path(sys.executable).parent / "soniq"
    exe = shutil.which("soniq") or (str(beside) if beside.exists() else None)
    if exe is None:
        pytest.skip("the soniq console script is not on PATH; pip install -e . installs it")
    proc = subprocess.run([exe, "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "train" in proc.stdout


def test_metrics_report_the_validation_and_test_accuracy(run_dir):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0 <= metrics["val_accuracy"] <= 100 and metrics["val_fraction"] == 0.1
    header = (run_dir / "history.csv").read_text().splitlines()[0]
    assert header == ("phase,epoch,loss,train_accuracy,val_accuracy,mean_weight_bits,"
                      "mean_act_bits")


@pytest.mark.parametrize("argv, expected", [
    ([], dict(dataset="digits", epochs_phase1=30, epochs_phase2=15, batch_size=64)),
    (["--dataset", "fashion-mnist"], "fashion-mnist"),
    (["--dataset", "fashion-mnist", "--epochs-phase1", "2", "--batch-size", "32", "--lr",
      "0.01", "--val-fraction", "0"],
     dict(dataset="fashion-mnist", epochs_phase1=2, batch_size=32, lr=0.01, val_fraction=0.0)),
])
def test_options_not_given_come_from_the_datasets_defaults(argv, expected):
    from soniq_ref.cli.parser import build_parser
    from soniq_ref.cli.train_command import config_from_args
    from soniq_ref.train import TrainConfig
    from soniq_ref.train.config import DATASET_DEFAULTS

    config = config_from_args(build_parser().parse_args(["train", *argv]))
    if isinstance(expected, str):
        expected = dict(DATASET_DEFAULTS[expected], dataset=expected)
    assert {k: getattr(config, k) for k in expected} == expected
    assert config == TrainConfig.for_dataset(config.dataset, **{
        k: getattr(config, k) for k in expected if k != "dataset"})
