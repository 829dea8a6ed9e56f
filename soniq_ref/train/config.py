"""Everything a training run depends on; the same config and seed replay exactly.

The field defaults are tuned for ``digits``. The image datasets of 50,000 to 60,000
training images get their own schedule (:data:`DATASET_DEFAULTS`) through
:meth:`TrainConfig.for_dataset`, which ``soniq train`` and ``soniq sweep`` use; an
option given explicitly always wins.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from ..data import DATASET_NAMES
from ..layers import check_palette
from ..layers.transformer_block import ACTIVATIONS
from ..models import DEFAULT_DEPTHS, MODEL_NAMES, RESNET_DEPTHS, VIT_POOLS

OPTIMIZERS = ("adam", "sgd")
MAX_LAYERS = 16       # hidden layers of the built-in models
MAX_WIDTH = 4096      # channels or units per hidden layer

# The schedule of the 50k-60k-image datasets, chosen on Fashion-MNIST for a whole run
# (phase 1, phase 2, the validation passes and the test pass) of about 20 minutes on
# two cores. One epoch of its 54,000 training images (after the validation split)
# takes about 90 s of one core in noise or exact mode with BLAS on one thread (2-core
# AMD EPYC), so 10 + 5 epochs take about 23 minutes on one core, less on two. That
# is three times the epochs of a 3 + 2 schedule that came within 0.7 points of
# float32, two thirds of them in phase 1 as for digits. Batch 64 and Adam's 3e-3
# stay: batch 128 was no faster per epoch (about 95 s against 89 s of one core), so
# it would only halve the optimizer steps. mnist and cifar10 use the same schedule,
# untuned.
LARGE_IMAGE_SCHEDULE = {"epochs_phase1": 10, "epochs_phase2": 5, "batch_size": 64, "lr": 3e-3}
DATASET_DEFAULTS = {"digits": {}, "mnist": LARGE_IMAGE_SCHEDULE,
                    "fashion-mnist": LARGE_IMAGE_SCHEDULE, "cifar10": LARGE_IMAGE_SCHEDULE}


@dataclass
class TrainConfig:
    """A training run. Defaults are tuned for ``digits`` on the reference backend
    (:meth:`for_dataset` gives each dataset's).

    ``val_fraction``: the last ``round(val_fraction * N)`` of the N training images
    (after ``limit_train``) are held out as the validation set that every epoch
    reports; 0 holds out nothing. The test set is evaluated once, at the end.
    """

    dataset: str = "digits"
    data_dir: str | None = None
    model: str = "cnn"
    weight_palette: tuple = (1, 4)
    act_palette: tuple = (2, 8)
    target_weight_bits: float = 2.0
    target_act_bits: float = 4.0
    epochs_phase1: int = 30
    epochs_phase2: int = 15
    seed: int = 0
    val_fraction: float = 0.1
    batch_size: int = 64
    optimizer: str = "adam"
    lr: float = 3e-3
    lr_theta: float = 1e-2
    weight_decay: float = 1e-4
    lambda_w: float = 0.05
    lambda_a: float = 0.05
    fp32: bool = False
    limit_train: int | None = None      # use only the first N training images (tests)
    limit_test: int | None = None
    channels: tuple = field(default=(32, 64))
    hidden: tuple = field(default=(128, 64))
    depth: int | None = None            # resnet: quantized layers, 6 n + 2; vit: blocks;
                                        # None: the model's default (DEFAULT_DEPTHS)
    width: int = 16                     # resnet: channels of the first stage
    dim: int = 64                       # vit: features per token
    heads: int = 4                      # vit: attention heads (dim a multiple of heads)
    patch: int | None = None            # vit: patch side (None: H / 4, a 4 x 4 grid)
    pool: str = "mean"                  # vit: "mean" of the tokens or the "cls" token
    mlp_activation: str = "relu"        # vit: the MLP's "relu" or "gelu"
    threads: int | None = None          # BLAS threads and workers (None: one per core);
                                        # float32 sums can depend on it (docs/cli.md)

    def validate(self) -> "TrainConfig":
        """Raise ValueError naming the first bad field; returns self."""
        if self.dataset not in DATASET_NAMES:
            raise ValueError(f"dataset must be one of {', '.join(DATASET_NAMES)}, "
                             f"got {self.dataset!r}")
        if self.model not in MODEL_NAMES:
            raise ValueError(f"model must be one of {', '.join(MODEL_NAMES)}, got {self.model!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, "
                             f"got {self.optimizer!r}")
        self.weight_palette = check_palette("weight_palette", self.weight_palette)
        self.act_palette = check_palette("act_palette", self.act_palette)
        for name in ("target_weight_bits", "target_act_bits", "lr", "lr_theta"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not np.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        for name in ("weight_decay", "lambda_w", "lambda_a"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not np.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        for name, least in (("epochs_phase1", 0), ("epochs_phase2", 0), ("batch_size", 1),
                            ("seed", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
        if isinstance(self.val_fraction, bool) or not isinstance(
                self.val_fraction, (int, float)) or not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be a number in [0, 1), got "
                             f"{self.val_fraction!r}")
        for name in ("limit_train", "limit_test", "threads"):
            value = getattr(self, name)
            if value is not None and (type(value) is not int or value < 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name, palette in (("target_weight_bits", self.weight_palette),
                              ("target_act_bits", self.act_palette)):
            lo, hi = palette
            if not self.fp32 and not lo <= getattr(self, name) <= hi:
                raise ValueError(f"{name} must lie within its palette's levels {lo}..{hi} "
                                 f"(a mean of lo- and hi-bit channels), got {getattr(self, name)!r}")
        for name in ("channels", "hidden"):
            widths = getattr(self, name)
            widths = tuple(widths) if isinstance(widths, list) else widths
            setattr(self, name, widths)
            if not isinstance(widths, tuple) or not 1 <= len(widths) <= MAX_LAYERS or not all(
                    type(v) is int and 1 <= v <= MAX_WIDTH for v in widths):
                raise ValueError(f"{name} must be a tuple of 1 to {MAX_LAYERS} layer widths, "
                                 f"integers in 1..{MAX_WIDTH}, got {widths!r}"[:300])
        self._validate_shape_options()
        if type(self.width) is not int or not 1 <= self.width <= MAX_WIDTH // 4:
            raise ValueError(f"width must be an integer in 1..{MAX_WIDTH // 4}, got "
                             f"{self.width!r}")
        if self.data_dir is not None and not isinstance(self.data_dir, str):
            raise ValueError(f"data_dir must be a path or None, got {self.data_dir!r}")
        if not isinstance(self.fp32, bool):
            raise ValueError(f"fp32 must be true or false, got {self.fp32!r}")
        if self.epochs_phase1 + self.epochs_phase2 == 0:
            raise ValueError("epochs_phase1 + epochs_phase2 must be at least 1")
        return self

    @property
    def model_depth(self) -> int | None:
        """``depth``, or the model's default when None (None for a model without one)."""
        return DEFAULT_DEPTHS.get(self.model) if self.depth is None else self.depth

    def _validate_shape_options(self) -> None:
        """depth (for the model it is given to), and the ViT's dim, heads, patch, pool,
        mlp_activation."""
        if self.depth is not None and (type(self.depth) is not int or self.depth < 1):
            raise ValueError(f"depth must be a positive integer, got {self.depth!r}")
        if self.model == "resnet" and self.model_depth not in RESNET_DEPTHS:
            raise ValueError(f"depth must be one of {', '.join(map(str, RESNET_DEPTHS))} for "
                             f"resnet (6 n + 2 >= 8), got {self.depth!r}")
        if self.model == "vit" and self.model_depth > MAX_LAYERS:
            raise ValueError(f"depth must be at most {MAX_LAYERS} blocks for vit, got "
                             f"{self.depth!r}")
        for name, most in (("dim", MAX_WIDTH), ("heads", MAX_WIDTH)):
            value = getattr(self, name)
            if type(value) is not int or not 1 <= value <= most:
                raise ValueError(f"{name} must be an integer in 1..{most}, got {value!r}")
        if self.dim % self.heads:
            raise ValueError(f"dim must be a multiple of heads, got dim {self.dim} and heads "
                             f"{self.heads}")
        if self.patch is not None and (type(self.patch) is not int or self.patch < 1):
            raise ValueError(f"patch must be a positive integer, got {self.patch!r}")
        if self.pool not in VIT_POOLS:
            raise ValueError(f"pool must be one of {', '.join(VIT_POOLS)}, got {self.pool!r}")
        if self.mlp_activation not in ACTIVATIONS:
            raise ValueError(f"mlp_activation must be one of {', '.join(ACTIVATIONS)}, got "
                             f"{self.mlp_activation!r}")

    @classmethod
    def for_dataset(cls, dataset: str = "digits", **given) -> "TrainConfig":
        """A config for ``dataset`` with its :data:`DATASET_DEFAULTS`; ``given`` fields win.
        Not validated (an unknown dataset gets the field defaults)."""
        return cls(**{**DATASET_DEFAULTS.get(dataset, {}), "dataset": dataset, **given})

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        """The config of :meth:`as_dict` after a JSON round trip (lists back to
        tuples); not validated."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
