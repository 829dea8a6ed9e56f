"""Layers with hand-written forward and backward passes."""

from .module import Module
from .quant_conv import QuantConv2d
from .quant_linear import QuantLinear
from .quant_layer import MODES, QuantLayer, check_palette

__all__ = ["Module", "QuantLayer", "QuantLinear", "QuantConv2d", "MODES", "check_palette"]
