"""How a quantized stage's requantization follows from the stage it feeds.

A quantized stage (the *producer*) emits the input codes of the next quantized
stage (the *consumer*), through the stages between them that only move codes
(pooling, flattening). The consumer's input bits ``bits`` [C or K] and ratios
``ratio = float32(2**bits) / clip`` (``clip``: the consumer's activation clip,
float32) give the producer's::

    out_bits, out_ratio = bits, ratio              per channel: [O], O == C

or, when the consumer reads flattened features of a convolution's [O, H, W]
output (its input is 1-D, the producer's output 3-D), per feature: each pre-pool
position takes the precision of the pooled feature its window produces
(``spread_back`` of each stage between, last to first), ``[O*H*W]``,
``per_feature``. The model export and the file reader both use :func:`link`, so a
loaded model requantizes exactly as the exported one.
"""

from __future__ import annotations

import numpy as np


def link(producer, producer_shape: tuple, between: list, bits: np.ndarray,
         ratio: np.ndarray) -> None:
    """Set ``producer``'s ``out_bits``, ``out_ratio`` and ``per_feature``.

    producer_shape: its per-sample output shape; between: ``(stage, input shape)`` of
    each stage between producer and consumer, in order; bits uint8 / ratio float32:
    the consumer's input bits and ratios [C or K].
    """
    consumer_shape = between[-1][0].output_shape(between[-1][1]) if between else \
        producer_shape
    per_feature = len(consumer_shape) == 1 and len(producer_shape) == 3
    if not per_feature:
        producer.out_bits, producer.out_ratio = bits.copy(), ratio.copy()
        producer.per_feature = False
        return
    spread = []
    for values in (bits, ratio):
        values = values.reshape(consumer_shape)
        for stage, in_shape in reversed(between):
            values = stage.spread_back(values, in_shape)
        spread.append(values.reshape(-1).copy())
    producer.out_bits, producer.out_ratio = spread
    producer.per_feature = True

