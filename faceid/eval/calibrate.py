"""The calibration run (evaluate_model.py --calibrate): a score->FAR table for weights without one.

The app's comparisons (template of 5 vs probe of 3, and the one-photo kinds: `faceid.model.heldout`) on
held-out people -> a score->FAR table per kind, each with its margin (`faceid.model.calibration`), tied to the
weights' fingerprint, for the app and the evaluator to read with --calibration. Benchmark folders (LFW) are refused unless explicitly allowed, and then the table is stamped
as benchmark data.

Neighbours: `people` reads and embeds the folder; `open_set` is the other run on folders of people (it
reports what the table's thresholds give at each gallery size); training's validation builds the same table
on its held-out people.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..core.errors import FaceIDError
from ..model.benchmark import benchmark_reason
from ..model.calibration import write_calibration_file
from ..model.heldout import build_tables
from .embed_cache import EmbedCache
from .evaluator import keep_freed_memory
from .people import embed_people, load_people


def check_not_benchmark(folder: str | os.PathLike, allow: bool) -> bool:
    """Refuse (one sentence) to calibrate on benchmark data unless allowed; True when it is benchmark data."""
    reason = benchmark_reason(Path(folder))
    if reason and not allow:
        raise FaceIDError(
            f"Refusing to calibrate on {folder}: {reason}, and benchmark data must stay test data; "
            f"calibrate on held-out people, or allow tuning on benchmark data to do it anyway "
            f"(stamped in the table).",
            "tune_on_benchmark",
        )
    return reason is not None


def run_calibration(
    backend,
    folder: str | os.PathLike,
    out_path: str | os.PathLike,
    cache: EmbedCache | None = None,
    allow_benchmark: bool = False,
    batch_size: int = 64,
    progress: bool = True,
) -> dict:
    """Calibrate `backend` on the people under `folder`; write the table file; return its summary."""
    benchmark = check_not_benchmark(folder, allow_benchmark)
    dataset, labels, names = load_people(folder)
    keep_freed_memory()  # as the pairs run: without it, a cold run spends a fifth of its time in the kernel
    emb, stats, misses = embed_people(backend, dataset, cache, batch_size, progress)

    def source(counts: dict) -> str:
        return (
            f"{counts['identities']} people in {Path(folder).name}/ ({counts['templates']} templates, "
            f"{counts['probes']} probes)"
        )

    table, counts = build_tables(emb, labels, source, benchmark_data=benchmark)
    summary = {
        **table.summary(),
        "counts": counts,
        "folder": str(folder),
        "speed": stats,
        "detector_misses": misses,
    }
    write_calibration_file(out_path, table, backend.embedder.fingerprint, summary)
    return {**summary, "written": str(out_path)}


def format_calibration(summary: dict) -> str:
    """The lines printed after a calibration run: per comparison kind, the comparisons counted and the margin,
    then one line per FAR of its table."""
    out = []
    for kind in summary["kinds"]:
        margin = kind["margin"]
        margin_line = (
            f"  margin {margin['value']:.4f} (95% of {margin['pairs']:,} same-person template differences, "
            f"{margin['people']} people)"
            if margin
            else "  margin: not measured (too few people with two templates)"
        )
        rows = "\n".join(
            f"  FAR {r['far']:<7g} threshold {r['threshold']:.4f}  measured FAR {r['measured_far']:.2e} "
            f"(95% up to {r['far_95'][1]:.2e})  TAR {r['tar']:.3f}"
            + (
                ""
                if r["resolved"]
                else "  (coarse)"
                if not r["beyond_data"]
                else "  (tail fit)"
                if r["tail_fit"]
                else "  (beyond data)"
            )
            for r in kind["table"]
        )
        out.append(
            f"calibrated on {kind['source']}: {kind['genuine_comparisons']:,} genuine and "
            f"{kind['impostor_comparisons']:,} impostor comparisons ({kind['comparison']})\n{margin_line}\n{rows}"
        )
    return "\n".join(out) + f"\nwrote       {summary['written']}"
