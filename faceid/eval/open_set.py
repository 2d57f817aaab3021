"""The evaluator on folders of people (``<root>/<Name>/*.jpg``): 1:N identification, and calibration.

- 1:N (`run_identification`): people with >= 2 images enrol (a template of up to `gallery_samples` images, as
  the app registers) and give mated probes; people with one image are the non-mated probes. FNIR at FPIR
  1e-3 / 1e-2, rank-1, per gallery size (10, 100, 1,000, all), a DET plot, and, for a model with a calibration
  table, what the app's own decision gives at each size: its fixed 1:1 threshold (today's behaviour) vs the
  table's threshold for that gallery size (see `faceid.identification`).
- Calibration (`run_calibration`): the app's comparison (template of 5 vs probe of 3) on held-out people ->
  a score->FAR table for weights without one (`faceid.calibration`), tied to their fingerprint. Benchmark
  folders (LFW) are refused unless explicitly allowed, and then the table is stamped as benchmark data.

Images go through the evaluator's pipeline and cache (`faceid.evaluate.embed_items`), so a folder embedded
once costs nothing the next time, whichever mode reads it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..model.calibration import (
    FPIR_TARGET,
    PROBE_SAMPLES,
    SAMPLES,
    Calibration,
    template_probe_scores,
    write_calibration_file,
)
from .embed_cache import EmbedCache
from ..core.errors import FaceIDError
from .evaluator import embed_items
from .pairs import Dataset
from .report import write_report_and_plot
from .identification_metrics import enroll, gallery_sizes, identification_report, plot_det

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
SIZES = (10, 100, 1000)
BENCHMARK_MARKERS = ("pairs.txt", "pairsDevTest.txt", "pairsDevTrain.txt", "people.txt", "peopleDevTest.txt")


def benchmark_reason(root: Path) -> str | None:
    """Why this folder looks like benchmark data (LFW), or None. Checks the folder and its parent for LFW's
    pair/people lists and any path part named like LFW."""
    root = root.resolve()
    for folder in (root, root.parent):
        for marker in BENCHMARK_MARKERS:
            if (folder / marker).is_file():
                return f"{folder / marker} lies beside it (an LFW pair or people list)"
    if any("lfw" in part.lower() for part in root.parts):
        return f"its path {root} names LFW"
    return None


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


def load_people(root: str | os.PathLike) -> tuple[Dataset, np.ndarray, list[str]]:
    """Every image under <root>/<Name>/ -> (dataset of image paths, identity index per image, names)."""
    root = Path(root)
    if not root.is_dir():
        raise FaceIDError(f"The image root {root} is not a directory of <Name>/ folders.")
    names: list[str] = []
    items: list[Path] = []
    labels: list[int] = []
    for person in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(f for f in person.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
        if files:
            labels += [len(names)] * len(files)
            names.append(person.name)
            items += files
    if len(names) < 2:
        raise FaceIDError(
            f"{root} holds images of {len(names)} people; 1:N evaluation and calibration need at least 2."
        )
    empty = np.zeros((0, 2), np.int64)
    dataset = Dataset(
        "people",
        root.name,
        items,
        empty,
        np.zeros(0, bool),
        np.zeros(0, np.int64),
        {"image_root": str(root), "people": len(names), "images": len(items)},
    )
    return dataset, np.array(labels, np.int64), names


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
    emb, infos, stats = embed_items(backend, dataset, cache, batch_size, progress=progress)
    genuine, impostor, counts = template_probe_scores(emb, labels, SAMPLES, PROBE_SAMPLES)
    source = (
        f"{counts['identities']} people in {Path(folder).name}/ ({counts['templates']} templates, "
        f"{counts['probes']} probes)"
    )
    table = Calibration.from_scores(
        genuine, impostor, SAMPLES, PROBE_SAMPLES, source, benchmark_data=benchmark, identities=counts["identities"]
    )
    summary = {
        **table.summary(),
        "counts": counts,
        "folder": str(folder),
        "speed": stats,
        "detector_misses": sum(1 for i in infos if i.get("detected") is False),
    }
    write_calibration_file(out_path, table, backend.embedder.fingerprint, summary)
    return {**summary, "written": str(out_path)}


def embed_people(backend, dataset: Dataset, cache: EmbedCache | None, batch_size: int, progress: bool):
    emb, infos, stats = embed_items(backend, dataset, cache, batch_size, progress=progress)
    return emb, stats, sum(1 for i in infos if i.get("detected") is False)


def app_thresholds(backend, fpir: float = FPIR_TARGET) -> dict:
    """The thresholds the app would decide identify with, for a backend that has an embedder."""
    embedder = getattr(backend, "embedder", None)
    if embedder is None:
        return {}
    out = {"app_fixed_threshold": embedder.threshold}  # today's rule without a table: one threshold for any N
    if embedder.calibration is not None:
        cal = embedder.calibration
        out["app_far_threshold"] = cal.threshold_for_far(fpir).value  # the 1:1 threshold, blind to N
        out["app_calibrated_threshold"] = lambda n: cal.threshold_for_fpir(fpir, n).value
    return out


def run_identification(
    backends: list,
    root: str | os.PathLike,
    out_dir: str | os.PathLike,
    cache: EmbedCache | None = None,
    gallery_samples: int = SAMPLES,
    sizes=SIZES,
    draws: int = 5,
    batch_size: int = 64,
    progress: bool = True,
    per_probe: bool = False,
) -> dict:
    """Each backend on the same people, enrolment and galleries; one report JSON and one DET plot."""
    dataset, labels, names = load_people(root)
    enrollment = enroll(labels, gallery_samples)
    if len(enrollment.templates) < 2 or len(enrollment.nonmated) == 0:
        raise FaceIDError(
            f"{root} needs at least two people with two or more images (mated) and one person with a "
            f"single image (non-mated) for open-set 1:N evaluation."
        )
    chosen = gallery_sizes(tuple(sizes), len(enrollment.templates))
    report = {
        "dataset": {
            **dataset.describe,
            "enrolled": len(enrollment.templates),
            "mated_probes": int(len(enrollment.mated)),
            "nonmated_probes": int(len(enrollment.nonmated)),
            "gallery_samples": gallery_samples,
            "gallery_sizes": chosen,
            "draws_below_all": draws,
            "rule": "people with >= 2 images enrol (template = mean of up to gallery_samples images, "
            "at least one left as a mated probe); people with 1 image are non-mated probes",
        },
        "backends": {},
    }
    curves = {}
    for backend in backends:
        emb, stats, misses = embed_people(backend, dataset, cache, batch_size, progress)
        templates = np.stack([backend.template(emb[idx]) for idx in enrollment.templates])
        scores = lambda idx, backend=backend, emb=emb, templates=templates: backend.score_matrix(emb[idx], templates)  # noqa: E731
        rows, det = identification_report(
            templates, scores, enrollment, chosen, draws, thresholds=app_thresholds(backend)
        )
        report["backends"][backend.name] = {
            "model": backend.describe(),
            "by_gallery_size": rows,
            "detector_misses": misses,
            "speed": stats,
        }
        curves[backend.name] = det
    stem = f"{dataset.name}_1n"
    return write_report_and_plot(
        report,
        out_dir,
        f"{stem}_report.json",
        ("det_png", f"{stem}_det.png"),
        lambda path: plot_det(curves, path, title=f"DET, open-set 1:N on {dataset.name}"),
    )


def format_identification(report: dict) -> str:
    """Side-by-side table: per backend and gallery size, FNIR at FPIR 1e-3 / 1e-2 and rank-1."""
    d = report["dataset"]
    lines = [
        f"1:N on {d['image_root']}: {d['enrolled']} people enrolled (templates of up to {d['gallery_samples']} "
        f"images), {d['mated_probes']} mated and {d['nonmated_probes']} non-mated probes",
        "| backend | gallery | FNIR@FPIR=1e-3 | FNIR@FPIR=1e-2 | rank-1 | app default thr.: FPIR / hit | "
        "1:1 FAR thr.: FPIR / hit | per-size FPIR thr.: FPIR / hit |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, b in report["backends"].items():
        for size, r in b["by_gallery_size"].items():
            app = [
                f"{r[k]['threshold']:.3f}: {100 * r[k]['fpir']:.1f}% / {100 * r[k]['tpir']:.1f}%" if k in r else "-"
                for k in ("app_fixed_threshold", "app_far_threshold", "app_calibrated_threshold")
            ]
            star = lambda f, r=r: "" if r[f"fpir={f}_resolved"] else "*"  # noqa: E731
            lines.append(
                f"| {name} | {int(size):,} | {100 * r['fnir@fpir=0.001']:.1f}%{star('0.001')} | "
                f"{100 * r['fnir@fpir=0.01']:.1f}%{star('0.01')} | {100 * r['rank1']:.1f}% | {' | '.join(app)} |"
            )
    lines.append("(* = fewer non-mated searches than 1/FPIR: the strictest point measured)")
    lines += [f"wrote       {p}" for p in report.get("outputs", {}).values()]
    return "\n".join(lines)


def people_mode(
    calibrate: str | None,
    images: str | None,
    model: str | None,
    weights: str | None,
    crop: str | None,
    calibration: str | None,
    device: str | None,
    flip: bool,
    threads: int | None,
    cache_path: str | None,
    out_dir: str,
    calibration_out: str,
    tune_on_benchmark: bool,
    gallery_samples: int,
    gallery_sizes: str,
    draws: int,
    batch_size: int,
    progress: bool,
) -> tuple[dict, str]:
    """evaluate_model.py's --calibrate and --open-set: check the flags, load the model, run; (report, summary)."""
    from .evaluator import load_faceid_backend

    if bool(calibrate) == bool(images):
        raise FaceIDError(
            "Calibration takes its own folder and the open-set evaluation an image folder: give one of them.",
            "calibrate",
            "images",
        )
    try:
        sizes = tuple(int(v) for v in gallery_sizes.split(",") if v.strip())
    except ValueError:
        raise FaceIDError(
            f"Gallery sizes must be whole numbers separated by commas, got {gallery_sizes!r}.", "gallery_sizes"
        ) from None
    if min(gallery_samples, draws, batch_size, *sizes) < 1:
        raise FaceIDError(
            "The gallery samples, draws, batch size and every gallery size must be at least 1.",
            "gallery_samples",
            "draws",
            "batch_size",
            "gallery_sizes",
        )
    if calibrate:
        check_not_benchmark(calibrate, tune_on_benchmark)  # before the model loads: refusing costs nothing
    if threads:
        import torch

        torch.set_num_threads(threads)
    backend = load_faceid_backend(model, weights, crop, device, flip, batch_size, calibration)
    cache = EmbedCache(cache_path) if cache_path else None
    try:
        if calibrate:
            report = run_calibration(
                backend, calibrate, calibration_out, cache, tune_on_benchmark, batch_size, progress
            )
            rows = "\n".join(
                f"  FAR {r['far']:<7g} threshold {r['threshold']:.4f}  measured FAR {r['measured_far']:.2e} "
                f"(95% up to {r['far_95'][1]:.2e})  TAR {r['tar']:.3f}"
                + ("" if r["resolved"] else "  (coarse)" if not r["beyond_data"] else "  (beyond data)")
                for r in report["table"]
            )
            return report, (
                f"calibrated on {report['source']}: {report['genuine_comparisons']:,} genuine and "
                f"{report['impostor_comparisons']:,} impostor comparisons ({report['comparison']})\n"
                f"{rows}\nwrote       {report['written']}"
            )
        assert images  # checked above: exactly one of calibrate and images
        report = run_identification(
            [backend], images, out_dir, cache, gallery_samples, sizes, draws, batch_size, progress
        )
        return report, format_identification(report)
    finally:
        if cache:
            cache.close()
