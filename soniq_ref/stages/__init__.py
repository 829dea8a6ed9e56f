"""Deploy stage types: one class per type, registered here by the name the
``.soniq`` manifest and ``soniq info`` use (see :mod:`soniq_ref.stages.base` for
what a stage type provides)."""

from .base import BackendRun, Stage, check_size
from .flatten import FlattenStage
from .link import link
from .patch_embed import PatchEmbedStage
from .pool import PoolStage
from .pooled_linear import PooledLinearStage
from .quant import QuantStage
from .residual import IdentitySkip, ResidualStage
from .token_head import TokenHeadStage
from .transformer_block import TransformerBlockStage

STAGE_TYPES = {"linear": QuantStage, "conv": QuantStage, "maxpool": PoolStage,
               "flatten": FlattenStage, "residual": ResidualStage,
               "residual_projection": ResidualStage, "avgpool_linear": PooledLinearStage,
               "patch_embed": PatchEmbedStage, "patch_embed_cls": PatchEmbedStage,
               "transformer_block": TransformerBlockStage, "token_head": TokenHeadStage}

__all__ = ["STAGE_TYPES", "BackendRun", "FlattenStage", "PatchEmbedStage", "PoolStage",
           "PooledLinearStage", "QuantStage", "ResidualStage", "Stage", "TokenHeadStage",
           "TransformerBlockStage", "check_size", "link"]
