"""Datasets: the bundled digits, and MNIST / CIFAR-10 from tiny files written here in
the real formats (IDX, gzip'd or not; python pickle batches)."""

import gzip
import pickle
import struct

import numpy as np
import pytest

from soniq_ref.data import DatasetError, load_dataset


def write_idx(path, array, compress=False):
    """An IDX file of unsigned bytes: magic 0x0000 0x08 ndim, big-endian sizes, data."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data, mtime=0)
    path.write_bytes(data)
    return path


def make_mnist(folder, n_train=12, n_test=5, compress=False, size=(6, 7)):
    rng = np.random.default_rng(0)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (n_train,) + size),
              "train-labels-idx1-ubyte": rng.integers(0, 10, n_train),
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test,) + size),
              "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test)}
    for name, arr in arrays.items():
        write_idx(folder / name, arr, compress)
    return arrays


def make_cifar(folder, per_batch=3):
    rng = np.random.default_rng(1)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"batch_label": name.encode(), b"labels": rng.integers(0, 10, per_batch).tolist(),
                 b"data": rng.integers(0, 256, (per_batch, 3072)).astype(np.uint8),
                 b"filenames": [b"x.png"] * per_batch}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
        batches[name] = batch
    return batches


def test_digits_is_bundled_split_and_deterministic():
    a, b = load_dataset("digits"), load_dataset("digits")
    assert a.x_train.dtype == np.uint8 and a.x_train.shape[1:] == (1, 8, 8)
    assert len(a.x_train) + len(a.x_test) == 1797
    assert a.x_train.max() == 255 and a.n_classes == 10
    np.testing.assert_array_equal(a.y_test, b.y_test)
    np.testing.assert_array_equal(a.x_test, b.x_test)
    counts = np.bincount(a.y_test, minlength=10)
    assert counts.min() >= 30                            # stratified: every class in test


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_from_idx_files(tmp_path, compress):
    arrays = make_mnist(tmp_path, compress=compress)
    data = load_dataset("mnist", tmp_path)
    assert data.x_train.shape == (12, 1, 6, 7) and data.x_test.shape == (5, 1, 6, 7)
    np.testing.assert_array_equal(data.x_train[:, 0], arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(data.y_test, arrays["t10k-labels-idx1-ubyte"])


def test_mnist_errors_name_what_is_wrong(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset("mnist", tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="data-dir"):
        load_dataset("mnist")
    make_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DatasetError, match="t10k-labels-idx1-ubyte"):
        load_dataset("mnist", tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"\x01\x02\x08\x01")
    with pytest.raises(DatasetError, match="magic"):
        load_dataset("mnist", tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(4))       # 4 labels, 5 images
    with pytest.raises(DatasetError, match="do not match"):
        load_dataset("mnist", tmp_path)
    raw = (tmp_path / "train-images-idx3-ubyte").read_bytes()
    (tmp_path / "train-images-idx3-ubyte").write_bytes(raw[:-3])
    with pytest.raises(DatasetError, match="declares shape"):
        load_dataset("mnist", tmp_path)
    (tmp_path / "train-images-idx3-ubyte").unlink()
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DatasetError, match="train-images"):
        load_dataset("mnist", tmp_path)


def test_cifar10_from_pickle_batches(tmp_path):
    batches = make_cifar(tmp_path)
    data = load_dataset("cifar10", tmp_path)
    assert data.x_train.shape == (15, 3, 32, 32) and data.x_test.shape == (3, 3, 32, 32)
    np.testing.assert_array_equal(data.x_test.reshape(3, -1), batches["test_batch"][b"data"])
    np.testing.assert_array_equal(data.y_train[:3], batches["data_batch_1"][b"labels"])


def test_cifar10_errors_name_what_is_wrong(tmp_path):
    make_cifar(tmp_path)
    (tmp_path / "data_batch_3").unlink()
    with pytest.raises(DatasetError, match="data_batch_3"):
        load_dataset("cifar10", tmp_path)
    (tmp_path / "data_batch_3").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="data_batch_3"):
        load_dataset("cifar10", tmp_path)
    (tmp_path / "data_batch_3").write_bytes(pickle.dumps({b"labels": [1]}))
    with pytest.raises(DatasetError, match="data"):
        load_dataset("cifar10", tmp_path)


class _Boom:
    def __reduce__(self):
        return (print, ("side effect",))


def test_cifar10_pickles_cannot_run_code(tmp_path, capsys):
    make_cifar(tmp_path)
    (tmp_path / "test_batch").write_bytes(pickle.dumps({b"data": _Boom(), b"labels": []}))
    with pytest.raises(DatasetError, match="refusing"):
        load_dataset("cifar10", tmp_path)
    assert "side effect" not in capsys.readouterr().out


def test_unknown_dataset():
    with pytest.raises(DatasetError, match="dataset must be one of"):
        load_dataset("imagenet")


def test_the_validation_split_is_the_last_images_of_the_training_set():
    from soniq_ref.data import hold_out_validation
    from soniq_ref.data.validation import validation_size

    data = load_dataset("digits")
    n = len(data.x_train)
    split = hold_out_validation(data, 0.1)
    n_val = int(round(0.1 * n))
    assert len(split.x_val) == len(split.y_val) == n_val and len(split.x_train) == n - n_val
    assert np.array_equal(split.x_val, data.x_train[n - n_val:])
    assert np.array_equal(split.y_val, data.y_train[n - n_val:])
    assert np.array_equal(split.x_train, data.x_train[:n - n_val])
    assert split.x_test is data.x_test and split.y_test is data.y_test   # untouched
    none = hold_out_validation(data, 0)
    assert len(none.x_val) == 0 and len(none.x_train) == n
    assert [validation_size(60000, f) for f in (0, 0.1, 0.25)] == [0, 6000, 15000]
    assert validation_size(3, 0.01) == 1          # a fraction > 0 holds out something
    with pytest.raises(DatasetError, match="leaves none to train on"):
        hold_out_validation(data.__class__("toy", data.x_train[:1], data.y_train[:1],
                                           data.x_test, data.y_test, 10), 0.5)
