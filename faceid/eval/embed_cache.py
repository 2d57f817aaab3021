"""A SQLite cache of face embeddings, so that evaluating the same images twice costs nothing.

Why: an evaluation is dominated by detection and the network (tens of milliseconds per image on a CPU);
reading one row back is microseconds. Re-running the evaluator after changing only the metrics, the
folds or the report costs a lookup per image.

Key: (source, size, mtime_ns, model, flip)
- source: the image's absolute path (size and mtime_ns from ``os.stat``: an edited file misses), or
  ``sha256:<hex>`` for images that only exist in memory (the JPEGs inside a ``.bin``; size = byte count,
  mtime_ns = 0).
- model: the backend's cache tag: the weights-and-spec fingerprint plus every pipeline setting that
  changes the result (detector settings, face-choice rule, fallback rule).
- flip: whether the embedding averages the image with its mirror.

Value: the embedding as little-endian float32 bytes (its length in ``dim``) and a JSON text with what the
detector saw (``detected``, ``faces``, ``box``, ``prob``, ...), so misses are reported on cached runs too.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from pathlib import Path

import numpy as np

from ..core.errors import FaceIDError

CacheKey = tuple[str, int, int]  # (source, size, mtime_ns)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS faces (
    source TEXT NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    model TEXT NOT NULL, flip INTEGER NOT NULL,
    dim INTEGER NOT NULL, embedding BLOB NOT NULL, info TEXT NOT NULL,
    PRIMARY KEY (source, size, mtime_ns, model, flip)
) WITHOUT ROWID
"""


def file_key(path: str | os.PathLike) -> CacheKey:
    """(absolute path, size, mtime_ns) of an image file; raises FileNotFoundError if it is gone."""
    path = Path(path).resolve()
    st = path.stat()
    return str(path), int(st.st_size), int(st.st_mtime_ns)


def bytes_key(data: bytes) -> CacheKey:
    """Content key for an image held in memory (e.g. a JPEG inside a verification .bin)."""
    return f"sha256:{hashlib.sha256(data).hexdigest()}", len(data), 0


class EmbedCache:
    """Open (or create) the cache at `path`. Use as a context manager, or call close()."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")  # readers don't block a writer (parallel runs)
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(_SCHEMA)
            self._db.commit()
        except (sqlite3.DatabaseError, OSError) as err:
            raise FaceIDError(
                f"Cannot open the embedding cache {self.path} ({err}); delete it or run without the cache.", "no_cache"
            ) from None

    def get_many(self, keys: list[CacheKey], model: str, flip: bool) -> dict[CacheKey, tuple[np.ndarray, dict]]:
        """The cached (embedding (dim,) float32, info dict) for every key that has one."""
        found: dict[CacheKey, tuple[np.ndarray, dict]] = {}
        query = "SELECT dim, embedding, info FROM faces WHERE source=? AND size=? AND mtime_ns=? AND model=? AND flip=?"
        try:
            for key in keys:
                row = self._db.execute(query, (*key, model, int(flip))).fetchone()
                if row is not None:
                    vec = np.frombuffer(row[1], dtype="<f4")
                    if vec.size == row[0]:
                        found[key] = (vec.astype(np.float32), json.loads(row[2]))
        except sqlite3.DatabaseError as err:
            raise FaceIDError(
                f"The embedding cache {self.path} is unreadable ({err}); delete it or run without the cache.",
                "no_cache",
            ) from None
        return found

    def put_many(self, items: list[tuple[CacheKey, np.ndarray, dict]], model: str, flip: bool) -> None:
        """Store (key, embedding (dim,), info) rows in one transaction (replacing older ones)."""
        rows = []
        for key, vec, info in items:
            vec = np.ascontiguousarray(vec, dtype="<f4").reshape(-1)
            rows.append((*key, model, int(flip), int(vec.size), vec.tobytes(), json.dumps(info)))
        try:
            with self._db:
                self._db.executemany("INSERT OR REPLACE INTO faces VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
        except sqlite3.DatabaseError as err:
            raise FaceIDError(
                f"Cannot write to the embedding cache {self.path} ({err}); delete it or run without the cache.",
                "no_cache",
            ) from None

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "EmbedCache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
