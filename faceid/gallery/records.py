"""What every part of the gallery shares: its errors, its result types, its file names and modes, and the
sentences for a corrupt database and for templates of another model. The bottom module of the package: it
imports nothing else from it.

Layout of ``<data_dir>`` (0700; every file 0600, every directory 0700)::

    gallery.sqlite3 (+ -wal, -shm)    people, templates, samples (per-sample embeddings), meta
    samples/<person id>/<n>.jpg       the sample crops (RGB, JPEG q95); keyed by the integer id,
                                      never by the name, so no name can reach outside data_dir
    search_index.bin                  the 1:N search index (faceid.gallery.search_index), a cache of templates
    .writing-<pid>                    present while process <pid> is in a write transaction
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..core import report
from ..core.errors import FaceIDError

DB_NAME = "gallery.sqlite3"
SAMPLES_DIR = "samples"
INDEX_NAME = "search_index.bin"
WRITE_MARKER = ".writing-"  # + the writer's pid
DIR_MODE, FILE_MODE = 0o700, 0o600


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


def corrupt_database(db: Path) -> GalleryError:
    """The one sentence for a database that is not (or no longer) a gallery we wrote."""
    return GalleryError(f"{db} is not a valid gallery database (corrupt?); move it away or restore a backup.")


def mismatch_message(stored: str, loaded: str, name: str | None = None) -> str:
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
