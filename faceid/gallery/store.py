"""The gallery: who is registered, their templates and sample crops, in a private data directory.

`Gallery` is the one object the app holds. It keeps people, templates and per-sample embeddings in SQLite
(`faceid.gallery.database`), the sample crops as files (`faceid.gallery.files`, layout in
`faceid.gallery.records`), and answers 1:1 and 1:N queries from a search index kept in step with the
database (`faceid.gallery.index_cache`).

Integrity checks (``PRAGMA quick_check``, rows vs sample files, the search index compared with the database and
rebuilt) read the whole gallery, so they run on request (`Gallery.check`, ``faceid_app.py check``) and after a crash (a
``.writing-<pid>`` marker whose process is gone), not on every command.

Crash safety of a registration (SIGKILL or Ctrl-C at any point leaves the gallery as it was):
sample files are written (and fsynced) into ``samples/<new id>/`` inside the SQLite write
transaction, before COMMIT. A directory under ``samples/`` whose id has no committed sample rows is
an orphan by definition, so a crash before COMMIT leaves only an orphan, which the next `open`
deletes; a crash after COMMIT leaves a complete registration (plus, for --replace, the old person's
directory as an orphan). Orphan cleanup runs inside a write transaction, so it never races with a
registration in progress in another process (that one holds the write lock).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from ..core import report
from ..model.embeddings import EMBEDDING_DIM, template_of
from . import database
from .database import db_errors
from .files import (
    claim_data_dir,
    decode_jpeg,
    encode_jpeg,
    own_sample_dirs,
    private_dir,
    private_samples,
    read_only_refusal,
    remove_sample_dir,
    storage_limit,
    write_sample_dir,
)
from .index_cache import IndexCache, IndexChanges
from .names import lookup_key, validate_name
from .records import (
    DB_NAME,
    INDEX_NAME,
    SAMPLES_DIR,
    GalleryError,
    Match,
    ModelMismatchError,
    Person,
    corrupt_database,
    mismatch_message,
)
from .seed import load_seed_pickle
from .vectors import check_embeddings, cosines, from_blob, query_vector, template_sample, to_blob

_PEOPLE_SQL = (
    "SELECT p.id, p.name, p.created, (SELECT COUNT(*) FROM samples s WHERE s.person_id = p.id), "
    "COALESCE(t.fingerprint, '') FROM people p LEFT JOIN templates t ON t.person_id = p.id"
)


class Gallery:
    """One open gallery. Not thread-safe: use it from one thread (processes may share a data dir)."""

    def __init__(self, data_dir: Path, conn: sqlite3.Connection, read_only: str | None = None):
        """Use `Gallery.open`: it makes sure `data_dir` is ours and `conn` a gallery database before this runs.
        `read_only`: why nothing can be written here (`files.storage_limit`), None when it can."""
        self.data_dir = data_dir
        self.db_path = data_dir / DB_NAME
        self.samples_dir = data_dir / SAMPLES_DIR
        self.index_path = data_dir / INDEX_NAME
        self.read_only = read_only
        self._conn = conn
        self._index = IndexCache(conn, self.index_path, self.db_path, save=read_only is None)

    # --- opening -------------------------------------------------------------------------------

    @classmethod
    def open(cls, data_dir: str | os.PathLike) -> "Gallery":
        """Open (creating if needed) the gallery in `data_dir`; check it is ours and intact; fix permissions."""
        data_dir = Path(data_dir).expanduser()
        limit = storage_limit(data_dir)  # read-only storage or a full disk: served for reading, never changed
        claim_data_dir(data_dir, fix=limit is None)
        gallery = cls(data_dir, database.open_db(data_dir / DB_NAME, limit), limit)
        try:
            gallery._prepare()
        except BaseException:
            gallery.close()
            raise
        return gallery

    @db_errors
    def _prepare(self) -> None:
        """After connecting: the schema is ours, the samples folder exists, a crash is checked for, an old
        schema is upgraded and orphaned sample folders are removed."""
        database.validate_schema(self._conn, self.db_path)
        if self.read_only is None:
            private_dir(self.samples_dir)
            private_samples(self.samples_dir)
        if database.crashed_writers(self.data_dir):
            report.warn(f"A faceid process stopped in the middle of writing to {self.db_path}; checking the gallery.")
            problems = self.check()
            if problems:
                raise GalleryError(
                    f"{self.db_path} is damaged after a crash ({problems[0]}); restore a backup or move it away."
                )
            self.check_index()  # a crash may leave the search index ahead of the database: noted, rebuilt
        if self.read_only is not None:
            return  # an old schema is read as it is; orphans wait for writable storage
        if database.needs_upgrade(self._conn):
            with self._transaction() as db:
                database.upgrade(db)
        _remove_orphans(self._conn, self.samples_dir)

    def close(self) -> None:
        self._conn.close()
        self._index.forget()

    def __enter__(self) -> "Gallery":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @db_errors
    def check(self) -> list[str]:
        """The full integrity check of the database (reads everything; run on request or after a crash): SQLite's
        quick_check, every person has one template of the right size, every sample row has its crop file. Returns
        the problems found, [] when intact. The search index, a cache, is checked by `check_index`."""
        problems = database.integrity_problems(self._conn, self.samples_dir)
        if self.read_only is None:
            for marker in database.crashed_writers(self.data_dir):
                marker.unlink(missing_ok=True)
        return problems

    @db_errors
    def check_index(self) -> str | None:
        """The search index's full check against the database, then a fresh rebuild (`IndexCache.audit`): None when
        the saved index was faithful or absent, else what was wrong with it (for ``check`` to report)."""
        return self._index.audit()

    def require_writable(self) -> None:
        """Refuse, in one sentence, to change a gallery on read-only storage or a full disk (it is still read)."""
        if self.read_only is not None:
            raise read_only_refusal(self.data_dir, self.read_only)

    @contextlib.contextmanager
    def _transaction(self, changes: IndexChanges | None = None) -> Iterator[sqlite3.Connection]:
        """A write transaction (`database.write_transaction`). The saved search index follows the write when the
        body declares its `changes` (else it is stale, and rebuilt on next use); the index in memory is dropped."""
        self.require_writable()
        follow = lambda old, new: self._index.follow(changes, old, new)  # noqa: E731
        with database.write_transaction(self._conn, self.data_dir, before_commit=follow) as db:
            yield db
        self._index.forget()

    def _person_dir(self, person_id: int) -> Path:
        return self.samples_dir / str(int(person_id))

    @db_errors
    def check_model(self, fingerprint: str, exclude: str | None = None) -> None:
        """Refuse (ModelMismatchError) when templates here come from another model than `fingerprint`, leaving out
        `exclude` (someone about to be registered again): the app asks before it captures frames. The common case
        (every template from this model) is one grouped query, however big the gallery."""
        if set(self.fingerprints()) <= {fingerprint}:
            return
        other = next((p for p in self.people() if p.fingerprint != fingerprint and p.name != exclude), None)
        if other is not None:
            raise ModelMismatchError(mismatch_message(other.fingerprint, fingerprint, other.name))

    def _check_same_model(self, fingerprint: str, exclude_id: int | None = None) -> None:
        """Refuse to mix models in one gallery: every template must come from `fingerprint`."""
        row = self._conn.execute(
            "SELECT fingerprint FROM templates WHERE fingerprint != ? AND person_id IS NOT ? LIMIT 1",
            (fingerprint, exclude_id),
        ).fetchone()
        if row:
            raise ModelMismatchError(mismatch_message(row[0], fingerprint))

    # --- reading -------------------------------------------------------------------------------

    @db_errors
    def people(self) -> list[Person]:
        """Everyone registered, by name."""
        return [Person(*row) for row in self._conn.execute(_PEOPLE_SQL + " GROUP BY p.id ORDER BY p.name")]

    @db_errors
    def fingerprints(self) -> dict[str, int]:
        """{model fingerprint: number of templates}: a cheap model check (no need to list a big gallery). From
        the search index when it is current (constant time), else from the fingerprint index (one scan of it)."""
        counts = self._index.fingerprints()
        if counts is not None:
            return counts
        return dict(self._conn.execute("SELECT fingerprint, COUNT(*) FROM templates GROUP BY fingerprint"))

    @db_errors
    def get(self, name: str) -> Person | None:
        row = self._conn.execute(_PEOPLE_SQL + " WHERE p.name = ? GROUP BY p.id", (lookup_key(name),)).fetchone()
        return Person(*row) if row else None

    def _require(self, name: str) -> Person:
        person = self.get(name)
        if person is None:
            raise GalleryError(
                f"No one named {name!r} is registered; `{report.command('faceid_app.py')} list` shows who is."
            )
        return person

    @db_errors
    def sample_crops(self, name: str) -> list[np.ndarray]:
        """The stored sample crops of `name` (uint8 RGB), in registration order."""
        return self._read_crops(self._require(name).id)

    def _read_crops(self, person_id: int) -> list[np.ndarray]:
        rows = self._conn.execute("SELECT idx FROM samples WHERE person_id = ? ORDER BY idx", (person_id,))
        return [decode_jpeg(self._person_dir(person_id) / f"{int(i)}.jpg") for (i,) in rows]

    # --- writing -------------------------------------------------------------------------------

    @db_errors
    def register(
        self, name: str, crops: list[np.ndarray], embeddings: np.ndarray, fingerprint: str, replace: bool = False
    ) -> Person:
        """Add `name` with the normalised mean of `embeddings` as template, keeping crops and embeddings.

        All or nothing. A duplicate name is refused unless `replace`.
        """
        name = validate_name(name)
        emb = check_embeddings(embeddings, count=len(crops))
        jpegs = [encode_jpeg(c) for c in crops]  # encode before taking the write lock
        template = template_of(emb)
        new_dir: Path | None = None
        changes = IndexChanges()
        try:
            with self._transaction(changes) as db:
                old = db.execute("SELECT id FROM people WHERE name = ?", (name,)).fetchone()
                if old and not replace:
                    raise GalleryError(f"{name!r} is already registered; replace it only if you mean to.", "replace")
                self._check_same_model(fingerprint, exclude_id=old[0] if old else None)
                if old:
                    db.execute("DELETE FROM people WHERE id = ?", old)
                    changes.remove(old[0])
                pid = db.execute("INSERT INTO people (name, created) VALUES (?, ?)", (name, _now())).lastrowid
                assert pid is not None  # sqlite3 sets lastrowid after every successful INSERT
                changes.add(pid)
                new_dir = self._person_dir(pid)
                self._write_person(db, pid, jpegs, emb, template, fingerprint)
                # nothing more before COMMIT: the crash tests stop a registration at the end of _write_person
        except BaseException:
            if new_dir is not None:
                remove_sample_dir(new_dir)
            raise
        if old:
            remove_sample_dir(self._person_dir(old[0]))  # after COMMIT; a crash here leaves an orphan for `open`
        return self._require(name)

    def _write_person(
        self,
        db: sqlite3.Connection,
        pid: int,
        jpegs: list[bytes],
        emb: np.ndarray,
        template: np.ndarray,
        fingerprint: str,
    ) -> None:
        """Inside the open transaction, register's last step: sample files (fsynced), template and sample rows."""
        write_sample_dir(self._person_dir(pid), jpegs)
        db.execute(
            "INSERT INTO templates VALUES (?, ?, ?, ?, ?)", (pid, fingerprint, EMBEDDING_DIM, to_blob(template), _now())
        )
        db.executemany("INSERT INTO samples VALUES (?, ?, ?)", [(pid, i, to_blob(e)) for i, e in enumerate(emb)])

    @db_errors
    def delete(self, name: str) -> bool:
        """Remove `name`'s rows and sample files; False when no one has that name."""
        changes = IndexChanges()
        with self._transaction(changes) as db:
            row = db.execute("SELECT id FROM people WHERE name = ?", (lookup_key(name),)).fetchone()
            if row:
                db.execute("DELETE FROM people WHERE id = ?", row)
                changes.remove(row[0])
        if row:
            remove_sample_dir(self._person_dir(row[0]))
        return row is not None

    @db_errors
    def reenroll(
        self, embed_crops: Callable[[list[np.ndarray]], np.ndarray], fingerprint: str, progress: bool = True
    ) -> int:
        """Recompute every template (and sample embedding) from the stored crops with the current model.

        One transaction: interrupted, the gallery keeps its old templates. People without stored crops
        (seed imports) whose template comes from another model cannot be recomputed: refused, naming them.
        Returns how many people were updated.
        """
        changes = IndexChanges()
        with self._transaction(changes) as db:
            rows = db.execute(
                "SELECT p.id, p.name, t.fingerprint, (SELECT COUNT(*) FROM samples s WHERE "
                "s.person_id = p.id) FROM people p JOIN templates t ON t.person_id = p.id "
                "ORDER BY p.id"
            ).fetchall()
            stuck = [name for _, name, fp, n in rows if n == 0 and fp != fingerprint]
            if stuck:
                raise GalleryError(
                    f"{len(stuck)} people have no stored sample crops to re-enroll from "
                    f"(e.g. {stuck[0]!r}); delete or re-register them first."
                )
            todo = [pid for pid, _, _, n in rows if n > 0]
            for pid in report.progress(todo, desc="re-enrolling", unit="person", enabled=progress):
                self._reembed(db, pid, embed_crops, fingerprint)
                changes.remove(pid)
                changes.add(pid)
        return len(todo)

    def _reembed(
        self,
        db: sqlite3.Connection,
        pid: int,
        embed_crops: Callable[[list[np.ndarray]], np.ndarray],
        fingerprint: str,
    ) -> None:
        crops = self._read_crops(pid)
        emb = check_embeddings(embed_crops(crops), count=len(crops))
        db.executemany(
            "UPDATE samples SET vector = ? WHERE person_id = ? AND idx = ?",
            [(to_blob(e), pid, i) for i, e in enumerate(emb)],
        )
        db.execute(
            "UPDATE templates SET fingerprint = ?, dim = ?, vector = ?, updated = ? WHERE person_id = ?",
            (fingerprint, EMBEDDING_DIM, to_blob(template_of(emb)), _now(), pid),
        )

    @db_errors
    def import_seed_pickle(self, path: str | os.PathLike, fingerprint: str, replace: bool = False) -> int:
        """Import the seed's ``face_embeddings.pkl`` as templates made by `fingerprint` (no crops: n_samples 0).

        All or nothing; names already in the gallery are refused unless `replace`. Returns people imported.
        """
        entries = load_seed_pickle(path)
        changes = IndexChanges()
        with self._transaction(changes) as db:
            clash = [n for n in entries if db.execute("SELECT 1 FROM people WHERE name = ?", (n,)).fetchone()]
            if clash and not replace:
                raise GalleryError(
                    f"{len(clash)} names in {path} are already registered (e.g. {clash[0]!r}); "
                    f"replace them only if you mean to.",
                    "replace",
                )
            old_ids = [r[0] for n in clash for r in db.execute("SELECT id FROM people WHERE name = ?", (n,))]
            db.executemany("DELETE FROM people WHERE id = ?", [(i,) for i in old_ids])
            changes.removed.update(old_ids)
            self._check_same_model(fingerprint)
            changes.add_after(db)
            _insert_templates(db, entries.items(), fingerprint)
        for i in old_ids:
            remove_sample_dir(self._person_dir(i))
        return len(entries)

    @db_errors
    def add_templates(self, names: list[str], templates: np.ndarray, fingerprint: str) -> int:
        """Add many people at once from templates alone (no crops, like a seed import), in one transaction:
        how a big gallery is built without registering each person (bench/bench_cold_start.py builds 1M).
        Names must be new. Returns how many were added."""
        vectors = check_embeddings(templates, count=len(names))
        changes = IndexChanges()
        with self._transaction(changes) as db:
            self._check_same_model(fingerprint)
            changes.add_after(db)
            try:
                _insert_templates(db, zip((validate_name(n) for n in names), vectors), fingerprint)
            except sqlite3.IntegrityError:
                raise GalleryError("A name given to add_templates is already registered or repeated.") from None
        return len(names)

    # --- matching ------------------------------------------------------------------------------

    @db_errors
    def verify(self, name: str, embedding: np.ndarray, fingerprint: str) -> float:
        """1:1 cosine between `embedding` and `name`'s template."""
        q = query_vector(embedding)
        row = self._conn.execute(
            "SELECT t.fingerprint, t.vector FROM people p JOIN templates t ON t.person_id = p.id WHERE p.name = ?",
            (lookup_key(name),),
        ).fetchone()
        if row is None:
            self._require(name)  # raises the "no one named" error
            raise corrupt_database(self.db_path)  # a person without a template: our schema never writes that
        if row[0] != fingerprint:
            raise ModelMismatchError(mismatch_message(row[0], fingerprint))
        return float(cosines(from_blob(row[1], self.db_path), q, self.db_path)[0])

    @db_errors
    def identify(self, embedding: np.ndarray, fingerprint: str, k: int = 5) -> list[Match]:
        """1:N: the k best-matching people by cosine, best first (fewer if the gallery is smaller). The search
        index finds them; their scores are the database's own (`IndexCache.search`)."""
        if k < 1:
            raise GalleryError(f"k must be at least 1, not {k}.")
        q = query_vector(embedding)
        return [Match(name, score) for name, score in self._index.search(q, k, fingerprint)]

    @db_errors
    def template_sample(self, fingerprint: str, limit: int, seed: int = 0) -> tuple[np.ndarray, int]:
        """(up to `limit` templates of `fingerprint`, how many the gallery holds): `vectors.template_sample`.
        Their cross-person pairs are impostor comparisons of this model (`faceid.model.gallery_pairs`)."""
        total = int(self.fingerprints().get(fingerprint, 0))
        return template_sample(self._conn, self.db_path, fingerprint, total, limit, seed), total

    def best_other_match(self, embedding: np.ndarray, fingerprint: str, exclude_name: str) -> Match | None:
        """The best match that isn't `exclude_name` (for "this face already looks like X" at registration)."""
        exclude = lookup_key(exclude_name)
        return next((m for m in self.identify(embedding, fingerprint, k=2) if m.name != exclude), None)


def _remove_orphans(conn: sqlite3.Connection, samples_dir: Path) -> None:
    """Delete sample dirs with no committed sample rows (left by a crash before COMMIT or after a delete).

    Runs under the write lock so a registration in progress elsewhere is never mistaken for an orphan;
    if another process holds the lock we leave the cleanup to a later open (orphans are harmless).
    """
    folders = own_sample_dirs(samples_dir)  # only our own names: nothing else in samples/ is ours
    if not folders:
        return
    conn.execute("PRAGMA busy_timeout = 0")  # don't make `open` wait for a long reenroll elsewhere
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as err:
        if getattr(err, "sqlite_errorname", "").startswith("SQLITE_BUSY"):
            report.detail("Gallery busy; orphan sample cleanup postponed.")
            return
        raise
    finally:
        conn.execute(f"PRAGMA busy_timeout = {int(database.BUSY_TIMEOUT_S * 1000)}")
    try:
        live = {pid for (pid,) in conn.execute("SELECT DISTINCT person_id FROM samples")}
        for pid, folder in folders:
            if pid not in live:
                remove_sample_dir(folder)
    finally:
        conn.execute("ROLLBACK")  # nothing was written to the database


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _insert_templates(db: sqlite3.Connection, entries: Iterable[tuple[str, np.ndarray]], fingerprint: str) -> None:
    """Inside a write transaction: one person row and one template row per (valid name, normalised vector)."""
    now, entries = _now(), list(entries)
    db.executemany("INSERT INTO people (name, created) VALUES (?, ?)", ((name, now) for name, _ in entries))
    db.executemany(
        "INSERT INTO templates SELECT id, ?, ?, ?, ? FROM people WHERE name = ?",
        ((fingerprint, EMBEDDING_DIM, to_blob(vec), now, name) for name, vec in entries),
    )
