"""The two-phase trainer.

``train(config)`` runs, for a quantized model::

    phase 1  noise mode: loss = cross-entropy + lambda_w * mean_w + lambda_a * mean_a
             (means of the continuous precisions b~, :mod:`soniq_ref.budget`);
             weights, clips and batch norm by the main optimizer, theta by its own Adam
    snap     every channel to its palette's lo or hi level under the targets (:mod:`.snapping`)
    phase 2  exact mode: the real quantizers and integer core, STE backward, bits fixed
    export   :class:`soniq_ref.deploy.DeployModel`; the reported test accuracy is the
             deploy model's, so ``soniq eval`` on the exported file reproduces it exactly

and for ``fp32`` the same network in float mode for ``epochs_phase1 + epochs_phase2``
epochs. Each phase uses a cosine learning-rate schedule over its own steps.

Every epoch reports its accuracy on the validation set (``config.val_fraction`` of
the training images, held out by :func:`soniq_ref.data.hold_out_validation`); the
test set is evaluated once, on the exported model, at the end.

Every random choice (initialisation, noise, batch order) derives from
``config.seed``, so the same config gives the same metrics and model bytes.
BLAS runs ``config.threads`` threads (default: one per core, :func:`blas_threads`), and
the work between the matrix products as many workers (:mod:`soniq_ref.parallel`, set for
the run and restored after it); the same seed and thread count give the same bytes
(docs/cli.md, "Reproducible runs"), and the workers alone change no bit.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from .. import budget, parallel
from ..data import Dataset, hold_out_validation, load_dataset
from ..deploy import DeployModel
from ..loss import softmax_cross_entropy
from ..models import Sequential, build_model
from ..optim import SGD, Adam, cosine_lr
from . import checkpoint
from .config import TrainConfig
from .history import write_history
from .metadata import run_metadata
from .progress import PHASE_LABELS, Progress, run_header
from .snapping import snap

THETA_NAMES = ("theta_w", "theta_a")
PHASE2_LR_FACTOR = 0.3
EVAL_BATCH = 512


@dataclass
class EpochRecord:
    """One epoch: phase ('noise', 'exact' or 'float'), mean train loss, accuracies in %
    on the training batches and on the validation set (NaN when there is none)."""

    phase: str
    epoch: int
    loss: float
    train_accuracy: float
    val_accuracy: float
    mean_weight_bits: float
    mean_act_bits: float


@dataclass
class TrainResult:
    config: TrainConfig
    model: Sequential
    deploy: DeployModel | None
    test_accuracy: float              # % on the test set, measured once at the end
    train_seconds: float
    mean_weight_bits: float
    mean_act_bits: float
    history: list = field(default_factory=list)
    class_names: list = field(default_factory=list)   # label -> name
    dataset: str | None = None                         # the data's name
    input_shape: tuple = ()                            # one sample's shape
    val_accuracy: float = float("nan")                 # % on the validation set, at the end


def _limit(data: Dataset, config: TrainConfig) -> Dataset:
    return replace(data, x_train=data.x_train[:config.limit_train],
                   y_train=data.y_train[:config.limit_train],
                   x_test=data.x_test[:config.limit_test], y_test=data.y_test[:config.limit_test])


def as_float(x_uint8: np.ndarray) -> np.ndarray:
    """8-bit pixel codes -> float32 ``k / 255``, what the first layer reads."""
    return x_uint8.astype(np.float32) / np.float32(255.0)


def predict(model: Sequential, x_uint8: np.ndarray) -> np.ndarray:
    """Class predictions of ``model`` in its current mode, eval batch norm."""
    if not len(x_uint8):
        return np.zeros(0, np.int64)
    model.eval()
    out = [model.forward(as_float(x_uint8[i:i + EVAL_BATCH])).argmax(axis=1)
           for i in range(0, len(x_uint8), EVAL_BATCH)]
    model.train()
    return np.concatenate(out)


def _no_validation(data: Dataset) -> Dataset:
    """``data`` with an empty validation set where it has none."""
    if data.x_val is not None:
        return data
    return replace(data, x_val=data.x_train[:0], y_val=data.y_train[:0])


def accuracy(pred: np.ndarray, labels: np.ndarray) -> float:
    """Percentage of correct predictions (NaN when there are no labels to check)."""
    return 100.0 * float(np.mean(pred == labels)) if len(labels) else float("nan")


def _is_precision(name: str) -> bool:
    """Whether a registry name (``"3.theta_w"``, ``"2.conv1.theta_a"``) is a precision."""
    return name.rsplit(".", 1)[-1] in THETA_NAMES


def _optimizers(model: Sequential, config: TrainConfig, lr_scale: float):
    """The main optimizer over every parameter but the precisions; Adam over those."""
    main = {k: p for k, p in model.params.items() if not _is_precision(k)}
    theta = {k: p for k, p in model.params.items() if _is_precision(k)}
    opt = (Adam(main, weight_decay=config.weight_decay) if config.optimizer == "adam"
           else SGD(main, momentum=0.9, weight_decay=config.weight_decay))
    return opt, Adam(theta), config.lr * lr_scale


def _mean_bits(model: Sequential, phase: str) -> tuple[float, float]:
    layers = model.quant_layers()
    if phase == "float":
        return 32.0, 32.0
    return budget.soft_mean_bits(layers) if phase == "noise" else budget.hard_mean_bits(layers)


class TrainingDiverged(ValueError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class _Run:
    """What every phase of one run shares."""

    model: Sequential
    data: Dataset
    config: TrainConfig
    rng: np.random.Generator
    history: list
    progress: Progress
    run_dir: object              # where checkpoints go (None: no checkpoints)
    seconds_before: float        # training time spent before a resume
    start: float
    callbacks: tuple = ()

    def elapsed(self) -> float:
        return self.seconds_before + time.perf_counter() - self.start


def _checkpoint(run: _Run, phase_index: int, epoch: int, optimizers: dict) -> None:
    if run.run_dir is None:
        return
    checkpoint.save(run.run_dir, model=run.model, optimizers=optimizers, rng=run.rng,
                    progress={"phase_index": phase_index, "epoch": epoch,
                              "history": [asdict(r) for r in run.history],
                              "config": _config_json(run.config),
                              "train_seconds": run.elapsed()})
    write_history(run.run_dir, run.history)


def _config_json(config: TrainConfig) -> dict:
    return json.loads(json.dumps(config.as_dict()))


RESUME_MAY_CHANGE = ("lr", "threads")   # options a resumed run may change (the learning
                                        # rate after a divergence; threads change nothing)


def _same_run(saved: dict, config: TrainConfig) -> bool:
    """Whether a checkpoint's config is this run's, up to :data:`RESUME_MAY_CHANGE`."""
    mine = _config_json(config)
    return {k: v for k, v in saved.items() if k not in RESUME_MAY_CHANGE} == \
        {k: v for k, v in mine.items() if k not in RESUME_MAY_CHANGE}


@dataclass
class _Start:
    """Where a run starts: the beginning, or the position of its last checkpoint --
    phase ``phase_index``, ``epoch`` epochs into it -- with the history and training
    time up to there, and the checkpoint's (arrays, meta) to restore."""

    phase_index: int = 0
    epoch: int = 0
    history: list = field(default_factory=list)
    train_seconds: float = 0.0
    saved: tuple | None = None


def _starting_point(config: TrainConfig, run_dir, resume: bool) -> _Start:
    """The beginning, or with ``resume`` the checkpoint in ``run_dir``, which must have
    been written by this config (up to :data:`RESUME_MAY_CHANGE`)."""
    if not resume:
        return _Start()
    saved = checkpoint.load(run_dir)
    at = saved[1]["progress"]
    if not _same_run(at["config"], config):
        raise checkpoint.CheckpointError(
            f"the checkpoint in {run_dir} was written by a run with other options")
    return _Start(at["phase_index"], at["epoch"], [EpochRecord(**r) for r in at["history"]],
                  at["train_seconds"], saved)


@dataclass(frozen=True)
class _PhasePlan:
    """One phase still to run: epochs ``first_epoch..epochs-1`` of ``phase``, and the
    checkpoint to restore first when the run resumes inside it (None: a fresh phase)."""

    index: int
    phase: str
    epochs: int
    lr_scale: float
    first_epoch: int = 0
    saved: tuple | None = None

    @property
    def resumed(self) -> bool:
        return self.saved is not None


def _phases_to_run(config: TrainConfig, start: _Start) -> list[_PhasePlan]:
    """The phases after ``start``: those before its phase are done; its own phase
    continues from its checkpoint; the later ones start fresh."""
    plans = []
    for index, (phase, epochs, lr_scale) in enumerate(_phases(config)):
        if index < start.phase_index:
            continue
        resumed_here = start.saved is not None and index == start.phase_index
        plans.append(_PhasePlan(index, phase, epochs, lr_scale,
                                start.epoch if resumed_here else 0,
                                start.saved if resumed_here else None))
    return plans


def _diverged(run: _Run, phase: str, loss: float) -> TrainingDiverged:
    where = f"{PHASE_LABELS[phase]}, epoch {len(run.history) + 1}"
    lower = f"{run.config.lr / 10:g}"
    saved = None if run.run_dir is None else Path(run.run_dir) / checkpoint.FILE_NAME
    if saved is None:
        return TrainingDiverged(f"the loss became {loss} ({where}); train again with a lower "
                                f"learning rate (lr={lower})")
    if not saved.is_file():
        return TrainingDiverged(
            f"the loss became {loss} ({where}) before any epoch completed, so there is no "
            f"checkpoint to resume; start again with a lower learning rate, e.g. "
            f"'--lr {lower} --force'")
    return TrainingDiverged(
        f"the loss became {loss} ({where}); the checkpoint of the last good epoch is kept in "
        f"{saved}: continue with a lower learning rate, 'soniq train --resume {run.run_dir} "
        f"--lr {lower}'")


def _run_phase(run: _Run, plan: _PhasePlan):
    """Train the epochs of ``plan``; an EpochRecord per epoch.

    A checkpoint of the plan (taken inside this phase) is restored first, optimizers
    included; a checkpoint is written after every epoch.
    """
    model, data, config = run.model, run.data, run.config
    phase, epochs, phase_index = plan.phase, plan.epochs, plan.index
    opt, theta_opt, lr0 = _optimizers(model, config, plan.lr_scale)
    optimizers = {"main": opt, "theta": theta_opt}
    if plan.resumed:
        checkpoint.restore(*plan.saved, model=model, optimizers=optimizers, rng=run.rng,
                           path=Path(run.run_dir) / checkpoint.FILE_NAME)
    else:
        model.set_mode(phase)
    x_all = as_float(data.x_train)
    n = len(x_all)
    steps_per_epoch = -(-n // config.batch_size)
    total, step = epochs * steps_per_epoch, plan.first_epoch * steps_per_epoch
    layers = model.quant_layers()
    for epoch in range(plan.first_epoch, epochs):
        order = run.rng.permutation(n)
        loss_sum, correct = 0.0, 0
        for start in range(0, n, config.batch_size):
            idx = order[start:start + config.batch_size]
            logits = model.forward(x_all[idx])
            loss, dlogits = softmax_cross_entropy(logits, data.y_train[idx])
            model.backward(dlogits)
            if phase == "noise":
                loss += budget.add_budget_grads(layers, config.lambda_w, config.lambda_a)
            if not np.isfinite(loss):
                raise _diverged(run, phase, loss)
            grads = model.collect_grads()
            lr = cosine_lr(step, total, lr0)
            opt.step(grads, lr)
            if phase == "noise":
                theta_opt.step(grads, config.lr_theta)
            step += 1
            loss_sum += loss * len(idx)
            correct += int((logits.argmax(axis=1) == data.y_train[idx]).sum())
            run.progress.batch(phase, len(run.history) + 1, loss_sum / (start + len(idx)))
        mean_w, mean_a = _mean_bits(model, phase)
        record = EpochRecord(phase, len(run.history) + 1, loss_sum / n, 100.0 * correct / n,
                             accuracy(predict(model, data.x_val), data.y_val), mean_w, mean_a)
        run.history.append(record)
        _checkpoint(run, phase_index, epoch + 1, optimizers)
        run.progress.epoch(record)
        for callback in run.callbacks:
            callback(record)


def _deploy_accuracy(deploy: DeployModel, x_uint8: np.ndarray, labels: np.ndarray) -> float:
    if not len(x_uint8):
        return float("nan")
    pred = np.concatenate([deploy.forward(x_uint8[i:i + EVAL_BATCH]).argmax(axis=1)
                           for i in range(0, len(x_uint8), EVAL_BATCH)])
    return accuracy(pred, labels)


def model_shape_kwargs(config: TrainConfig) -> dict:
    """The keyword arguments of ``build_model`` that shape ``config.model``."""
    if config.model == "cnn":
        return dict(channels=config.channels)
    if config.model == "mlp":
        return dict(hidden=config.hidden)
    if config.model == "resnet":
        return dict(depth=config.model_depth, width=config.width)
    return dict(depth=config.model_depth, dim=config.dim, heads=config.heads,
                patch=config.patch, pool=config.pool, activation=config.mlp_activation)


def train(config: TrainConfig, *, progress: bool = False, run_dir=None,
          resume: bool = False, callbacks=()) -> TrainResult:
    """Run ``config`` end to end; ``progress`` shows progress on stderr.

    With ``run_dir`` a checkpoint (and ``history.csv``) is written there after every
    epoch; with ``resume`` the run continues from that checkpoint (which must come
    from the same config, up to the learning rate) and, with the same learning rate,
    ends exactly as an uninterrupted run would. Each of ``callbacks`` is called with
    every epoch's :class:`EpochRecord`.
    """
    config.validate()
    data = hold_out_validation(_limit(load_dataset(config.dataset, config.data_dir), config),
                               config.val_fraction)
    model_kwargs = dict(weight_palette=config.weight_palette, act_palette=config.act_palette,
                        seed=config.seed)
    model_kwargs.update(model_shape_kwargs(config))
    model = build_model(config.model, data.input_shape, data.n_classes, **model_kwargs)
    return run_training(model, data, config, progress=progress, run_dir=run_dir,
                        resume=resume, callbacks=callbacks)


def blas_threads(config: TrainConfig) -> int:
    """The BLAS threads (and workers) a run uses: ``config.threads``, else one per core
    the process may run on. The default depends on the machine only, not on its load, because the
    thread count can change float32 results (docs/cli.md, "Reproducible runs")."""
    if config.threads is not None:
        return config.threads
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def run_training(model: Sequential, data: Dataset, config: TrainConfig, *, progress=False,
                 run_dir=None, resume=False, callbacks=()) -> TrainResult:
    """Train ``model`` on ``data`` as ``config`` says (its dataset and model fields unused).

    Every epoch reports ``data``'s validation set (none where ``data.x_val`` is None);
    the test set is evaluated once, at the end."""
    from threadpoolctl import threadpool_limits

    if resume and run_dir is None:
        raise ValueError("resume needs the run folder that holds the checkpoint")
    threads = blas_threads(config)
    with threadpool_limits(limits=threads, user_api="blas"), parallel.workers(threads):
        return _train(model, _no_validation(data), config, progress, run_dir, resume,
                      tuple(callbacks))


def _phases(config: TrainConfig) -> list[tuple[str, int, float]]:
    if config.fp32:
        return [("float", config.epochs_phase1 + config.epochs_phase2, 1.0)]
    return [("noise", config.epochs_phase1, 1.0), ("exact", config.epochs_phase2,
                                                   PHASE2_LR_FACTOR)]


def _train(model, data, config, progress, run_dir, resume, callbacks) -> TrainResult:
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, 1]))
    start = _starting_point(config, run_dir, resume)
    total_epochs = config.epochs_phase1 + config.epochs_phase2
    steps = -(-len(data.x_train) // config.batch_size)
    shown = Progress(progress, total_epochs)
    shown.note(run_header(config, data))
    shown.start(total_epochs * steps, len(start.history) * steps)
    run = _Run(model, data, config, rng, start.history, shown, run_dir, start.train_seconds,
               time.perf_counter(), callbacks)
    try:
        for plan in _phases_to_run(config, start):
            if plan.phase == "exact" and not plan.resumed:
                _snap(run)               # a fresh phase 2 starts from snapped bits
            _run_phase(run, plan)
    finally:
        shown.close()
    return _finish(run)


def _finish(run: _Run) -> TrainResult:
    """The result: the float model, or the exported deploy model, scored once on the
    test set (and on the validation set)."""
    model, data, config = run.model, run.data, run.config
    described = dict(history=run.history, class_names=data.names, dataset=data.name,
                     input_shape=data.input_shape)
    if config.fp32:
        return TrainResult(config, model, None,
                           accuracy(predict(model, data.x_test), data.y_test), run.elapsed(),
                           32.0, 32.0, val_accuracy=accuracy(predict(model, data.x_val),
                                                             data.y_val), **described)
    model.set_mode("exact")
    deploy = DeployModel.from_model(model, data.input_shape)
    mean_w, mean_a = budget.hard_mean_bits(model.quant_layers())
    result = TrainResult(config, model, deploy,
                         _deploy_accuracy(deploy, data.x_test, data.y_test), run.elapsed(),
                         mean_w, mean_a,
                         val_accuracy=_deploy_accuracy(deploy, data.x_val, data.y_val),
                         **described)
    deploy.metadata = run_metadata(result)
    return result


def _snap(run: _Run) -> None:
    """Between the phases: fix every channel's bits to a palette level under the budget."""
    if run.config.epochs_phase1 == 0:
        run.model.set_mode("noise")
        predict(run.model, run.data.x_train[:run.config.batch_size])   # sets clips and sizes
    snap(run.model.quant_layers(), run.config.target_weight_bits, run.config.target_act_bits)
