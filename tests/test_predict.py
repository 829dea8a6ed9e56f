"""``soniq predict MODEL IMAGE...`` on PNG, JPEG and .npy files: the same class as
DeployModel.predict on the same pixels, probabilities that sum to 1, clear errors."""

import json

import numpy as np
import pytest
from PIL import Image

from soniq_ref import fileformat
from soniq_ref.data import load_dataset
from soniq_ref.images import load_image
from soniq_ref.train import TrainConfig, train
from test_cli_errors import assert_one_line_error, soniq


@pytest.fixture(scope="module")
def model_and_images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("predict")
    result = train(TrainConfig(epochs_phase1=2, epochs_phase2=1, channels=(4, 8), seed=2))
    fileformat.save(result.deploy, folder / "digits.soniq")
    x = load_dataset("digits").x_test[:3]
    Image.fromarray(x[0, 0]).save(folder / "zero.png")                 # exact 8x8 greyscale
    np.save(folder / "one.npy", x[1])                                   # [1, 8, 8] uint8
    np.save(folder / "two.npy", x[2, 0] / 255.0)                        # [8, 8] floats
    big = Image.fromarray(x[0, 0]).resize((32, 32), Image.Resampling.NEAREST).convert("RGB")
    big.save(folder / "big.jpg", quality=95)
    return folder, result.deploy, x


def test_predict_prints_the_class_of_each_image(model_and_images):
    folder, deploy, x = model_and_images
    status, out, err = soniq("predict", folder / "digits.soniq", "zero.png", "one.npy",
                             "two.npy", cwd=folder)
    assert status == 0 and err == ""
    lines = out.splitlines()
    expected = deploy.predict(x)
    assert [line.split(":")[0] for line in lines] == ["zero.png", "one.npy", "two.npy"]
    assert [int(line.split(": ")[1].split(" ")[0]) for line in lines] == list(expected)
    assert all("%" in line and "next:" in line for line in lines)


def test_predict_json_gives_every_probability(model_and_images):
    folder, deploy, x = model_and_images
    status, out, _ = soniq("predict", folder / "digits.soniq", "zero.png", "--json", cwd=folder)
    assert status == 0
    report = json.loads(out)
    p = deploy.predict_proba(x[:1])[0]
    assert report["index"] == int(np.argmax(p)) and report["class"] == str(np.argmax(p))
    assert list(report["probabilities"]) == [str(c) for c in range(10)]
    assert np.allclose(list(report["probabilities"].values()), p)


def test_a_larger_colour_jpeg_is_resized_and_greyscaled(model_and_images):
    folder, deploy, _ = model_and_images
    pixels = load_image(folder / "big.jpg", deploy.input_shape)
    assert pixels.shape == (1, 8, 8) and pixels.dtype == np.uint8
    status, out, _ = soniq("predict", folder / "digits.soniq", "big.jpg", "--top", "1",
                           cwd=folder)
    assert status == 0 and out == f"big.jpg: {deploy.predict(pixels[None])[0]} " \
        f"({deploy.predict_proba(pixels[None])[0].max():.1%})\n"


@pytest.mark.parametrize("name, content, problem", [
    ("missing.png", None, "no such file"),
    ("broken.png", b"not a picture", "cannot read"),
    ("wrong.npy", np.zeros((3, 5, 5), np.uint8), "[3, 5, 5]"),
    ("negative.npy", -np.ones((8, 8)), "[0, 1]"),
])
def test_bad_images_are_one_line_errors(model_and_images, tmp_path, name, content, problem):
    folder = model_and_images[0]
    if isinstance(content, bytes):
        (tmp_path / name).write_bytes(content)
    elif content is not None:
        np.save(tmp_path / name, content)
    result = soniq("predict", folder / "digits.soniq", tmp_path / name, cwd=tmp_path)
    assert result[0] == 1
    assert_one_line_error(result, problem, name)
