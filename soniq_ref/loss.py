"""Softmax cross-entropy, mean over the batch.

For logits z [N, K] and integer labels y [N]::

    p = softmax(z)            (computed as exp(z - max z) / sum, stable)
    loss = -mean_n log p[n, y_n]
    d loss / d z = (p - onehot(y)) / N
"""

from __future__ import annotations

import numpy as np


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """-> (loss as a Python float, d loss / d logits with the dtype of ``logits``)."""
    if logits.ndim != 2:
        raise ValueError(f"logits must be [N, K], got shape {logits.shape}")
    labels = np.asarray(labels)
    if labels.shape != (logits.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers of shape ({logits.shape[0]},)")
    if labels.size and (labels.min() < 0 or labels.max() >= logits.shape[1]):
        raise ValueError(f"labels must be in 0..{logits.shape[1] - 1}")
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_z = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    log_p = shifted - log_z
    n = logits.shape[0]
    rows = np.arange(n)
    loss = -float(log_p[rows, labels].astype(np.float64).mean())
    grad = np.exp(log_p)
    grad[rows, labels] -= 1
    return loss, (grad / n).astype(logits.dtype)
