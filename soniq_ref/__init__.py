"""soniq_ref -- the pure-NumPy reference of SONIQ, and its specification.

Read it top to bottom: :mod:`quantizers` (values <-> codes), :mod:`bitpack`
(bit planes, packing), :mod:`integer_core` (exact accumulators),
:mod:`epilogue` (accumulator -> float32 or next codes), :mod:`noise`
(phase-1 noise injection), :mod:`layers` (forward and backward).
"""

from . import blas_wait  # noqa: F401 -- before anything imports NumPy
from . import budget, fileformat, noise
from .backend import CONTRACT, NAMES as BACKENDS, get_backend
from .contract import CheckedBackend
from .bitpack import PackedWeights, pack_activations, pack_bits, pack_weights, unpack_bits
from .epilogue import epilogue, requantize
from .layers import QuantConv2d, QuantLinear
from .integer_core import (conv2d_int, im2col, linear_int, linear_int_bitserial, popcount,
                           signed_input_offset)
from .quantizers import (act_ratio, act_step, dequantize_acts, dequantize_signed_acts,
                         dequantize_weights, quantize_acts, quantize_signed_acts,
                         quantize_weights, signed_levels)

from .data import load_dataset
from .deploy import DeployModel
from .fileformat import SoniqFileError, load as load_model, save as save_model
from .layers import BatchNorm1d, BatchNorm2d, Flatten, MaxPool2d, ReLU
from .layers.global_pool import GlobalAvgPool, PooledQuantLinear
from .layers.residual import ResidualBlock
from .layers.transformer_block import TransformerBlock
from .models import Sequential, cnn, mlp, resnet, vit
from .train import TrainConfig   # soniq_ref.train is the subpackage; train() lives there
from .train.fit import fit

__version__ = "0.1.0"

__all__ = [
    "CONTRACT", "BACKENDS", "get_backend", "CheckedBackend",
    "PackedWeights", "pack_weights", "pack_activations", "pack_bits", "unpack_bits",
    "linear_int", "conv2d_int", "linear_int_bitserial", "im2col", "popcount",
    "signed_input_offset",
    "epilogue", "requantize",
    "quantize_weights", "dequantize_weights", "signed_levels",
    "quantize_acts", "dequantize_acts", "act_step", "act_ratio",
    "quantize_signed_acts", "dequantize_signed_acts",
    "QuantLinear", "QuantConv2d", "budget", "noise",
    "BatchNorm1d", "BatchNorm2d", "ReLU", "MaxPool2d", "Flatten", "Sequential", "mlp", "cnn",
    "ResidualBlock", "GlobalAvgPool", "PooledQuantLinear", "resnet",
    "TransformerBlock", "vit",
    "load_dataset", "TrainConfig", "fit", "DeployModel", "save_model", "load_model",
    "SoniqFileError",
]
