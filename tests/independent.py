"""An independent, deliberately naive implementation of docs/semantics.md.

Written from the definitions, sharing no code with soniq_ref, so the reference
is checked against something that could not share its bugs.
"""

import numpy as np


def linear_acc(a, a_bits, w, w_bits, hi):
    n = (2 ** w_bits.astype(np.int64)) - 1
    q = 2 * w.astype(np.int64) - n[:, None]
    a_shift = a.astype(np.int64) * (2 ** (hi - a_bits.astype(np.int64)))[None, :]
    return np.einsum("mk,nk->mn", a_shift, q, dtype=np.int64)


def conv_acc(x, a_bits, w, w_bits, hi, stride, padding):
    b, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    n = (2 ** w_bits.astype(np.int64)) - 1
    q = 2 * w.astype(np.int64) - n[:, None, None, None]
    xs = x.astype(np.int64) * (2 ** (hi - a_bits.astype(np.int64)))[None, :, None, None]
    xp = np.zeros((b, c, h + 2 * padding, wd + 2 * padding), np.int64)
    xp[:, :, padding:padding + h, padding:padding + wd] = xs
    ho = (h + 2 * padding - kh) // stride + 1
    wo = (wd + 2 * padding - kw) // stride + 1
    out = np.zeros((b, o, ho, wo), np.int64)
    for r in range(ho):
        for s in range(wo):
            patch = xp[:, :, r * stride:r * stride + kh, s * stride:s * stride + kw]
            out[:, :, r, s] = np.einsum("bcij,ocij->bo", patch, q, dtype=np.int64)
    return out


def epilogue(acc, scale, bias):
    shape = (1, -1) + (1,) * (acc.ndim - 2)
    prod = np.multiply(scale.reshape(shape), acc.astype(np.float32), dtype=np.float32)
    return np.add(prod, bias.reshape(shape), dtype=np.float32)


def requantize(acc, scale, bias, bits, ratio):
    shape = (1, -1) + (1,) * (acc.ndim - 2)
    y = epilogue(acc, scale, bias)
    t = np.rint(np.multiply(y, ratio.reshape(shape), dtype=np.float32))
    top = (2.0 ** bits.astype(np.float64) - 1).reshape(shape)
    return np.clip(t.astype(np.float64), 0, top).astype(np.uint8)
