"""Layers with hand-written forward and backward passes."""

from .activations import ReLU
from .batchnorm import BatchNorm, BatchNorm1d, BatchNorm2d
from .flatten import Flatten
from .module import Module
from .pooling import MaxPool2d, max_pool_codes
from .quant_conv import QuantConv2d
from .quant_linear import QuantLinear
from .quant_layer import MODES, QuantLayer, check_palette

__all__ = ["Module", "QuantLayer", "QuantLinear", "QuantConv2d", "MODES", "check_palette",
           "BatchNorm", "BatchNorm1d", "BatchNorm2d", "ReLU", "MaxPool2d", "max_pool_codes",
           "Flatten"]
