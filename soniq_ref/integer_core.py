"""The integer core: exact accumulators of quantized linear and conv layers.

For activation codes ``a[m, c]`` (bits ``ba[c]``, layer high level ``A``) and
weight codes ``w[o, c]`` (bits ``bw[o]``, level ``q = 2w - n``)::

    acc[m, o] = sum_c q[o, c] * (a[m, c] << (A - ba[c]))            (exact, int64)

Conv2d is the same sum over im2col patches, K ordered by input channel, then
kernel row, then kernel column. Zero padding is activation code 0.

A linear layer with *signed* inputs (codes with the zero point ``2**(ba-1)``,
:func:`soniq_ref.quantizers.quantize_signed_acts`) needs the sum over the signed
levels ``(a << (A - ba)) - 2**(A-1)``; that is the same accumulator less one
integer per output channel::

    acc_signed[m, o] = acc[m, o] - 2**(A-1) * sum_c q[o, c]       (signed_input_offset)

so every backend's ``linear_int`` serves signed inputs unchanged, and the
subtraction, exact in int64, is shared code.

The bit-serial form, with weight planes ``W_j`` and activation planes ``A_i``
packed along K (see :mod:`soniq_ref.bitpack`)::

    acc = 2 * sum_{i,j} 2**(i+j) popcount(W_j & A_i) - (2**bw - 1) * sum_c a'

is what the fast backends compute; :func:`linear_int_bitserial` spells it out.
"""

from __future__ import annotations

import numpy as np

from . import checks, parallel
from .parallel import into
from .bitpack import (code_planes, pack_activations, pack_bits, unpack_weights)
from .quantizers import shifted_codes, weight_levels


def check_acts(a_codes, a_bits, act_bits_hi, k: int, ndim: int, name: str = "a_codes"):
    """The contract's activation checks: ``a_codes`` uint8 with ``ndim`` dimensions and
    ``k`` channels (axis 1), ``a_bits`` [k] within 1..``act_bits_hi``, every code below
    ``2**a_bits`` of its channel. Returns the checked (codes, bits, act_bits_hi); every
    backend validates its activations with this, before any kernel runs."""
    act_bits_hi = checks.check_bits_value("act_bits_hi", act_bits_hi)
    a_codes = checks.as_array(name, a_codes, np.uint8, ndim=ndim)
    if a_codes.shape[1] != k:
        raise ValueError(f"{name} has {a_codes.shape[1]} channels but the weights expect {k}")
    a_bits = checks.check_bits("a_bits", a_bits, k, hi=act_bits_hi)
    checks.check_codes(name, a_codes, a_bits, axis=1)
    return a_codes, a_bits, act_bits_hi


BLOCK_BYTES = 8 << 20


def _blocks(rows: int, bytes_per_row: int):
    """Ranges of rows whose temporaries take about BLOCK_BYTES each (at least one row).

    The accumulators are computed a block of rows at a time so that the int64 and
    float64 copies of the inputs never exist for the whole batch at once.
    """
    step = max(1, BLOCK_BYTES // max(1, bytes_per_row))
    return [(r, min(r + step, rows)) for r in range(0, rows, step)]


def exact_float_type(k: int, peak: int):
    """The float type in which a sum of ``k`` integer products, each of magnitude at most
    ``peak``, is computed exactly, whatever the order of the additions (BLAS): float32
    while ``k * peak <= 2**24``, float64 while ``k * peak <= 2**53``, else None (int64).

    Every product and partial sum is then an integer that the type represents exactly.
    """
    if k * peak <= 2 ** 24:
        return np.float32
    if k * peak <= 2 ** 53:
        return np.float64
    return None


def _exact_matmul(a: np.ndarray, q: np.ndarray, peak: int = 255 * 255) -> np.ndarray:
    """``a @ q.T`` for integer-valued a [M, K], q [N, K] with ``|a * q| <= peak``
    elementwise (at most 255 * 255), exactly: integers held in the float type of
    :func:`exact_float_type` (BLAS-fast), in int64 beyond it. The callers store the
    result into int64 accumulators. Tests check it against a plain int64 matmul.
    """
    dtype = exact_float_type(a.shape[1], peak)
    if dtype is None:
        return a.astype(np.int64) @ q.T.astype(np.int64)
    return a.astype(dtype, copy=False) @ q.T.astype(dtype, copy=False)


def _product_peak(w_bits: np.ndarray, act_bits_hi: int) -> int:
    """The largest ``|q * a'|``: ``(2**max(w_bits) - 1) * (2**A - 1)``."""
    top = int(w_bits.max()) if w_bits.size else 1
    return ((1 << top) - 1) * ((1 << act_bits_hi) - 1)


def _shift_factors(a_bits: np.ndarray, act_bits_hi: int, repeat: int = 1,
                   dtype=np.float64) -> np.ndarray:
    """[K] in ``dtype``: ``2**(A - a_bits[c])``, each repeated ``repeat`` times (patch order).

    Multiplying float codes by these is exact and equals ``a << (A - a_bits)``.
    """
    return np.repeat(2.0 ** (act_bits_hi - a_bits.astype(np.int64)), repeat).astype(dtype)


def _shifted_rows(codes: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """``codes * factors`` in the dtype of ``factors`` (exact: shifted codes are integers
    <= 255); ``factors`` broadcasts against ``codes``."""
    return parallel.elementwise(_times_factors, codes, factors, axis=0)


def _times_factors(codes, factors, out=None):
    rows = into(codes.astype(factors.dtype), out)
    rows *= factors
    return rows


def _float_levels(w_codes: np.ndarray, w_bits: np.ndarray, dtype=np.float64) -> np.ndarray:
    """[N, K] in ``dtype``: :func:`signed_levels` ``q = 2k - n`` (exact, |q| <= 255), built
    in place so that no int64 copy of the weights is made."""
    q = checks.rows(w_codes).astype(dtype)
    q *= 2
    q -= weight_levels(w_bits).astype(dtype)[:, None]
    return q


def linear_int(a_codes, a_bits, w_codes, w_bits, act_bits_hi) -> np.ndarray:
    """Exact accumulator of a quantized linear layer.

    a_codes: uint8 [M, K]; a_bits: uint8 [K] in 1..act_bits_hi;
    w_codes: uint8 [N, K] (or a PackedWeights, then w_bits may be None);
    w_bits: uint8 [N] in 1..8; act_bits_hi: the activation palette's high level A.
    Returns int64 [M, N]::

        acc = shifted_codes(a_codes, a_bits, A) @ signed_levels(w_codes, w_bits).T

    that is ``acc[m, o] = sum_c q[o, c] * (a[m, c] << (A - a_bits[c]))``, which
    :func:`linear_acc` computes without int64 copies of its inputs.
    """
    w_codes, w_bits = unpack_weights(w_codes, w_bits)
    if w_codes.ndim != 2:
        raise ValueError(f"w_codes must be [N, K] for linear_int, got shape {w_codes.shape}")
    a_codes, a_bits, act_bits_hi = check_acts(a_codes, a_bits, act_bits_hi,
                                               w_codes.shape[1], ndim=2)
    return linear_acc(a_codes, a_bits, w_codes, w_bits, act_bits_hi)


def linear_acc(a_codes, a_bits, w_codes, w_bits, act_bits_hi) -> np.ndarray:
    """:func:`linear_int` of validated arguments (the reference backend's kernel): codes,
    bits and A as :func:`linear_int` checks them, ``w_codes`` uint8 [N, K].

    Its formula, the fast way: the shifted codes and the levels as floats (exact,
    :func:`exact_float_type`) through BLAS, a block of rows at a time. Tests check it
    against a plain int64 implementation."""
    peak = _product_peak(w_bits, act_bits_hi)
    dtype = exact_float_type(w_codes.shape[1], peak) or np.float64
    q = _float_levels(w_codes, w_bits, dtype)
    acc = np.empty((a_codes.shape[0], q.shape[0]), np.int64)
    factors = _shift_factors(a_bits, act_bits_hi, dtype=dtype)
    for r0, r1 in _blocks(a_codes.shape[0], 8 * max(q.shape)):
        acc[r0:r1] = _exact_matmul(_shifted_rows(a_codes[r0:r1], factors), q, peak)
    return acc


def signed_input_offset(w_codes, w_bits, act_bits_hi) -> np.ndarray:
    """int64 [N]: ``2**(A-1) * sum_c q[o, c]``, what a signed input's zero point adds to
    :func:`linear_int`'s accumulator (subtract it to get the sum over signed levels).

    w_codes: uint8 [N, K]; w_bits: uint8 [N] in 1..8; act_bits_hi: A in 2..8."""
    act_bits_hi = checks.check_bits_value("act_bits_hi", act_bits_hi)
    if act_bits_hi < 2:
        raise ValueError(f"signed inputs need act_bits_hi >= 2, got {act_bits_hi}")
    w_codes = checks.as_array("w_codes", w_codes, np.uint8, ndim=2)
    w_bits = checks.check_bits("w_bits", w_bits, w_codes.shape[0])
    checks.check_codes("w_codes", w_codes, w_bits, axis=0)
    q_sum = 2 * w_codes.astype(np.int64).sum(axis=1) - weight_levels(w_bits) * w_codes.shape[1]
    return q_sum << (act_bits_hi - 1)


def conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """``floor((size + 2 * padding - kernel) / stride) + 1``."""
    return (size + 2 * padding - kernel) // stride + 1


def _check_patch_geometry(x, kh, kw, stride, padding):
    if not isinstance(x, np.ndarray) or x.ndim != 4:
        raise ValueError("x must be a 4-D array [B, C, H, W]")
    return (checks.check_nonneg_int("kh", kh, 1), checks.check_nonneg_int("kw", kw, 1),
            checks.check_nonneg_int("stride", stride, 1),
            checks.check_nonneg_int("padding", padding, 0))


def patches(x: np.ndarray, kh: int, kw: int, stride: int, padding: int) -> np.ndarray:
    """[B, C, H, W] -> [C * kh * kw, B * Ho * Wo]: column ``p`` is the patch that output
    position ``p`` (ordered batch, out_row, out_col) sees, rows ordered (c, row, col).

    ``cols[(c, i, j), (b, r, s)] = xp[b, c, r * stride + i, s * stride + j]`` with ``xp``
    the input zero-padded by ``padding``. A convolution is then one matmul,
    ``w.reshape(O, -1) @ cols`` -> [O, B * Ho * Wo]. Each of the kh * kw copies below
    moves whole rows of the image, which is why the patches are columns.
    """
    kh, kw, stride, padding = _check_patch_geometry(x, kh, kw, stride, padding)
    b, c, h, w = x.shape
    ho = conv_output_size(h, kh, stride, padding)
    wo = conv_output_size(w, kw, stride, padding)
    xp = np.zeros((c, b, h + 2 * padding, w + 2 * padding), dtype=x.dtype)  # channel-major
    cols = np.empty((c, kh, kw, b, ho, wo), dtype=x.dtype)

    def copy(s):                         # the samples s (copies: exact in any split)
        xp[:, s, padding:padding + h, padding:padding + w] = x[s].transpose(1, 0, 2, 3)
        for i in range(kh):
            for j in range(kw):
                cols[:, i, j, s] = xp[:, s, i:i + stride * ho:stride, j:j + stride * wo:stride]

    parallel.split(copy, b, cols.size)
    return cols.reshape(c * kh * kw, b * ho * wo)


def patches_adjoint(cols: np.ndarray, x_shape: tuple, kh: int, kw: int, stride: int,
                    padding: int) -> np.ndarray:
    """Adjoint of :func:`patches`: scatter-add [C * kh * kw, B * Ho * Wo] back to
    [B, C, H, W] (the gradient of a convolution's input), returned as a view of a
    channel-major [C, B, H, W] array (the layout a convolution's output has)."""
    b, c, h, w = x_shape
    ho = conv_output_size(h, kh, stride, padding)
    wo = conv_output_size(w, kw, stride, padding)
    cols = cols.reshape(c, kh, kw, b, ho, wo)
    xp = np.zeros((c, b, h + 2 * padding, w + 2 * padding), dtype=cols.dtype)

    def scatter(s):                      # the samples s, each sum in the same (i, j) order
        for i in range(kh):
            for j in range(kw):
                xp[:, s, i:i + stride * ho:stride, j:j + stride * wo:stride] += cols[:, i, j, s]

    parallel.split(scatter, b, cols.size)
    return xp[:, :, padding:padding + h, padding:padding + w].transpose(1, 0, 2, 3)


def im2col(x: np.ndarray, kh: int, kw: int, stride: int, padding: int) -> np.ndarray:
    """[B, C, H, W] -> patches as rows [B * Ho * Wo, C * kh * kw], K ordered (c, row, col).

    Rows are ordered (b, out_row, out_col). Padding inserts zeros. The transpose of
    :func:`patches` (a view of it).
    """
    return patches(x, kh, kw, stride, padding).T


def col2im(cols: np.ndarray, x_shape: tuple, kh: int, kw: int, stride: int,
           padding: int) -> np.ndarray:
    """Adjoint of :func:`im2col`: scatter-add patch rows back to [B, C, H, W]."""
    return patches_adjoint(cols.T, x_shape, kh, kw, stride, padding)


def check_conv_geometry(x_shape, w_shape, stride, padding) -> tuple[int, int, int, int]:
    """Validate stride/padding against the shapes; return (stride, padding, Ho, Wo)."""
    stride = checks.check_nonneg_int("stride", stride, 1)
    padding = checks.check_nonneg_int("padding", padding, 0)
    kh, kw = w_shape[2], w_shape[3]
    if kh < 1 or kw < 1:
        raise ValueError(f"w_codes kernel must be at least 1x1, got {kh}x{kw}")
    if padding >= kh or padding >= kw:
        raise ValueError(f"padding must be smaller than the kernel ({kh}x{kw}), got {padding}")
    ho = conv_output_size(x_shape[2], kh, stride, padding)
    wo = conv_output_size(x_shape[3], kw, stride, padding)
    if ho < 1 or wo < 1:
        raise ValueError(f"x_codes spatial size {x_shape[2]}x{x_shape[3]} is smaller than the "
                         f"kernel {kh}x{kw} with padding {padding}")
    return stride, padding, ho, wo


def conv2d_int(x_codes, a_bits, w_codes, w_bits, act_bits_hi, stride=1, padding=0):
    """Exact accumulator of a quantized conv2d layer (groups = 1).

    x_codes: uint8 [B, C, H, W]; a_bits: uint8 [C]; w_codes: uint8 [O, C, kh, kw]
    (or PackedWeights); w_bits: uint8 [O]. Returns int64 [B, O, Ho, Wo] with
    ``Ho = (H + 2 padding - kh) // stride + 1`` (likewise Wo).
    """
    w_codes, w_bits = unpack_weights(w_codes, w_bits)
    if w_codes.ndim != 4:
        raise ValueError(f"w_codes must be [O, C, kh, kw] for conv2d_int, got {w_codes.shape}")
    x_codes, a_bits, act_bits_hi = check_acts(x_codes, a_bits, act_bits_hi,
                                               w_codes.shape[1], ndim=4, name="x_codes")
    stride, padding, _, _ = check_conv_geometry(x_codes.shape, w_codes.shape, stride, padding)
    return conv2d_acc(x_codes, a_bits, w_codes, w_bits, act_bits_hi, stride, padding)


def conv2d_acc(x_codes, a_bits, w_codes, w_bits, act_bits_hi, stride, padding) -> np.ndarray:
    """:func:`conv2d_int` of validated arguments (the reference backend's kernel)."""
    o, _, kh, kw = w_codes.shape
    ho = conv_output_size(x_codes.shape[2], kh, stride, padding)
    wo = conv_output_size(x_codes.shape[3], kw, stride, padding)
    peak = _product_peak(w_bits, act_bits_hi)
    dtype = exact_float_type(int(np.prod(w_codes.shape[1:])), peak) or np.float64
    q = _float_levels(w_codes, w_bits, dtype)
    factors = _shift_factors(a_bits, act_bits_hi, repeat=kh * kw, dtype=dtype)[:, None]
    b = x_codes.shape[0]
    acc = np.empty((b, o, ho, wo), np.int64)
    for b0, b1 in _blocks(b, 8 * ho * wo * max(q.shape)):
        # patches of the uint8 codes (8x less to move than int64), then shift per row
        cols = _shifted_rows(patches(x_codes[b0:b1], kh, kw, stride, padding), factors)
        product = _exact_matmul(q, cols.T, peak).reshape(o, b1 - b0, ho, wo)
        parallel.copy(product.transpose(1, 0, 2, 3), acc[b0:b1])
    return acc


_BYTE_POPCOUNT = np.array([bin(v).count("1") for v in range(256)], np.uint8)


def popcount(words: np.ndarray) -> np.ndarray:
    """Set bits per element of an unsigned integer array (uint8 counts, same shape).

    ``np.bitwise_count`` where NumPy has it (2.0 and later); otherwise a byte table.
    """
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(words)
    as_bytes = np.ascontiguousarray(words).view(np.uint8).reshape(words.shape + (-1,))
    return _BYTE_POPCOUNT[as_bytes].sum(axis=-1, dtype=np.uint8)


def linear_int_bitserial(a_codes, a_bits, w_codes, w_bits, act_bits_hi) -> np.ndarray:
    """:func:`linear_int` computed the bit-serial way, as the fast kernels do.

    ``acc[m, o] = 2 * sum_{i<A, j<bw[o]} 2**(i+j) popcount(W_j[o] & A_i[m])
    - (2**bw[o] - 1) * sum_c a'[m, c]`` with packed planes and ``a' = a << (A - ba)``.
    """
    w_codes, w_bits = unpack_weights(w_codes, w_bits)
    a_codes, a_bits, act_bits_hi = check_acts(a_codes, a_bits, act_bits_hi,
                                               w_codes.shape[1], ndim=2)
    a_planes = pack_activations(a_codes, a_bits, act_bits_hi)       # [M, A, words]
    w_planes = pack_bits(code_planes(w_codes, 8))                    # [N, 8, words]
    m, n = a_codes.shape[0], w_codes.shape[0]
    acc = np.zeros((m, n), dtype=np.int64)
    for j in range(8):
        for i in range(act_bits_hi):
            both = a_planes[:, None, i, :] & w_planes[None, :, j, :]  # [M, N, words]
            pop = popcount(both).sum(axis=-1, dtype=np.int64)
            acc += (pop << (i + j)) * (j < w_bits.astype(np.int64))[None, :]
    row_sum = shifted_codes(a_codes, a_bits, act_bits_hi).sum(axis=1)  # sum_c a'
    n_levels = (np.int64(1) << w_bits.astype(np.int64)) - 1
    return 2 * acc - row_sum[:, None] * n_levels[None, :]
