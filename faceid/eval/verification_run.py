"""The 1:1 run: a pair set embedded by the evaluator, every pair scored, the verification metrics, the report.

`run_evaluation` is evaluate_model.py's pairs mode (an LFW pairs file with its image folder, or an insightface
``.bin``): check the inputs, load the model, `evaluate_dataset`, write the JSON report and the ROC plot.

Scores: cosine similarity of the two embeddings (higher = more alike). Metrics: 10-fold accuracy
(threshold chosen on the other folds), ROC AUC, EER, TAR at FAR 1e-3 / 1e-2, see ``verification_metrics``.

Neighbours: `pairs` reads the pair set, `evaluator` embeds its images, `report` prints and writes the result;
the folder-of-people runs are `open_set` (1:N) and `calibrate`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..core.defaults import EVAL_DIR
from ..core.errors import FaceIDError
from .embed_cache import EmbedCache, bytes_key
from .evaluator import MISS_RULE, Backend, check_headers, embed_items, keep_freed_memory, load_faceid_backend
from .pairs import Dataset, load_bin_dataset, load_pairs_dataset
from .report import write_outputs
from .verification_metrics import roc_curve, verification_report


def evaluate_dataset(
    backend: Backend,
    dataset: Dataset,
    cache: EmbedCache | None = None,
    batch_size: int = 64,
    workers: int = 2,
    progress: bool = True,
) -> tuple[dict, tuple[np.ndarray, np.ndarray]]:
    """Embed, score every pair, and build the JSON-ready report; also returns the ROC (fpr, tpr)."""
    embeddings, infos, stats = embed_items(backend, dataset, cache, batch_size, workers, progress)
    scores = backend.scores(embeddings[dataset.index[:, 0]], embeddings[dataset.index[:, 1]]).astype(np.float64)
    metrics = verification_report(scores, dataset.labels, dataset.folds)
    fpr, tpr, _ = roc_curve(scores, dataset.labels)
    names = [str(x) if isinstance(x, Path) else bytes_key(x)[0][:19] for x in dataset.items]
    missed = [names[i] for i, info in enumerate(infos) if info.get("detected") is False]
    report: dict[str, Any] = {
        "dataset": {
            "kind": dataset.kind,
            "pairs": int(len(dataset.labels)),
            "unique_images": len(dataset.items),
            **dataset.describe,
        },
        "model": backend.describe(),
        "metrics": metrics,
        "detector": {
            "misses": len(missed),
            "missed_images": missed,
            "rule": backend.describe().get("miss_rule", MISS_RULE)
            if dataset.kind == "lfw-pairs"
            else "not applicable: detection skipped for pre-aligned crops",
            "multiple_faces": sum(1 for info in infos if (info.get("faces") or 0) > 1),
        },
        "speed": stats,
        "pair_scores": [
            {"a": names[i], "b": names[j], "same": bool(same), "fold": int(fold), "score": round(float(sc), 6)}
            for (i, j), same, fold, sc in zip(dataset.index, dataset.labels, dataset.folds, scores)
        ],
    }
    describe = report["model"]
    if "threshold" in describe:  # how the threshold the app would use fares on these pairs
        t = float(describe["threshold"])
        accepted = scores >= t
        report["app_threshold"] = {
            "threshold": t,
            "calibrated": bool(describe.get("threshold_calibrated")),
            "accuracy": float(np.mean(accepted == dataset.labels)),
            "far": float(np.mean(accepted[~dataset.labels])),
            "tar": float(np.mean(accepted[dataset.labels])),
        }
    return report, (fpr, tpr)


def run_evaluation(
    pairs: str | None = None,
    images: str | None = None,
    bin_path: str | None = None,
    model: str | None = None,
    weights: str | None = None,
    crop: str | None = None,
    flip: bool = True,
    folds: int = 10,
    batch_size: int = 64,
    device: str | None = None,
    cache_path: str | None = None,
    out_dir: str | os.PathLike = EVAL_DIR,
    limit: int | None = None,
    threads: int | None = None,
    progress: bool = True,
) -> dict:
    """Validate inputs, load the model, evaluate, write <out_dir>/<stem>_report.json + _roc.png; return the report."""
    if bool(pairs) == bool(bin_path):
        raise FaceIDError("Give either a pairs file with its image folder, or a .bin file.", "pairs", "images", "bin")
    if pairs and not images:
        raise FaceIDError("A pairs file needs its image folder (the one that holds <Name>/<Name>_NNNN.jpg).", "images")
    if folds < 2 or batch_size < 1:
        raise FaceIDError(
            f"The folds must be at least 2 and the batch size at least 1, got {folds} and {batch_size}.",
            "folds",
            "batch_size",
        )
    if bin_path:
        dataset = load_bin_dataset(bin_path, folds, limit)
    else:
        assert pairs and images  # checked above: without a .bin, a pairs file and its image folder
        dataset = load_pairs_dataset(pairs, images, folds, limit)
    check_headers(dataset)
    keep_freed_memory()
    if threads:
        import torch

        torch.set_num_threads(threads)
    backend = load_faceid_backend(model, weights, crop, device, flip, batch_size)
    cache = EmbedCache(cache_path) if cache_path else None
    try:
        report, roc = evaluate_dataset(backend, dataset, cache, batch_size, progress=progress)
    finally:
        if cache:
            cache.close()
    report["speed"]["cache"] = cache_path
    return write_outputs(report, {f"faceid ({Path(backend.embedder.source).name})": roc}, out_dir, dataset.name)
