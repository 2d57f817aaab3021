"""Benchmark: evaluation images/s, the evaluator against the naive per-image loop, same images, one run.

1. baseline: for each pair, decode both images, run MTCNN on each one alone, crop, embed each one alone
             (no batching, no cache; an image in several pairs is processed each time).
2. evaluator: faceid.eval.evaluator on the same pairs: each unique image once, MTCNN and the network in batches,
             decode in a thread pool; with a fresh cache, which it fills.
3. cached:   the evaluator again over the same images: every embedding comes from the cache.

Throughput = pair images scored per second (2 x pairs / wall seconds): the same work from the user's view.
Both paths use the same detector, face choice, crop and weights; their accuracies are printed side by side.
Model load happens before timing. The ratio evaluator/baseline is printed last.

Usage: .venv/bin/python bench/bench_eval.py [--pairs-count 200] [--threads 1] [--weights W --crop aligned5]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from faceid.core.errors import run_cli  # noqa: E402
from faceid.eval.embed_cache import EmbedCache  # noqa: E402
from faceid.eval.evaluator import (  # noqa: E402
    FaceIDBackend,
    central_index,
    decode_file,
)
from faceid.eval.pairs import load_pairs_dataset  # noqa: E402
from faceid.eval.verification_metrics import verification_report  # noqa: E402
from faceid.eval.verification_run import evaluate_dataset  # noqa: E402

SHARED = ROOT.parent / "shared"
LFW = SHARED / "data/lfw"
STAND_IN = SHARED / "models/pins90_scratch_irv1_fp16.pt"


def naive_scores(backend: FaceIDBackend, dataset) -> np.ndarray:
    """The per-image loop: every pair's two images decoded, detected and embedded one at a time."""
    from tqdm import tqdm

    from faceid.model.preprocessing import center_crop

    pipe = backend.pipeline

    def embed_one(path: Path) -> np.ndarray:
        image = decode_file(path)
        dets = backend.detector.detect(image)
        if dets:
            crop = pipe.crop(image, dets[central_index([d.box for d in dets], *image.shape[:2])])
        else:
            crop = center_crop(image, pipe.spec)
        return pipe.embed_crops([crop], batch_size=1)[0]

    out = []
    for a, b in tqdm(dataset.index, desc="baseline (per image)", unit="pair", dynamic_ncols=True):
        out.append(float(embed_one(dataset.items[a]) @ embed_one(dataset.items[b])))
    return np.array(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", default=str(LFW / "pairsDevTest.txt"), help="LFW pairs file (default: View 1 DevTest).")
    p.add_argument("--images", default=str(LFW / "images"), help="LFW image root.")
    p.add_argument("--pairs-count", type=int, default=200, help="first N/2 same + N/2 different pairs (default 200).")
    p.add_argument("--weights", default=str(STAND_IN), help="backbone weights (default: the stand-in).")
    p.add_argument("--crop", default="aligned5", help="crop style of the weights (default: aligned5).")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads for both paths (default: torch's).")
    args = p.parse_args()

    import torch

    from faceid.eval.evaluator import load_faceid_backend

    if args.threads:
        torch.set_num_threads(args.threads)
    dataset = load_pairs_dataset(args.pairs, args.images, limit=args.pairs_count)
    backend = load_faceid_backend(weights=args.weights, crop=args.crop, device=args.device, batch_size=args.batch_size)
    n_pairs, n_unique = len(dataset.labels), len(dataset.items)
    print(
        f"{n_pairs} pairs of {args.pairs} ({2 * n_pairs} pair images, {n_unique} unique); weights "
        f"{args.weights} (crop {backend.embedder.spec.crop}, flip on); device {backend.embedder.device}, "
        f"torch threads {torch.get_num_threads()}"
    )
    backend.embed_images([decode_file(dataset.items[0])] * 2)  # warm-up: first-call allocations, lazy init

    t0 = time.perf_counter()
    base = naive_scores(backend, dataset)
    t_base = time.perf_counter() - t0

    with tempfile.TemporaryDirectory() as tmp, EmbedCache(Path(tmp) / "cache.sqlite") as cache:
        t0 = time.perf_counter()
        report, _ = evaluate_dataset(backend, dataset, cache, args.batch_size)
        t_eval = time.perf_counter() - t0
        ours = _scores(backend, dataset, cache)
        t0 = time.perf_counter()
        again, _ = evaluate_dataset(backend, dataset, cache, args.batch_size, progress=False)
        t_cached = time.perf_counter() - t0

    rate = lambda t: 2 * n_pairs / t  # noqa: E731
    base_acc = verification_report(base, dataset.labels, dataset.folds)["accuracy"]
    moved = int(np.sum(np.abs(base - ours) > 1e-4))
    print(
        f"same pipeline, same results: accuracy {base_acc:.3f} (baseline) vs {report['metrics']['accuracy']:.3f} "
        f"(evaluator); {moved} of {n_pairs} pair scores differ by > 1e-4 (max {np.max(np.abs(base - ours)):.3f}): "
        f"MTCNN's float results depend on the batch size, which can flip a borderline candidate box"
    )
    print(f"  baseline  (per image)      {t_base:8.2f} s  {rate(t_base):9.2f} pair images/s")
    print(
        f"  evaluator (batched, cold)  {t_eval:8.2f} s  {rate(t_eval):9.2f} pair images/s  "
        f"({n_unique / t_eval:.2f} unique images/s)"
    )
    print(
        f"  evaluator (cached rerun)   {t_cached:8.3f} s  {rate(t_cached):9.0f} pair images/s  "
        f"({again['speed']['from_cache']} of {n_unique} from cache)"
    )
    print(f"cached rerun / cold evaluator = {t_eval / t_cached:.0f}x faster")
    print(f"evaluator / baseline = {t_base / t_eval:.2f}x")
    return 0


def _scores(backend: FaceIDBackend, dataset, cache: EmbedCache) -> np.ndarray:
    """The evaluator's pair scores, read back from the cache it just filled."""
    from faceid.eval.evaluator import embed_items

    emb, _, _ = embed_items(backend, dataset, cache, progress=False)
    return backend.scores(emb[dataset.index[:, 0]], emb[dataset.index[:, 1]])


if __name__ == "__main__":
    run_cli(main)
