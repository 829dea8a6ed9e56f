"""soniq_ref.parallel: work split over channel or sample slices gives the same bits.

Every function that splits its work is run at 1, 2 and 3 workers (every slice handed to
a thread, however small) on ragged shapes in both memory layouts a [B, C, H, W] array has
here (batch-major, and channel-major as a convolution's output); each result must equal
the unsplit computation bit for bit and keep its memory layout. The unsplit computation is
the function outside :func:`parallel.workers` and, where a function sums over a whole array,
also the whole-array NumPy expression it replaced.
"""

import os
import threading

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from soniq_ref import blas_wait, integer_core, noise, parallel, quantizers, ste
from soniq_ref.epilogue import epilogue
from soniq_ref.layers import BatchNorm1d, BatchNorm2d, MaxPool2d, QuantConv2d, ReLU
from soniq_ref.layers.quant_conv import channel_major

WORKERS = (1, 2, 3)


@st.composite
def activations(draw, max_b=5, max_c=7, max_hw=9, dtypes=(np.float32, np.float64)):
    """A float [B, C, H, W] array, batch-major or channel-major in memory, with ties and
    zeros among its values (pooling's and ReLU's edge cases)."""
    b, c = draw(st.integers(1, max_b)), draw(st.integers(1, max_c))
    h, w = draw(st.integers(1, max_hw)), draw(st.integers(1, max_hw))
    dtype = draw(st.sampled_from(dtypes))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    values = rng.standard_normal((b, c, h, w)).astype(dtype)
    if draw(st.booleans()):
        values = np.round(values * 2) / 2                  # ties and exact zeros
    return channel_major(values) if draw(st.booleans()) else values


def _like(x, seed):
    """Another array of x's shape and dtype, in C order (as drawn noise is)."""
    return np.random.default_rng(seed).standard_normal(x.shape).astype(x.dtype)


def _at_every_count(compute):
    """compute() outside any workers setting, then at 1, 2 and 3 workers (slices of any
    size); each result as a tuple of arrays."""
    def run():
        result = compute()
        return tuple(np.asarray(r) for r in (result if isinstance(result, tuple) else (result,)))
    unsplit = run()
    split = []
    for count in WORKERS:
        with parallel.workers(count, min_slice=1):
            split.append(run())
    return unsplit, split


def _same(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    assert np.array_equal(a, b, equal_nan=True)
    assert a.tobytes() == b.tobytes()                   # bit for bit (signed zeros, NaNs)
    long = [i for i, n in enumerate(a.shape) if n > 1]     # axes whose stride matters
    assert sorted(long, key=lambda i: -a.strides[i]) == \
        sorted(long, key=lambda i: -b.strides[i])            # the same memory layout


def check_split(compute, reference=None):
    unsplit, split = _at_every_count(compute)
    if reference is not None:
        expected = reference()
        expected = expected if isinstance(expected, tuple) else (expected,)
        for got, want in zip(unsplit, expected):
            _same(got, np.asarray(want))
    for result in split:
        for got, want in zip(result, unsplit):
            _same(got, want)


# ------------------------------------------------------------------ the pool itself

@given(st.integers(0, 200), st.integers(1, 9))
def test_slices_cover_the_range_in_order(length, parts):
    cuts = parallel.slices(length, parts)
    assert len(cuts) == parts
    covered = [i for s in cuts for i in range(length)[s]]
    assert covered == list(range(length))
    sizes = [s.stop - s.start for s in cuts]
    assert max(sizes) - min(sizes) <= 1


def test_workers_setting_is_scoped_and_restored():
    assert parallel.worker_count() == 1
    with parallel.workers(3):
        assert parallel.worker_count() == 3
        with parallel.workers(2):
            assert parallel.worker_count() == 2
        assert parallel.worker_count() == 3
        seen = []
        other = threading.Thread(target=lambda: seen.append(parallel.worker_count()))
        other.start()
        other.join()
        assert seen == [1]                  # another thread does not inherit it
    assert parallel.worker_count() == 1


@pytest.mark.parametrize("count", [0, -1, 1.5, True, "2"])
def test_workers_must_be_a_positive_integer(count):
    with pytest.raises(ValueError, match="count"):
        with parallel.workers(count):
            pass


def test_split_runs_every_slice_on_threads_and_nested_splits_inline():
    names, inner = {}, []

    def body(s):
        names[s.start] = threading.current_thread().name
        inner.append(parallel.worker_count())

    with parallel.workers(3, min_slice=1):
        parallel.split(body, 9, 9)
    assert sorted(names) == [0, 3, 6]
    assert names[0] == threading.current_thread().name
    assert len(set(names.values())) == 3                # one slice per thread
    assert inner.count(1) == 2              # inside a worker, no further split


def test_small_work_stays_on_the_calling_thread():
    calls = []
    with parallel.workers(2):
        parallel.split(calls.append, 100, parallel.MIN_SLICE)
    assert calls == [slice(0, 100)]


def test_split_waits_for_every_slice_then_raises():
    done = []

    def body(s):
        if s.start == 0:
            raise ZeroDivisionError("slice 0")
        done.append(s.start)

    with parallel.workers(3, min_slice=1):
        with pytest.raises(ZeroDivisionError, match="slice 0"):
            parallel.split(body, 3, 3)
    assert sorted(done) == [1, 2]


@given(activations())
def test_per_channel_sums_take_at_least_two_channels(x):
    """NumPy may sum one channel of a batch-major array in another order than it sums
    the same channel inside the whole array: slices hold two channels or more."""
    check_split(lambda: parallel.per_channel(lambda x: x.sum(axis=(0, 2, 3)), x),
                lambda: x.sum(axis=(0, 2, 3)))


# ------------------------------------------------------------- patches and col2im

@given(activations(), st.integers(1, 3), st.integers(1, 3), st.integers(1, 2),
       st.integers(0, 2))
def test_patches_and_adjoint(x, kh, kw, stride, padding):
    if x.shape[2] + 2 * padding < kh or x.shape[3] + 2 * padding < kw:
        return
    check_split(lambda: integer_core.patches(x, kh, kw, stride, padding))
    cols = integer_core.patches(x, kh, kw, stride, padding)
    grads = np.random.default_rng(1).standard_normal(cols.shape).astype(x.dtype)
    check_split(lambda: integer_core.patches_adjoint(grads, x.shape, kh, kw, stride, padding))


# ------------------------------------------------------------- layers

@given(activations(), st.integers(1, 3))
def test_max_pooling_forward_and_backward(x, kernel):
    if x.shape[2] < kernel or x.shape[3] < kernel:
        return

    def run():
        pool = MaxPool2d(kernel)
        y = pool.forward(x)
        return (y, pool.backward(_like(y, 2)), *pool._first_max)
    check_split(run)


@given(activations())
def test_relu(x):
    def run():
        relu = ReLU()
        y = relu.forward(x)
        return y, relu.backward(_like(x, 3))
    check_split(run, lambda: (np.maximum(x, 0), _like(x, 3) * (x > 0)))


@pytest.mark.parametrize("training", [True, False])
@given(x=activations(max_hw=6))
def test_batch_norm_2d(training, x):
    def run():
        bn = BatchNorm2d(x.shape[1], dtype=x.dtype)
        bn.params["weight"][...] = np.linspace(0.5, 2, x.shape[1])
        bn.params["bias"][...] = np.linspace(-1, 1, x.shape[1])
        bn.running_var[...] = np.linspace(0.5, 3, x.shape[1])
        bn.train(training)
        y = bn.forward(x)
        dx = bn.backward(_like(x, 4))
        return y, dx, bn.grads["weight"], bn.grads["bias"], bn.running_mean, bn.running_var
    check_split(run)


@given(st.integers(1, 40), st.integers(1, 9), st.integers(0, 2 ** 32 - 1))
def test_batch_norm_1d(n, c, seed):
    x = np.random.default_rng(seed).standard_normal((n, c)).astype(np.float32)

    def run():
        bn = BatchNorm1d(c)
        y = bn.forward(x)
        return y, bn.backward(_like(x, 5)), bn.grads["weight"], bn.grads["bias"]
    check_split(run)


@given(activations(max_c=5, dtypes=(np.float32,)), st.integers(1, 6))
def test_conv_float_forward_backward(x, out_channels):
    def run():
        conv = QuantConv2d(x.shape[1], out_channels, 3, padding=1, seed=1)
        conv.params["bias"][...] = np.linspace(-1, 1, out_channels)
        y = conv.forward(x)
        dx = conv.backward(_like(y, 6))
        return (y, dx, *conv.grads.values())
    check_split(run)


@given(activations())
def test_channel_major_copy(x):
    check_split(lambda: channel_major(x),
                lambda: np.ascontiguousarray(x.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3))


# ------------------------------------------------------------- noise, STE, quantizers

@given(activations(), st.booleans())
def test_activation_noise_and_its_gradient(x, flat):
    if flat:
        x = np.ascontiguousarray(x.reshape(x.shape[0], -1))
    rng = np.random.default_rng(7)
    dt = x.dtype.type
    u = noise.uniform_noise(rng, x.shape, x.dtype)
    bits = np.linspace(2, 8, x.shape[1]).astype(x.dtype)
    beta = dt(0.75)
    d = channel_major(_like(x, 8)) if x.ndim == 4 else _like(x, 8)
    p = 2.0 ** bits.reshape([1, -1] + [1] * (x.ndim - 2))
    axes = tuple(i for i in range(x.ndim) if i != 1)
    check_split(lambda: noise.act_noise(x, beta, bits, u),
                lambda: np.clip(x, 0.0, beta) + beta / p * u)
    check_split(lambda: noise.act_noise_backward(d, x, beta, bits, u),
                lambda: (d * ((x > 0) & (x < beta)), np.sum(d * ((x >= beta) + u / p)),
                         (d * (-beta * u * noise.LN2 / p)).sum(axis=axes).astype(x.dtype)))


def test_uniform_noise_draws_the_same_stream():
    ours = noise.uniform_noise(np.random.default_rng(3), (4, 5, 6), np.float32)
    plain = np.random.default_rng(3).random((4, 5, 6), dtype=np.float32) - np.float32(0.5)
    _same(ours, plain)


@given(activations(dtypes=(np.float32,)), st.integers(1, 8), st.integers(0, 2 ** 32 - 1))
def test_activation_quantizers_and_straight_through(x, hi, seed):
    rng = np.random.default_rng(seed)
    bits = rng.integers(1, hi + 1, x.shape[1]).astype(np.uint8)
    beta = np.float32(1.25)
    codes = quantizers.quantize_acts(x, bits, beta)
    x_hat = ste.dequantized_acts(codes, bits, beta, hi, np.float32)
    d = _like(x, 9)
    ratio = quantizers.act_ratio(beta, bits).reshape(1, -1, 1, 1)
    top = ((1 << bits.astype(np.int64)) - 1).reshape(ratio.shape)
    shift = (hi - bits.astype(np.int64)).reshape(1, -1, 1, 1)
    inside = (x * ratio >= 0) & (x * ratio <= top)
    check_split(lambda: quantizers.quantize_acts(x, bits, beta),
                lambda: np.clip(np.rint(np.ascontiguousarray(x) * ratio), 0,
                                top.astype(np.float32)).astype(np.uint8))
    check_split(lambda: quantizers.dequantize_acts(codes, bits, beta, hi),
                lambda: quantizers.act_step(beta, hi) *
                (codes.astype(np.int64) << shift).astype(np.float32))
    check_split(lambda: ste.act_ste_backward(d, x, x_hat, beta, bits),
                lambda: (d * inside, np.array([np.sum(
                    d * (x_hat / beta - np.where(inside, x / beta, 0.0)))])))


@given(activations(max_c=6, dtypes=(np.float32,)), st.booleans(), st.integers(0, 2 ** 32 - 1))
def test_epilogue_affine(x, flat, seed):
    rng = np.random.default_rng(seed)
    acc = rng.integers(-2 ** 40, 2 ** 40, x.shape)
    if flat:
        acc = acc.reshape(acc.shape[0], -1)
    scale = rng.standard_normal(acc.shape[1]).astype(np.float32)
    bias = rng.standard_normal(acc.shape[1]).astype(np.float32)
    col = [1, -1] + [1] * (acc.ndim - 2)
    check_split(lambda: epilogue(acc, scale, bias),
                lambda: scale.reshape(col) * acc.astype(np.float32) + bias.reshape(col))


@given(st.integers(1, 4), st.integers(1, 5), st.integers(3, 7), st.integers(1, 6),
       st.integers(1, 8), st.integers(0, 2 ** 32 - 1))
def test_integer_core_conv_and_linear(b, c, hw, o, hi, seed):
    rng = np.random.default_rng(seed)
    a_bits = rng.integers(1, hi + 1, c).astype(np.uint8)
    x = (rng.random((b, c, hw, hw)) * (1 << a_bits.astype(np.int64)).reshape(1, -1, 1, 1)
         ).astype(np.uint8)
    w_bits = rng.integers(1, 9, o).astype(np.uint8)
    w = (rng.random((o, c, 3, 3)) * (1 << w_bits.astype(np.int64)).reshape(-1, 1, 1, 1)
         ).astype(np.uint8)
    check_split(lambda: integer_core.conv2d_int(x, a_bits, w, w_bits, hi, padding=1))
    flat = x.reshape(b, c, -1)[:, :, 0]
    check_split(lambda: integer_core.linear_int(flat, a_bits, w[:, :, 0, 0], w_bits, hi))


# ------------------------------------------------------------- training

def test_training_gives_the_same_bytes_with_more_workers(monkeypatch):
    """BLAS at one thread, the channel workers at 1 and at 3: the same model bytes (the
    workers split only work whose every element is computed as before)."""
    from soniq_ref import fileformat
    from soniq_ref.train import TrainConfig, train, trainer

    config = TrainConfig(epochs_phase1=1, epochs_phase2=1, limit_train=150, limit_test=40,
                         seed=3, threads=1)
    one = fileformat.to_bytes(train(config).deploy)
    real = parallel.workers
    counts = []

    def three(count, **kwargs):
        counts.append(count)
        return real(3, min_slice=1)
    monkeypatch.setattr(trainer.parallel, "workers", three)
    assert fileformat.to_bytes(train(config).deploy) == one
    assert counts == [1]
    assert parallel.worker_count() == 1                 # restored after the run


def test_fit_and_train_run_with_the_threads_setting():
    import soniq_ref as sq
    from soniq_ref.train import TrainConfig

    seen = []
    data = sq.load_dataset("digits")
    model = sq.cnn(data.input_shape, data.n_classes, channels=(4, 4))
    sq.fit(model, data.x_train[:64], data.y_train[:64], config=TrainConfig(
        epochs_phase1=1, epochs_phase2=1, threads=2),
        callbacks=[lambda *args: seen.append(parallel.worker_count())])
    assert seen and set(seen) == {2}
    assert parallel.worker_count() == 1


def test_importing_soniq_ref_sets_openblas_idle_wait_unless_given():
    import subprocess
    import sys

    probe = ("import soniq_ref, os, numpy; "
             "print(os.environ['OPENBLAS_THREAD_TIMEOUT'])")
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out == blas_wait.THREAD_TIMEOUT == "16"
    out = subprocess.run([sys.executable, "-c", probe],
                         env={**env, "OPENBLAS_THREAD_TIMEOUT": "3"}, capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out == "3"
