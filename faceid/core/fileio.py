"""Atomic writes, file hashing, and the regular-file check on what is read.

Every file the tool writes (unpacked images, checkpoints, JSON reports, plots, the label map) goes
through a temporary file in the same directory followed by `os.replace`, so a crash or Ctrl-C leaves
either the old file or the new one, never half of one.

Every file the tool is handed to read (a source, a model, weights, a calibration table, a gallery file) must be
a regular file (`require_regular_file`): opening a named pipe blocks until someone writes to it (forever, for a
one-shot command), and a device or socket is never an image, a model or a database.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any, Callable

from .errors import FaceIDError


def atomic_write(path: str | os.PathLike, write: Callable[[io.BufferedWriter], object], mode: int = 0o644) -> None:
    """Call `write(fileobj)` on a temp file next to `path`, fsync it, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes, mode: int = 0o644) -> None:
    atomic_write(path, lambda f: f.write(data), mode)


def atomic_write_json(path: str | os.PathLike, obj: Any, mode: int = 0o644) -> None:
    data = (json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n").encode("utf-8")
    atomic_write_bytes(path, data, mode)


def atomic_torch_save(path: str | os.PathLike, obj: Any, mode: int = 0o644) -> None:
    """torch.save, atomically. torch reports a failed write (disk full, quota, file-size limit) as an opaque
    RuntimeError ("unexpected pos 704 vs 598"); the OSError behind it is raised instead."""
    import torch

    def save(f: io.BufferedWriter) -> None:
        failed = _FailureRecordingWriter(f)
        try:
            torch.save(obj, failed)  # type: ignore[arg-type]  # torch.save takes any object with write(); its stub says IO[bytes]
        except RuntimeError:
            if failed.error is not None:
                raise failed.error from None
            raise

    atomic_write(path, save, mode)


class _FailureRecordingWriter:
    """A file's write/flush that keeps the first OSError, which torch's C++ writer would otherwise swallow."""

    def __init__(self, f: io.BufferedWriter):
        self.f = f
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            return self.f.write(data)
        except OSError as err:
            self.error = self.error or err
            raise

    def flush(self) -> None:
        self.f.flush()


def atomic_savefig(path: str | os.PathLike, fig) -> None:
    """Save a matplotlib figure as PNG atomically."""
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120, bbox_inches="tight"))


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def describe_kind(mode: int) -> str:
    """What a path of this `st_mode` is, in words, for a sentence ("... is a named pipe (FIFO)")."""
    kinds = (
        (stat.S_ISREG, "a regular file"),
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a named pipe (FIFO)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((words for test, words in kinds if test(mode)), "not a regular file")


def require_regular_file(path: str | os.PathLike, what: str, *settings: str) -> os.stat_result:
    """`path`'s stat when it is a regular file (links followed); else one sentence naming `what` (e.g. "The model
    file") and what the path really is: missing, a folder, a named pipe, a device, a socket. `stat` never opens
    the path, so a pipe is refused without blocking."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise FaceIDError(f"{what} {path} does not exist.", *settings) from None
    except OSError as err:
        raise FaceIDError(
            f"Cannot read {what[:1].lower()}{what[1:]} {path}: {err.strerror or err}.", *settings
        ) from None
    if not stat.S_ISREG(st.st_mode):
        raise FaceIDError(
            f"{what} {path} is {describe_kind(st.st_mode)}, not a regular file; give a file (a pipe or device "
            f"could block or never end).",
            *settings,
        )
    return st
