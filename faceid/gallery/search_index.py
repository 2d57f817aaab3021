"""Top-k cosine search over a gallery's templates: exact numpy for small galleries, faiss for big ones.

Why two backends (measured with bench/bench_identify.py on the 2-core dev box): a query is one
(512,) vector against an (n, 512) float32 matrix, so exact search reads the whole matrix per query
and is bound by memory bandwidth: ~0.1 ms at 1k, ~15-40 ms at 100k and ~150 ms at 1M (2 GB).
No exact method reaches the 20 ms goal at 1M on this machine, faiss's flat index included.

Above `EXACT_MAX` rows we therefore use a two-stage search when faiss is installed:
1. a 512-bit SimHash sketch of every template (sign of a fixed random projection; the Hamming
   distance of two sketches estimates the angle between the vectors: P(bit differs) = angle / pi),
   scanned with faiss's binary flat index (64 MB at 1M, a few ms);
2. the `rerank` best candidates re-scored exactly in float32, so every returned score is an exact
   cosine and only the candidate set is approximate.
Measured at 1M random templates (bench): ~8 ms p50 per query instead of ~200 ms; a genuine probe
(cosine c to its template) is still ranked first in 100% of cases at c >= 0.5, 99.5% at 0.4, ~90% at
0.3 (random 512-d vectors are the hard case for hashing). For impostor probes the order among
near-zero scores may differ from exact search, which cannot change an accept/reject decision.

faiss is optional and imported lazily: without it large galleries fall back to exact numpy search
(correct, slower) and the log says so once.

Threads: a single query is too small to share out. On a busy 2-core machine, multi-threaded BLAS
(`matrix @ q`) and faiss's OpenMP pool spent most of their time waiting for descheduled worker
threads (a 1k x 512 matvec took 16 ms instead of 0.02 ms; faiss's binary scan of 30k sketches 24 ms
instead of 0.4 ms). So dot products use `np.einsum` (numpy's own single-threaded loop, no BLAS) and
faiss runs with one thread (`faiss.omp_set_num_threads(1)`, process-wide: nothing else here uses faiss).

Persistence (`TemplateIndex.save` / `load`): one file, so that a one-shot command does not rebuild the
index from every template (at 1M templates reading 2 GB of BLOBs from SQLite and sketching them takes
many seconds). Layout, all little-endian: 8-byte magic, uint32 header length, a JSON header (count, dim,
sketch bits and seed, and the caller's `extra`, e.g. the gallery version it was built from), then at
64-byte-aligned offsets the row ids (int64), the matrix (float32) and the sketches (uint8, only when the
sketch backend was used). `load` memory-maps it: a query touches the 64 MB of sketches and the 4,096
re-scored rows, not the 2 GB matrix, so opening is instant at any size. Anything inconsistent (size,
magic, header) makes `load` return None: the caller rebuilds; the file is never trusted beyond its checks.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np

from ..core import report

EXACT_MAX = 20_000  # up to here exact numpy search takes a few ms; above it the sketch wins
SKETCH_BITS = 512
SKETCH_SEED = 20240401  # fixed so the projection is the same in every process (and in saved sketches)
RERANK = 4096  # candidates re-scored exactly (8 MB of reads); 1024 lost 2.5% of genuine probes at cos 0.4
_faiss_state: dict[str, Any] = {}
INDEX_MAGIC = b"FACEIDX1"
INDEX_FORMAT = 1
_ALIGN = 64
_MAX_HEADER = 1 << 20


def load_faiss():
    """Import faiss once; None when it isn't installed (logged once, with what to do)."""
    if "module" not in _faiss_state:
        try:
            import faiss
        except ImportError:
            faiss = None
        _faiss_state["module"] = faiss
    return _faiss_state["module"]


def _warn_no_faiss(n: int) -> None:
    if not _faiss_state.get("warned"):
        _faiss_state["warned"] = True
        report.warn(
            f"faiss is not installed: searching {n} templates exactly with numpy (slower at this size; "
            f"`pip install faiss-cpu` makes it fast)."
        )


def dot_rows(matrix: np.ndarray, q: np.ndarray) -> np.ndarray:
    """matrix (n, d) . q (d,) -> (n,), single-threaded (see the module docstring for why not BLAS)."""
    return np.einsum("ij,j->i", matrix, q)


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest scores, best first; argpartition keeps it O(n), not O(n log n)."""
    if k < len(scores):
        idx = np.argpartition(-scores, k - 1)[:k]
    else:
        idx = np.arange(len(scores))
    return idx[np.argsort(-scores[idx], kind="stable")]


class TemplateIndex:
    """Immutable search structure over an (n, d) matrix of L2-normalised float32 rows.

    Build once per gallery state (the gallery drops it on any change); `search` returns exact cosines.
    `backend` says which path answers: "numpy-exact" or "faiss-sketch+rerank".
    """

    def __init__(
        self, matrix: np.ndarray, backend: str = "auto", rerank: int = RERANK, sketches: np.ndarray | None = None
    ):
        """`sketches`: this matrix's `sketch` computed earlier (a loaded file), so it is not recomputed."""
        self.matrix = np.ascontiguousarray(matrix, dtype=np.float32)
        self.rerank = rerank
        self._plane_matrix: np.ndarray | None = None
        self.backend = self._choose(backend)
        self.sketches: np.ndarray | None = None
        self._sketch_index = self._build_sketch(sketches) if self.backend == "faiss-sketch+rerank" else None

    def __len__(self) -> int:
        return len(self.matrix)

    def _choose(self, backend: str) -> str:
        if backend not in ("auto", "numpy-exact", "faiss-sketch+rerank"):
            raise ValueError(f"unknown backend {backend!r}")
        if backend != "auto":
            if backend != "numpy-exact" and load_faiss() is None:
                raise ValueError("backend faiss-sketch+rerank needs faiss (pip install faiss-cpu)")
            return backend
        if len(self.matrix) <= EXACT_MAX:
            return "numpy-exact"
        if load_faiss() is None:
            _warn_no_faiss(len(self.matrix))
            return "numpy-exact"
        return "faiss-sketch+rerank"

    def _planes(self) -> np.ndarray:
        """The random hyperplanes (d, SKETCH_BITS): drawn once per index from a fixed seed."""
        if self._plane_matrix is None:
            rng = np.random.default_rng(SKETCH_SEED)
            self._plane_matrix = rng.standard_normal((self.matrix.shape[1], SKETCH_BITS)).astype(np.float32)
        return self._plane_matrix

    def sketch(self, x: np.ndarray, chunk: int = 65536) -> np.ndarray:
        """(n, d) float32 -> (n, SKETCH_BITS / 8) uint8 sign bits of a random projection (SimHash)."""
        planes = self._planes()
        out = np.empty((len(x), SKETCH_BITS // 8), np.uint8)
        for i in range(0, len(x), chunk):
            out[i : i + chunk] = np.packbits(x[i : i + chunk] @ planes > 0, axis=1)
        return out

    def _build_sketch(self, sketches: np.ndarray | None):
        faiss = load_faiss()
        faiss.omp_set_num_threads(1)
        index = faiss.IndexBinaryFlat(SKETCH_BITS)
        if sketches is None or sketches.shape != (len(self.matrix), SKETCH_BITS // 8):
            sketches = self.sketch(self.matrix)
        self.sketches = sketches
        index.add(np.ascontiguousarray(sketches))
        return index

    # --- persistence (see the module docstring) -----------------------------------------------------

    def save(self, path: str | os.PathLike, ids: np.ndarray, extra: dict, mode: int = 0o600) -> None:
        """Write matrix, `ids` (one int64 per row) and sketches with `extra` in the header, atomically."""
        from ..core.fileio import atomic_write

        ids = np.ascontiguousarray(ids, dtype="<i8")
        if ids.shape != (len(self.matrix),):
            raise ValueError("one id per row")
        sketches = self.sketches if self.sketches is not None else np.zeros((0, SKETCH_BITS // 8), np.uint8)
        dim, sketch_bits = int(self.matrix.shape[1]), SKETCH_BITS if len(sketches) else 0
        header = {
            "format": INDEX_FORMAT,
            "count": len(self.matrix),
            "dim": dim,
            "sketch_bits": sketch_bits,
            "sketch_seed": SKETCH_SEED,
            "extra": extra,
        }
        blob = json.dumps(header).encode()
        offsets = _layout(len(blob), len(ids), dim, sketch_bits)

        def write(f) -> None:
            f.write(INDEX_MAGIC + struct.pack("<I", len(blob)) + blob)
            for offset, array in zip(offsets[:3], (ids, self.matrix.astype("<f4", copy=False), sketches)):
                f.write(b"\0" * (offset - f.tell()))
                if array.size:
                    np.ascontiguousarray(array).tofile(f)

        atomic_write(path, write, mode)

    @classmethod
    def load(cls, path: str | os.PathLike) -> tuple["TemplateIndex", np.ndarray, dict] | None:
        """(index, ids, extra) from a file written by `save`, memory-mapped; None when it is missing or
        inconsistent in any way (the caller then rebuilds)."""
        path = Path(path)
        try:
            with open(path, "rb") as f:
                start = f.read(len(INDEX_MAGIC) + 4)
                if len(start) < len(INDEX_MAGIC) + 4 or start[: len(INDEX_MAGIC)] != INDEX_MAGIC:
                    return None
                (hlen,) = struct.unpack("<I", start[len(INDEX_MAGIC) :])
                if hlen > _MAX_HEADER:
                    return None
                header = json.loads(f.read(hlen))
                size = os.fstat(f.fileno()).st_size
            count, dim, bits = (int(header[k]) for k in ("count", "dim", "sketch_bits"))
            if (
                header.get("format") != INDEX_FORMAT
                or count < 0
                or dim < 1
                or bits not in (0, SKETCH_BITS)
                or header.get("sketch_seed") != SKETCH_SEED
                or not isinstance(header.get("extra"), dict)
            ):
                return None
            ids_at, matrix_at, sketch_at, end = _layout(hlen, count, dim, bits)
            if size != end:
                return None
            mapped = lambda dtype, offset, shape: (
                np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)  # noqa: E731
                if count
                else np.zeros(shape, dtype)
            )
            ids = mapped("<i8", ids_at, (count,))
            matrix = mapped("<f4", matrix_at, (count, dim))
            sketches = mapped(np.uint8, sketch_at, (count, bits // 8)) if bits else None
        except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError):
            return None
        return cls(matrix, sketches=sketches), ids, header["extra"]

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """query (d,) L2-normalised -> (scores, rows) of the k best templates, best first (fewer if n < k)."""
        q = np.asarray(query, dtype=np.float32).reshape(-1)
        k = min(int(k), len(self.matrix))
        if k <= 0:
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        if self._sketch_index is None:
            scores = dot_rows(self.matrix, q)
            rows = _top_k(scores, k)
            return scores[rows], rows
        return self._search_sketch(self._sketch_index, q, k)

    def _search_sketch(self, sketch_index, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        n_cand = min(len(self.matrix), max(self.rerank, 8 * k))
        _, cand = sketch_index.search(self.sketch(q[None]), n_cand)
        cand = cand[0][cand[0] >= 0]
        scores = dot_rows(self.matrix[cand], q)
        best = _top_k(scores, k)
        return scores[best], cand[best]


def _aligned(n: int) -> int:
    return -(-n // _ALIGN) * _ALIGN


def _layout(header_len: int, count: int, dim: int, sketch_bits: int) -> tuple[int, int, int, int]:
    """Offsets of ids, matrix and sketches, and the file's total size."""
    ids_at = _aligned(len(INDEX_MAGIC) + 4 + header_len)
    matrix_at = _aligned(ids_at + 8 * count)
    sketch_at = _aligned(matrix_at + 4 * count * dim)
    return ids_at, matrix_at, sketch_at, sketch_at + count * sketch_bits // 8
