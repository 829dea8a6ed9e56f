"""Interrupted training: checkpoints every epoch, --resume after SIGKILL, NaN stops cleanly."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from soniq_ref.train import TrainConfig, checkpoint, train
from soniq_ref.train import trainer as trainer_module

RUN = [sys.executable, "-m", "soniq_ref.cli", "train", "--epochs-phase1", "3",
       "--epochs-phase2", "3", "--seed", "3", "--quiet"]


def _metrics(run_dir):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics.pop("train_seconds")
    return metrics


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("whole")
    subprocess.run(RUN + ["--out", str(out)], check=True, capture_output=True, timeout=300)
    return out


def _progress(run_dir):
    try:
        return checkpoint.load(run_dir)[1]["progress"]
    except checkpoint.CheckpointError:
        return None


def _kill_after(run_dir, phase_index, epoch):
    """Start a run, SIGKILL it once its checkpoint reaches (phase_index, epoch)."""
    proc = subprocess.Popen(RUN + ["--out", str(run_dir)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        at = _progress(run_dir)
        if at and (at["phase_index"], at["epoch"]) >= (phase_index, epoch):
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (run_dir / "model.soniq").exists()


@pytest.mark.parametrize("phase_index,epoch", [(0, 1), (1, 1)], ids=["phase1", "phase2"])
def test_resume_after_sigkill_is_byte_identical(tmp_path, uninterrupted, phase_index, epoch):
    _kill_after(tmp_path, phase_index, epoch)
    done = subprocess.run([sys.executable, "-m", "soniq_ref.cli", "train", "--quiet",
                           "--resume", str(tmp_path)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "model.soniq").read_bytes() == \
        (uninterrupted / "model.soniq").read_bytes()
    assert _metrics(tmp_path) == _metrics(uninterrupted)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    config = TrainConfig(model="mlp", hidden=(16,), epochs_phase1=3, epochs_phase2=0,
                         limit_train=128, limit_test=64, batch_size=32)
    calls = {"n": 0}
    real = trainer_module.softmax_cross_entropy

    def poisoned(logits, labels):
        calls["n"] += 1
        loss, grad = real(logits, labels)
        return (float("nan") if calls["n"] == 6 else loss), grad   # in the 2nd epoch

    monkeypatch.setattr(trainer_module, "softmax_cross_entropy", poisoned)
    with pytest.raises(trainer_module.TrainingDiverged, match="--resume") as err:
        train(config, run_dir=tmp_path)
    assert "nan" in str(err.value) and "epoch 2" in str(err.value)
    at = checkpoint.load(tmp_path)[1]["progress"]
    assert (at["phase_index"], at["epoch"]) == (0, 1)
    monkeypatch.setattr(trainer_module, "softmax_cross_entropy", real)
    resumed = train(config, run_dir=tmp_path, resume=True)
    whole = train(config)
    assert resumed.test_accuracy == whole.test_accuracy
    assert [r.loss for r in resumed.history] == [r.loss for r in whole.history]


def test_resume_refuses_a_checkpoint_of_another_run(tmp_path):
    config = TrainConfig(model="mlp", hidden=(8,), epochs_phase1=1, epochs_phase2=1,
                         limit_train=64, limit_test=32)
    train(config, run_dir=tmp_path)
    other = TrainConfig(model="mlp", hidden=(8,), epochs_phase1=1, epochs_phase2=1,
                        limit_train=64, limit_test=32, seed=1)
    with pytest.raises(checkpoint.CheckpointError, match="other options"):
        train(other, run_dir=tmp_path, resume=True)


@pytest.mark.parametrize("content", [None, b"not a zip file", b"PK\x03\x04truncated"])
def test_cli_resume_without_a_usable_checkpoint_is_one_line(tmp_path, content):
    if content is not None:
        (tmp_path / checkpoint.FILE_NAME).write_bytes(content)
    done = subprocess.run([sys.executable, "-m", "soniq_ref.cli", "train", "--resume",
                           str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "checkpoint" in lines[0] and "without --resume" in lines[0]


def test_checkpoint_write_is_atomic(tmp_path):
    """No temp files are left behind and the file always loads."""
    config = TrainConfig(model="mlp", hidden=(8,), epochs_phase1=2, epochs_phase2=1,
                         limit_train=64, limit_test=32)
    train(config, run_dir=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [checkpoint.FILE_NAME, "history.csv"]
    arrays, meta = checkpoint.load(tmp_path)
    assert meta["progress"]["epoch"] == 1 and meta["progress"]["phase_index"] == 1
    assert all(isinstance(a, np.ndarray) for a in arrays.values())


def test_the_validation_split_is_part_of_the_checkpointed_config(tmp_path):
    config = TrainConfig(model="mlp", hidden=(8,), epochs_phase1=1, epochs_phase2=1,
                         limit_train=64, limit_test=32)
    train(config, run_dir=tmp_path)
    assert checkpoint.load(tmp_path)[1]["progress"]["config"]["val_fraction"] == 0.1
    other = TrainConfig(model="mlp", hidden=(8,), epochs_phase1=1, epochs_phase2=1,
                        limit_train=64, limit_test=32, val_fraction=0.2)
    with pytest.raises(checkpoint.CheckpointError, match="other options"):
        train(other, run_dir=tmp_path, resume=True)
