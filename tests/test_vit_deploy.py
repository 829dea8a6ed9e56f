"""The quantized ViT deployed: the same logits as the training model's exact forward,
bit for bit, on every backend; the file round trip; the stages in ``soniq info``; the
refusals (fused kernels, ONNX, layers outside the pattern); the worked example of
docs/semantics.md, "Transformers"; training from the command line."""

import json
import subprocess
import sys

import numpy as np
import pytest

from random_deploy import random_vit
from soniq_ref import fileformat
from soniq_ref.deploy import DeployModel
from soniq_ref.stages import BackendRun, PatchEmbedStage, TokenHeadStage, TransformerBlockStage

CASES = [("mean", "relu"), ("cls", "gelu"), ("mean", "gelu"), ("cls", "relu")]


def exported(pool, activation, seed=0, **kwargs):
    net, x = random_vit(seed, pool, activation, **kwargs)
    return net, DeployModel.from_model(net, x.shape[1:]), x


def reference_logits(net, x):
    return net.forward(x.astype(np.float32) / np.float32(255))


@pytest.mark.parametrize("pool, activation", CASES)
def test_deploy_logits_are_the_exact_forward_on_every_backend(backend, pool, activation):
    net, model, x = exported(pool, activation, seed=3)
    want = reference_logits(net, x)
    got = model.forward(x, backend)
    assert got.dtype == np.float32 and got.shape == (len(x), 3)
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


@pytest.mark.parametrize("pool, activation", CASES[:2])
def test_the_file_round_trip_is_bit_identical(backend, pool, activation):
    net, model, x = exported(pool, activation, seed=4)
    raw = fileformat.to_bytes(model)
    loaded = fileformat.from_bytes(raw)
    assert fileformat.to_bytes(loaded) == raw
    np.testing.assert_array_equal(loaded.forward(x, backend).view(np.uint32),
                                  reference_logits(net, x).view(np.uint32))


def test_stages_and_what_the_model_reports():
    net, model, x = exported("cls", "gelu", depth=3, dim=12, heads=3)
    assert [type(s) for s in model.stages] == [PatchEmbedStage] + [TransformerBlockStage] * 3 \
        + [TokenHeadStage]
    assert [s.kind for s in model.stages] == ["patch_embed_cls"] + ["transformer_block"] * 3 \
        + ["token_head"]
    assert [s.output_shape(sh) for s, sh in zip(model.stages, [(1, 8, 8)] + [(17, 12)] * 4)] \
        == [(17, 12)] * 4 + [(3,)]
    assert model.n_classes == 3 and len(model.quant_stages) == 1 + 4 * 3 + 1
    layers = net.quant_layers()
    weights = sum(l.params["weight"].size for l in layers)
    assert model.mean_weight_bits() == pytest.approx(
        sum(int(l.w_bits.astype(int).sum()) * l.params["weight"].shape[1] for l in layers)
        / weights)
    floats = sum(p.size for n, p in net.params.items()
                 if n.endswith(("weight", "bias", "table", "token")))
    assert model.float32_bytes() == 4 * floats
    rows = model.describe()
    assert rows[1]["heads"] == 3 and rows[1]["activation"] == "gelu"
    assert rows[-1]["pool"] == "cls" and rows[0]["class_token"] is True
    assert set(rows[1]) >= {"qkv", "out", "fc1", "fc2", "mean_weight_bits"}
    assert model.predict(x).shape == (len(x),)
    assert model.logits(x, batch=2).tobytes() == model.forward(x).tobytes()


def test_no_fused_kernels_and_no_onnx_form():
    from soniq_ref import onnx_export
    _, model, x = exported("mean", "relu")
    assert model._checked_chain() is False
    model.forward(x, "cpu")
    assert model._prepared("cpu", __import__("soniq_ref").get_backend("cpu"))[1] is None
    with pytest.raises(ValueError, match="transformer_block|patch_embed.*no ONNX form"):
        onnx_export.to_onnx(model)


def test_export_refuses_what_it_cannot_deploy():
    from soniq_ref.layers.activations import ReLU
    from soniq_ref.models import Sequential
    net, _ = random_vit(0)
    with pytest.raises(ValueError, match="cannot export layer ReLU"):
        DeployModel.from_model(Sequential(net.layers[:3] + [ReLU()] + net.layers[3:]),
                               (1, 8, 8))
    with pytest.raises(ValueError, match="cannot export layer LayerNorm here"):
        DeployModel.from_model(Sequential(net.layers[:-1]), (1, 8, 8))
    net.layers[-1].w_bits = None
    with pytest.raises(ValueError, match="classifier: every quantized layer needs fixed bits"):
        DeployModel.from_model(net, (1, 8, 8))


def test_the_worked_example_of_docs_semantics():
    """docs/semantics.md, "Transformers": one signed map on two tokens, by hand."""
    from soniq_ref.backend import get_backend
    from soniq_ref.layers import QuantLinear
    from soniq_ref.layers.linear import on_tokens
    from soniq_ref.stages.token_linear import TokenLinear

    layer = QuantLinear(3, 1, weight_palette=(2, 2), act_palette=(2, 3), signed_input=True)
    layer.params["weight"][...] = [[0.5, -0.1, -0.6]]
    layer.params["alpha"][...] = 0.6
    layer.params["beta"][...] = 1.0
    layer.clips_ready = True
    layer.set_bits(np.array([2], np.uint8), np.array([2, 3, 3], np.uint8))
    layer.set_mode("exact")
    tokens = np.array([[[-0.7, 0.3, 1.2], [0.2, -0.4, 0.0]]], np.float32)    # [1, 2, 3]
    mapping = TokenLinear.from_layer(layer, "example")
    assert mapping.codes(tokens.reshape(2, 3)).tolist() == [[1, 5, 7], [2, 2, 4]]
    assert mapping.offset().tolist() == [-4]
    backend = get_backend("ref")
    run = BackendRun(backend, None, iter([backend.pack_weights(mapping.layer.w_codes,
                                                               mapping.layer.w_bits)]))
    y = mapping.apply(tokens, run)
    scale = np.float32(np.float32(0.2) * np.float32(0.25))
    assert y.shape == (1, 2, 1) and y[0, :, 0].tolist() == [scale * np.float32(-16),
                                                            scale * np.float32(2)]
    np.testing.assert_array_equal(y.view(np.uint32), on_tokens(layer, tokens).view(np.uint32))


def test_soniq_info_shows_the_stages(tmp_path):
    _, model, _ = exported("cls", "relu")
    path = tmp_path / "vit.soniq"
    fileformat.save(model, path)
    cli = [sys.executable, "-m", "soniq_ref.cli", "info", str(path)]
    out = subprocess.run(cli, capture_output=True, text=True, check=True).stdout
    for word in ("patch_embed_cls", "transformer_block", "token_head", "proj", "qkv", "fc2",
                 "head"):
        assert word in out
    info = json.loads(subprocess.run(cli + ["--json"], capture_output=True, text=True,
                                     check=True).stdout)
    assert [row["kind"] for row in info["stages"]] == ["patch_embed_cls", "transformer_block",
                                                       "transformer_block", "token_head"]
    assert info["n_classes"] == 3 and info["stages"][1]["output_shape"] == [17, 8]


def test_soniq_train_vit_then_eval_on_three_backends(tmp_path):
    """``soniq train --model vit``: the run's accuracy is the saved model's on ref, cpu and
    cuda-emu, with the same logits bit for bit; the shape options are recorded."""
    from soniq_ref.cli import main

    out = tmp_path / "run"
    assert main(["train", "--model", "vit", "--dataset", "digits", "--epochs-phase1", "1",
                 "--epochs-phase2", "1", "--dim", "8", "--heads", "2", "--depth", "1",
                 "--pool", "cls", "--mlp-activation", "gelu", "--seed", "3", "--quiet",
                 "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["model"], metrics["depth"], metrics["dim"], metrics["heads"],
            metrics["patch"], metrics["pool"], metrics["mlp_activation"]) == \
        ("vit", 1, 8, 2, 2, "cls", "gelu")
    model = fileformat.load(out / "model.soniq")
    assert model.metadata["training"]["pool"] == "cls"
    assert [s.kind for s in model.stages] == ["patch_embed_cls", "transformer_block",
                                              "token_head"]
    runs = [json.loads(subprocess.run(
        [sys.executable, "-m", "soniq_ref.cli", "eval", str(out / "model.soniq"), "--json",
         "--backend", backend], capture_output=True, text=True, check=True).stdout)
        for backend in ("ref", "cpu", "cuda-emu")]
    assert [r["test_accuracy"] for r in runs] == [metrics["test_accuracy"]] * 3
    assert runs[0]["logits_sha256"] == runs[1]["logits_sha256"] == runs[2]["logits_sha256"]


def test_soniq_train_vit_fp32(tmp_path):
    from soniq_ref.cli import main

    out = tmp_path / "run"
    assert main(["train", "--model", "vit", "--fp32", "--epochs-phase1", "1",
                 "--epochs-phase2", "0", "--dim", "8", "--heads", "2", "--depth", "1",
                 "--quiet", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["mean_weight_bits"] == 32 and (out / "model_fp32.npz").is_file()
