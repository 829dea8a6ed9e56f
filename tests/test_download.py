"""Dataset download against a local HTTP server on 127.0.0.1: verified files, skipped
re-downloads, refused digests, interrupted transfers resumed with range requests,
bounded bodies, archives extracted. Nothing here reaches outside the machine.

Where Debian's ``dataset-fashion-mnist`` is installed, the server serves the real
Fashion-MNIST files and the real registry entry checks them; elsewhere generated
files in the same formats stand in (with a registry entry made for them)."""

import gzip
import hashlib
import io
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from soniq_ref.atomic import umask
from soniq_ref.data import DatasetError, download, load_dataset
from soniq_ref.data import sources
from soniq_ref.data.sources import RemoteFile, Source
from test_data import make_cifar, make_mnist

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


class FileServer:
    """Serves ``files`` {name: bytes} under http://127.0.0.1:PORT/data/, honouring
    ``Range: bytes=N-`` when ``ranges``; ``cut_after`` {name: n} closes the connection
    after n body bytes (an interrupted transfer); ``requests`` logs (name, range)."""

    def __init__(self, files):
        self.files, self.ranges, self.cut_after, self.requests = dict(files), True, {}, []
        self.send_length = True
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                name = self.path.rsplit("/", 1)[-1]
                server.requests.append((name, self.headers.get("Range")))
                if name not in server.files:
                    self.send_error(404)
                    return
                body, start = server.files[name], 0
                wanted = self.headers.get("Range")
                if wanted and server.ranges:
                    start = int(wanted.split("=")[1].rstrip("-"))
                    if start >= len(body):
                        self.send_error(416)
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                if server.send_length:
                    self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                cut = server.cut_after.pop(name, None)
                self.wfile.write(body[start:start + cut] if cut is not None else body[start:])
                if cut is not None:
                    self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/data/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve():
    servers = []

    def start(files):
        servers.append(FileServer(files))
        return servers[-1]
    yield start
    for s in servers:
        s.close()


@pytest.fixture
def fake_mnist(tmp_path, monkeypatch):
    """Generated gzip'd IDX files and a registry entry 'mnist' that knows their digests."""
    src = tmp_path / "src"
    src.mkdir()
    make_mnist(src, compress=True)
    files = {p.name: p.read_bytes() for p in sorted(src.iterdir())}
    entry = Source("mnist", "http://unused.invalid/",
                   tuple(RemoteFile(n, (hashlib.sha256(b).hexdigest(),), len(b) + 10)
                         for n, b in files.items()), sources.DIGIT_CLASSES)
    monkeypatch.setitem(sources.SOURCES, "mnist", entry)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return files


def test_download_verifies_keeps_and_loads(tmp_path, serve, fake_mnist):
    server = serve(fake_mnist)
    folder = download("mnist", base_url=server.url)
    assert folder == tmp_path / "cache" / "soniq" / "datasets" / "mnist"
    assert sorted(p.name for p in folder.iterdir()) == sorted(fake_mnist)
    for name, body in fake_mnist.items():
        assert (folder / name).read_bytes() == body
        assert (folder / name).stat().st_mode & 0o777 == 0o666 & ~umask()
    data = load_dataset("mnist")                   # found in the cache, no --data-dir
    assert data.x_train.shape == (12, 1, 6, 7) and data.class_names[3] == "3"
    served = len(server.requests)
    assert download("mnist", base_url=server.url) == folder
    assert len(server.requests) == served           # present and valid: nothing fetched


def test_a_wrong_digest_is_refused_and_nothing_kept(tmp_path, serve, fake_mnist):
    name = "t10k-labels-idx1-ubyte.gz"
    bad = dict(fake_mnist)
    bad[name] = gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x01\x07", mtime=0)
    server = serve(bad)
    with pytest.raises(DatasetError, match=f"{name} .*SHA-256 .*not the expected"):
        download("mnist", tmp_path / "d", base_url=server.url)
    assert not (tmp_path / "d" / name).exists()
    assert not (tmp_path / "d" / (name + ".part")).exists()
    # a file edited on disk later is fetched again, not trusted
    server.files[name] = fake_mnist[name]
    download("mnist", tmp_path / "d", base_url=server.url)
    (tmp_path / "d" / name).write_bytes(b"edited")
    download("mnist", tmp_path / "d", base_url=server.url)
    assert (tmp_path / "d" / name).read_bytes() == fake_mnist[name]


@pytest.mark.parametrize("ranges", [True, False])
def test_an_interrupted_download_resumes(tmp_path, serve, fake_mnist, ranges):
    name = "train-images-idx3-ubyte.gz"
    server = serve(fake_mnist)
    server.ranges = ranges
    server.cut_after[name] = 200
    with pytest.raises(DatasetError, match="interrupted after 200 bytes.*run the same command"):
        download("mnist", tmp_path / "d", base_url=server.url)
    assert (tmp_path / "d" / (name + ".part")).stat().st_size == 200
    assert not (tmp_path / "d" / name).exists()
    download("mnist", tmp_path / "d", base_url=server.url)
    assert (tmp_path / "d" / name).read_bytes() == fake_mnist[name]
    assert (name, "bytes=200-") in server.requests   # asked to resume where it stopped
    assert not list((tmp_path / "d").glob("*.part"))


def test_a_body_past_the_bound_is_refused(tmp_path, serve, fake_mnist, monkeypatch):
    name = "t10k-images-idx3-ubyte.gz"
    entry = sources.SOURCES["mnist"]
    files = tuple(RemoteFile(f.name, f.sha256, 64 if f.name == name else f.max_bytes)
                  for f in entry.files)
    monkeypatch.setitem(sources.SOURCES, "mnist", Source("mnist", entry.base_url, files,
                                                        entry.class_names))
    server = serve(fake_mnist)
    with pytest.raises(DatasetError, match=f"{name} is {len(fake_mnist[name])} bytes, more "
                                           f"than the 64 bytes"):
        download("mnist", tmp_path / "d", base_url=server.url)
    server.send_length = False                     # a body of unknown length is cut off
    with pytest.raises(DatasetError, match="sent more than the 64 bytes"):
        download("mnist", tmp_path / "d", base_url=server.url)
    assert not (tmp_path / "d" / name).exists()


def test_network_errors_name_the_url(tmp_path, serve, fake_mnist):
    server = serve({})
    with pytest.raises(DatasetError, match="HTTP 404"):
        download("mnist", tmp_path / "d", base_url=server.url)
    port = server.httpd.server_address[1]
    server.close()
    with pytest.raises(DatasetError, match=f"127.0.0.1:{port}.*check the network"):
        download("mnist", tmp_path / "e", base_url=f"http://127.0.0.1:{port}/")
    with pytest.raises(DatasetError, match="no download for dataset 'digits'"):
        download("digits")


def test_a_missing_dataset_names_the_download_command(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setitem(sources.SYSTEM_DIRS, "fashion-mnist", (tmp_path / "none",))
    with pytest.raises(DatasetError, match="soniq data download fashion-mnist"):
        load_dataset("fashion-mnist")


def test_cifar10_archive_is_extracted(tmp_path, serve, monkeypatch):
    src = tmp_path / "src" / "cifar-10-batches-py"
    src.mkdir(parents=True)
    batches = make_cifar(src)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(src, arcname="cifar-10-batches-py")
        evil = tarfile.TarInfo("cifar-10-batches-py/../../escape")   # never extracted
        tar.addfile(evil, io.BytesIO(b""))
    body = buffer.getvalue()
    entry = sources.SOURCES["cifar10"]
    monkeypatch.setitem(sources.SOURCES, "cifar10", Source(
        "cifar10", entry.base_url,
        (RemoteFile(entry.files[0].name, (hashlib.sha256(body).hexdigest(),), len(body)),),
        entry.class_names, entry.archive_members))
    server = serve({entry.files[0].name: body})
    folder = download("cifar10", tmp_path / "c", base_url=server.url)
    assert sorted(p.name for p in folder.iterdir()) == sorted(entry.archive_members)
    assert not (tmp_path / "escape").exists()
    data = load_dataset("cifar10", folder)
    np.testing.assert_array_equal(data.x_test.reshape(-1, 3072), batches["test_batch"][b"data"])
    assert data.class_names[0] == "airplane"
    served = len(server.requests)
    download("cifar10", folder, base_url=server.url)
    assert len(server.requests) == served


@pytest.mark.skipif(not (DEBIAN_FASHION / "train-images-idx3-ubyte.gz").is_file(),
                    reason="needs the real Fashion-MNIST files: apt-get install "
                           "dataset-fashion-mnist (CI installs it where apt is available)")
def test_real_fashion_mnist_through_the_real_registry(tmp_path, serve, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    files = {p.name: p.read_bytes() for p in DEBIAN_FASHION.glob("*.gz")}
    server = serve(files)
    folder = download("fashion-mnist", base_url=server.url)
    data = load_dataset("fashion-mnist")
    assert folder == sources.cache_dir("fashion-mnist")
    assert data.x_train.shape == (60000, 1, 28, 28) and data.x_test.shape == (10000, 1, 28, 28)
    assert np.bincount(data.y_train).tolist() == [6000] * 10
    assert data.class_names[9] == "Ankle boot" and data.name == "fashion-mnist"


@pytest.mark.skipif(not (DEBIAN_FASHION / "train-images-idx3-ubyte.gz").is_file(),
                    reason="needs apt-get install dataset-fashion-mnist")
def test_fashion_mnist_is_found_where_debian_installs_it(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    data = load_dataset("fashion-mnist")
    assert data.x_test.shape == (10000, 1, 28, 28)
