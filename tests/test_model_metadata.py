"""A .soniq file's optional metadata: stored when given, ``{}`` when absent, a JSON object
only; and what the command line reads from it is validated."""

import json
import struct

import pytest

from soniq_ref import container, fileformat
from soniq_ref.train import TrainConfig, train
from soniq_ref.train.metadata import read_metadata


@pytest.fixture(scope="module")
def deploy():
    return train(TrainConfig(epochs_phase1=1, epochs_phase2=0, limit_train=64,
                             channels=(3, 5))).deploy


def test_metadata_round_trips_and_changes_nothing_else(deploy, tmp_path):
    plain = fileformat.to_bytes(deploy)
    assert fileformat.from_bytes(plain).metadata == {}
    fileformat.save(deploy, tmp_path / "m.soniq", deploy.metadata)
    loaded = fileformat.load(tmp_path / "m.soniq")
    assert loaded.metadata == deploy.metadata
    assert loaded.metadata["dataset"] == "digits"
    assert fileformat.to_bytes(loaded) == plain           # the model itself is the same
    with pytest.raises(TypeError, match="metadata must be a dict"):
        fileformat.to_bytes(deploy, ["not", "an", "object"])


def test_a_metadata_that_is_not_an_object_is_refused(deploy):
    raw = fileformat.to_bytes(deploy)
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    header["metadata"] = [1, 2]
    with pytest.raises(fileformat.SoniqFileError, match="'metadata' must be a JSON object"):
        fileformat.from_bytes(container.encode_header(header) + raw[8 + n:])


@pytest.mark.parametrize("edit, message", [
    ({"dataset": 7}, "no valid dataset"),
    ({"class_names": ["a", "b"]}, "10 names"),
    ({"training": []}, "not a JSON object"),
    ({"training": {"data_dir": 3}}, "not a path"),
])
def test_read_metadata_validates_what_it_reads(deploy, edit, message):
    deploy.metadata, saved = {**deploy.metadata, **edit}, deploy.metadata
    try:
        with pytest.raises(ValueError, match=message):
            read_metadata(deploy)
    finally:
        deploy.metadata = saved
    assert read_metadata(deploy).class_names == [str(c) for c in range(10)]
