"""Benchmark 1:N identification: per-query latency against galleries of synthetic templates.

    .venv/bin/python bench/bench_identify.py                      # 1k, 100k, 1M (needs ~5 GB RAM at 1M)
    .venv/bin/python bench/bench_identify.py --sizes 1000 100000  # quicker

Methods, per gallery size n (random L2-normalised 512-d float32 templates):
  seed-loop   the seed's approach: a Python loop computing one cosine per stored embedding
              (only a few queries at large n: it takes seconds per query; the count is printed)
  numpy-full  one float32 matmul against the whole matrix + a full argsort (the obvious rewrite)
  index       faceid.gallery.search_index.TemplateIndex as the gallery uses it (backend chosen by size)
  gallery     (n <= --gallery-max) Gallery.identify end to end: SQLite-backed, names, model check

Latency probes: half "genuine" (cosine --genuine-cos to a random template, like a new photo of a
registered person), half random "impostors". Quality of the index against exact search:
  genuine@1   share of genuine probes at cosine c whose true template is ranked first (what
              identification needs; exact search gets 1.000 at these cosines: random templates
              score ~0 +- 0.044 against a probe, and at most ~0.25 over 1M)
  impostors   random probes: same top-1 / top-5 overlap as exact search, and the best exact score
              (these rankings are among near-zero scores: they cannot change an accept/reject)
Latencies are wall-clock per single query (p50/p95 ms), on whatever else the machine is running.
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from faceid.gallery.search_index import TemplateIndex, load_faiss  # noqa: E402
from faceid.gallery.store import Gallery  # noqa: E402

DIM = 512


def unit_rows(rng: np.random.Generator, n: int, chunk: int = 131072) -> np.ndarray:
    """(n, DIM) float32 random unit vectors, generated in chunks to keep the peak at the matrix size."""
    out = np.empty((n, DIM), np.float32)
    for i in range(0, n, chunk):
        block = rng.standard_normal((min(chunk, n - i), DIM), dtype=np.float32)
        out[i : i + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def make_probes(rng: np.random.Generator, gallery: np.ndarray, count: int, cos: float):
    """Half genuine probes (cosine `cos` to a known template), half random; returns probes, targets (-1 = none)."""
    n_gen = count // 2
    targets = np.concatenate([rng.integers(0, len(gallery), n_gen), -np.ones(count - n_gen, np.int64)])
    noise = unit_rows(rng, count)
    probes = noise.copy()
    probes[:n_gen] = cos * gallery[targets[:n_gen]] + np.sqrt(1 - cos**2) * noise[:n_gen]
    probes /= np.linalg.norm(probes, axis=1, keepdims=True)
    return probes, targets


def seed_loop(gallery: np.ndarray, q: np.ndarray, k: int = 5):
    """The seed's identification: one cosine per stored embedding in a Python loop, then sort."""
    scores = []
    for i, emb in enumerate(gallery):
        scores.append((float(np.dot(q, emb) / (np.linalg.norm(q) * np.linalg.norm(emb))), i))
    scores.sort(reverse=True)
    return scores[:k]


def numpy_full(gallery: np.ndarray, q: np.ndarray, k: int = 5):
    scores = gallery @ q
    order = np.argsort(-scores)[:k]
    return scores[order], order


def time_queries(fn, probes: np.ndarray) -> np.ndarray:
    """Per-query wall time in ms (one warm-up call first)."""
    fn(probes[0])
    times = []
    for q in probes:
        t0 = time.perf_counter()
        fn(q)
        times.append((time.perf_counter() - t0) * 1e3)
    return np.array(times)


def genuine_recall(
    index: TemplateIndex, gallery: np.ndarray, rng: np.random.Generator, cos: float, count: int
) -> float:
    """Share of genuine probes (cosine `cos` to their template) whose template the index ranks first."""
    probes, targets = make_probes(rng, gallery, 2 * count, cos)
    return float(np.mean([index.search(q, 1)[1][0] == t for q, t in zip(probes[:count], targets[:count])]))


def impostor_agreement(index: TemplateIndex, gallery: np.ndarray, probes: np.ndarray) -> dict:
    """For random probes: agreement with exact search, and the best exact score (how far below any threshold)."""
    top1 = top5 = 0.0
    best = -1.0
    for q in probes:
        _, rows = index.search(q, 5)
        scores, exact = numpy_full(gallery, q)
        top1 += rows[0] == exact[0]
        top5 += len(set(rows) & set(exact)) / 5
        best = max(best, float(scores[0]))
    return {"exact@1": top1 / len(probes), "exact@5": top5 / len(probes), "max score": best}


def gallery_latency(gallery: np.ndarray, probes: np.ndarray) -> tuple[float, np.ndarray]:
    """Import the templates into a throwaway Gallery; return (first-identify seconds, per-query ms)."""
    with tempfile.TemporaryDirectory() as tmp:
        seed = Path(tmp) / "seed.pkl"
        seed.write_bytes(pickle.dumps({f"person {i}": v for i, v in enumerate(gallery)}))
        with Gallery.open(Path(tmp) / "data") as g:
            g.import_seed_pickle(seed, "bench")
        with Gallery.open(Path(tmp) / "data") as g:
            t0 = time.perf_counter()
            g.identify(probes[0], "bench")
            first = time.perf_counter() - t0
            return first, time_queries(lambda q: g.identify(q, "bench", k=5), probes)


def fmt(ms: np.ndarray) -> str:
    return f"p50 {np.percentile(ms, 50):9.3f}  p95 {np.percentile(ms, 95):9.3f}"


def bench_size(n: int, args, rng: np.random.Generator) -> dict:
    t0 = time.perf_counter()
    gallery = unit_rows(rng, n)
    probes, targets = make_probes(rng, gallery, args.queries, args.genuine_cos)
    print(
        f"\n== n = {n:,}  ({gallery.nbytes / 2**20:,.0f} MiB float32; generated in {time.perf_counter() - t0:.1f} s)",
        flush=True,
    )
    res = {}
    n_loop = max(3, min(len(probes), args.loop_budget // n))
    res["seed-loop"] = time_queries(lambda q: seed_loop(gallery, q), probes[:n_loop])
    print(f"  seed-loop   {fmt(res['seed-loop'])} ms   ({n_loop} queries)", flush=True)
    res["numpy-full"] = time_queries(lambda q: numpy_full(gallery, q), probes)
    print(f"  numpy-full  {fmt(res['numpy-full'])} ms", flush=True)
    t0 = time.perf_counter()
    index = TemplateIndex(gallery)
    build = time.perf_counter() - t0
    res["index"] = time_queries(lambda q: index.search(q, 5), probes)
    extra = f"; sketch {n * 64 / 2**20:,.0f} MiB" if index.backend.startswith("faiss") else ""
    print(f"  index       {fmt(res['index'])} ms   backend {index.backend}, built in {build:.1f} s{extra}")
    rec = {c: genuine_recall(index, gallery, rng, c, args.recall_queries) for c in args.recall_cos}
    print("  genuine@1   " + "  ".join(f"cos {c}: {v:.3f}" for c, v in rec.items()), flush=True)
    imp = impostor_agreement(index, gallery, probes[targets < 0][: args.recall_queries])
    print("  impostors   " + "  ".join(f"{k} {v:.3f}" for k, v in imp.items()), flush=True)
    if n <= args.gallery_max:
        first, res["gallery"] = gallery_latency(gallery, probes)
        print(f"  gallery     {fmt(res['gallery'])} ms   (first identify incl. loading: {first:.2f} s)")
    return res


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--recall-queries", type=int, default=200)
    parser.add_argument(
        "--recall-cos",
        type=float,
        nargs="+",
        default=[0.3, 0.4, 0.5, 0.6],
        help="cosines of the genuine probes used to measure the index's recall",
    )
    parser.add_argument("--genuine-cos", type=float, default=0.5)
    parser.add_argument(
        "--loop-budget",
        type=int,
        default=2_000_000,
        help="seed-loop: about this many cosines in total per size (>= 3 queries)",
    )
    parser.add_argument("--gallery-max", type=int, default=100_000, help="end-to-end Gallery runs up to this n")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(
        f"cpus {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}, numpy {np.__version__}, "
        f"faiss {getattr(load_faiss(), '__version__', 'not installed')}"
    )
    rng = np.random.default_rng(args.seed)
    results = {n: bench_size(n, args, rng) for n in args.sizes}
    print("\n== speed-up of the index (p50 latency ratio; > 1 = index faster)")
    for n, res in results.items():
        p50 = {k: np.percentile(v, 50) for k, v in res.items()}
        print(
            f"  n = {n:>9,}:  vs seed-loop x{p50['seed-loop'] / p50['index']:,.0f}   "
            f"vs numpy-full x{p50['numpy-full'] / p50['index']:,.1f}   index p50 {p50['index']:.2f} ms"
        )


if __name__ == "__main__":
    main()
