"""Where each downloadable dataset comes from, how to check it, and where it is kept.

Every file is checked against a SHA-256 digest before it is used: the digest the
dataset's publishers (or the long-standing checksum lists of common dataset
libraries) give for the file as served. A file may have more than one known-good
digest when the same data is served in two compressions (Fashion-MNIST: the
original files, and the re-compressed files in the dataset's git repository,
which Debian's ``dataset-fashion-mnist`` package ships).

Datasets live in ``$XDG_CACHE_HOME/soniq/datasets/NAME`` (``~/.cache/soniq/...``
when ``XDG_CACHE_HOME`` is unset); ``soniq data download NAME`` puts them there.
Fashion-MNIST is also found, without a download, where Debian's package installs
it (:data:`SYSTEM_DIRS`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")
DIGIT_CLASSES = tuple(str(d) for d in range(10))


@dataclass(frozen=True)
class RemoteFile:
    """One file of a dataset: its name on the server and on disk, its known-good
    SHA-256 digests (hex) and the most bytes it may have (a bound for the download)."""

    name: str
    sha256: tuple[str, ...]
    max_bytes: int


@dataclass(frozen=True)
class Source:
    """A downloadable dataset: ``files`` live under ``base_url``. ``archive_members``:
    for a dataset served as one tar.gz archive, the members to extract (and keep)."""

    name: str
    base_url: str
    files: tuple[RemoteFile, ...]
    class_names: tuple[str, ...]
    archive_members: tuple[str, ...] = ()

    @property
    def kept_files(self) -> tuple[str, ...]:
        """The files a complete local copy holds."""
        return self.archive_members or tuple(f.name for f in self.files)


def _idx_files(digests: dict[str, tuple[str, ...]], max_bytes: dict[str, int]):
    return tuple(RemoteFile(name, digests[name], max_bytes[name]) for name in digests)


SOURCES = {
    "mnist": Source(
        "mnist", "https://storage.googleapis.com/cvdf-datasets/mnist/",
        _idx_files({
            "train-images-idx3-ubyte.gz":
                ("440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",),
            "train-labels-idx1-ubyte.gz":
                ("3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",),
            "t10k-images-idx3-ubyte.gz":
                ("8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",),
            "t10k-labels-idx1-ubyte.gz":
                ("f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",),
        }, {"train-images-idx3-ubyte.gz": 9912422, "train-labels-idx1-ubyte.gz": 28881,
            "t10k-images-idx3-ubyte.gz": 1648877, "t10k-labels-idx1-ubyte.gz": 4542}),
        DIGIT_CLASSES),
    "fashion-mnist": Source(
        "fashion-mnist",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        _idx_files({
            "train-images-idx3-ubyte.gz":
                ("08dc20ab1689590a0bcd66e874647b6ee8464e2d501b5a3f1f78831db19a3fdc",
                 "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7"),
            "train-labels-idx1-ubyte.gz":
                ("b0197879cbda89f3dc7b894f9fd52b858e68ea4182b6947c9d8c2b67e5f18dcc",
                 "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056"),
            "t10k-images-idx3-ubyte.gz":
                ("78dcbbfb5a27efaf1b6c1d616caca68560be8766c5bffcb2791df9273a534229",
                 "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa"),
            "t10k-labels-idx1-ubyte.gz":
                ("42bd18137a62d5998cdeae52bf3a0676ac6b706f5cf8439b47bb5b151ae3dccf",
                 "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05"),
        }, {"train-images-idx3-ubyte.gz": 27_000_000, "train-labels-idx1-ubyte.gz": 40_000,
            "t10k-images-idx3-ubyte.gz": 4_600_000, "t10k-labels-idx1-ubyte.gz": 8_000}),
        FASHION_CLASSES),
    "cifar10": Source(
        "cifar10", "https://www.cs.toronto.edu/~kriz/",
        (RemoteFile("cifar-10-python.tar.gz",
                    ("6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",),
                    170498071),),
        CIFAR10_CLASSES,
        archive_members=tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)),
}

# Folders where a system package installs a dataset (Debian: dataset-fashion-mnist).
SYSTEM_DIRS = {"fashion-mnist": (Path("/usr/share/datasets/fashion-mnist"),)}


def cache_dir(name: str) -> Path:
    """The default folder of dataset ``name``: $XDG_CACHE_HOME/soniq/datasets/NAME."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "soniq" / "datasets" / name


def is_complete(source: Source, folder: Path) -> bool:
    """Whether ``folder`` holds every file of a local copy of ``source``."""
    return all((folder / name).is_file() for name in source.kept_files)


def find_local(name: str) -> Path | None:
    """The first folder holding a complete copy of ``name``: the cache, then the
    system folders; None when there is none."""
    source = SOURCES[name]
    for folder in (cache_dir(name),) + SYSTEM_DIRS.get(name, ()):
        if is_complete(source, folder):
            return folder
    return None
