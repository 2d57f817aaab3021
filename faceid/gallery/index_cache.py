"""The gallery's 1:N search index, kept in step with its database and saved beside it.

The search index is saved beside the database so a one-shot `identify` does not rebuild it from every
template. It is kept in step by ``meta.index_version`` ("<counter>:<random>"), changed in the same
transaction as every write; the index file records the version it was built from, and an index whose
version differs (or that is missing or malformed) is rebuilt from the database, never trusted.
The random part means a database restored from a backup can never match an index built from another
history at the same counter.
"""

from __future__ import annotations

import secrets
import sqlite3
from pathlib import Path

import numpy as np

from ..core import report
from ..model.embeddings import EMBEDDING_DIM
from .records import FILE_MODE, ModelMismatchError, corrupt_database, mismatch_message
from .search_index import TemplateIndex
from .vectors import from_blob

INDEX_VERSION_KEY = "index_version"


def bump_index_version(db: sqlite3.Connection) -> None:
    """Inside a write transaction: a new "<counter + 1>:<random>" index version (see the module docstring)."""
    row = db.execute("SELECT value FROM meta WHERE key = ?", (INDEX_VERSION_KEY,)).fetchone()
    counter = row[0].split(":")[0] if row else "0"
    new = f"{int(counter) + 1 if counter.isdigit() else 1}:{secrets.token_hex(8)}"
    db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (INDEX_VERSION_KEY, new))


class IndexCache:
    """The search index of the gallery at its current version: in memory, else loaded from `path` when that
    file was built from this very version, else rebuilt from the database and saved to `path`.

    It reads the gallery's connection, never writes to it; SQLite errors are left to the caller."""

    def __init__(self, conn: sqlite3.Connection, path: Path, db_path: Path):
        self.path = path
        self._conn = conn
        self._db_path = db_path  # named in "corrupt" errors
        # the index at `_version`: the index, person id per row, {fingerprint: templates}
        self._index: TemplateIndex | None = None
        self._ids: np.ndarray | None = None
        self._fingerprints: dict[str, int] = {}
        self._version: str | None = None

    def search_index(self, fingerprint: str) -> tuple[TemplateIndex, np.ndarray]:
        """(index, person id per row), current with the database. `fingerprint`: the probe's model; templates
        of another model are refused (ModelMismatchError)."""
        if self._current() is None:
            self.rebuild()
        other = set(self._fingerprints) - {fingerprint}
        if other:
            raise ModelMismatchError(mismatch_message(sorted(other)[0], fingerprint))
        # both set together by _current() or rebuild() just above
        assert self._index is not None and self._ids is not None
        return self._index, self._ids

    def fingerprints(self) -> dict[str, int] | None:
        """{model fingerprint: templates} when a current index is at hand (constant time), else None."""
        return dict(self._fingerprints) if self._current() is not None else None

    def forget(self) -> None:
        """Drop the index from memory (after a write, or on close); the file stays for the next command."""
        self._index = None

    def discard(self) -> None:
        """Forget the index and delete its file: the next use rebuilds it from the database."""
        self.path.unlink(missing_ok=True)
        self.forget()

    def rebuild(self) -> None:
        """Read every template in one read transaction (a consistent snapshot and its version), build the
        index and save it beside the database (when that fails, e.g. a full disk, it is used from memory)."""
        self._conn.execute("BEGIN")
        try:
            version = self._database_version()
            count = self._conn.execute("SELECT COUNT(*) FROM templates").fetchone()[0]
            matrix = np.empty((count, EMBEDDING_DIM), np.float32)
            ids = np.empty(count, np.int64)
            fingerprints: dict[str, int] = {}
            rows = self._conn.execute(
                "SELECT t.person_id, t.fingerprint, t.vector FROM templates t JOIN people p ON p.id = t.person_id"
            )
            i = -1
            for i, (pid, fp, blob) in enumerate(rows):
                if i >= count:
                    raise corrupt_database(self._db_path)
                matrix[i] = from_blob(blob, self._db_path)
                ids[i] = pid
                fingerprints[fp] = fingerprints.get(fp, 0) + 1
            if i + 1 != count:
                raise corrupt_database(self._db_path)
        finally:
            self._conn.execute("COMMIT")
        index = TemplateIndex(matrix)
        try:
            index.save(self.path, ids, {INDEX_VERSION_KEY: version, "fingerprints": fingerprints}, FILE_MODE)
        except OSError as err:
            report.warn(
                f"Could not save the search index to {self.path} ({err.strerror}); the next command will rebuild it."
            )
        self._index, self._ids, self._fingerprints, self._version = index, ids, fingerprints, version

    def _database_version(self) -> str:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (INDEX_VERSION_KEY,)).fetchone()
        return row[0] if row else ""

    def _current(self) -> TemplateIndex | None:
        """The index of the gallery as it is now: kept in memory, else loaded from `path` when that file was
        built from this very version; None when neither is current."""
        version = self._database_version()
        if self._index is not None and self._version == version:
            return self._index
        loaded = TemplateIndex.load(self.path)
        if loaded is None:
            return None
        index, ids, extra = loaded
        counts = extra.get("fingerprints")
        if (
            extra.get(INDEX_VERSION_KEY) != version
            or not isinstance(counts, dict)
            or sum(counts.values()) != len(index)
        ):
            return None
        self._index, self._ids, self._fingerprints, self._version = index, ids, counts, version
        return index
