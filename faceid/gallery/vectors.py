"""Embeddings as the gallery takes and keeps them: checked (and made unit vectors) on the way in, stored as float32
little-endian BLOBs of `EMBEDDING_DIM` values, and refused as corrupt when a stored one has another size."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np

from ..model.embeddings import EMBEDDING_DIM, unit_rows
from .records import GalleryError, corrupt_database
from .search_index import dot_rows


def check_embeddings(embeddings: np.ndarray, count: int | None = None) -> np.ndarray:
    """(N, 512) finite, non-zero -> float32 unit vectors (`embeddings.unit_rows`: the network's own output is
    kept bit for bit); N must equal `count` when given."""
    emb = np.asarray(embeddings)
    if emb.ndim != 2 or emb.shape[1] != EMBEDDING_DIM or len(emb) == 0:
        raise GalleryError(f"Embeddings must have shape (N, {EMBEDDING_DIM}) with N >= 1, not {emb.shape}.")
    if count is not None and len(emb) != count:
        raise GalleryError(f"Got {count} crops but {len(emb)} embeddings; they must pair up one to one.")
    try:
        return unit_rows(emb)
    except ValueError:
        raise GalleryError("An embedding is zero or not finite; the face could not be embedded.") from None


def query_vector(embedding: np.ndarray) -> np.ndarray:
    """One embedding (any shape holding 512 values), checked and normalised -> (512,) float32."""
    return check_embeddings(np.asarray(embedding).reshape(1, -1))[0]


def to_blob(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


def from_blob(blob: bytes, db: Path) -> np.ndarray:
    """A stored vector of database `db` -> (512,) float32; anything else there means the database is damaged."""
    if not isinstance(blob, bytes) or len(blob) != EMBEDDING_DIM * 4:
        raise corrupt_database(db)
    return np.frombuffer(blob, dtype="<f4").astype(np.float32)


def template_sample(
    conn: sqlite3.Connection, db: Path, fingerprint: str, total: int, limit: int, seed: int = 0
) -> np.ndarray:
    """(<= limit, 512) templates of `fingerprint` read from the database: every one when it holds no more than
    `limit` (`total` of them), else a seeded sample by id, so a million-template gallery reads about `limit`
    rows, not all of them."""
    query = "SELECT vector FROM templates WHERE fingerprint = ?"
    if total <= limit:
        rows = conn.execute(query, (fingerprint,)).fetchall()
    else:
        low, high = conn.execute("SELECT MIN(person_id), MAX(person_id) FROM templates").fetchone()
        span = int(high) - int(low) + 1
        ids = np.sort(np.random.default_rng(seed).choice(span, size=min(span, 2 * limit), replace=False) + low)
        rows = []
        for start in range(0, len(ids), 500):
            chunk = [int(i) for i in ids[start : start + 500]]
            rows += conn.execute(f"{query} AND person_id IN ({','.join('?' * len(chunk))})", (fingerprint, *chunk))
            if len(rows) >= limit:
                break
        rows = rows[:limit]
    if not rows:
        return np.zeros((0, EMBEDDING_DIM), np.float32)
    return np.stack([from_blob(r[0], db) for r in rows])


UNIT_TOLERANCE = 1e-3  # a stored template's norm may differ from 1 by float32 rounding, never by more


def cosines(vectors: np.ndarray, q: np.ndarray, db: Path) -> np.ndarray:
    """Cosines of stored templates `vectors` (n, 512) with the unit probe `q`, cosines by construction: every
    template must be finite and of unit length (else the database is damaged: `corrupt_database`), and the dot
    products are clipped to [-1, 1] (float32 rounding can pass 1 by an ulp)."""
    vectors = np.asarray(vectors, np.float32).reshape(-1, EMBEDDING_DIM)
    norms = np.linalg.norm(vectors.astype(np.float64), axis=1)
    if not np.all(np.isfinite(norms)) or np.any(np.abs(norms - 1.0) > UNIT_TOLERANCE):
        raise corrupt_database(db)
    return np.clip(dot_rows(vectors, np.asarray(q, np.float32)), -1.0, 1.0)
