"""The residual and average-pooling deploy stages: bit-identical logits on every backend
(Hypothesis: ragged channels, odd spatial sizes, mixed bits on both branches, stride-2
projections), the training model's exact mode, the file format and ``soniq info``."""

import re
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from random_deploy import random_resnet_deploy
from soniq_ref import fileformat
from soniq_ref.stages import IdentitySkip, PooledLinearStage, ResidualStage


@st.composite
def resnet_cases(draw):
    channels = draw(st.sampled_from([1, 3]))
    shape = (channels, draw(st.integers(3, 9)), draw(st.integers(3, 9)))
    lo_w = draw(st.integers(1, 4))
    lo_a = draw(st.integers(1, 6))
    return dict(seed=draw(st.integers(0, 2 ** 31)), shape=shape,
                classes=draw(st.integers(2, 11)), width=draw(st.integers(1, 7)),
                depth=draw(st.sampled_from([8, 14])),
                weight_palette=(lo_w, draw(st.integers(lo_w, 8))),
                act_palette=(lo_a, draw(st.integers(lo_a, 8))),
                batch=draw(st.integers(1, 5)))


@settings(max_examples=6, deadline=None)
@given(case=resnet_cases())
def test_resnet_deploy_is_bit_identical_on_every_backend(backend, case):
    model, x = random_resnet_deploy(**case)
    kinds = [s.kind for s in model.stages]
    assert "residual_projection" in kinds and kinds[-1] == "avgpool_linear"
    want = model.forward(x, "ref")
    got = model.forward(x, backend)
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
    loaded = fileformat.from_bytes(fileformat.to_bytes(model))
    np.testing.assert_array_equal(loaded.forward(x, backend).view(np.uint32),
                                  want.view(np.uint32))


@pytest.fixture(scope="module")
def trained():
    """A small ResNet trained on digits (the model, its deploy model, test images)."""
    from soniq_ref.train import TrainConfig, train
    config = TrainConfig(model="resnet", width=4, depth=8, epochs_phase1=1, epochs_phase2=1,
                         limit_train=128, batch_size=32, seed=5, threads=1)
    result = train(config)
    x = np.random.default_rng(0).integers(0, 256, (20, 1, 8, 8)).astype(np.uint8)
    return result, x


def test_a_trained_resnet_gives_the_same_logits_on_every_backend(trained, backend):
    result, x = trained
    deploy = result.deploy
    want = deploy.forward(x, "ref")
    np.testing.assert_array_equal(deploy.forward(x, backend).view(np.uint32),
                                  want.view(np.uint32))


def test_the_deploy_model_computes_what_exact_training_computes(trained):
    result, x = trained
    model = result.model
    model.eval()
    model.set_mode("exact")
    y = model.forward(x.astype(np.float32) / np.float32(255))
    np.testing.assert_allclose(result.deploy.forward(x), y, rtol=1e-4, atol=1e-4)


def test_round_trip_and_description(trained, tmp_path):
    deploy = trained[0].deploy
    raw = fileformat.to_bytes(deploy)
    loaded = fileformat.from_bytes(raw)
    assert fileformat.to_bytes(loaded) == raw
    assert [s.kind for s in loaded.stages] == ["conv", "residual", "residual_projection",
                                                "residual_projection", "avgpool_linear"]
    rows = loaded.describe()
    assert rows[2]["output_shape"] == [8, 4, 4]
    assert set(rows[2]) >= {"conv1", "conv2", "projection", "mean_weight_bits"}
    assert rows[1]["conv1"]["weight_shape"] == [4, 4, 3, 3]
    path = tmp_path / "resnet.soniq"
    fileformat.save(deploy, path)
    out = subprocess.run([sys.executable, "-m", "soniq_ref.cli", "info", str(path)],
                         capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(__import__("pathlib").Path(
                             fileformat.__file__).parents[1]), "PATH": "/usr/bin:/bin"}).stdout
    assert re.search(r"residual_projection \[8, 4, 4\]\s+conv1 \[8, 4, 3, 3\]", out), out
    assert re.search(r"^\s+proj  \[8, 4, 1, 1\]", out, re.M), out
    assert "avgpool_linear" in out


def test_stage_types_are_registered():
    from soniq_ref.stages import STAGE_TYPES
    assert STAGE_TYPES["residual"] is ResidualStage
    assert STAGE_TYPES["residual_projection"] is ResidualStage
    assert STAGE_TYPES["avgpool_linear"] is PooledLinearStage


class _Stop(Exception):
    pass


def test_a_resnet_run_resumes_byte_identically(tmp_path):
    """Checkpoints hold the layers inside residual blocks (their parameters, batch norm
    statistics, bits and noise generators) under their block's names."""
    from soniq_ref.train import TrainConfig, train
    config = dict(model="resnet", width=2, depth=8, epochs_phase1=2, epochs_phase2=1,
                  limit_train=64, batch_size=32, seed=7, threads=1)
    whole = train(TrainConfig(**config), run_dir=tmp_path / "whole")

    def stop(record):
        raise _Stop

    with pytest.raises(_Stop):
        train(TrainConfig(**config), run_dir=tmp_path / "cut", callbacks=[stop])
    resumed = train(TrainConfig(**config), run_dir=tmp_path / "cut", resume=True)
    assert fileformat.to_bytes(resumed.deploy) == fileformat.to_bytes(whole.deploy)


@st.composite
def residual_tails(draw):
    """acc int64 [B, O, H, W] (some |acc| >= 2^31, odd sizes), per-channel scale, bias,
    bits and ratio, a float32 skip of acc's shape."""
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 9)), draw(st.integers(1, 7)),
             draw(st.integers(1, 7)))
    big = draw(st.booleans())
    acc = rng.integers(-(2 ** 34 if big else 5000), 2 ** 34 if big else 5000, shape)
    o = shape[1]
    scale = (rng.uniform(0.5, 2.0, o) * (2e-6 if big else 1e-3)).astype(np.float32)
    bias = rng.standard_normal(o).astype(np.float32)
    skip = np.abs(rng.standard_normal(shape)).astype(np.float32)
    bits = rng.integers(1, 9, o).astype(np.uint8)
    ratio = ((2.0 ** bits) / rng.uniform(0.5, 4.0, o)).astype(np.float32)
    return acc, scale, bias, skip, bits, ratio


@settings(max_examples=30, deadline=None)
@given(case=residual_tails())
def test_the_fused_residual_tail_equals_the_reference(backend, case):
    """``residual_requantize`` (an optional kernel method) against the reference's
    epilogue, one float32 add and ``codes_from_ratio``, bit for bit."""
    from soniq_ref.epilogue import epilogue
    from soniq_ref.quantizers import codes_from_ratio
    kernels = getattr(backend, "kernels", None)         # the unchecked kernels, cpu or cuda
    if kernels is None or not hasattr(kernels, "residual_requantize"):
        pytest.skip(f"{backend.name} has no fused residual tail")
    acc, scale, bias, skip, bits, ratio = case
    want = codes_from_ratio(epilogue(acc, scale, bias) + skip, ratio, bits)
    np.testing.assert_array_equal(
        kernels.residual_requantize(acc, scale, bias, skip, bits, ratio), want)


@pytest.mark.parametrize("entry", ["conv2d_residual_requantize", "residual_requantize"])
def test_the_deploy_model_uses_the_fused_tail_where_offered(trained, monkeypatch, entry):
    """conv2 and the tail in one call where the kernels offer it; with only the tail
    fused (``conv2d_residual_requantize`` taken away), conv2's sums and then the tail."""
    pytest.importorskip("soniq_fast.cpu._kernels")
    from soniq_ref import get_backend
    deploy, x = trained[0].deploy, trained[1]
    kernels = get_backend("cpu").kernels
    if entry == "residual_requantize":
        monkeypatch.delattr(type(kernels), "conv2d_residual_requantize")
    calls = []
    original = getattr(type(kernels), entry)
    monkeypatch.setattr(type(kernels), entry,
                        lambda self, *a: calls.append(1) or original(self, *a))
    got = deploy.forward(x, "cpu")
    assert len(calls) == sum(s.kind.startswith("residual") for s in deploy.stages)
    np.testing.assert_array_equal(got.view(np.uint32), deploy.forward(x, "ref").view(np.uint32))


@st.composite
def residual_convs(draw):
    """conv2 of a residual block with its tail: codes x [B, C, H, W] of mixed widths (extreme
    codes on part of them), weights of mixed widths, stride 1 or 2, a float32 skip of the
    output's shape, per-channel scale, bias, bits and ratio."""
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    b, c, o = draw(st.integers(1, 3)), draw(st.integers(1, 13)), draw(st.integers(1, 19))
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    k = draw(st.sampled_from([1, 3]))
    stride, padding = draw(st.sampled_from([1, 2])), (k - 1) // 2
    hi = draw(st.integers(1, 8))
    a_bits = rng.integers(draw(st.integers(1, hi)), hi + 1, c).astype(np.uint8)
    w_bits = rng.integers(draw(st.integers(1, 8)), 9, o).astype(np.uint8)
    top = (1 << a_bits.astype(np.int64))[None, :, None, None]
    x = (rng.random((b, c, h, w)) * top).astype(np.uint8)
    if draw(st.booleans()):
        x[0] = (top - 1)[0]
    wc = (rng.random((o, c, k, k)) * (1 << w_bits.astype(np.int64))[:, None, None, None])
    ho, wo = (h + 2 * padding - k) // stride + 1, (w + 2 * padding - k) // stride + 1
    skip = rng.standard_normal((b, o, ho, wo)).astype(np.float32)
    if draw(st.booleans()):     # an identity skip: the block's input codes and their factors
        codes = rng.integers(0, 256, (b, o, ho, wo)).astype(np.uint8)
        factor = np.array(draw(st.lists(st.sampled_from(
            [2.0 ** -8, 0.0123, 1.0, 1e-42, 2.0 ** -140, 3e36, 1.7e38, 37.5]),
            min_size=o, max_size=o)), np.float32)
        skip = IdentitySkip(codes, factor)
    scale = (rng.uniform(0.5, 2.0, o) * 1e-3).astype(np.float32)
    bias = rng.standard_normal(o).astype(np.float32)
    bits = rng.integers(1, 9, o).astype(np.uint8)
    ratio = ((2.0 ** bits) / rng.uniform(0.5, 4.0, o)).astype(np.float32)
    return dict(x=x, a_bits=a_bits, w=wc.astype(np.uint8), w_bits=w_bits, hi=hi,
                stride=stride, padding=padding, skip=skip, scale=scale, bias=bias, bits=bits,
                ratio=ratio)


@settings(max_examples=40, deadline=None)
@given(case=residual_convs())
def test_conv_with_the_fused_residual_tail_equals_the_reference(backend, case):
    """``conv2d_residual_requantize`` (an optional kernel method): the reference's conv,
    epilogue, one float32 add and ``codes_from_ratio``, bit for bit; the skip a float32
    array or an identity skip (codes and factors, tiny, subnormal and overflowing ones)."""
    import independent
    from soniq_ref.epilogue import epilogue
    from soniq_ref.quantizers import codes_from_ratio
    kernels = getattr(backend, "kernels", None)
    if kernels is None or not hasattr(kernels, "conv2d_residual_requantize"):
        pytest.skip(f"{backend.name} has no conv with the fused residual tail")
    c = case
    acc = independent.conv_acc(c["x"], c["a_bits"], c["w"], c["w_bits"], c["hi"], c["stride"],
                               c["padding"])
    skip = c["skip"]
    if isinstance(skip, IdentitySkip):      # ResidualStage.skip_value's float32 product
        with np.errstate(over="ignore"):
            skip = skip.codes.astype(np.float32) * skip.factor.reshape(1, -1, 1, 1)
    with np.errstate(invalid="ignore", over="ignore"):
        want = codes_from_ratio(epilogue(acc, c["scale"], c["bias"]) + skip, c["ratio"],
                                c["bits"])
    got = kernels.conv2d_residual_requantize(
        c["x"], c["a_bits"], backend.pack_weights(c["w"], c["w_bits"]), c["hi"], c["stride"],
        c["padding"], c["scale"], c["bias"], c["skip"], c["bits"], c["ratio"])
    np.testing.assert_array_equal(got, want)


def test_the_fused_residual_tail_adds_bias_then_skip(backend):
    """Cases where ``(y + skip)`` and ``scale * acc + (bias + skip)`` round to different
    codes: a kernel that adds in another order fails here (random cases rarely show it)."""
    from soniq_ref.epilogue import epilogue
    from soniq_ref.quantizers import codes_from_ratio
    kernels = getattr(backend, "kernels", None)
    if kernels is None or not hasattr(kernels, "residual_requantize"):
        pytest.skip(f"{backend.name} has no fused residual tail")
    rng = np.random.default_rng(7)
    acc = rng.integers(2 ** 22, 2 ** 23, 4096)        # bias cancels acc exactly (Sterbenz);
    bias = (-acc + rng.uniform(0, 250, acc.size)).astype(np.float32)   # bias + skip
    skip = rng.uniform(-0.5, 0.5, acc.size).astype(np.float32)         # loses skip
    one = np.float32(1)
    in_order = np.rint((acc.astype(np.float32) * one + bias) + skip)
    other = np.rint(acc.astype(np.float32) * one + (bias + skip))
    pick = np.flatnonzero((in_order != other) & (in_order >= 0) & (in_order <= 255))[:64]
    assert len(pick) >= 16                      # such cases exist, and are tested
    o = len(pick)
    acc4 = acc[pick].reshape(1, o, 1, 1).astype(np.int64)
    skip4 = skip[pick].reshape(1, o, 1, 1)
    scale, bits = np.ones(o, np.float32), np.full(o, 8, np.uint8)
    ratio = np.ones(o, np.float32)
    want = codes_from_ratio(epilogue(acc4, scale, bias[pick]) + skip4, ratio, bits)
    np.testing.assert_array_equal(
        kernels.residual_requantize(acc4, scale, bias[pick], skip4, bits, ratio), want)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2 ** 32 - 1),
       step=st.sampled_from([0.0123, 1.0, 2.0 ** -140, 1e-42, 3e36, 3.4e38]))
def test_the_identity_skip_is_the_shifted_codes_times_the_step(seed, step):
    """``skip_value`` multiplies the uint8 codes by ``s_a * 2^(A - bits)``; the bits must
    be those of ``s_a * float32(a << (A - bits))`` -- subnormal and huge steps included."""
    from soniq_ref.quantizers import shifted_codes
    from soniq_ref.stages.residual import ResidualStage
    rng = np.random.default_rng(seed)
    c, hi = int(rng.integers(1, 9)), int(rng.integers(1, 9))
    bits = rng.integers(1, hi + 1, c).astype(np.uint8)
    codes = np.stack([rng.integers(0, 2 ** int(b), (2, 3, 4)) for b in bits], 1).astype(np.uint8)
    stage = ResidualStage.__new__(ResidualStage)
    stage.skip_step, stage.conv1 = np.float32(step), type("Conv1", (), {"a_bits": bits,
                                                                         "act_bits_hi": hi})()
    with np.errstate(over="ignore"):
        want = np.float32(step) * shifted_codes(codes, bits, hi).astype(np.float32)
    got = stage.skip_value(codes)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
