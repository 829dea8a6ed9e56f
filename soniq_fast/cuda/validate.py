"""Argument validation for the cuda backend: the reference's own checks, so every
backend refuses the same inputs with the same messages, plus the int32 K limit.
"""

from __future__ import annotations

from soniq_ref.bitpack import check_stored_bits, unpack_weights
from soniq_ref.integer_core import check_acts, check_conv_geometry  # noqa: F401 (re-used)

from .packed import CudaPackedWeights

# Each term is at most 255 * 255, and the kernels accumulate in 32 bits.
MAX_K = 33025


def check_k(k: int) -> None:
    if k > MAX_K:
        raise ValueError(f"w_codes has K = {k} inputs per output; the cuda backend accumulates in "
                         f"32 bits and is exact only up to K = {MAX_K}")


def weights_or_codes(w_codes, w_bits):
    """A validated CudaPackedWeights, or validated (codes, bits) for anything else."""
    if isinstance(w_codes, CudaPackedWeights):
        w_codes.check()
        if w_bits is not None:
            check_stored_bits(w_bits, w_codes.bits)
        return w_codes
    return unpack_weights(w_codes, w_bits)


def weight_shape(weights) -> tuple:
    return weights.shape if isinstance(weights, CudaPackedWeights) else weights[0].shape
