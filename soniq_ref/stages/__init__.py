"""Deploy stage types: one class per type, registered here by the name the
``.soniq`` manifest and ``soniq info`` use (see :mod:`soniq_ref.stages.base` for
what a stage type provides)."""

from .base import BackendRun, Stage, check_size
from .flatten import FlattenStage
from .link import link
from .pool import PoolStage
from .pooled_linear import PooledLinearStage
from .quant import QuantStage
from .residual import ResidualStage

STAGE_TYPES = {"linear": QuantStage, "conv": QuantStage, "maxpool": PoolStage,
               "flatten": FlattenStage, "residual": ResidualStage,
               "residual_projection": ResidualStage, "avgpool_linear": PooledLinearStage}

__all__ = ["STAGE_TYPES", "BackendRun", "FlattenStage", "PoolStage", "PooledLinearStage",
           "QuantStage", "ResidualStage", "Stage", "check_size", "link"]
