"""``soniq sweep``: the grid, failures recorded per trial, and -- on Ray -- a sweep
killed mid-way and resumed, whose every trial equals the same config trained alone
with ``soniq train`` byte for byte; and the same sweep on a Ray head started here
(``--address``). Ray tests skip where Ray is not installed (pip install -e ".[test]"
installs it)."""

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from soniq_sweep import GridError, expand, load_grid_file, run_sweep
from soniq_sweep.results import pareto

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(epochs_phase1=1, epochs_phase2=1)


def _env(**extra):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               RAY_USAGE_STATS_ENABLED="0", **extra)
    env.pop("SONIQ_DEBUG", None)
    return env


def _soniq(*args, env=None, **kwargs):
    return subprocess.run([sys.executable, "-m", "soniq_ref.cli", *args], env=env or _env(),
                          capture_output=True, text=True, **kwargs)


def _ray_or_skip():
    try:
        import ray  # noqa: F401
    except ImportError:
        pytest.skip('needs Ray: pip install -e ".[test]" (or ".[sweep]") installs it')


def test_grid_expands_seeds_drops_unreachable_budgets_and_names_trials_stably():
    trials, dropped = expand(TINY, {"target_weight_bits": [1.5, 3.0],
                                    "weight_palette": [(1, 4), (2, 8)]}, [0, 1], fp32=True)
    # 1.5 bits cannot be met with a (2, 8) palette: that point's two seeds are dropped
    assert dropped == 2 and len(trials) == 3 * 2 + 2
    assert sum(t.config.fp32 for t in trials) == 2
    again, _ = expand(TINY, {"target_weight_bits": [1.5, 3]}, [0])   # 3 and 3.0: one trial
    assert {t.id for t in again} <= {t.id for t in trials}
    assert len({t.id for t in trials}) == len(trials)


@pytest.mark.parametrize("grid, seeds, match", [
    ({"lr": [1e-3]}, [0], "grid axis 'lr'"),
    ({"target_weight_bits": []}, [0], "non-empty list"),
    ({"target_weight_bits": [9.0]}, [0], "no trial whose budgets"),
    ({}, [], "seeds must be"),
    ({}, ["0"], "seeds must be"),
])
def test_bad_grids_are_named(grid, seeds, match):
    with pytest.raises(GridError, match=match):
        expand(TINY, grid, seeds)


def test_grid_file(tmp_path):
    path = tmp_path / "grid.json"
    path.write_text(json.dumps({"base": TINY, "grid": {"target_weight_bits": [2.0]},
                                "seeds": [0, 1], "trials": [{"weight_palette": [2, 2],
                                                             "target_weight_bits": 2.0}]}))
    trials, _ = load_grid_file(path)
    assert len(trials) == 3 and trials[-1].config.weight_palette == (2, 2)
    path.write_text(json.dumps({"base": {"epochs": 3}, "seeds": [0]}))
    with pytest.raises(GridError, match="unknown training option.*epochs"):
        load_grid_file(path)
    path.write_text("{")
    with pytest.raises(GridError, match="not valid JSON"):
        load_grid_file(path)
    with pytest.raises(GridError, match="cannot read"):
        load_grid_file(tmp_path / "missing.json")


def test_pareto_keeps_points_nothing_beats():
    points = [(1.0, 80.0), (2.0, 85.0), (1.5, 79.0), (3.0, 84.0), (4.0, 90.0)]
    assert pareto(points) == [0, 1, 4]


def test_a_failing_trial_is_recorded_and_the_others_finish(tmp_path):
    good, _ = expand(TINY, {}, [0])
    bad, _ = expand(dict(TINY, dataset="mnist", data_dir=str(tmp_path / "none")), {}, [0])
    rows = run_sweep(good + bad, tmp_path / "s", local=True)
    status = {r["id"]: r for r in rows}
    assert status[good[0].id]["status"] == "done"
    assert status[bad[0].id]["status"] == "failed"
    assert "does not exist" in status[bad[0].id]["reason"]
    lines = (tmp_path / "s" / "results.csv").read_text().splitlines()
    assert len(lines) == 3 and lines[0].startswith("id,status,reason")
    assert (tmp_path / "s" / "frontier.png").stat().st_size > 0
    # a re-run skips both (finished: done or failed)
    mtime = (tmp_path / "s" / "trials" / good[0].id / "result.json").stat().st_mtime_ns
    run_sweep(good + bad, tmp_path / "s", local=True)
    assert (tmp_path / "s" / "trials" / good[0].id / "result.json").stat().st_mtime_ns == mtime


SWEEP_ARGS = ["--target-weight-bits", "1.5,2", "--seeds", "0,1", "--epochs-phase1", "1",
              "--epochs-phase2", "1"]


def _results(folder):
    import csv
    with open(folder / "results.csv") as f:
        return list(csv.DictReader(f))


def test_killed_sweep_resumes_and_equals_soniq_train(tmp_path):
    _ray_or_skip()
    out = tmp_path / "sweep"
    args = ["sweep", "--out", str(out), "--cpus", "1", *SWEEP_ARGS]
    proc = subprocess.Popen([sys.executable, "-m", "soniq_ref.cli", *args], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not list(out.glob("trials/*/result.json")):
        assert proc.poll() is None, proc.stdout.read().decode()
        time.sleep(0.2)
    finished_first = list(out.glob("trials/*/result.json"))
    assert finished_first, "no trial finished within four minutes"
    os.killpg(proc.pid, signal.SIGKILL)                   # the driver and its Ray instance
    proc.wait()
    assert len(list(out.glob("trials/*/result.json"))) < 4, "the sweep ended before the kill"
    kept = {p: p.stat().st_mtime_ns for p in finished_first}

    again = _soniq(*args, timeout=600)
    assert again.returncode == 0, again.stderr
    rows = _results(out)
    assert sorted(r["id"] for r in rows) == sorted({r["id"] for r in rows})   # each once
    assert len(rows) == 4 and all(r["status"] == "done" for r in rows)
    assert all(p.stat().st_mtime_ns == t for p, t in kept.items())          # not re-run
    for row in rows:
        alone = tmp_path / f"alone-{row['id']}"
        done = _soniq("train", "--out", str(alone), "--quiet", "--seed", row["seed"],
                      "--target-weight-bits", row["target_weight_bits"],
                      "--epochs-phase1", "1", "--epochs-phase2", "1", timeout=300)
        assert done.returncode == 0, done.stderr
        assert (alone / "model.soniq").read_bytes() == \
            (out / "trials" / row["id"] / "model.soniq").read_bytes()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sweep_on_a_ray_head_started_here(tmp_path):
    _ray_or_skip()
    ray = Path(sys.executable).with_name("ray")
    if not ray.exists():
        pytest.skip("needs the 'ray' command beside this Python (pip install ray)")
    port = _free_port()
    # the head and the sweep share a token (Ray's token authentication), and everything
    # stays on the loopback address: Ray otherwise rewrites 127.0.0.1 to the node's
    # network address. --block keeps the head in this test's process group, so it stops
    # with it and no other Ray instance on the machine is touched.
    env = _env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32),
               RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    head = subprocess.Popen([str(ray), "start", "--head", "--block", f"--port={port}",
                             "--num-cpus=1", "--node-ip-address=127.0.0.1",
                             "--include-dashboard=false", "--disable-usage-stats",
                             f"--temp-dir={tempfile.mkdtemp(prefix='ray')}"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 180               # the head is up when it listens
        while True:
            assert head.poll() is None, "ray start --head exited"
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert time.monotonic() < deadline, "the Ray head did not come up in 3 minutes"
            time.sleep(0.5)
        out = tmp_path / "sweep"
        done = _soniq("sweep", "--out", str(out), "--address", f"127.0.0.1:{port}",
                      "--target-weight-bits", "2", "--epochs-phase1", "1",
                      "--epochs-phase2", "1", env=env, timeout=600)
        assert done.returncode == 0, done.stderr
        rows = _results(out)
        assert len(rows) == 1 and rows[0]["status"] == "done"
        assert (out / "trials" / rows[0]["id"] / "model.soniq").is_file()
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()


def test_sweep_errors_are_one_line(tmp_path):
    done = _soniq("sweep", "--out", str(tmp_path), "--target-weight-bits", "9", "--local")
    assert done.returncode == 1 and done.stderr.count("\n") == 1
    assert "no trial whose budgets" in done.stderr
    done = _soniq("sweep", "--report", str(tmp_path / "empty"))
    assert done.returncode == 1 and "no finished trial" in done.stderr


def test_trials_report_validation_accuracy_and_the_frontier_is_chosen_on_it(tmp_path):
    from soniq_sweep.cli import summary_lines
    from soniq_sweep.results import chosen_on, flat_row

    held_out, _ = expand(TINY, {}, [0], fp32=True)
    rows = run_sweep(held_out, tmp_path / "s", local=True)
    assert all(r["status"] == "done" and 0 <= r["val_accuracy"] <= 100 for r in rows)
    assert all(r["config"]["val_fraction"] == 0.1 for r in rows)
    flat = [flat_row(r) for r in rows]
    assert chosen_on(flat) == "val_accuracy"
    header = (tmp_path / "s" / "results.csv").read_text().splitlines()[0].split(",")
    assert "val_accuracy" in header and "val_fraction" in header
    assert "validation accuracy %" in summary_lines(rows)[0]
    none, _ = expand(dict(TINY, val_fraction=0.0), {}, [0])
    rows = run_sweep(held_out + none, tmp_path / "s", local=True)
    assert [r["val_accuracy"] for r in rows if r["config"]["val_fraction"] == 0] == [None]
    assert chosen_on([flat_row(r) for r in rows]) == "test_accuracy"   # one has no split
    assert len(summary_lines(rows)) == 2 + 1 + 1     # header, one grid point (2 trials), fp32


def test_sweep_options_not_given_take_the_datasets_defaults():
    from soniq_ref.train.config import DATASET_DEFAULTS

    trials, _ = expand({"dataset": "fashion-mnist", "epochs_phase2": 1}, {}, [0])
    config = trials[0].config
    assert config.epochs_phase1 == DATASET_DEFAULTS["fashion-mnist"]["epochs_phase1"]
    assert config.epochs_phase2 == 1
