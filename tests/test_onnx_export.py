"""``soniq export MODEL --onnx OUT``: ONNX Runtime runs the exported graph and gives our
logits on the whole digits test set (the integer parts are exact by construction; the
float32 epilogue is the same one multiply and one add)."""

import numpy as np
import pytest

from soniq_ref import fileformat
from soniq_ref.data import load_dataset
from soniq_ref.train import TrainConfig, train
from test_cli_errors import assert_one_line_error, soniq

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

CONFIGS = {
    "cnn": TrainConfig(epochs_phase1=2, epochs_phase2=1, seed=5),
    # 8-bit weights (levels up to +-255: beyond int8) and an MLP without convolutions
    "mlp-w8": TrainConfig(model="mlp", hidden=(32,), weight_palette=(2, 8),
                          target_weight_bits=5.0, act_palette=(3, 8), target_act_bits=6.0,
                          epochs_phase1=2, epochs_phase2=1, seed=6),
    # residual blocks (identity and projection skips) and the pooled classifier
    "resnet": TrainConfig(model="resnet", epochs_phase1=2, epochs_phase2=1, seed=5),
}


def run_onnx(path, x, optimized: bool) -> np.ndarray:
    options = ort.SessionOptions()
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimized
                                        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"pixels": x})[0]


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def exported(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    deploy = train(CONFIGS[request.param]).deploy
    fileformat.save(deploy, folder / "model.soniq")
    status, out, err = soniq("export", folder / "model.soniq", "--onnx", folder / "model.onnx",
                             cwd=folder)
    assert status == 0 and err == "" and out.startswith("wrote ")
    return deploy, folder / "model.onnx"


@pytest.mark.parametrize("optimized", [False, True], ids=["plain", "optimized"])
def test_onnx_runtime_agrees_with_the_reference(exported, optimized):
    deploy, path = exported
    x = load_dataset("digits").x_test
    ours, theirs = deploy.forward(x), run_onnx(path, x, optimized)
    agreement = float(np.mean(ours.argmax(axis=1) == theirs.argmax(axis=1)))
    largest = float(np.max(np.abs(ours - theirs)))
    print(f"ONNX Runtime {ort.__version__}: {agreement:.2%} of {len(x)} predictions agree, "
          f"largest logit difference {largest}")
    assert theirs.dtype == np.float32 and theirs.shape == ours.shape
    assert agreement == 1.0
    assert largest == 0.0, "the logits differ: integer parts or the epilogue are not exact"


def test_the_graph_holds_integer_weights(exported):
    deploy, path = exported
    graph = onnx.load(str(path)).graph
    kinds = {n.op_type for n in graph.node}
    assert kinds & {"ConvInteger", "MatMulInteger"} and not kinds & {"Conv", "MatMul", "Gemm"}
    codes = [onnx.numpy_helper.to_array(t) for t in graph.initializer
             if t.name.startswith("weight_codes")]
    assert [c.dtype for c in codes] == [np.uint8] * len(deploy.quant_stages)
    assert sum(c.size for c in codes) == sum(s.w_codes.size for s in deploy.quant_stages)


def test_export_errors_are_one_line(tmp_path):
    result = soniq("export", tmp_path / "missing.soniq", "--onnx", tmp_path / "m.onnx",
                   cwd=tmp_path)
    assert_one_line_error(result, "missing.soniq", "soniq train")
    result = soniq("export", tmp_path / "missing.soniq", cwd=tmp_path)
    assert result[0] == 2 and "--onnx" in result[2]
