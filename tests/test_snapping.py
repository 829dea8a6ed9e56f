"""Snapping continuous precisions to the two-level palettes under a bit budget."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from soniq_ref import budget
from soniq_ref.layers import QuantConv2d, QuantLinear
from soniq_ref.train import allocate, snap


@st.composite
def allocation_case(draw):
    n_layers = draw(st.integers(1, 4))
    lo = draw(st.integers(1, 4))
    hi = draw(st.integers(lo, 8))
    scores = [np.array(draw(st.lists(st.sampled_from([lo, (lo + hi) / 2, hi, lo + 0.25]),
                                     min_size=1, max_size=12)))
              for _ in range(n_layers)]
    sizes = [draw(st.integers(1, 50)) for _ in range(n_layers)]
    target = draw(st.floats(0.5, 9.0))
    return scores, sizes, [(lo, hi)] * n_layers, target


def _mean(bits, sizes):
    return sum(int(z) * b.astype(np.int64).sum() for b, z in zip(bits, sizes)) / \
        sum(int(z) * len(b) for b, z in zip(bits, sizes))


@given(allocation_case())
def test_allocation_is_a_top_prefix_within_budget(case):
    scores, sizes, palettes, target = case
    bits = allocate(scores, sizes, palettes, target)
    lo, hi = palettes[0]
    flat_bits = np.concatenate(bits)
    flat_scores = np.concatenate(scores)
    size = np.concatenate([np.full(len(s), z) for s, z in zip(scores, sizes)])
    assert set(np.unique(flat_bits)) <= {lo, hi}
    assert [b.shape for b in bits] == [s.shape for s in scores]
    all_lo_mean = lo
    if all_lo_mean <= target:
        assert _mean(bits, sizes) <= target + 1e-9
    else:
        assert np.all(flat_bits == lo)
    order = np.argsort(-flat_scores, kind="stable")
    ranked = flat_bits[order]
    n_high = int(np.count_nonzero(ranked == hi)) if hi != lo else 0
    if hi != lo:
        assert np.all(ranked[:n_high] == hi) and np.all(ranked[n_high:] == lo)
        if n_high < len(ranked):     # the next channel in the ranking would break the budget
            nxt = order[n_high]
            used = (size * flat_bits).sum() + size[nxt] * (hi - lo)
            assert used > target * size.sum()


def test_ties_go_to_network_order_and_repeat_exactly():
    scores = [np.array([2.0, 2.0]), np.array([2.0, 2.0])]
    bits = allocate(scores, [1, 1], [(1, 3)] * 2, target=2.0)
    assert [b.tolist() for b in bits] == [[3, 3], [1, 1]]
    assert [b.tolist() for b in allocate(scores, [1, 1], [(1, 3)] * 2, 2.0)] == [[3, 3], [1, 1]]


def test_exact_budget_and_size_weighting():
    # One channel of 10 parameters vs ten of 1: the big one ranks first but costs 10x.
    bits = allocate([np.array([3.9]), np.full(10, 3.0)], [10, 1], [(1, 4)] * 2, target=2.5)
    assert bits[0].tolist() == [4] and bits[1].tolist() == [1] * 10   # 40 + 10 = 50 = 2.5 * 20
    with pytest.raises(ValueError, match="target"):
        allocate([np.zeros(2)], [1], [(1, 4)], target=0)


def test_snap_fixes_every_layer_and_respects_both_targets():
    layers = [QuantConv2d(1, 6, 3, padding=1, first_layer=True, seed=1),
              QuantConv2d(6, 8, 3, padding=1, seed=2), QuantLinear(8 * 5 * 5, 4, seed=3)]
    rng = np.random.default_rng(0)
    for layer in layers:
        layer.params["theta_w"][...] = rng.standard_normal(layer.params["theta_w"].shape)
        if "theta_a" in layer.params:
            layer.params["theta_a"][...] = rng.standard_normal(layer.params["theta_a"].shape)
    x = rng.random((2, 1, 5, 5)).astype(np.float32)
    h = layers[1].forward(layers[0].forward(x))
    layers[2].forward(h.reshape(2, -1))              # sets act_channel_size per layer
    snap(layers, 2.0, 4.0)
    mean_w, mean_a = budget.hard_mean_bits(layers)
    assert mean_w <= 2.0 and mean_a <= 4.0
    assert all(set(np.unique(l.w_bits)) <= {1, 4} for l in layers)
    assert set(np.unique(layers[1].a_bits)) <= {2, 8} and layers[0].a_bits.tolist() == [8]
    for layer in layers:
        layer.set_mode("exact")                       # bits are fixed: exact mode is allowed
