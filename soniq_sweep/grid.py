"""A sweep's trials: the grid of training configs, and each trial's stable id.

A trial is an ordinary training config (:class:`soniq_ref.train.TrainConfig`). Its id
is the first 12 hex digits of the SHA-256 of the config's canonical JSON, so the same
config always lands in the same folder ``SWEEP_DIR/trials/<id>/``: a re-run finds
what an earlier, interrupted run of the same sweep already did.

Options a trial does not give come from its dataset's defaults, as for ``soniq train``.
The grid is the product of its axes (budgets, palettes) with the seeds, less the
combinations whose budget lies outside its palette's two levels (they cannot be met);
``fp32`` adds one float baseline per seed.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, fields
from pathlib import Path

from soniq_ref.train import TrainConfig

AXES = ("target_weight_bits", "target_act_bits", "weight_palette", "act_palette")
GRID_FILE_KEYS = {"base", "grid", "seeds", "fp32", "trials"}


class GridError(ValueError):
    """A grid that cannot be run; the message names the field at fault."""


@dataclass(frozen=True)
class Trial:
    """One training run of a sweep."""

    id: str
    config: TrainConfig


def config_json(config: TrainConfig) -> str:
    """The canonical JSON of a config: sorted keys, tuples as lists."""
    return json.dumps(config.as_dict(), sort_keys=True, separators=(",", ":"))


FLOAT_FIELDS = ("target_weight_bits", "target_act_bits", "lr", "lr_theta", "weight_decay",
                "lambda_w", "lambda_a")


def trial_of(config: TrainConfig) -> Trial:
    """The trial of a config; numbers are normalised first, so 2 and 2.0 are one trial."""
    config = config.validate()
    for name in FLOAT_FIELDS:
        setattr(config, name, float(getattr(config, name)))
    return Trial(hashlib.sha256(config_json(config).encode()).hexdigest()[:12], config)


def _config(base: dict, **changes) -> TrainConfig:
    """A validated config, its dataset's defaults (:meth:`TrainConfig.for_dataset`) for
    the options not given; GridError names the field at fault."""
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(base) - known)
    if unknown:
        raise GridError(f"unknown training option(s) {', '.join(unknown)}; known: "
                        f"{', '.join(sorted(known))}")
    try:
        given = {**base, **changes}
        return TrainConfig.for_dataset(given.pop("dataset", TrainConfig.dataset),
                                       **given).validate()
    except (TypeError, ValueError) as exc:
        raise GridError(str(exc)) from None


def _fits(base: dict, point: dict) -> bool:
    """Whether the point's budgets lie within its palettes (validation refuses others)."""
    default = TrainConfig()
    value = lambda name: point.get(name, base.get(name, getattr(default, name)))
    try:
        (wl, wh), (al, ah) = value("weight_palette"), value("act_palette")
        return (wl <= value("target_weight_bits") <= wh) and (al <= value("target_act_bits") <= ah)
    except (TypeError, ValueError):
        return True                # malformed: let validation name the field


def expand(base: dict, grid: dict, seeds, fp32: bool = False) -> tuple[list[Trial], int]:
    """(trials, how many grid points were dropped as outside their palette).

    ``base``: TrainConfig fields shared by every trial; ``grid``: axis name -> list of
    values (axes not given keep the base value); ``seeds``: the seeds of every point.
    """
    for axis, values in grid.items():
        if axis not in AXES:
            raise GridError(f"grid axis {axis!r} is not one of {', '.join(AXES)}")
        if not isinstance(values, (list, tuple)) or not values:
            raise GridError(f"grid axis {axis} needs a non-empty list of values")
    seeds = list(seeds)
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise GridError(f"seeds must be a non-empty list of integers, got {seeds!r}")
    names = list(grid)
    trials, dropped = [], 0
    for values in itertools.product(*(grid[n] for n in names)):
        point = dict(zip(names, values))
        if not _fits(base, point):
            dropped += len(seeds)
            continue
        trials += [trial_of(_config(base, **point, seed=seed, fp32=False)) for seed in seeds]
    if fp32:
        trials += [trial_of(_config(base, seed=seed, fp32=True)) for seed in seeds]
    unique = list({t.id: t for t in trials}.values())
    if not unique:
        raise GridError("the grid has no trial whose budgets lie within its palettes")
    return unique, dropped


def load_grid_file(path) -> tuple[list[Trial], int]:
    """Trials from a JSON file: ``{"base": {...}, "grid": {axis: [values]} or a list of
    such grids (each expanded with the seeds), "seeds": [..], "fp32": bool}`` and/or
    ``"trials": [partial configs over base]``."""
    try:
        spec = json.loads(Path(path).read_text())
    except OSError as exc:
        raise GridError(f"cannot read grid file {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise GridError(f"grid file {path} is not valid JSON: {exc}") from None
    if not isinstance(spec, dict) or set(spec) - GRID_FILE_KEYS:
        raise GridError(f"grid file {path} must be an object with keys among "
                        f"{', '.join(sorted(GRID_FILE_KEYS))}")
    base = spec.get("base", {})
    if not isinstance(base, dict):
        raise GridError(f"grid file {path}: 'base' must be an object of training options")
    trials, dropped = [], 0
    if "grid" in spec or "seeds" in spec:
        grids = spec.get("grid", {})
        for i, grid in enumerate(grids if isinstance(grids, list) else [grids]):
            if not isinstance(grid, dict):
                raise GridError(f"grid file {path}: 'grid' must be an object or a list of "
                                f"objects (axis -> values)")
            more, skipped = expand(base, grid, spec.get("seeds", [0]),
                                   bool(spec.get("fp32", False)) and i == 0)
            trials, dropped = trials + more, dropped + skipped
    for extra in spec.get("trials", []):
        if not isinstance(extra, dict):
            raise GridError(f"grid file {path}: each of 'trials' must be an object")
        trials.append(trial_of(_config(base, **extra)))
    if not trials:
        raise GridError(f"grid file {path} defines no trial")
    return list({t.id: t for t in trials}.values()), dropped
