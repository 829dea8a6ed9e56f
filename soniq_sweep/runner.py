"""Running a sweep's trials: as Ray tasks (the default), or one after another here.

Each trial trains in its own folder ``SWEEP_DIR/trials/<id>/`` through the same code
as ``soniq train --out`` (:func:`soniq_ref.train.train`, then
:func:`soniq_ref.train.outputs.write_run`), so its model file is byte for byte the one
``soniq train`` writes for the same config. It ends by writing ``result.json`` (its
row of the results), atomically:

- a trial folder with ``result.json`` is finished (done or failed) and is skipped
  when the same sweep runs again;
- one with a checkpoint but no result was interrupted and resumes from the
  checkpoint, ending exactly as an uninterrupted run would;
- a trial that fails (a diverged loss, a bad config) is recorded as failed with its
  one-line reason, and the others go on.

With Ray, every trial is a task of one CPU (BLAS pinned to one thread inside it, as
in ``soniq train``), so a machine runs one trial per core. ``address=None`` starts a
local Ray instance on this machine's cores (``cpus`` limits it); an address (``auto``,
``HOST:PORT`` of a head started with ``ray start --head``, or ``ray://HOST:PORT``
with Ray's client extra) runs the same trials on that cluster. Every node needs
SONIQ installed and the dataset at the same path.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from soniq_ref.atomic import atomic_write_bytes
from soniq_ref.train import TrainConfig

from .grid import Trial, config_json

RESULT_FILE = "result.json"
TRIAL_FILE = "trial.json"


class SweepError(RuntimeError):
    """A sweep that cannot run; the message says what to do."""


def trial_dir(sweep_dir, trial: Trial) -> Path:
    return Path(sweep_dir) / "trials" / trial.id


def finished(sweep_dir, trial: Trial) -> bool:
    return (trial_dir(sweep_dir, trial) / RESULT_FILE).is_file()


def _write_json(path: Path, value) -> None:
    atomic_write_bytes(path, (json.dumps(value, indent=1, sort_keys=True) + "\n").encode())


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or exc.__class__.__name__
    return f"{exc.__class__.__name__}: {text}"[:300]


def run_trial(trial_id: str, config_text: str, folder: str) -> dict:
    """Train one trial in ``folder`` (resuming from its checkpoint if there is one);
    write its outputs and ``result.json``; return its result row."""
    from soniq_ref.train import train
    from soniq_ref.train.outputs import write_run

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    config = TrainConfig.from_dict(json.loads(config_text))
    row = {"id": trial_id, "config": json.loads(config_text)}
    try:
        resume = (out / "checkpoint.npz").is_file()
        result = train(config, run_dir=out, resume=resume)
        metrics = write_run(result, out)
        row.update(status="done", reason="", **metrics)     # weight_compression included
    except Exception as exc:     # one trial's failure is its result; the sweep goes on
        row.update(status="failed", reason=_one_line(exc))
    _write_json(out / RESULT_FILE, row)
    return row


def _prepare(sweep_dir: Path, trials: list[Trial]) -> list[Trial]:
    """Record each trial's config in its folder; return those not finished yet."""
    pending = []
    for trial in trials:
        folder = trial_dir(sweep_dir, trial)
        folder.mkdir(parents=True, exist_ok=True)
        if not (folder / TRIAL_FILE).is_file():
            _write_json(folder / TRIAL_FILE, {"id": trial.id,
                                              "config": json.loads(config_json(trial.config))})
        if not finished(sweep_dir, trial):
            pending.append(trial)
    return pending


def _report_line(row: dict, index: int, total: int) -> str:
    if row["status"] != "done":
        return f"[{index}/{total}] {row['id']} failed: {row['reason']}"
    validation = "-" if row.get("val_accuracy") is None else f"{row['val_accuracy']:.2f}%"
    return (f"[{index}/{total}] {row['id']} done: validation {validation}  "
            f"test {row['test_accuracy']:.2f}%  "
            f"w {row['mean_weight_bits']:.2f} a {row['mean_act_bits']:.2f} bits  "
            f"{row['train_seconds']:.0f} s")


def _run_here(pending, sweep_dir, on_result):
    for trial in pending:
        on_result(run_trial(trial.id, config_json(trial.config), str(trial_dir(sweep_dir, trial))))


def _run_on_ray(pending, sweep_dir, on_result, address, cpus):
    try:
        import ray
    except ImportError:
        raise SweepError('Ray is not installed: pip install "soniq[sweep]" (or pip install '
                         'ray), or run the trials one after another here with --local') from None
    # a local instance serves this machine alone: it listens on the loopback address
    options = dict(address=address) if address else dict(
        num_cpus=cpus or os.cpu_count(), include_dashboard=False, _node_ip_address="127.0.0.1")
    import logging
    logging.getLogger("ray").setLevel(logging.ERROR)     # Ray's start-up notices
    try:
        ray.init(log_to_driver=False, configure_logging=False, **options)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise SweepError(f"cannot start or reach {where}: {_one_line(exc)}") from None
    try:
        task = ray.remote(num_cpus=1, max_retries=0)(run_trial)
        trial_of = {task.remote(t.id, config_json(t.config), str(trial_dir(sweep_dir, t))): t
                    for t in pending}
        waiting = list(trial_of)
        while waiting:
            ready, waiting = ray.wait(waiting, num_returns=1)
            try:
                row = ray.get(ready[0])
            except ray.exceptions.RayError as exc:   # Ray lost the task, not the trial failed
                raise SweepError(f"Ray lost trial {trial_of[ready[0]].id} "
                                 f"({exc.__class__.__name__}); run the same command again "
                                 f"to resume the sweep") from None
            on_result(row)
    finally:
        ray.shutdown()


def run_sweep(trials: list[Trial], sweep_dir, *, local: bool = False, address=None,
              cpus: int | None = None, log=sys.stderr) -> list[dict]:
    """Run every unfinished trial of ``trials`` under ``sweep_dir``; rewrite the results
    after each one; return all result rows (finished earlier ones included)."""
    from .results import collect, write_results

    sweep_dir = Path(sweep_dir)
    pending = _prepare(sweep_dir, trials)
    done_before = len(trials) - len(pending)
    print(f"sweep: {len(trials)} trials, {done_before} already finished, {len(pending)} to run "
          f"({'here, one after another' if local else 'on Ray'})", file=log, flush=True)
    started, count = time.perf_counter(), [done_before]

    def on_result(row):
        count[0] += 1
        # the row also lands here when the trial ran on another machine of a cluster
        _write_json(sweep_dir / "trials" / row["id"] / RESULT_FILE, row)
        write_results(sweep_dir, collect(sweep_dir, trials))
        print(_report_line(row, count[0], len(trials)), file=log, flush=True)

    if pending:
        if local:
            _run_here(pending, sweep_dir, on_result)
        else:
            _run_on_ray(pending, sweep_dir, on_result, address, cpus)
    rows = collect(sweep_dir, trials)
    write_results(sweep_dir, rows)
    failed = sum(r["status"] != "done" for r in rows)
    print(f"sweep: {len(rows) - failed} done, {failed} failed, "
          f"{time.perf_counter() - started:.0f} s; results in {sweep_dir / 'results.csv'}",
          file=log, flush=True)
    return rows
