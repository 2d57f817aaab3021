"""The gallery's SQLite file: its schema, creating and opening it, its write transactions, its errors.

Why SQLite and not pickle: transactions (a registration is all-or-nothing), no code execution on
load, and one file we can check for corruption. Templates are float32 BLOBs with their dimension and
the fingerprint of the model that made them (`Embedder.fingerprint`); comparing a probe from another
model is refused (`ModelMismatchError`) until `Gallery.reenroll` recomputes them from the stored crops.

Deleted rows are overwritten in the file (``PRAGMA secure_delete``): biometric data should not
linger in free pages.

Every write runs in `write_transaction`, which also changes the search index's version
(`faceid.gallery.index_cache`) and leaves a ``.writing-<pid>`` marker for as long as it is open: a marker
whose process is gone (`crashed_writers`) means a writer died mid-transaction, and the gallery is checked.
"""

from __future__ import annotations

import contextlib
import functools
import os
import resource
import shutil
import sqlite3
from pathlib import Path
from typing import Callable, Iterator

from ..model.embeddings import EMBEDDING_DIM
from .files import MIN_FREE_BYTES, READ_ONLY, fsync_dir, make_private, storage_error
from .index_cache import bump_index_version
from .records import FILE_MODE, WRITE_MARKER, GalleryError, corrupt_database

APP_ID = "faceid-gallery"
SCHEMA_VERSION = 2  # 2: meta.index_version and the fingerprint index (1 is upgraded on open)
BUSY_TIMEOUT_S = 5.0
SQLITE_MAGIC = b"SQLite format 3\x00"

SCHEMA = f"""
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE people (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,   -- AUTOINCREMENT: a deleted person's id is never reused
    name    TEXT NOT NULL UNIQUE,                -- NFC-normalised, validated by `validate_name`
    created TEXT NOT NULL                        -- ISO 8601 UTC
);
CREATE TABLE templates (
    person_id   INTEGER PRIMARY KEY REFERENCES people(id) ON DELETE CASCADE,
    fingerprint TEXT NOT NULL,                   -- Embedder.fingerprint of the model that made it
    dim         INTEGER NOT NULL,
    vector      BLOB NOT NULL,                   -- float32 little-endian, L2-normalised
    updated     TEXT NOT NULL
);
CREATE INDEX templates_fingerprint ON templates(fingerprint);   -- model check without reading templates
CREATE TABLE samples (
    person_id INTEGER NOT NULL REFERENCES people(id) ON DELETE CASCADE,
    idx       INTEGER NOT NULL,                  -- crop file: samples/<person_id>/<idx>.jpg
    vector    BLOB NOT NULL,                     -- this sample's own embedding (same model as the template)
    PRIMARY KEY (person_id, idx)
);
INSERT INTO meta VALUES ('app', '{APP_ID}'), ('schema_version', '{SCHEMA_VERSION}');
"""
UPGRADE_1_TO_2 = "CREATE INDEX IF NOT EXISTS templates_fingerprint ON templates(fingerprint);"
REQUIRED_TABLES = {"meta", "people", "templates", "samples"}


# ----------------------------------------------------------------------------------------- errors


def translate(err: sqlite3.DatabaseError, db: Path) -> GalleryError:
    """Map an SQLite error to one user sentence: busy, read-only storage, a full disk, a file-size limit, an
    unusable file (disk/permissions), or corrupt."""
    code = getattr(err, "sqlite_errorname", "") or ""
    if code.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return GalleryError(f"The gallery {db} is busy (another faceid process is writing to it); try again.")
    if code.startswith("SQLITE_READONLY"):
        return GalleryError(f"Cannot write to the gallery database {db}: the gallery {READ_ONLY}.")
    if code.startswith(("SQLITE_FULL", "SQLITE_IOERR")):
        cause = _write_limit(db)
        if cause is not None:
            return GalleryError(f"Cannot write to the gallery database {db}: {cause}; the gallery is unchanged.")
    if code.startswith(("SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_IOERR", "SQLITE_FULL")):
        return GalleryError(f"Cannot use the gallery database {db} ({err}); check the disk and its permissions.")
    return corrupt_database(db)


def _write_limit(db: Path) -> str | None:
    """What stopped SQLite writing, when it says only "disk I/O error" or "database or disk is full": a file-size
    limit (``ulimit -f``, RLIMIT_FSIZE: the write fails with EFBIG) the gallery's files have reached, or a full
    disk; None when neither is the case."""
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    if soft != resource.RLIM_INFINITY:
        largest = max((p.stat().st_size for p in (db, Path(f"{db}-wal")) if p.exists()), default=0)
        if largest + MIN_FREE_BYTES >= soft:
            return f"a file-size limit (ulimit -f: {soft:,} bytes) stopped the write"
    try:
        free = shutil.disk_usage(db.parent).free
    except OSError:
        return None
    return f"the disk is full ({free:,} bytes free)" if free < MIN_FREE_BYTES else None


def db_errors(method):
    """Decorator for the methods of an object with a `db_path`: SQLite errors become GalleryError (`translate`),
    and so do the OSErrors of writing its files (read-only storage, a full disk, a file-size limit:
    `storage_error`); programming errors stay as they are."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except sqlite3.ProgrammingError:
            raise
        except sqlite3.DatabaseError as err:
            raise translate(err, self.db_path) from err
        except OSError as err:
            raise storage_error(err, f"use the gallery {self.db_path.parent}") from err

    return wrapper


# ----------------------------------------------------------------------------------------- the file


def create_db(db: Path) -> None:
    """Build a fresh database beside `db` and rename it into place: `db` never exists half-initialised."""
    tmp = db.with_name(f".{db.name}.new-{os.getpid()}")
    try:
        tmp.unlink(missing_ok=True)
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
        try:
            conn = sqlite3.connect(tmp, isolation_level=None)
            try:
                conn.executescript("BEGIN;" + SCHEMA + "COMMIT;")
                with conn:
                    bump_index_version(conn)
            finally:
                conn.close()
            os.replace(tmp, db)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        fsync_dir(db.parent)
    except OSError as err:
        raise storage_error(err, f"create the gallery database {db}") from None
    except sqlite3.DatabaseError as err:
        raise translate(err, db) from None


def check_header(db: Path) -> None:
    """Refuse files that aren't SQLite at all before SQLite sees them (an empty file would look like a new db)."""
    try:
        with open(db, "rb") as f:
            magic = f.read(len(SQLITE_MAGIC))
    except OSError as err:
        raise GalleryError(f"Cannot read the gallery database {db}: {err.strerror}.") from None
    if magic != SQLITE_MAGIC:
        raise corrupt_database(db)


def open_db(db: Path, limit: str | None) -> sqlite3.Connection:
    """The gallery database `db`, created if missing, checked to be SQLite, made private, and connected to;
    `limit` (`files.storage_limit`: read-only storage, a full disk): nothing is created or changed, and the
    connection is read-only."""
    if not db.exists():
        if limit is not None:
            raise GalleryError(f"There is no gallery in {db.parent}, and none can be made there: it {limit}.")
        create_db(db)
    check_header(db)
    if limit is None:
        for path in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
            if path.exists():
                make_private(path, FILE_MODE)
    return connect(db, read_only=limit is not None)


def connect(db: Path, read_only: bool = False) -> sqlite3.Connection:
    """Open `db` in autocommit mode (transactions are explicit), foreign keys and secure_delete on, WAL.

    `read_only` (read-only storage, a full disk): opened with SQLite's ``mode=ro``, which writes nothing, not even
    the ``-wal``/``-shm`` files WAL reading needs on writable storage; ``immutable=1`` too when no write-ahead
    log is left over (nothing else can be changing it then), so no lock file is needed either."""
    if read_only:
        return _connect_read_only(db)
    try:
        conn = sqlite3.connect(db, isolation_level=None, timeout=BUSY_TIMEOUT_S)
    except sqlite3.DatabaseError as err:
        raise translate(err, db) from err
    try:
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA secure_delete = ON")
        conn.execute("PRAGMA journal_mode = WAL")  # readers (the app) don't block a writer (register)
    except sqlite3.DatabaseError as err:
        conn.close()
        raise translate(err, db) from err
    return conn


def _connect_read_only(db: Path) -> sqlite3.Connection:
    wal = Path(f"{db}-wal")
    pending = wal.exists() and wal.stat().st_size > 0
    uri = db.resolve().as_uri() + ("?mode=ro" if pending else "?mode=ro&immutable=1")
    try:
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=BUSY_TIMEOUT_S)
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()  # opening is lazy: fail here, not later
    except sqlite3.DatabaseError as err:
        if pending:
            raise GalleryError(
                f"The gallery {db.parent} cannot be read where it is: its last write was not finished ({wal} "
                f"is left over) and nothing can be written there to finish it; open it once on writable storage."
            ) from None
        raise translate(err, db) from err
    return conn


def validate_schema(conn: sqlite3.Connection, db: Path) -> None:
    """Cheap checks (constant time at any size) that this is a gallery of a schema we understand."""
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not REQUIRED_TABLES <= tables:
        raise corrupt_database(db)
    meta = dict(conn.execute("SELECT key, value FROM meta"))
    if meta.get("app") != APP_ID or not str(meta.get("schema_version", "")).isdigit():
        raise corrupt_database(db)
    if int(meta["schema_version"]) > SCHEMA_VERSION:
        raise GalleryError(
            f"{db} was written by a newer faceid (schema {meta['schema_version']}); upgrade faceid to use it."
        )


def integrity_problems(conn: sqlite3.Connection, samples_dir: Path) -> list[str]:
    """The database's full check (reads everything): SQLite's quick_check, every person has one template of the
    right size, every sample row has its crop file under `samples_dir`. [] when intact."""
    problems = [f"SQLite: {r[0]}" for r in conn.execute("PRAGMA quick_check") if r[0] != "ok"]
    if problems:
        return problems
    missing = conn.execute(
        "SELECT COUNT(*) FROM people p LEFT JOIN templates t ON t.person_id = p.id "
        "WHERE t.person_id IS NULL OR length(t.vector) != ? OR t.dim != ?",
        (EMBEDDING_DIM * 4, EMBEDDING_DIM),
    ).fetchone()[0]
    if missing:
        problems.append(f"{missing} people have no valid template")
    for pid, idx in conn.execute("SELECT person_id, idx FROM samples"):
        crop = samples_dir / str(int(pid)) / f"{int(idx)}.jpg"
        if not crop.is_file():
            problems.append(f"the sample crop {crop} is missing")
            break
    return problems


def needs_upgrade(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] != str(SCHEMA_VERSION)


def upgrade(db: sqlite3.Connection) -> None:
    """Inside a write transaction: schema 1 -> 2 (the fingerprint index; the transaction adds the version)."""
    db.execute(UPGRADE_1_TO_2)
    db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))


# ----------------------------------------------------------------------------------------- writing


@contextlib.contextmanager
def write_transaction(
    conn: sqlite3.Connection, data_dir: Path, before_commit: Callable[[str, str], None] | None = None
) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE (take the write lock up front) ... new index version, COMMIT; any exception, Ctrl-C
    included, rolls back. A `.writing-<pid>` marker lives as long as the transaction (crash detection).
    `before_commit(old version, new version)` runs under the write lock just before COMMIT (the search index
    follows the write there: `index_cache.IndexCache.follow`)."""
    marker = data_dir / f"{WRITE_MARKER}{os.getpid()}"
    os.close(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, FILE_MODE))
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            old, new = bump_index_version(conn)
            if before_commit is not None:
                before_commit(old, new)
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    finally:
        marker.unlink(missing_ok=True)


def crashed_writers(data_dir: Path) -> list[Path]:
    """`.writing-<pid>` markers whose process no longer exists: it died inside a write transaction."""
    dead = []
    for marker in data_dir.glob(f"{WRITE_MARKER}*"):
        pid = marker.name[len(WRITE_MARKER) :]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            dead.append(marker)
        except PermissionError:
            pass  # alive, another user's
    return dead
