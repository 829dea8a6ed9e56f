"""Deploy stage types are objects: a new one is one class and one registry entry, and
the model, the file format and the description handle it."""

from dataclasses import dataclass

import numpy as np
import pytest

from soniq_ref import fileformat, stages
from soniq_ref.deploy import DeployModel
from soniq_ref.stages import FlattenStage, Stage
from soniq_ref.train import TrainConfig, train


@dataclass
class CopyStage(Stage):
    """Hands its codes on unchanged (a stand-in for a new stage type)."""

    kind = "copy"

    def output_shape(self, shape):
        return tuple(shape)

    def run(self, codes, run):
        return codes.copy()

    def code_bound(self, bound, shape, out_shape):
        return bound

    def spread_back(self, values, in_shape):
        return values

    def summary(self):
        return " (a copy)"

    @classmethod
    def from_file(cls, entry):
        return cls()


@pytest.fixture(scope="module")
def model():
    config = TrainConfig(epochs_phase1=1, epochs_phase2=1, limit_train=64, channels=(3, 5),
                         batch_size=32, seed=4)
    return train(config).deploy


def test_a_new_stage_type_is_one_class_and_one_registry_entry(model, monkeypatch, backend):
    monkeypatch.setitem(stages.STAGE_TYPES, "copy", CopyStage)
    at = next(i for i, s in enumerate(model.stages) if isinstance(s, FlattenStage))
    with_copy = DeployModel(model.input_shape,
                            model.stages[:at] + [CopyStage()] + model.stages[at:])
    x = np.random.default_rng(0).integers(0, 256, (9, *model.input_shape)).astype(np.uint8)
    want = model.forward(x).view(np.uint32)
    np.testing.assert_array_equal(with_copy.forward(x, backend).view(np.uint32), want)
    raw = fileformat.to_bytes(with_copy)
    loaded = fileformat.from_bytes(raw)
    assert [s.kind for s in loaded.stages] == [s.kind for s in with_copy.stages]
    np.testing.assert_array_equal(loaded.forward(x, backend).view(np.uint32), want)
    assert fileformat.to_bytes(loaded) == raw
    assert with_copy.describe()[at] == {"kind": "copy", "input_shape": [5, 2, 2],
                                        "output_shape": [5, 2, 2]}
    monkeypatch.delitem(stages.STAGE_TYPES, "copy")
    with pytest.raises(fileformat.SoniqFileError, match="unknown type 'copy'"):
        fileformat.from_bytes(raw)


def test_every_registered_type_is_named_by_its_kind():
    for kind, stage_type in stages.STAGE_TYPES.items():
        assert issubclass(stage_type, Stage)
        assert kind in getattr(stage_type, "KINDS", (getattr(stage_type, "kind", None),))


@dataclass
class OnnxCopyStage(CopyStage):
    """The stand-in with its ONNX form: one Identity node on the shifted codes."""

    def to_onnx(self, graph, codes, out_shape, next_hi):
        return graph.op("Identity", [codes])


def _with(model, stage):
    at = next(i for i, s in enumerate(model.stages) if isinstance(s, FlattenStage))
    return DeployModel(model.input_shape, model.stages[:at] + [stage] + model.stages[at:])


def test_a_new_stage_type_brings_its_own_onnx_form(model):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from soniq_ref.onnx_export import to_onnx

    x = np.random.default_rng(1).integers(0, 256, (9, *model.input_shape)).astype(np.uint8)
    graph = to_onnx(_with(model, OnnxCopyStage())).SerializeToString()
    session = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
    got = session.run(["logits"], {"pixels": x})[0]
    np.testing.assert_array_equal(got.view(np.uint32), model.forward(x).view(np.uint32))
    with pytest.raises(ValueError, match="a copy stage has no ONNX form"):
        to_onnx(_with(model, CopyStage()))
