"""The 1:N run (evaluate_model.py --open-set): open-set identification on a folder of people.

People with >= 2 images enrol (a template of up to `gallery_samples` images, as the app registers) and give
mated probes; people with one image are the non-mated probes. FNIR at FPIR 1e-3 / 1e-2, rank-1, per gallery
size (10, 100, 1,000, all), a DET plot, and, for a model with a calibration table, what the app's own decision
gives at each size: its fixed 1:1 threshold (today's behaviour) vs the table's threshold for that gallery size
(see `faceid.model.calibration`).

Neighbours: `people` reads and embeds the folder; `identification_metrics` computes the metrics; `report`
writes the JSON and the plot; `calibrate` is the other run on folders of people.
"""

from __future__ import annotations

import os

import numpy as np

from ..core.errors import FaceIDError
from ..model.calibration import FAR_TARGET, FPIR_TARGET, SAMPLES
from .app_rule import app_rule_report
from .embed_cache import EmbedCache
from .evaluator import keep_freed_memory
from .identification_metrics import GALLERY_SIZES, enroll, gallery_sizes, identification_report, plot_det
from .people import embed_people, load_people
from .report import write_report_and_plot


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
    sizes=GALLERY_SIZES,
    draws: int = 5,
    batch_size: int = 64,
    progress: bool = True,
    per_probe: bool = False,
    distractors: int = 0,
    fpir: float = FPIR_TARGET,
) -> dict:
    """Each backend on the same people, enrolment and galleries; one report JSON and one DET plot. For this
    project's backend, also what the app's own rule answers (`app_rule`), at `fpir`."""
    dataset, labels, names = load_people(root)
    keep_freed_memory()  # as the pairs run: without it, a cold run spends a fifth of its time in the kernel
    enrollment = enroll(labels, gallery_samples, distractors=distractors)
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
            "distractors": len(enrollment.templates) - len(np.unique(enrollment.mated_owner)),
            "rule": "people with >= 2 images enrol (template = mean of up to gallery_samples images, "
            "at least one left as a mated probe); people with 1 image are non-mated probes, except "
            "`distractors` of them who enrol with their one image and have no probe",
            "app_rule_fpir": fpir,
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
        embedder = getattr(backend, "embedder", None)
        if embedder is not None:  # this project's backend: the app's own rule on the same galleries
            report["backends"][backend.name]["app_rule"] = app_rule_report(
                scores(enrollment.mated),
                scores(enrollment.nonmated),
                templates,
                enrollment,
                chosen,
                embedder.calibration,
                fpir,
                draws,
            )
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
    lines += _format_app_rule(report)
    lines += [f"wrote       {p}" for p in report.get("outputs", {}).values()]
    return "\n".join(lines)


def _format_app_rule(report: dict) -> list[str]:
    """The app's own rule per gallery size and variant (`app_rule`): what users get."""
    lines = []
    for name, b in report["backends"].items():
        if "app_rule" not in b:
            continue
        lines += [
            f"the app's rule ({name}, identify at FPIR {report['dataset']['app_rule_fpir']:g}, verify at FAR "
            f"{FAR_TARGET:g}; threshold of a 1-photo template vs a 1-photo probe):",
            "| gallery | rule | threshold | stated FPIR (95% up to) | FPIR measured (95%) | FNIR | wrong name | "
            "AMBIGUOUS mated / strangers | verify: genuine / enrolled impostor accepted |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for size, rules in b["app_rule"].items():
            for rule, r in rules.items():
                lo, hi = r["threshold_1v1"]
                thr = f"{lo:.3f}" if lo == hi else f"{lo:.3f}-{hi:.3f}"
                stated = "-" if r["stated_fpir_95_high"] is None else f"{100 * r['stated_fpir_95_high']:.2g}%"
                lines.append(
                    f"| {int(size):,} | {rule} | {thr} | {stated} | {100 * r['fpir']:.2f}% "
                    f"({100 * r['fpir_95'][0]:.2f}-{100 * r['fpir_95'][1]:.2f}%; {r['false_positive']}/"
                    f"{r['nonmated']}) | {100 * r['fnir']:.1f}% | {100 * r['wrong_rate']:.1f}% | "
                    f"{100 * r['ambiguous_mated_rate']:.1f}% / {100 * r['ambiguous_nonmated_rate']:.2f}% | "
                    f"{100 * r['genuine_accept_rate']:.1f}% / {100 * r['impostor_accept_rate']:.1f}% |"
                )
    return lines
