"""The ``soniq`` command behaves like the tools people know: --version, a bare command
prints the usage, --help gives every option's default, usage errors exit 2 naming the
option, a closed stdout ends quietly, output files are readable by others, a run folder
is not overwritten by accident, Ctrl-C says how to resume, and progress written to a
file is plain lines. Runs the real entry point in a subprocess."""

import csv
import json
import os
import re
import signal
import stat
import subprocess
import sys
import time

import pytest

from soniq_ref.cli.parser import build_parser
from soniq_ref.train import checkpoint
from test_cli_errors import ROOT, assert_one_line_error, soniq

QUICK = ["--epochs-phase1", "1", "--epochs-phase2", "1", "--seed", "1", "--quiet"]


def env():
    environ = dict(os.environ)
    environ.pop("SONIQ_DEBUG", None)
    environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), environ.get("PYTHONPATH", "")])
    return environ


def command(*argv):
    return [sys.executable, "-m", "soniq_ref.cli", *map(str, argv)]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A quick run made under umask 022, the usual one."""
    out = tmp_path_factory.mktemp("runs") / "quick"
    done = subprocess.run(command("train", *QUICK, "--threads", "1", "--out", out),
                          capture_output=True, text=True, env=env(), timeout=300,
                          preexec_fn=lambda: os.umask(0o022))
    assert done.returncode == 0, done.stderr
    return out


def test_output_files_follow_the_umask(run_dir):
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in run_dir.iterdir()}
    assert set(modes) >= {"model.soniq", "metrics.json", "checkpoint.npz", "curves.png",
                          "bits.png", "history.csv"}
    assert all(mode == 0o644 for mode in modes.values()), modes


def test_version_and_bare_command(tmp_path):
    status, out, err = soniq("--version", cwd=tmp_path)
    assert status == 0 and re.fullmatch(r"soniq \d+\.\d+\.\d+\n", out) and err == ""
    status, out, err = soniq(cwd=tmp_path)
    assert status == 2 and out == ""
    assert err.startswith("usage: soniq")
    for name in ("train", "eval", "info", "predict", "export", "data"):
        assert re.search(rf"^\s+{name}\s+\S", err, re.M), f"{name} not listed in {err}"


def _options(parser, prefix=""):
    """(command, option string, help) of every option of every (nested) subcommand."""
    for action in parser._actions:
        if action.option_strings and action.dest not in ("help", "version") and prefix:
            yield prefix.strip(), action.option_strings[-1], action.help or ""
        if isinstance(action.choices, dict):          # subcommands
            for name, sub in action.choices.items():
                yield from _options(sub, f"{prefix} {name}")


def test_every_option_has_help_with_its_default():
    for name, flag, text in _options(build_parser()):
        assert "default:" in text or "required" in text or flag == "--onnx", (name, flag)


def test_docs_cli_lists_every_option_of_help():
    text = (ROOT / "docs" / "cli.md").read_text()
    for name, flag, _ in _options(build_parser()):
        assert f"`{flag}`" in text or f"[{flag}" in text, f"soniq {name} {flag} not in cli.md"
    documented = set(re.findall(r"`(--[a-z0-9-]+)", text))
    known = {flag for _, flag, _ in _options(build_parser())} | {"--version", "--help"}
    assert documented <= known, documented - known


@pytest.mark.parametrize("argv, option", [
    (["train", "--batch-size", "0"], "--batch-size"),
    (["train", "--batch-size", "many"], "--batch-size"),
    (["train", "--lr", "nan"], "--lr"),
    (["train", "--lr", "-1"], "--lr"),
    (["train", "--seed", "-1"], "--seed"),
    (["train", "--epochs-phase1", "0", "--epochs-phase2", "0"], "--epochs-phase1"),
    (["train", "--out", ""], "--out"),
    (["train", "--target-act-bits", "inf"], "--target-act-bits"),
    (["predict", "m.soniq", "x.png", "--top", "0"], "--top"),
    (["data", "download", "imagenet"], "NAME"),
    (["data"], "ACTION"),
])
def test_usage_errors_exit_2_and_name_the_option(tmp_path, argv, option):
    result = soniq(*argv, cwd=tmp_path)
    assert result[0] == 2
    assert_one_line_error(result, option, "")
    assert not re.search(r"\b[a-z]+_[a-z_]+\b", result[2].replace("soniq: error:", "")), \
        f"a Python field name in {result[2]!r}"


def test_closed_stdout_ends_quietly(run_dir):
    proc = subprocess.Popen(command("info", run_dir / "model.soniq"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env())
    proc.stdout.close()              # the reader is gone before anything is written
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141 and err == ""


def test_eval_defaults_to_the_recorded_dataset(run_dir, tmp_path):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    status, out, err = soniq("eval", run_dir / "model.soniq", cwd=tmp_path)
    assert status == 0, err
    assert out == (f"test accuracy {metrics['test_accuracy']:.2f}% "
                   f"({len_digits_test()} images, digits, backend ref)\n")
    status, out, _ = soniq("eval", run_dir / "model.soniq", "--json", cwd=tmp_path)
    assert json.loads(out)["test_accuracy"] == metrics["test_accuracy"]


def len_digits_test():
    from soniq_ref.data import load_dataset

    return len(load_dataset("digits").y_test)


def test_metrics_and_model_record_the_run(run_dir):
    from soniq_ref.fileformat import load

    metrics = json.loads((run_dir / "metrics.json").read_text())
    expected = {"dataset": "digits", "input_shape": [1, 8, 8],
                "class_names": [str(c) for c in range(10)], "weight_palette": [1, 4],
                "act_palette": [2, 8], "target_weight_bits": 2.0, "target_act_bits": 4.0,
                "lr": 0.003, "batch_size": 64, "epochs_phase1": 1, "epochs_phase2": 1,
                "seed": 1, "threads": 1, "backend": "ref"}
    assert {k: metrics[k] for k in expected} == expected
    meta = load(run_dir / "model.soniq").metadata
    assert meta["dataset"] == "digits" and meta["input_shape"] == [1, 8, 8]
    assert meta["class_names"] == expected["class_names"]
    assert meta["soniq_version"] == metrics["version"]
    assert {k: meta["training"][k] for k in ("lr", "batch_size", "seed", "weight_palette")} \
        == {"lr": 0.003, "batch_size": 64, "seed": 1, "weight_palette": [1, 4]}


def test_history_csv_has_one_row_per_epoch(run_dir):
    with open(run_dir / "history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["phase"], r["epoch"]) for r in rows] == [("noise", "1"), ("exact", "2")]
    assert all(0 <= float(r["val_accuracy"]) <= 100 for r in rows)


def test_an_existing_run_is_not_overwritten_without_force(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "model.soniq").write_bytes(b"earlier run")
    (out / "notes.txt").write_text("mine")
    result = soniq("train", *QUICK, "--out", out, cwd=tmp_path)
    assert result[0] == 2
    assert_one_line_error(result, "already holds files", "--force")
    assert (out / "model.soniq").read_bytes() == b"earlier run"
    status, _, err = soniq("train", *QUICK, "--fp32", "--out", out, "--force", cwd=tmp_path)
    assert status == 0, err
    assert not (out / "model.soniq").exists()        # the earlier run's model is gone
    assert (out / "notes.txt").read_text() == "mine"


def test_progress_to_a_file_is_one_plain_line_per_epoch(tmp_path):
    log = tmp_path / "err.log"
    with open(log, "w") as err:
        done = subprocess.run(command("train", "--epochs-phase1", "2", "--epochs-phase2", "1",
                                      "--out", tmp_path / "run"),
                              stdout=subprocess.PIPE, stderr=err, text=True, env=env(),
                              timeout=300)
    assert done.returncode == 0
    text = log.read_text()
    assert "\r" not in text
    header, *lines = text.splitlines()
    assert header.startswith("digits: 1294 training, 144 validation (the last 10%), 359 test "
                              "images; epochs 2 + 1, batch 64, lr 0.003")
    assert [line.split(":")[0] for line in lines] == ["phase 1 epoch 1/3", "phase 1 epoch 2/3",
                                                      "phase 2 epoch 3/3"]
    assert all("train acc" in line and "val acc" in line and "loss" in line
               for line in lines)
    assert done.stdout.startswith("test accuracy ")


def _wait_for_checkpoint(run_dir, proc, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if (run_dir / checkpoint.FILE_NAME).is_file():
            return True
        time.sleep(0.05)
    return False


def test_ctrl_c_says_how_to_resume_and_resume_cleans_up(tmp_path):
    out = tmp_path / "run"
    # Ctrl-C reaches the command as SIGINT. A runner that started this suite in the
    # background (a non-interactive shell's '&') passes SIGINT on as ignored; the child
    # gets it back as a user's terminal would give it.
    proc = subprocess.Popen(command("train", "--epochs-phase1", "30", "--epochs-phase2", "2",
                                    "--quiet", "--out", out),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert _wait_for_checkpoint(out, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert err.count("\n") == 1 and f"'soniq train --resume {out}' continues" in err
    # leftovers of a write killed half-way
    for name in (".checkpoint.npz.k1ll3d.tmp", ".model.soniq.k1ll3d.tmp"):
        (out / name).write_bytes(b"partial")
    result = soniq("train", "--resume", out, "--out", tmp_path / "other", cwd=tmp_path)
    assert result[0] == 2
    assert_one_line_error(result, "--out", "only --lr and --quiet")
    result = soniq("train", "--resume", out, "--epochs-phase1", "1", "--lr", "nan", cwd=tmp_path)
    assert result[0] == 2 and "--lr" in result[2]
    status, _, err = soniq("train", "--resume", out, "--quiet", "--lr", "0.001", cwd=tmp_path)
    assert status == 0, err
    assert not list(out.glob(".*.tmp"))
    config = checkpoint.load(out)[1]["progress"]["config"]
    assert config["lr"] == 0.001 and config["epochs_phase1"] == 30


def test_divergence_before_any_checkpoint_names_no_checkpoint(tmp_path, monkeypatch):
    from soniq_ref.train import TrainConfig, train
    from soniq_ref.train import trainer as trainer_module

    real = trainer_module.softmax_cross_entropy
    monkeypatch.setattr(trainer_module, "softmax_cross_entropy",
                        lambda logits, labels: (float("inf"), real(logits, labels)[1]))
    config = TrainConfig(model="mlp", hidden=(8,), epochs_phase1=1, epochs_phase2=0,
                         limit_train=64, limit_test=16)
    with pytest.raises(trainer_module.TrainingDiverged) as err:
        train(config, run_dir=tmp_path)
    message = str(err.value)
    assert "no checkpoint" in message and "--lr 0.0003" in message
    assert "--resume" not in message and not (tmp_path / checkpoint.FILE_NAME).exists()


def test_eval_of_a_model_without_metadata_asks_for_the_dataset(run_dir, tmp_path):
    from soniq_ref import fileformat

    model = fileformat.load(run_dir / "model.soniq")
    model.metadata = {}
    fileformat.save(model, tmp_path / "bare.soniq")
    assert fileformat.load(tmp_path / "bare.soniq").metadata == {}
    result = soniq("eval", tmp_path / "bare.soniq", cwd=tmp_path)
    assert result[0] == 2
    assert_one_line_error(result, "--dataset", "pass --dataset")
    status, out, _ = soniq("eval", tmp_path / "bare.soniq", "--dataset", "digits", cwd=tmp_path)
    assert status == 0 and out.startswith("test accuracy ")
