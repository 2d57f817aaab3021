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

Persistence is `faceid.gallery.index_file` (the file format, its checksums, appends and tombstones); a search
given `skip` never returns those rows (tombstones), and given `check_rows` has every candidate row it reads checked
(the file's row checks) before scoring it.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..core import report

EXACT_MAX = 20_000  # up to here exact numpy search takes a few ms; above it the sketch wins
SKETCH_BITS = 512
SKETCH_SEED = 20240401  # fixed so the projection is the same in every process (and in saved sketches)
RERANK = 4096  # candidates re-scored exactly (8 MB of reads); 1024 lost 2.5% of genuine probes at cos 0.4
_faiss_state: dict[str, Any] = {}
_planes: dict[int, np.ndarray] = {}


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


def sketch(x: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """(n, d) float32 -> (n, SKETCH_BITS / 8) uint8 sign bits of a random projection (SimHash). The hyperplanes are
    drawn from SKETCH_SEED, so every process (and every saved file) sketches alike."""
    x = np.asarray(x, dtype=np.float32)
    dim = x.shape[1]
    if dim not in _planes:
        _planes[dim] = np.random.default_rng(SKETCH_SEED).standard_normal((dim, SKETCH_BITS)).astype(np.float32)
    out = np.empty((len(x), SKETCH_BITS // 8), np.uint8)
    for i in range(0, len(x), chunk):
        out[i : i + chunk] = np.packbits(x[i : i + chunk] @ _planes[dim] > 0, axis=1)
    return out


class TemplateIndex:
    """Immutable search structure over an (n, d) matrix of L2-normalised float32 rows.

    Build once per gallery state; `search` returns exact cosines of the matrix's rows. `backend` says which path
    answers: "numpy-exact" or "faiss-sketch+rerank".
    """

    def __init__(
        self,
        matrix: np.ndarray,
        backend: str = "auto",
        rerank: int = RERANK,
        sketches: np.ndarray | None = None,
        skip: np.ndarray | None = None,
        check_rows: Callable[[np.ndarray, np.ndarray], None] | None = None,
    ):
        """`sketches`: this matrix's `sketch` computed earlier (a loaded file), so it is not recomputed. `skip`: a
        bool per row, True for rows no search may return (tombstones). `check_rows(rows, block)`: called with the
        rows the sketch path is about to score and their values (it raises when they are damaged); the exact path
        reads every row, so its caller checks them all once."""
        self.matrix = np.ascontiguousarray(matrix, dtype=np.float32)
        self.rerank = rerank
        self.skip = skip if skip is not None and skip.any() else None
        self._check_rows = check_rows
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

    def _build_sketch(self, sketches: np.ndarray | None):
        faiss = load_faiss()
        faiss.omp_set_num_threads(1)
        index = faiss.IndexBinaryFlat(SKETCH_BITS)
        if sketches is None or sketches.shape != (len(self.matrix), SKETCH_BITS // 8):
            sketches = sketch(self.matrix)
        self.sketches = sketches
        index.add(np.ascontiguousarray(sketches))
        return index

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """query (d,) L2-normalised -> (scores, rows) of the k best templates, best first (fewer if n < k)."""
        q = np.asarray(query, dtype=np.float32).reshape(-1)
        k = min(int(k), len(self.matrix))
        if k <= 0:
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        if self._sketch_index is None:
            scores = dot_rows(self.matrix, q)
            if self.skip is not None:
                scores[self.skip] = -np.inf
            rows = _top_k(scores, k)
            if self.skip is not None:
                rows = rows[~self.skip[rows]]
            return scores[rows], rows
        return self._search_sketch(self._sketch_index, q, k)

    def _search_sketch(self, sketch_index, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        n_cand = min(len(self.matrix), max(self.rerank, 8 * k))
        _, cand = sketch_index.search(sketch(q[None]), n_cand)
        cand = cand[0][cand[0] >= 0]
        if self.skip is not None:
            cand = cand[~self.skip[cand]]
        block = self.matrix[cand]  # read once: checked, then scored
        if self._check_rows is not None:
            self._check_rows(cand, block)
        scores = dot_rows(block, q)
        best = _top_k(scores, k)
        return scores[best], cand[best]
