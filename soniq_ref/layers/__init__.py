"""Layers with hand-written forward and backward passes."""

from .activations import ReLU
from .attention import MultiHeadSelfAttention
from .batchnorm import BatchNorm, BatchNorm1d, BatchNorm2d
from .flatten import Flatten
from .gelu import GELU
from .input_quantizers import LearnedActivations, PixelInput, SignedActivations
from .layernorm import LayerNorm
from .linear import Linear
from .module import Module
from .pooling import MaxPool2d, max_pool_codes
from .quant_conv import QuantConv2d
from .quant_linear import QuantLinear
from .precision import check_palette
from .quant_layer import MODES, QuantLayer
from .tokens import ClassToken, PatchEmbedding, PositionEmbedding, TokenMean

__all__ = ["Module", "QuantLayer", "QuantLinear", "QuantConv2d", "MODES", "check_palette",
           "PixelInput", "LearnedActivations", "SignedActivations",
           "BatchNorm", "BatchNorm1d", "BatchNorm2d", "ReLU", "MaxPool2d", "max_pool_codes",
           "Flatten", "Linear", "LayerNorm", "GELU", "MultiHeadSelfAttention",
           "PatchEmbedding", "PositionEmbedding", "ClassToken", "TokenMean"]
