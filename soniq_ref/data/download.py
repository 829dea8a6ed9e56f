"""``soniq data download NAME``: fetch a dataset's files, check them, keep them.

For each file of the dataset (:mod:`.sources`):

1. a file already in the folder whose SHA-256 is a known-good digest is kept as it is;
2. otherwise it is fetched into ``NAME.part`` -- resuming a ``.part`` left by an
   interrupted download with an HTTP range request where the server honours it --
   with a progress bar on a terminal, never reading more than the file's bound;
3. its SHA-256 is checked; a mismatch deletes the part file and fails, naming the
   file, the digest found and the one expected; a match renames it into place
   (atomically: a crash leaves either the old state or the whole file).

A dataset served as a tar.gz archive (CIFAR-10) has its listed members extracted
(regular files only, each written atomically) and the archive deleted.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tarfile
import urllib.error
import urllib.request
from http.client import IncompleteRead
from pathlib import Path

from ..atomic import atomic_path, umask
from .dataset import DatasetError
from .sources import SOURCES, RemoteFile, Source, cache_dir, is_complete

CHUNK = 1 << 16
TIMEOUT_S = 30.0


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _progress(total: int, done: int, label: str):
    """A tqdm bar on stderr when it is a terminal; a no-op object otherwise."""
    from tqdm import tqdm
    return tqdm(total=total, initial=done, desc=label, unit="B", unit_scale=True,
                unit_divisor=1024, disable=None, leave=False, file=sys.stderr)


def _open(url: str, start: int):
    request = urllib.request.Request(url, headers={"User-Agent": "soniq-dataset-download"})
    if start:
        request.add_header("Range", f"bytes={start}-")
    try:
        return urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and start:        # the part file is already whole (or too long)
            return None
        raise DatasetError(f"cannot download {url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DatasetError(f"cannot download {url}: {reason}; check the network, or put the "
                           f"files in the dataset folder by hand") from None


def _fetch(url: str, part: Path, bound: int, label: str) -> None:
    """Download ``url`` into ``part``, resuming from its current length."""
    start = part.stat().st_size if part.exists() else 0
    response = _open(url, start)
    if response is None:
        return
    with response:
        resumed = start and response.status == 206
        done = start if resumed else 0
        length = response.headers.get("Content-Length")
        total = done + int(length) if length and length.isdigit() else bound
        if total > bound:
            raise DatasetError(f"{url} is {total} bytes, more than the {bound} bytes this file "
                               f"can be; nothing was downloaded")
        with open(part, "ab" if resumed else "wb") as out, _progress(total, done, label) as bar:
            try:
                while chunk := response.read(CHUNK):
                    done += len(chunk)
                    if done > bound:
                        raise DatasetError(f"{url} sent more than the {bound} bytes this file "
                                           f"can be; the download was stopped")
                    out.write(chunk)
                    bar.update(len(chunk))
            except (OSError, IncompleteRead) as exc:
                raise _interrupted(url, done, exc.__class__.__name__) from None
        if length and done < total:                # the connection closed early
            raise _interrupted(url, done, "connection closed")


def _interrupted(url: str, done: int, why: str) -> DatasetError:
    return DatasetError(f"download of {url} was interrupted after {done} bytes ({why}); "
                        f"run the same command again to resume")


def _fetch_checked(source: Source, file: RemoteFile, folder: Path, base_url: str) -> None:
    target = folder / file.name
    if target.is_file() and sha256_of(target) in file.sha256:
        return
    part = folder / (file.name + ".part")
    _fetch(base_url + file.name, part, file.max_bytes, f"{source.name}/{file.name}")
    found = sha256_of(part)
    if found not in file.sha256:
        part.unlink()
        raise DatasetError(f"{file.name} from {base_url} has SHA-256 {found}, not the "
                           f"expected {file.sha256[0]}; the file was deleted (a corrupted "
                           f"download: run the command again)")
    os.chmod(part, 0o666 & ~umask())
    os.replace(part, target)


def _extract(archive: Path, members: tuple[str, ...], folder: Path) -> None:
    """Write each of ``members`` (matched by base name, regular files only) into
    ``folder``, atomically; fail if one is missing."""
    wanted = set(members)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for info in tar:
                name = Path(info.name).name
                if name not in wanted or not info.isreg():
                    continue
                with atomic_path(folder / name) as tmp, open(tmp, "wb") as out, \
                        tar.extractfile(info) as src:
                    while block := src.read(1 << 20):
                        out.write(block)
                wanted.discard(name)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DatasetError(f"cannot extract {archive.name}: {exc}") from None
    if wanted:
        raise DatasetError(f"{archive.name} lacks {', '.join(sorted(wanted))}")


def download(name: str, folder=None, base_url: str | None = None) -> Path:
    """Fetch dataset ``name`` into ``folder`` (default: :func:`.sources.cache_dir`)
    from ``base_url`` (default: the dataset's official location); return the folder.

    Raises DatasetError, saying what failed and what to do, on an unknown name, a
    network failure, an interrupted transfer (the partial file is kept for a resume)
    or a file whose digest is not a known-good one.
    """
    if name not in SOURCES:
        raise DatasetError(f"no download for dataset {name!r}; downloadable: "
                           f"{', '.join(SOURCES)}")
    source = SOURCES[name]
    folder = Path(folder) if folder is not None else cache_dir(name)
    base_url = base_url or source.base_url
    if not base_url.endswith("/"):
        base_url += "/"
    if source.archive_members and is_complete(source, folder):
        return folder                   # extracted earlier (files: each checked below)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatasetError(f"cannot create the dataset folder {folder}: {exc.strerror}") from None
    for file in source.files:
        _fetch_checked(source, file, folder, base_url)
    if source.archive_members:
        archive = folder / source.files[0].name
        _extract(archive, source.archive_members, folder)
        archive.unlink()
    return folder
