"""Packed weights that lie: every backend's packed object, edited after packing or
rebuilt from inconsistent pieces, is refused with a named ``ValueError``/``TypeError``
before any kernel runs -- never a crash, never numbers from memory it does not own.

Also: packing takes a snapshot (editing the caller's codes afterwards changes nothing),
and the cpu plan cache is bounded. The sanitizer job (.ci/sanitize.sh) runs this file
against the ASan/UBSan build on every ISA.
"""

import dataclasses

import numpy as np
import pytest
from hypothesis import given, strategies as st

from soniq_ref.bitpack import PackedWeights

N, K, M = 37, 130, 5
HI = 8


def _case(seed=0, conv=False):
    rng = np.random.default_rng(seed)
    w_bits = rng.integers(1, 9, N).astype(np.uint8)
    shape = (N, 2, 5, 13) if conv else (N, K)
    codes = (rng.integers(0, 256, shape) % (1 << w_bits.astype(np.int64)).reshape(
        (N,) + (1,) * (len(shape) - 1))).astype(np.uint8)
    a_bits = rng.integers(1, HI + 1, shape[1]).astype(np.uint8)
    a_shape = (M, 2, 6, 14) if conv else (M, K)
    a = (rng.integers(0, 256, a_shape) % (1 << a_bits.astype(np.int64)).reshape(
        (1, -1) + (1,) * (len(a_shape) - 2))).astype(np.uint8)
    return a, a_bits, codes, w_bits


def _run(backend, a, a_bits, packed):
    if a.ndim == 2:
        return backend.linear_int(a, a_bits, packed, None, HI)
    return backend.conv2d_int(a, a_bits, packed, None, HI, stride=1, padding=1)


def _refused_or_same(backend, a, a_bits, packed, want):
    try:
        got = _run(backend, a, a_bits, packed)
    except (ValueError, TypeError) as exc:
        assert str(exc).strip()
        return
    np.testing.assert_array_equal(np.asarray(got), want)


def _rebuilt(packed, **changes):
    """A new packed object of the same type from (some) edited pieces, via its constructor."""
    if dataclasses.is_dataclass(packed):
        return dataclasses.replace(packed, **changes)
    fields = {"codes": packed.codes(), "bits": packed.bits, "shape": packed.shape, **changes}
    return type(packed)(fields["codes"], fields["bits"], fields["shape"])


@pytest.mark.parametrize("conv", [False, True], ids=["linear", "conv"])
def test_packed_arrays_are_read_only_snapshots(backend, conv):
    a, a_bits, codes, w_bits = _case(conv=conv)
    packed = backend.pack_weights(codes, w_bits)
    want = np.asarray(_run(backend, a, a_bits, packed))
    codes[:] = 255                       # the caller's arrays after packing
    w_bits[:] = 1
    np.testing.assert_array_equal(np.asarray(_run(backend, a, a_bits, packed)), want)
    for value in vars(packed).values():
        if isinstance(value, np.ndarray):
            with pytest.raises(ValueError):
                value[...] = 0
            with pytest.raises(ValueError):
                value.setflags(write=True)
    np.testing.assert_array_equal(np.asarray(_run(backend, a, a_bits, packed)), want)


@pytest.mark.parametrize("edit", ["one-row", "zero", "nine", "255", "float", "2-D"])
def test_rebuilt_from_inconsistent_bits_is_refused(backend, edit):
    a, a_bits, codes, w_bits = _case()
    packed = backend.pack_weights(codes, w_bits)
    bits = {"one-row": w_bits[:1].copy(), "zero": np.zeros(N, np.uint8),
            "nine": np.full(N, 9, np.uint8), "255": np.full(N, 255, np.uint8),
            "float": w_bits.astype(np.float32), "2-D": w_bits[None]}[edit]
    with pytest.raises((ValueError, TypeError), match="bits"):
        _run(backend, a, a_bits, _rebuilt(packed, bits=bits))


def test_rebuilt_with_narrower_bits_than_the_codes_is_refused(backend):
    a, a_bits, codes, w_bits = _case()
    codes[:, 0] = (1 << w_bits.astype(np.int64)) - 1
    packed = backend.pack_weights(codes, w_bits)
    narrower = np.maximum(w_bits, 2) - 1
    with pytest.raises((ValueError, TypeError), match="bits|w_codes|planes"):
        _run(backend, a, a_bits, _rebuilt(packed, bits=narrower))


@pytest.mark.parametrize("shape", [(N, K + 64), (N, K - 1), (N + 1, K), (N, K, 1, 1),
                                   (N,), (N, -K), (N, True), "ab"])
def test_rebuilt_with_another_shape_is_refused(backend, shape):
    a, a_bits, codes, w_bits = _case()
    packed = backend.pack_weights(codes, w_bits)
    with pytest.raises((ValueError, TypeError)):
        _run(backend, a, a_bits, _rebuilt(packed, shape=shape))


_HOSTILE_BITS = st.one_of(
    st.lists(st.integers(0, 255), min_size=0, max_size=2 * N).map(
        lambda v: np.array(v, np.uint8)),
    st.sampled_from([np.zeros(N, np.uint8), np.full(N, 255, np.uint8), np.full(N, 9, np.uint8),
                     np.ones(N, np.int64), None, 3, "bits"]))
_HOSTILE_SHAPES = st.one_of(
    st.tuples(st.integers(-2, N + 2), st.integers(-2, 2 * K)),
    st.tuples(st.integers(0, N + 1), st.integers(0, 3), st.integers(0, 6), st.integers(0, 14)),
    st.sampled_from([(), (N,), None, [N, K], (N, 2 ** 40), (2 ** 63, K)]))


@given(attribute=st.sampled_from(["bits", "shape"]), data=st.data())
def test_forced_edits_after_packing_are_refused_or_harmless(backend, attribute, data):
    """Attributes replaced after packing, past any immutability (``object.__setattr__``):
    the next kernel call refuses the object or computes the original result."""
    a, a_bits, codes, w_bits = _case(seed=3)
    packed = backend.pack_weights(codes, w_bits)
    want = np.asarray(_run(backend, a, a_bits, packed))
    value = data.draw(_HOSTILE_BITS if attribute == "bits" else _HOSTILE_SHAPES)
    object.__setattr__(packed, attribute, value)
    _refused_or_same(backend, a, a_bits, packed, want)


def test_in_place_edits_are_impossible(backend):
    a, a_bits, codes, w_bits = _case()
    packed = backend.pack_weights(codes, w_bits)
    with pytest.raises(ValueError, match="read-only"):
        packed.bits[0] = 0
    with pytest.raises(ValueError, match="read-only"):
        packed.bits[:] = 255


def test_foreign_packed_objects_are_refused(backend):
    """Another backend's packed object (not the reference's, which every backend takes)."""
    from soniq_ref import get_backend
    a, a_bits, codes, w_bits = _case()
    foreign = [object(), np.zeros(3)]
    try:
        foreign.append(get_backend("cpu").pack_weights(codes, w_bits))
    except RuntimeError:
        pass
    for other in foreign:
        if type(other) is type(backend.pack_weights(codes, w_bits)):
            continue
        with pytest.raises((TypeError, ValueError), match="w_codes"):
            backend.linear_int(a, a_bits, other, None if not isinstance(other, np.ndarray)
                               else w_bits, HI)


def test_reference_packed_weights_validate_on_construction():
    _, _, codes, w_bits = _case()
    from soniq_ref.bitpack import pack_weights
    packed = pack_weights(codes, w_bits)
    planes = np.array(packed.planes)
    planes[0, 7, 0] |= np.uint64(1) if w_bits[0] < 8 else np.uint64(0)
    planes[1, :, -1] |= np.uint64(1) << np.uint64(63)       # beyond K = 130
    with pytest.raises(ValueError, match="planes"):
        PackedWeights(planes, packed.bits, packed.shape)
    with pytest.raises(TypeError, match="planes"):
        PackedWeights(planes.astype(np.int64), packed.bits, packed.shape)
    with pytest.raises(ValueError, match="planes"):
        PackedWeights(packed.planes[:, :4], packed.bits, packed.shape)
    with pytest.raises(dataclasses.FrozenInstanceError):
        packed.bits = w_bits


def test_cpu_plan_cache_is_bounded():
    from soniq_fast.cpu.packed import MAX_PLANS
    from soniq_ref import get_backend
    try:
        cpu = get_backend("cpu")
    except RuntimeError as exc:
        pytest.skip(str(exc))
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 2, (8, 64)).astype(np.uint8)
    packed = cpu.pack_weights(codes, np.ones(8, np.uint8))
    a = np.zeros((1, 64), np.uint8)
    for i in range(3 * MAX_PLANS):
        a_bits = np.full(64, 8, np.uint8)
        a_bits[: i % 64 + 1] = 1 + i // 64
        cpu.linear_int(a, a_bits, packed, None, 8)
    assert len(packed._plans) <= MAX_PLANS
