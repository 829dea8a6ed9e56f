"""Writing files atomically, with the permissions a plain ``open(path, "w")`` would give.

A file is written to a temporary name in its own folder (``.<name>.<random>.tmp``),
flushed to disk and renamed over ``path``, so a reader (or a run killed half-way)
sees either the old file or the complete new one. ``tempfile.mkstemp`` creates
the temporary file with mode 0600; :func:`atomic_path` widens it to what the
process's umask allows (0644 under the usual umask 022) before the rename, so
others can read a run's outputs. :func:`remove_temporaries` deletes the
temporary files a killed writer left behind.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

TEMP_SUFFIX = ".tmp"


def umask() -> int:
    """The process's file-creation mask."""
    mask = os.umask(0)      # the only portable way to read it is to set it
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; on success it is renamed to ``path``.

    The caller writes the temporary file (by name); on an exception it is removed
    and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and a rename."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def remove_temporaries(folder, names) -> list[Path]:
    """Delete the temporary files an interrupted :func:`atomic_path` left for ``names``
    in ``folder``; returns what was removed."""
    removed = []
    for name in names:
        for tmp in Path(folder).glob(f".{name}.*{TEMP_SUFFIX}"):
            if tmp.is_file():
                tmp.unlink(missing_ok=True)
                removed.append(tmp)
    return removed
