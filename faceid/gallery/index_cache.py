"""The gallery's 1:N search index: a cache of the database's templates that can make a search fast but can never
steer its answer.

**The database is the truth.** Every answer a search gives is re-scored from the database's own templates (the k
rows it names: one small query) before anyone decides on it, and those scores are cosines by construction
(`vectors.cosines`: unit templates, clipped to [-1, 1]). If the index and the database disagree - an id the database
does not hold, a score the database's template does not give, a count that differs, a file that fails its checksums
(`index_file`) - the index is rebuilt from the database with a one-line note naming the file and what was wrong, and
the search runs again. `audit` (``faceid_app.py check``) compares the whole file with the whole database and says what
was wrong before it rebuilds.

**A write does not cost a rebuild.** The index is kept in step by ``meta.index_version`` ("<counter>:<random>"),
changed in the same transaction as every write. Each write declares what it changes (`IndexChanges`); under the
write lock, just before COMMIT, the file follows it (`follow`): rows appended for added templates, tombstones for
removed ones, compaction when tombstones pile up (`index_file.update_in_place`), and the file now records the new
version. A write that declares nothing, a crash between the file's update and COMMIT, or a database restored from a
backup leave a file of another version, which is rebuilt on next use, never trusted (the random part means a
restored database can never match a file from another history at the same counter).
"""

from __future__ import annotations

import secrets
import sqlite3
from pathlib import Path

import numpy as np

from ..core import report
from ..model.embeddings import EMBEDDING_DIM
from .index_file import TOMBSTONE, IndexDamaged, IndexFile, update_in_place, write_index
from .records import FILE_MODE, GalleryError, ModelMismatchError, corrupt_database, mismatch_message
from .search_index import TemplateIndex
from .vectors import cosines, from_blob

INDEX_VERSION_KEY = "index_version"
SCORE_TOLERANCE = 1e-5  # an index row equal to the database's template gives the same float32 cosine
_FINGERPRINTS_SQL = "SELECT fingerprint, COUNT(*) FROM templates GROUP BY fingerprint"


def bump_index_version(db: sqlite3.Connection) -> tuple[str, str]:
    """Inside a write transaction: a new "<counter + 1>:<random>" index version (see the module docstring).
    Returns (the version before, the new one)."""
    row = db.execute("SELECT value FROM meta WHERE key = ?", (INDEX_VERSION_KEY,)).fetchone()
    old = row[0] if row else ""
    counter = old.split(":")[0]
    new = f"{int(counter) + 1 if counter.isdigit() else 1}:{secrets.token_hex(8)}"
    db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (INDEX_VERSION_KEY, new))
    return old, new


class IndexChanges:
    """What one write transaction does to the templates, declared by the writer so that the index can follow it
    without a rebuild: person ids whose template rows go (`remove`), ids whose rows come (`add`, or `add_after`:
    every id above the largest one before the write, since AUTOINCREMENT ids only grow). A changed template is a
    removal and an addition of the same id."""

    def __init__(self) -> None:
        self.removed: set[int] = set()
        self.added: set[int] = set()
        self.added_after: int | None = None

    def remove(self, person_id: int) -> None:
        self.removed.add(int(person_id))

    def add(self, person_id: int) -> None:
        self.added.add(int(person_id))

    def add_after(self, db: sqlite3.Connection) -> None:
        """Before inserting people in bulk: everyone inserted from now on in this transaction is added."""
        self.added_after = int(db.execute("SELECT COALESCE(MAX(id), 0) FROM people").fetchone()[0])


class IndexCache:
    """The search index of the gallery at its current version: in memory, else opened from `path` when that file
    was built from this very version and passes its checks, else rebuilt from the database and saved to `path`.

    It reads the gallery's connection and writes only to it inside the caller's write transaction (`follow`);
    SQLite errors are left to the caller."""

    def __init__(self, conn: sqlite3.Connection, path: Path, db_path: Path, save: bool = True):
        """`save`: False for a gallery on read-only storage, whose index is rebuilt in memory only."""
        self.path = path
        self._save = save
        self._conn = conn
        self._db_path = db_path  # named in "corrupt" errors
        # the index at `_version`: the index, person id per row (TOMBSTONE for deleted), {fingerprint: templates}
        self._index: TemplateIndex | None = None
        self._ids: np.ndarray | None = None
        self._fingerprints: dict[str, int] = {}
        self._version: str | None = None

    # --- searching ---------------------------------------------------------------------------------

    def search(self, q: np.ndarray, k: int, fingerprint: str) -> list[tuple[str, float]]:
        """The k best (name, cosine) for the unit probe `q`, best first; every score is the database's own.
        `fingerprint`: the probe's model; templates of another model are refused (ModelMismatchError)."""
        for _attempt in range(3):
            index, ids = self.search_index(fingerprint)
            try:
                scores, rows = index.search(q, k)
                return self._rescore([(int(ids[r]), float(s)) for s, r in zip(scores, rows)], q, fingerprint)
            except IndexDamaged as err:
                self.forget()
                if str(err) != _STALE:  # damaged: rebuilt now (a stale one is reopened: another process wrote)
                    self._damaged(str(err))
                    self.rebuild()
        raise GalleryError(
            f"The search index {self.path} keeps disagreeing with {self._db_path} (is another process rewriting "
            "them?); try again."
        )

    def _rescore(self, found: list[tuple[int, float]], q: np.ndarray, fingerprint: str) -> list[tuple[str, float]]:
        """`found` (person id, index score) re-scored from the database in one read transaction; IndexDamaged
        when the database disagrees, or (`_STALE`) when it has moved on since the index was opened."""
        wanted = [pid for pid, _ in found if pid != TOMBSTONE]  # a row tombstoned by another process meanwhile
        self._conn.execute("BEGIN")
        try:
            version = self._database_version()
            rows = self._conn.execute(
                "SELECT p.id, p.name, t.fingerprint, t.vector FROM people p JOIN templates t ON t.person_id = p.id "
                f"WHERE p.id IN ({','.join('?' * len(wanted))})",
                wanted,
            ).fetchall()
        finally:
            self._conn.execute("COMMIT")
        if version != self._version:
            raise IndexDamaged(_STALE)
        by_id = {pid: (name, fp, blob) for pid, name, fp, blob in rows}
        if len(set(wanted)) != len(wanted):
            raise IndexDamaged("it holds one person on two rows")
        if len(by_id) != len(wanted):
            raise IndexDamaged("it names people the database does not hold")
        if any(fp != fingerprint for _, fp, _ in by_id.values()):
            raise IndexDamaged("its model counts differ from the database's")
        vectors = [from_blob(by_id[pid][2], self._db_path) for pid in wanted]
        truth = cosines(np.array(vectors, np.float32).reshape(-1, EMBEDDING_DIM), q, self._db_path)
        claimed = np.array([s for pid, s in found if pid != TOMBSTONE], np.float64)
        if np.any(~(np.abs(truth - claimed) <= SCORE_TOLERANCE)):
            raise IndexDamaged("its scores differ from those of the database's templates")
        order = np.argsort(-truth, kind="stable")
        return [(by_id[wanted[i]][0], float(truth[i])) for i in order]

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

    # --- building ----------------------------------------------------------------------------------

    def rebuild(self) -> None:
        """Read every template in one read transaction (a consistent snapshot and its version), build the
        index and save it beside the database (when that fails, e.g. a full disk, it is used from memory)."""
        version, matrix, ids, fingerprints = self._snapshot()
        self._build(version, matrix, ids, fingerprints)

    def _build(self, version: str, matrix: np.ndarray, ids: np.ndarray, fingerprints: dict[str, int]) -> None:
        index = TemplateIndex(matrix)
        try:
            if self._save:
                write_index(
                    self.path,
                    matrix,
                    ids,
                    index.sketches,
                    {INDEX_VERSION_KEY: version, "fingerprints": fingerprints},
                    FILE_MODE,
                )
        except (OSError, ValueError) as err:  # ValueError: a header too long to save (thousands of models)
            why = err.strerror if isinstance(err, OSError) else err
            report.warn(f"Could not save the search index to {self.path} ({why}); the next command will rebuild it.")
        self._index, self._ids, self._fingerprints, self._version = index, ids, fingerprints, version

    def _snapshot(self) -> tuple[str, np.ndarray, np.ndarray, dict[str, int]]:
        """(version, every template, person id per row, {fingerprint: templates}) in one read transaction."""
        self._conn.execute("BEGIN")
        try:
            version = self._database_version()
            count = self._conn.execute("SELECT COUNT(*) FROM templates").fetchone()[0]
            matrix = np.empty((count, EMBEDDING_DIM), np.float32)
            ids = np.empty(count, np.int64)
            fingerprints: dict[str, int] = {}
            rows = self._conn.execute(
                "SELECT t.person_id, t.fingerprint, t.vector FROM templates t JOIN people p ON p.id = t.person_id "
                "ORDER BY t.person_id"
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
        return version, matrix, ids, fingerprints

    def _database_version(self) -> str:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (INDEX_VERSION_KEY,)).fetchone()
        return row[0] if row else ""

    def _damaged(self, what: str) -> None:
        report.warn(f"The search index {self.path} was damaged ({what}); rebuilding it from the database.")

    def _open_checked(self) -> IndexFile | None:
        """The saved file when it passes its own checks (a note when it does not); None when missing or damaged."""
        try:
            return IndexFile.open(self.path)
        except FileNotFoundError:
            return None
        except IndexDamaged as err:
            self._damaged(str(err))
        except OSError as err:
            report.warn(f"Could not read the search index {self.path} ({err.strerror}); rebuilding it.")
        return None

    def _current(self) -> TemplateIndex | None:
        """The index of the gallery as it is now: kept in memory, else opened from `path` when that file was
        built from this very version, passes its checks and holds as many templates as the database; None when
        neither is current."""
        version = self._database_version()
        if self._index is not None and self._version == version:
            return self._index
        self._conn.execute("BEGIN")  # the version and the count of one state of the database
        try:
            version = self._database_version()
            templates = self._conn.execute("SELECT COUNT(*) FROM templates").fetchone()[0]
        finally:
            self._conn.execute("COMMIT")
        file = self._open_checked()
        if file is None or file.extra.get(INDEX_VERSION_KEY) != version:
            return None  # missing, damaged (noted) or of another version (a write it did not follow)
        counts = file.extra.get("fingerprints")
        live = file.count - file.header["tombstones"]
        if (
            not isinstance(counts, dict)
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in counts.values())
            or sum(counts.values()) != live
            or templates != live
        ):
            self._damaged("its template counts differ from the database's")
            return None
        index = TemplateIndex(
            file.matrix, sketches=file.sketches, skip=file.ids == TOMBSTONE, check_rows=file.verify_rows
        )
        if index.backend == "numpy-exact":  # it reads every row on every search: check them all once
            try:
                file.verify_all()
            except IndexDamaged as err:
                self._damaged(str(err))
                return None
        self._index, self._ids, self._fingerprints, self._version = index, file.ids, counts, version
        return index

    # --- following writes, and the full check ------------------------------------------------------

    def follow(self, changes: IndexChanges | None, old: str, new: str) -> None:
        """Inside a write transaction that moves the database from version `old` to `new`, just before COMMIT:
        apply `changes` to the saved file when it is current at `old`, so it is current at `new`. Never fails the
        write: a file it cannot update is removed (the next search rebuilds it) with a note."""
        self.forget()
        if changes is None:
            return
        try:
            file = IndexFile.open(self.path)
        except FileNotFoundError:
            return
        except (IndexDamaged, OSError, ValueError) as err:
            return self._drop_file(err)
        if file.extra.get(INDEX_VERSION_KEY) != old:
            return  # already stale: the next search rebuilds it
        added = self._added_rows(changes)
        extra = {INDEX_VERSION_KEY: new, "fingerprints": dict(self._conn.execute(_FINGERPRINTS_SQL))}
        try:
            outcome = update_in_place(file, extra, *added, sorted(changes.removed), FILE_MODE)
        except (IndexDamaged, OSError, ValueError) as err:
            return self._drop_file(err)
        if outcome == "compacted":
            report.detail(f"Compacted the search index {self.path}.")

    def _added_rows(self, changes: IndexChanges) -> tuple[np.ndarray, np.ndarray]:
        """(person ids, templates) of the rows `changes` adds, read inside the write transaction."""
        query = "SELECT person_id, vector FROM templates WHERE "
        rows = []
        if changes.added:
            wanted = sorted(changes.added)
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                rows += self._conn.execute(query + f"person_id IN ({','.join('?' * len(chunk))})", chunk).fetchall()
        if changes.added_after is not None:
            rows += self._conn.execute(query + "person_id > ?", (changes.added_after,)).fetchall()
        by_id = {int(pid): blob for pid, blob in rows}
        ids = np.array(sorted(by_id), np.int64)
        matrix = np.zeros((len(ids), EMBEDDING_DIM), np.float32)
        for i, pid in enumerate(ids):
            matrix[i] = from_blob(by_id[int(pid)], self._db_path)
        return ids, matrix

    def _drop_file(self, err: Exception) -> None:
        what = (
            str(err)
            if isinstance(err, IndexDamaged)
            else f"it could not be updated: {getattr(err, 'strerror', None) or err}"
        )
        report.warn(f"The search index {self.path} was set aside ({what}); the next search rebuilds it.")
        try:
            self.path.unlink(missing_ok=True)
        except OSError:
            pass  # it describes the old version: never trusted at the new one

    def audit(self) -> str | None:
        """The full check of the saved file against the database (``check``), then a fresh rebuild: None when
        the file was faithful (or absent: nothing to trust), else what was wrong with it."""
        version, matrix, ids, fingerprints = self._snapshot()
        problem = None
        try:
            file = IndexFile.open(self.path)
            file.verify_all()
            problem = _disagreement(file, version, ids, matrix, fingerprints)
        except FileNotFoundError:
            problem = None  # no saved file: nothing was trusted, so nothing was damaged; the rebuild below saves one
        except IndexDamaged as err:
            problem = str(err)
        except OSError as err:
            problem = f"it could not be read: {err.strerror}"
        self.forget()
        self._build(version, matrix, ids, fingerprints)
        return problem


_STALE = "the database changed while it was searched"


def _disagreement(
    file: IndexFile, version: str, ids: np.ndarray, matrix: np.ndarray, fingerprints: dict[str, int], chunk=65536
) -> str | None:
    """What differs between a file that passed its own checks and the database's snapshot, or None."""
    if file.extra.get(INDEX_VERSION_KEY) != version:
        return "it was built from another version of the database"
    live = np.flatnonzero(file.ids != TOMBSTONE)
    if len(live) != len(ids) or file.extra.get("fingerprints") != fingerprints:
        return f"it holds {len(live)} templates, the database {len(ids)}"
    mine, theirs = live[np.argsort(file.ids[live], kind="stable")], np.argsort(ids, kind="stable")
    if not np.array_equal(file.ids[mine], ids[theirs]):
        return "its ids differ from the database's"
    for start in range(0, len(mine), chunk):  # row by row, a chunk at a time (2 GB each at 1M)
        if not np.array_equal(file.matrix[mine[start : start + chunk]], matrix[theirs[start : start + chunk]]):
            return "its templates differ from the database's"
    return None
