"""The two-phase trainer: phase 1 (noise + bit budget), snapping, phase 2 (exact), export."""

from .config import TrainConfig
from .snapping import allocate, snap
from .trainer import EpochRecord, TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "EpochRecord", "train", "allocate", "snap"]
