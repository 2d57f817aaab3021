"""The gallery: who is registered, their templates and sample crops, in a private data directory.

Layout of ``<data_dir>`` (0700; every file 0600, every directory 0700)::

    gallery.sqlite3 (+ -wal, -shm)    people, templates, samples (per-sample embeddings), meta
    samples/<person id>/<n>.jpg       the sample crops (RGB, JPEG q95); keyed by the integer id,
                                      never by the name, so no name can reach outside data_dir
    search_index.bin                  the 1:N search index (faceid.search_index), a cache of templates
    .writing-<pid>                    present while process <pid> is in a write transaction

The search index is saved beside the database so a one-shot `identify` does not rebuild it from every
template. It is kept in step by ``meta.index_version`` ("<counter>:<random>"), changed in the same
transaction as every write; the index file records the version it was built from, and an index whose
version differs (or that is missing or malformed) is rebuilt from the database, never trusted.
The random part means a database restored from a backup can never match an index built from another
history at the same counter.

Integrity checks (``PRAGMA quick_check``, rows vs sample files, an index rebuilt from scratch) read the
whole gallery, so they run on request (`Gallery.check`, ``faceid_app.py check``) and after a crash (a
``.writing-<pid>`` marker whose process is gone), not on every command.

Why SQLite and not pickle: transactions (a registration is all-or-nothing), no code execution on
load, and one file we can check for corruption. Templates are float32 BLOBs with their dimension and
the fingerprint of the model that made them (`Embedder.fingerprint`); comparing a probe from another
model is refused (`ModelMismatchError`) until `reenroll` recomputes them from the stored crops.

Crash safety of a registration (SIGKILL or Ctrl-C at any point leaves the gallery as it was):
sample files are written (and fsynced) into ``samples/<new id>/`` inside the SQLite write
transaction, before COMMIT. A directory under ``samples/`` whose id has no committed sample rows is
an orphan by definition, so a crash before COMMIT leaves only an orphan, which the next `open`
deletes; a crash after COMMIT leaves a complete registration (plus, for --replace, the old person's
directory as an orphan). Orphan cleanup runs inside a write transaction, so it never races with a
registration in progress in another process (that one holds the write lock).

Deleted rows are overwritten in the file (``PRAGMA secure_delete``): biometric data should not
linger in free pages.

The gallery touches only what it made. ``--data-dir`` must be a new folder, an empty one, or a gallery:
a folder that already holds other files (``--data-dir /tmp``, a home folder) is refused, never chmod-ed.
Inside it, a symlink where a gallery file or folder belongs is refused, files are opened with
``O_NOFOLLOW``, and clean-up deletes only its own names (``samples/<digits>/<digits>.jpg`` and the folder
holding them), never anything else someone put there.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import secrets
import sqlite3
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Iterator

import cv2
import numpy as np

from ..core import report
from ..core.errors import FaceIDError
from ..core.safe_pickle import NUMPY_ARRAYS, ForbiddenGlobal, restricted_load
from ..core.decode import DecodeError, decode_image
from ..model.embeddings import EMBEDDING_DIM, normalize_rows, template_of
from .search_index import TemplateIndex


DB_NAME = "gallery.sqlite3"
SAMPLES_DIR = "samples"
APP_ID = "faceid-gallery"
SCHEMA_VERSION = 2  # 2: meta.index_version and the fingerprint index (1 is upgraded on open)
MAX_NAME_LEN = 100
# Letters that render as blank space (Hangul fillers, braille blank, ...): no different from an empty cell.
INVISIBLE_LETTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800\u180e\u034f")
DIR_MODE, FILE_MODE = 0o700, 0o600
INDEX_NAME = "search_index.bin"
INDEX_VERSION_KEY = "index_version"
WRITE_MARKER = ".writing-"
BUSY_TIMEOUT_S = 5.0
JPEG_QUALITY = 95
MAX_CROP_BYTES = 4 << 20  # a stored crop is a ~10 KB JPEG of at most a few hundred pixels a side
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


class GalleryError(FaceIDError):
    """The gallery cannot do what was asked: corrupt database, unknown or duplicate name, bad input, ..."""


class ModelMismatchError(GalleryError):
    """Templates were made by another model than the one loaded; comparing them would be meaningless."""


@dataclass
class Person:
    id: int
    name: str
    created: str  # ISO 8601 UTC
    n_samples: int  # stored sample crops (0 for people imported from a seed pickle)
    fingerprint: str  # model that made the template


@dataclass
class Match:
    name: str
    score: float  # cosine similarity, -1..1


def _invisible(name: str, i: int) -> bool:
    """Would character i of `name` be invisible, or reorder what follows, so that two names look the same?

    Format characters (zero-width spaces, bidirectional overrides and isolates, LRM/RLM, BOM, soft hyphen),
    fillers that render blank, a variation selector after anything but a symbol, and spaces other than
    U+0020 are. Two joiners keep a real job: ZWJ inside an
    emoji sequence (a symbol on both sides, e.g. a family emoji) and ZWNJ between letters of scripts that
    use it (Persian, Indic); there they are allowed."""
    c = name[i]
    cat = unicodedata.category(c)
    before = unicodedata.category(name[i - 1]) if i > 0 else ""
    after = unicodedata.category(name[i + 1]) if i + 1 < len(name) else ""
    if c == "\u200d":
        return not ((before == "So" or name[i - 1] == "\ufe0f") and after == "So")
    if c == "\u200c":
        return not (before in ("Lo", "Mn", "Mc") and after in ("Lo", "Mn", "Mc"))
    if "\ufe00" <= c <= "\ufe0f":  # variation selectors: only meaningful after a symbol (emoji style)
        return before != "So"
    if cat == "Zs":
        return c != " "
    return cat == "Cf" or c in INVISIBLE_LETTERS


def display_name(name: str) -> str:
    """`name` as `list` shows it: invisible characters (see `_invisible`) written as \\uXXXX escapes, so a name
    registered before they were refused never looks like another person's."""
    return "".join(f"\\u{ord(c):04x}" if _invisible(name, i) else c for i, c in enumerate(name))


def validate_name(name: str, new: bool = True) -> str:
    """Return the canonical form of a person's name (NFC, stripped) or raise GalleryError saying why.

    Any script and emoji are allowed; control characters and line separators (they garble terminals and
    logs) are not, and a `new` name (registration, import) may not contain invisible or bidirectional-control
    characters either (`_invisible`): two people must never look the same in `list`. Looking up an existing
    name (new=False) allows them, so someone registered before this rule can still be verified or deleted.
    The name is only ever data: paths use ids.
    """
    if not isinstance(name, str):
        raise GalleryError(f"A name must be text, not {type(name).__name__}.")
    canon = unicodedata.normalize("NFC", name).strip()
    if not canon:
        raise GalleryError("The name is empty; give the person a name.")
    if len(canon) > MAX_NAME_LEN:
        raise GalleryError(f"The name is {len(canon)} characters long; use at most {MAX_NAME_LEN}.")
    bad = [c for c in canon if unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp")]
    if bad:
        raise GalleryError(f"The name contains a control character ({ascii(bad[0])}); use printable characters only.")
    hidden = [c for i, c in enumerate(canon) if _invisible(canon, i)] if new else []
    if hidden:
        raise GalleryError(
            f"The name contains an invisible or text-direction character (U+{ord(hidden[0]):04X} "
            f"{unicodedata.name(hidden[0], 'unnamed')}), so it could look exactly like another "
            f"name; type it without that character."
        )
    return canon


def _lookup_key(name: str) -> str:
    """The form names are stored in, for lookups: no validation (an invalid name simply isn't found)."""
    return unicodedata.normalize("NFC", name).strip()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _corrupt(db: Path) -> GalleryError:
    return GalleryError(f"{db} is not a valid gallery database (corrupt?); move it away or restore a backup.")


def _translate(err: sqlite3.DatabaseError, db: Path) -> GalleryError:
    """Map an SQLite error to one user sentence: busy, unusable file (disk/permissions), or corrupt."""
    code = getattr(err, "sqlite_errorname", "") or ""
    if code.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return GalleryError(f"The gallery {db} is busy (another faceid process is writing to it); try again.")
    if code.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_IOERR", "SQLITE_FULL")):
        return GalleryError(f"Cannot use the gallery database {db} ({err}); check the disk and its permissions.")
    return _corrupt(db)


def _db_errors(method):
    """Decorator: SQLite errors in a public method become GalleryError (programming errors stay as they are)."""

    @functools.wraps(method)
    def wrapper(self: "Gallery", *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except sqlite3.ProgrammingError:
            raise
        except sqlite3.DatabaseError as err:
            raise _translate(err, self.db_path) from err

    return wrapper


# ----------------------------------------------------------------------------------------- files


def _make_private(path: Path, mode: int) -> None:
    """Ensure `path` has no group/other permission bits; fix them (and say so) if we can, else refuse."""
    current = path.stat().st_mode & 0o777
    if current & ~mode & 0o777 == 0:
        return
    try:
        os.chmod(path, mode)
    except PermissionError:
        raise GalleryError(
            f"{path} is accessible to other users (mode {current:o}) and cannot be made private; "
            f"run `chmod {mode:o} {path}` as its owner."
        ) from None
    report.warn(f"Made {path} private (mode {current:o} -> {mode:o}): it holds biometric data.")


def _private_dir(path: Path) -> None:
    """Create `path` (0700) if needed; an existing one that is too open is fixed (callers make sure it is ours)."""
    try:
        path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    except OSError as err:
        raise GalleryError(f"Cannot create the data directory {path}: {err.strerror}.") from None
    if not path.is_dir():
        raise GalleryError(f"{path} exists and is not a directory; choose another data directory.", "data_dir")
    _make_private(path, DIR_MODE)


def _claim_data_dir(data_dir: Path) -> None:
    """Make sure `data_dir` is ours before anything in it is changed: new (created 0700), empty and owned by
    this user, or already a gallery. Anything else - a folder with other files, a shared sticky folder such
    as /tmp - is refused: changing its mode or cleaning it up would damage what others keep there."""
    db = data_dir / DB_NAME
    if data_dir.is_dir() and not (db.exists() or db.is_symlink()):
        st = data_dir.stat()
        foreign = next(iter(os.scandir(data_dir)), None) is not None
        shared = st.st_mode & 0o1000 or st.st_uid != os.getuid()
        if foreign or shared:
            why = "already holds other files" if foreign else "is a shared folder (sticky bit, or another owner)"
            raise GalleryError(
                f"{data_dir} {why} and is not a faceid gallery; choose a new or empty folder as the "
                f"data directory, e.g. {data_dir / 'faceid_data'}.",
                "data_dir",
            )
    _private_dir(data_dir)
    for name in (DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm", INDEX_NAME, SAMPLES_DIR):
        if (data_dir / name).is_symlink():
            raise GalleryError(
                f"{data_dir / name} is a symbolic link; a gallery keeps its own files in its own "
                f"folder - replace the link with the real {'folder' if name == SAMPLES_DIR else 'file'}."
            )


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_private_file(path: Path, data: bytes) -> None:
    """Create `path` 0600 (never overwriting, never through a link), write and fsync it: on disk before COMMIT."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


_SAMPLE_DIR_NAME = re.compile(r"[0-9]+")
_SAMPLE_FILE_NAME = re.compile(r"[0-9]+\.jpg")


def _remove(path: Path) -> None:
    """Delete a person's sample folder ``samples/<id>``: only the ``<n>.jpg`` files the gallery wrote, then the
    folder if that emptied it. A link is unlinked, never followed; anything else is left where it is."""
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
        return
    if not path.is_dir():
        return
    for entry in os.scandir(path):
        if _SAMPLE_FILE_NAME.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
            os.unlink(entry.path)
    try:
        path.rmdir()
    except OSError:
        report.warn(f"Left {path} in place: it holds files the gallery did not write.")


def _encode_jpeg(crop: np.ndarray) -> bytes:
    crop = np.asarray(crop)
    if crop.dtype != np.uint8 or crop.ndim != 3 or crop.shape[2] != 3 or min(crop.shape[:2]) < 1:
        raise GalleryError(f"A sample crop must be a uint8 HxWx3 RGB image, not {crop.dtype} {crop.shape}.")
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(crop, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise GalleryError("Could not encode a sample crop as JPEG.")
    return buf.tobytes()


def _decode_jpeg(path: Path) -> np.ndarray:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise GalleryError(f"The sample crop {path} is missing; re-register this person.") from None
    except OSError as err:  # ELOOP: a link where our file should be
        raise GalleryError(f"Cannot read the sample crop {path} ({err.strerror}); re-register this person.") from None
    with os.fdopen(fd, "rb") as f:
        data = f.read(MAX_CROP_BYTES + 1)
    if len(data) > MAX_CROP_BYTES:
        raise GalleryError(
            f"The sample crop {path} is larger than any crop the gallery writes; re-register this person."
        )
    try:
        return decode_image(data, f"the stored sample crop {path}")
    except DecodeError as err:
        raise GalleryError(f"{err} Re-register this person.") from None


def _check_embeddings(embeddings: np.ndarray, count: int | None = None) -> np.ndarray:
    """(N, 512) finite, non-zero -> float32, re-normalised; N must equal `count` when given."""
    emb = np.asarray(embeddings)
    if emb.ndim != 2 or emb.shape[1] != EMBEDDING_DIM or len(emb) == 0:
        raise GalleryError(f"Embeddings must have shape (N, {EMBEDDING_DIM}) with N >= 1, not {emb.shape}.")
    if count is not None and len(emb) != count:
        raise GalleryError(f"Got {count} crops but {len(emb)} embeddings; they must pair up one to one.")
    try:
        return normalize_rows(emb)
    except ValueError:
        raise GalleryError("An embedding is zero or not finite; the face could not be embedded.") from None


def _query_vector(embedding: np.ndarray) -> np.ndarray:
    return _check_embeddings(np.asarray(embedding).reshape(1, -1))[0]


def _blob(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


# ----------------------------------------------------------------------------------------- seed pickle


def load_seed_pickle(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read the seed's ``face_embeddings.pkl`` ({name: 512-d array}) safely -> {valid name: (512,) float32}."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = restricted_load(f, NUMPY_ARRAYS)  # the seed's format runs code otherwise
    except FileNotFoundError:
        raise GalleryError(f"The seed pickle {path} does not exist.") from None
    except ForbiddenGlobal as err:
        raise GalleryError(
            f"{path} is not a plain embeddings pickle (it refers to {err}); refusing to load it."
        ) from None
    except Exception as err:  # a damaged pickle raises many types (EOFError, ValueError, struct.error, ...)
        raise GalleryError(f"Cannot read the seed pickle {path}: {type(err).__name__}: {str(err)[:120]}.") from None
    if not isinstance(data, dict):
        raise GalleryError(f"{path} does not hold a {{name: embedding}} dictionary.")
    out: dict[str, np.ndarray] = {}
    for name, vec in data.items():
        arr = np.asarray(vec) if isinstance(vec, np.ndarray) else None
        if arr is None or arr.dtype.kind != "f" or arr.size != EMBEDDING_DIM:
            raise GalleryError(f"The entry {name!r} in {path} is not a {EMBEDDING_DIM}-d float embedding.")
        try:
            out[validate_name(name)] = _query_vector(arr)
        except GalleryError as err:
            raise GalleryError(f"Cannot import the entry {ascii(name)} of {path}: {err}") from None
    return out


# ----------------------------------------------------------------------------------------- gallery


class Gallery:
    """One open gallery. Not thread-safe: use it from one thread (processes may share a data dir)."""

    def __init__(self, data_dir: Path, conn: sqlite3.Connection):
        self.data_dir = data_dir
        self.db_path = data_dir / DB_NAME
        self.samples_dir = data_dir / SAMPLES_DIR
        self.index_path = data_dir / INDEX_NAME
        self._conn = conn
        # the search index of the gallery at `_index_version`: index, person id per row, {fingerprint: count}
        self._index: TemplateIndex | None = None
        self._index_ids: np.ndarray | None = None
        self._index_fingerprints: dict[str, int] = {}
        self._index_version: str | None = None

    # --- opening -------------------------------------------------------------------------------

    @classmethod
    def open(cls, data_dir: str | os.PathLike) -> "Gallery":
        """Open (creating if needed) the gallery in `data_dir`; check it is ours and intact; fix permissions."""
        data_dir = Path(data_dir).expanduser()
        _claim_data_dir(data_dir)
        db = data_dir / DB_NAME
        if not db.exists():
            _create_db(db)
        _check_header(db)
        for path in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
            if path.exists():
                _make_private(path, FILE_MODE)
        conn = _connect(db)
        gallery = cls(data_dir, conn)
        try:
            gallery._validate()
            _private_dir(gallery.samples_dir)
            if _crashed_writers(data_dir):
                report.warn(f"A faceid process stopped in the middle of writing to {db}; checking the gallery.")
                problems = gallery.check()
                if problems:
                    raise GalleryError(
                        f"{db} is damaged after a crash ({problems[0]}); restore a backup or move it away."
                    )
            gallery._upgrade()
            gallery._remove_orphans()
        except BaseException:
            conn.close()
            raise
        return gallery

    def close(self) -> None:
        self._conn.close()
        self._index = None

    def __enter__(self) -> "Gallery":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @_db_errors
    def _validate(self) -> None:
        """Cheap checks (constant time at any size) that this is a gallery of a schema we understand."""
        tables = {r[0] for r in self._conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not REQUIRED_TABLES <= tables:
            raise _corrupt(self.db_path)
        meta = dict(self._conn.execute("SELECT key, value FROM meta"))
        if meta.get("app") != APP_ID or not str(meta.get("schema_version", "")).isdigit():
            raise _corrupt(self.db_path)
        if int(meta["schema_version"]) > SCHEMA_VERSION:
            raise GalleryError(
                f"{self.db_path} was written by a newer faceid (schema "
                f"{meta['schema_version']}); upgrade faceid to use it."
            )

    @_db_errors
    def _upgrade(self) -> None:
        """Schema 1 -> 2 (an index version and the fingerprint index), once, in one write transaction."""
        if self._conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == str(
            SCHEMA_VERSION
        ):
            return
        with self._transaction() as db:
            db.execute(UPGRADE_1_TO_2)
            db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))

    @_db_errors
    def check(self) -> list[str]:
        """The full integrity check (reads everything; run on request or after a crash): SQLite's quick_check,
        every person has one template of the right size, every sample row has its crop file; then the search
        index is rebuilt from the database. Returns the problems found, [] when intact."""
        problems = [f"SQLite: {r[0]}" for r in self._conn.execute("PRAGMA quick_check") if r[0] != "ok"]
        if problems:
            return problems
        missing = self._conn.execute(
            "SELECT COUNT(*) FROM people p LEFT JOIN templates t ON t.person_id = p.id "
            "WHERE t.person_id IS NULL OR length(t.vector) != ? OR t.dim != ?",
            (EMBEDDING_DIM * 4, EMBEDDING_DIM),
        ).fetchone()[0]
        if missing:
            problems.append(f"{missing} people have no valid template")
        for pid, idx in self._conn.execute("SELECT person_id, idx FROM samples"):
            if not (self._person_dir(pid) / f"{int(idx)}.jpg").is_file():
                problems.append(f"the sample crop {self._person_dir(pid) / f'{int(idx)}.jpg'} is missing")
                break
        self.index_path.unlink(missing_ok=True)
        self._index = None
        if not problems:
            self._search_index(None)
        for marker in _crashed_writers(self.data_dir):
            marker.unlink(missing_ok=True)
        return problems

    @_db_errors
    def _remove_orphans(self) -> None:
        """Delete sample dirs with no committed sample rows (left by a crash before COMMIT or after a delete).

        Runs under the write lock so a registration in progress elsewhere is never mistaken for an orphan;
        if another process holds the lock we leave the cleanup to a later open (orphans are harmless).
        """
        entries = list(self.samples_dir.iterdir())
        if not entries:
            return
        self._conn.execute("PRAGMA busy_timeout = 0")  # don't make `open` wait for a long reenroll elsewhere
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as err:
            if getattr(err, "sqlite_errorname", "").startswith("SQLITE_BUSY"):
                report.detail("Gallery busy; orphan sample cleanup postponed.")
                return
            raise
        finally:
            self._conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        try:
            live = {pid for (pid,) in self._conn.execute("SELECT DISTINCT person_id FROM samples")}
            for entry in entries:  # only our own names: anything else in samples/ is not ours to delete
                if _SAMPLE_DIR_NAME.fullmatch(entry.name) and int(entry.name) not in live:
                    _remove(entry)
        finally:
            self._conn.execute("ROLLBACK")  # nothing was written to the database

    # --- transactions --------------------------------------------------------------------------

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE (take the write lock up front) ... new index version, COMMIT; any exception, Ctrl-C
        included, rolls back. A `.writing-<pid>` marker lives as long as the transaction (crash detection)."""
        marker = self.data_dir / f"{WRITE_MARKER}{os.getpid()}"
        os.close(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, FILE_MODE))
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
                _bump_index_version(self._conn)
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
        finally:
            marker.unlink(missing_ok=True)
        self._index = None

    def _person_dir(self, person_id: int) -> Path:
        return self.samples_dir / str(int(person_id))

    @_db_errors
    def check_model(self, fingerprint: str, exclude: str | None = None) -> None:
        """Refuse (ModelMismatchError) when templates here come from another model than `fingerprint`, leaving out
        `exclude` (someone about to be registered again): the app asks before it captures frames. The common case
        (every template from this model) is one grouped query, however big the gallery."""
        if set(self.fingerprints()) <= {fingerprint}:
            return
        other = next((p for p in self.people() if p.fingerprint != fingerprint and p.name != exclude), None)
        if other is not None:
            raise ModelMismatchError(_mismatch_message(other.fingerprint, fingerprint, other.name))

    def _check_same_model(self, fingerprint: str, exclude_id: int | None = None) -> None:
        """Refuse to mix models in one gallery: every template must come from `fingerprint`."""
        row = self._conn.execute(
            "SELECT fingerprint FROM templates WHERE fingerprint != ? AND person_id IS NOT ? LIMIT 1",
            (fingerprint, exclude_id),
        ).fetchone()
        if row:
            raise ModelMismatchError(_mismatch_message(row[0], fingerprint))

    # --- reading -------------------------------------------------------------------------------

    @_db_errors
    def people(self) -> list[Person]:
        """Everyone registered, by name."""
        return [Person(*row) for row in self._conn.execute(_PEOPLE_SQL + " GROUP BY p.id ORDER BY p.name")]

    @_db_errors
    def fingerprints(self) -> dict[str, int]:
        """{model fingerprint: number of templates}: a cheap model check (no need to list a big gallery). From
        the search index when it is current (constant time), else from the fingerprint index (one scan of it)."""
        if self._current_index() is not None:
            return dict(self._index_fingerprints)
        return dict(self._conn.execute("SELECT fingerprint, COUNT(*) FROM templates GROUP BY fingerprint"))

    @_db_errors
    def get(self, name: str) -> Person | None:
        row = self._conn.execute(_PEOPLE_SQL + " WHERE p.name = ? GROUP BY p.id", (_lookup_key(name),)).fetchone()
        return Person(*row) if row else None

    def _require(self, name: str) -> Person:
        person = self.get(name)
        if person is None:
            raise GalleryError(
                f"No one named {name!r} is registered; `{report.command('faceid_app.py')} list` shows who is."
            )
        return person

    @_db_errors
    def sample_crops(self, name: str) -> list[np.ndarray]:
        """The stored sample crops of `name` (uint8 RGB), in registration order."""
        return self._read_crops(self._require(name).id)

    def _read_crops(self, person_id: int) -> list[np.ndarray]:
        rows = self._conn.execute("SELECT idx FROM samples WHERE person_id = ? ORDER BY idx", (person_id,))
        return [_decode_jpeg(self._person_dir(person_id) / f"{int(i)}.jpg") for (i,) in rows]

    # --- writing -------------------------------------------------------------------------------

    @_db_errors
    def register(
        self,
        name: str,
        crops: list[np.ndarray],
        embeddings: np.ndarray,
        fingerprint: str,
        replace: bool = False,
    ) -> Person:
        """Add `name` with the normalised mean of `embeddings` as template, keeping crops and embeddings.

        All or nothing. A duplicate name is refused unless `replace`.
        """
        name = validate_name(name)
        emb = _check_embeddings(embeddings, count=len(crops))
        jpegs = [_encode_jpeg(c) for c in crops]  # encode before taking the write lock
        template = template_of(emb)
        new_dir: Path | None = None
        try:
            with self._transaction() as db:
                old = db.execute("SELECT id FROM people WHERE name = ?", (name,)).fetchone()
                if old and not replace:
                    raise GalleryError(f"{name!r} is already registered; replace it only if you mean to.", "replace")
                self._check_same_model(fingerprint, exclude_id=old[0] if old else None)
                if old:
                    db.execute("DELETE FROM people WHERE id = ?", old)
                pid = db.execute("INSERT INTO people (name, created) VALUES (?, ?)", (name, _now())).lastrowid
                assert pid is not None  # sqlite3 sets lastrowid after every successful INSERT
                new_dir = self._person_dir(pid)
                self._write_person(db, pid, jpegs, emb, template, fingerprint)
                # nothing more before COMMIT: the crash tests stop a registration at the end of _write_person
        except BaseException:
            if new_dir is not None:
                _remove(new_dir)
            raise
        if old:
            _remove(self._person_dir(old[0]))  # after COMMIT; a crash here leaves an orphan for `open`
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
        directory = self._person_dir(pid)
        if directory.exists() or directory.is_symlink():
            _remove(directory)  # an orphan from a crashed attempt that got the same id (its rows rolled back)
            if directory.exists():
                raise GalleryError(
                    f"{directory} holds files the gallery did not write; move them out of the gallery and try again."
                )
        directory.mkdir(mode=DIR_MODE)
        os.chmod(directory, DIR_MODE)
        for i, data in enumerate(jpegs):
            _write_private_file(directory / f"{i}.jpg", data)
        _fsync_dir(directory)
        _fsync_dir(self.samples_dir)
        db.execute(
            "INSERT INTO templates VALUES (?, ?, ?, ?, ?)", (pid, fingerprint, EMBEDDING_DIM, _blob(template), _now())
        )
        db.executemany("INSERT INTO samples VALUES (?, ?, ?)", [(pid, i, _blob(e)) for i, e in enumerate(emb)])

    @_db_errors
    def delete(self, name: str) -> bool:
        """Remove `name`'s rows and sample files; False when no one has that name."""
        with self._transaction() as db:
            row = db.execute("SELECT id FROM people WHERE name = ?", (_lookup_key(name),)).fetchone()
            if row:
                db.execute("DELETE FROM people WHERE id = ?", row)
        if row:
            _remove(self._person_dir(row[0]))
        return row is not None

    @_db_errors
    def reenroll(
        self, embed_crops: Callable[[list[np.ndarray]], np.ndarray], fingerprint: str, progress: bool = True
    ) -> int:
        """Recompute every template (and sample embedding) from the stored crops with the current model.

        One transaction: interrupted, the gallery keeps its old templates. People without stored crops
        (seed imports) whose template comes from another model cannot be recomputed: refused, naming them.
        Returns how many people were updated.
        """
        with self._transaction() as db:
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
            todo = [(pid, name) for pid, name, _, n in rows if n > 0]
            for pid, name in report.progress(todo, desc="re-enrolling", unit="person", enabled=progress):
                self._reembed(db, pid, name, embed_crops, fingerprint)
        return len(todo)

    def _reembed(
        self,
        db: sqlite3.Connection,
        pid: int,
        name: str,
        embed_crops: Callable[[list[np.ndarray]], np.ndarray],
        fingerprint: str,
    ) -> None:
        crops = self._read_crops(pid)
        emb = _check_embeddings(embed_crops(crops), count=len(crops))
        db.executemany(
            "UPDATE samples SET vector = ? WHERE person_id = ? AND idx = ?",
            [(_blob(e), pid, i) for i, e in enumerate(emb)],
        )
        db.execute(
            "UPDATE templates SET fingerprint = ?, dim = ?, vector = ?, updated = ? WHERE person_id = ?",
            (fingerprint, EMBEDDING_DIM, _blob(template_of(emb)), _now(), pid),
        )

    @_db_errors
    def import_seed_pickle(self, path: str | os.PathLike, fingerprint: str, replace: bool = False) -> int:
        """Import the seed's ``face_embeddings.pkl`` as templates made by `fingerprint` (no crops: n_samples 0).

        All or nothing; names already in the gallery are refused unless `replace`. Returns people imported.
        """
        entries = load_seed_pickle(path)
        with self._transaction() as db:
            clash = [n for n in entries if db.execute("SELECT 1 FROM people WHERE name = ?", (n,)).fetchone()]
            if clash and not replace:
                raise GalleryError(
                    f"{len(clash)} names in {path} are already registered (e.g. {clash[0]!r}); "
                    f"replace them only if you mean to.",
                    "replace",
                )
            old_ids = [r[0] for n in clash for r in db.execute("SELECT id FROM people WHERE name = ?", (n,))]
            db.executemany("DELETE FROM people WHERE id = ?", [(i,) for i in old_ids])
            self._check_same_model(fingerprint)
            _insert_templates(db, entries.items(), fingerprint)
        for i in old_ids:
            _remove(self._person_dir(i))
        return len(entries)

    @_db_errors
    def add_templates(self, names: list[str], templates: np.ndarray, fingerprint: str) -> int:
        """Add many people at once from templates alone (no crops, like a seed import), in one transaction:
        how a big gallery is built without registering each person (bench/bench_cold_start.py builds 1M).
        Names must be new. Returns how many were added."""
        vectors = _check_embeddings(templates, count=len(names))
        with self._transaction() as db:
            self._check_same_model(fingerprint)
            try:
                _insert_templates(db, zip((validate_name(n) for n in names), vectors), fingerprint)
            except sqlite3.IntegrityError:
                raise GalleryError("A name given to add_templates is already registered or repeated.") from None
        return len(names)

    # --- matching ------------------------------------------------------------------------------

    @_db_errors
    def verify(self, name: str, embedding: np.ndarray, fingerprint: str) -> float:
        """1:1 cosine between `embedding` and `name`'s template."""
        q = _query_vector(embedding)
        row = self._conn.execute(
            "SELECT t.fingerprint, t.vector FROM people p JOIN templates t ON t.person_id = p.id WHERE p.name = ?",
            (_lookup_key(name),),
        ).fetchone()
        if row is None:
            self._require(name)  # raises the "no one named" error
            raise _corrupt(self.db_path)  # a person without a template: our schema never writes that
        if row[0] != fingerprint:
            raise ModelMismatchError(_mismatch_message(row[0], fingerprint))
        return float(_vector(row[1], self.db_path) @ q)

    @_db_errors
    def identify(self, embedding: np.ndarray, fingerprint: str, k: int = 5) -> list[Match]:
        """1:N: the k best-matching people by cosine, best first (fewer if the gallery is smaller)."""
        if k < 1:
            raise GalleryError(f"k must be at least 1, not {k}.")
        q = _query_vector(embedding)
        index, ids = self._search_index(fingerprint)
        scores, rows = index.search(q, k)
        wanted = [int(ids[r]) for r in rows]
        names = (
            dict(self._conn.execute(f"SELECT id, name FROM people WHERE id IN ({','.join('?' * len(wanted))})", wanted))
            if wanted
            else {}
        )
        if len(names) != len(set(wanted)):  # the index is current, so this is a damaged database
            raise _corrupt(self.db_path)
        return [Match(names[i], float(s)) for s, i in zip(scores, wanted)]

    def best_other_match(self, embedding: np.ndarray, fingerprint: str, exclude_name: str) -> Match | None:
        """The best match that isn't `exclude_name` (for "this face already looks like X" at registration)."""
        exclude = _lookup_key(exclude_name)
        return next((m for m in self.identify(embedding, fingerprint, k=2) if m.name != exclude), None)

    def _version(self) -> str:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (INDEX_VERSION_KEY,)).fetchone()
        return row[0] if row else ""

    def _current_index(self) -> TemplateIndex | None:
        """The index of the gallery as it is now: kept in memory, else loaded from `index_path` when that file
        was built from this very version; None when neither is current."""
        version = self._version()
        if self._index is not None and self._index_version == version:
            return self._index
        loaded = TemplateIndex.load(self.index_path)
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
        self._index, self._index_ids, self._index_fingerprints, self._index_version = index, ids, counts, version
        return index

    def _search_index(self, fingerprint: str | None) -> tuple[TemplateIndex, np.ndarray]:
        """(index, person id per row), current with the database: loaded, or rebuilt and saved. `fingerprint`:
        the probe's model; templates of another model are refused."""
        if self._current_index() is None:
            self._rebuild_index()
        other = set(self._index_fingerprints) - {fingerprint}
        if fingerprint is not None and other:
            raise ModelMismatchError(_mismatch_message(sorted(other)[0], fingerprint))
        # both set together by _current_index() or _rebuild_index() just above
        assert self._index is not None and self._index_ids is not None
        return self._index, self._index_ids

    def _rebuild_index(self) -> None:
        """Read every template in one read transaction (a consistent snapshot and its version), build the
        index and save it beside the database (when that fails, e.g. a full disk, it is used from memory)."""
        self._conn.execute("BEGIN")
        try:
            version = self._version()
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
                    raise _corrupt(self.db_path)
                matrix[i] = _vector(blob, self.db_path)
                ids[i] = pid
                fingerprints[fp] = fingerprints.get(fp, 0) + 1
            if i + 1 != count:
                raise _corrupt(self.db_path)
        finally:
            self._conn.execute("COMMIT")
        index = TemplateIndex(matrix)
        try:
            index.save(self.index_path, ids, {INDEX_VERSION_KEY: version, "fingerprints": fingerprints}, FILE_MODE)
        except OSError as err:
            report.warn(
                f"Could not save the search index to {self.index_path} ({err.strerror}); the next command will "
                f"rebuild it."
            )
        self._index, self._index_ids, self._index_fingerprints, self._index_version = index, ids, fingerprints, version


_PEOPLE_SQL = (
    "SELECT p.id, p.name, p.created, (SELECT COUNT(*) FROM samples s WHERE s.person_id = p.id), "
    "COALESCE(t.fingerprint, '') FROM people p LEFT JOIN templates t ON t.person_id = p.id"
)


def _mismatch_message(stored: str, loaded: str, name: str | None = None) -> str:
    """The one sentence for templates of another model (`name`: whose, when known)."""
    what = (
        f"The gallery's templates were made by a different model (fingerprint {stored}) than the one loaded ({loaded})"
        if name is None
        else f"{name!r} was registered with another model (fingerprint {stored}, loaded {loaded})"
    )
    return (
        f"{what}; run `{report.command('faceid_app.py')} reenroll` to recompute them with the current model, or "
        f"pass the model they were registered with."
    )


def _vector(blob: bytes, db: Path) -> np.ndarray:
    if not isinstance(blob, bytes) or len(blob) != EMBEDDING_DIM * 4:
        raise _corrupt(db)
    return np.frombuffer(blob, dtype="<f4").astype(np.float32)


def _insert_templates(db: sqlite3.Connection, entries: Iterable[tuple[str, np.ndarray]], fingerprint: str) -> None:
    """Inside a write transaction: one person row and one template row per (valid name, normalised vector)."""
    now, entries = _now(), list(entries)
    db.executemany("INSERT INTO people (name, created) VALUES (?, ?)", ((name, now) for name, _ in entries))
    db.executemany(
        "INSERT INTO templates SELECT id, ?, ?, ?, ? FROM people WHERE name = ?",
        ((fingerprint, EMBEDDING_DIM, _blob(vec), now, name) for name, vec in entries),
    )


def _bump_index_version(db: sqlite3.Connection) -> None:
    """Inside a write transaction: a new "<counter + 1>:<random>" index version (see the module docstring)."""
    row = db.execute("SELECT value FROM meta WHERE key = ?", (INDEX_VERSION_KEY,)).fetchone()
    counter = row[0].split(":")[0] if row else "0"
    new = f"{int(counter) + 1 if counter.isdigit() else 1}:{secrets.token_hex(8)}"
    db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (INDEX_VERSION_KEY, new))


def _crashed_writers(data_dir: Path) -> list[Path]:
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


def _create_db(db: Path) -> None:
    """Build a fresh database beside `db` and rename it into place: `db` never exists half-initialised."""
    tmp = db.with_name(f".{db.name}.new-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
    try:
        conn = sqlite3.connect(tmp, isolation_level=None)
        try:
            conn.executescript("BEGIN;" + SCHEMA + "COMMIT;")
            with conn:
                _bump_index_version(conn)
        finally:
            conn.close()
        os.replace(tmp, db)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(db.parent)


def _check_header(db: Path) -> None:
    """Refuse files that aren't SQLite at all before SQLite sees them (an empty file would look like a new db)."""
    try:
        with open(db, "rb") as f:
            magic = f.read(len(SQLITE_MAGIC))
    except OSError as err:
        raise GalleryError(f"Cannot read the gallery database {db}: {err.strerror}.") from None
    if magic != SQLITE_MAGIC:
        raise _corrupt(db)


def _connect(db: Path) -> sqlite3.Connection:
    try:
        conn = sqlite3.connect(db, isolation_level=None, timeout=BUSY_TIMEOUT_S)
    except sqlite3.DatabaseError as err:
        raise _translate(err, db) from err
    try:
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA secure_delete = ON")
        conn.execute("PRAGMA journal_mode = WAL")  # readers (the app) don't block a writer (register)
    except sqlite3.DatabaseError as err:
        conn.close()
        raise _translate(err, db) from err
    return conn
