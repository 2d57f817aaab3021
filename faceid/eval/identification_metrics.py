"""Open-set 1:N identification metrics, reported as NIST's FRVT 1:N reports them.

A gallery holds one template per enrolled person (the mean of up to `gallery_samples` of their images, as the
app registers); probes are searched against it:
- mated probes: other images of enrolled people. A search is a miss (counts towards FNIR, the false-negative
  identification rate) when the mate is not the top candidate or its score is below the threshold.
- non-mated probes: people never enrolled. A search is a false positive (FPIR) when the top candidate's
  score reaches the threshold, whoever it is.
The threshold at a target FPIR is read from the non-mated searches themselves (the loosest one whose FPIR
does not exceed the target); rank-1 hit rate ignores the threshold.

Gallery size matters (the more people enrolled, the likelier a stranger resembles one of them), so every
metric is reported per size: for a size below the number of enrollable people, `draws` random galleries
are drawn and their searches pooled. Non-mated probes are the same at every size (people with one image
never enrol), so sizes compare on the same strangers.

Scores come from the backend: `template(embeddings)` and `score_matrix(probes, templates)` (cosine for this
project, negative Euclidean distance for the face_recognition peer).

Neighbours: `open_set` runs these metrics on a folder of people; `verification_metrics` is the 1:1
counterpart (pairs); the app's own 1:N thresholds per gallery size come from `faceid.model.calibration`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

FPIR_TARGETS = (1e-3, 1e-2)
GALLERY_SIZES = (10, 100, 1000)  # the sizes a 1:N report covers besides the whole gallery (NIST FRVT-style)


@dataclass
class Enrollment:
    """Which images make each template and which are probes. Indices point into the image list."""

    templates: list[np.ndarray]  # per enrolled person, the image indices averaged into their template
    mated: np.ndarray  # (M,) probe image indices
    mated_owner: np.ndarray  # (M,) index into `templates` of each mated probe's person
    nonmated: np.ndarray  # (U,) probe image indices of people never enrolled


def enroll(labels: np.ndarray, gallery_samples: int, seed: int = 42, distractors: int = 0) -> Enrollment:
    """People with >= 2 images enrol with up to `gallery_samples` of them (at least one left as a mated
    probe, chosen at random, seeded); people with one image are non-mated probes, except `distractors` of them
    (chosen at random, seeded) who enrol with their one image and have no probe: a gallery can then be larger
    than the people with a mate (as galleries are), while the strangers stay people never enrolled."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    people, counts = np.unique(labels, return_counts=True)
    singles = people[counts == 1]
    enrolled_singles = set(rng.choice(singles, size=min(distractors, len(singles)), replace=False).tolist())
    templates, mated, owner, nonmated = [], [], [], []
    for person in people:
        idx = np.nonzero(labels == person)[0]
        if len(idx) == 1:
            if int(person) in enrolled_singles:
                templates.append(idx)
            else:
                nonmated.append(int(idx[0]))
            continue
        idx = rng.permutation(idx)
        k = min(gallery_samples, len(idx) - 1)
        templates.append(idx[:k])
        mated += [int(i) for i in idx[k:]]
        owner += [len(templates) - 1] * (len(idx) - k)
    return Enrollment(templates, np.array(mated, np.int64), np.array(owner, np.int64), np.array(nonmated, np.int64))


def _threshold_at_fpir(nonmated_top: np.ndarray, fpir: float) -> tuple[float, bool]:
    """(threshold, resolved): the loosest threshold with FPIR <= fpir on these top scores."""
    s = np.sort(nonmated_top)[::-1]
    k = int(math.floor(fpir * len(s) + 1e-9))
    return float(np.nextafter(s[k], np.inf)) if k < len(s) else float(s[-1]), len(s) * fpir >= 1


def searches(
    scores_mated: np.ndarray, owner: np.ndarray, scores_nonmated: np.ndarray, columns: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Search the probes against the gallery made of `columns` (indices of templates).

    Returns (mate score per mated probe, whether the mate is the top candidate, top score per non-mated probe),
    for the mated probes whose person is in the gallery."""
    in_gallery = np.isin(owner, columns)
    s_m = scores_mated[in_gallery][:, columns]
    mate_col = np.searchsorted(columns, owner[in_gallery])
    mate = s_m[np.arange(len(mate_col)), mate_col]
    rank1 = s_m.argmax(1) == mate_col
    return mate, rank1, scores_nonmated[:, columns].max(1)


def at_threshold(mate: np.ndarray, rank1: np.ndarray, nonmated_top: np.ndarray, threshold: float) -> dict:
    """FPIR and FNIR (and its complement, the genuine identification rate) at one threshold."""
    hit = rank1 & (mate >= threshold)
    return {
        "threshold": float(threshold),
        "fpir": float(np.mean(nonmated_top >= threshold)),
        "fnir": float(1 - np.mean(hit)),
        "tpir": float(np.mean(hit)),
    }


def det_curve(mate: np.ndarray, rank1: np.ndarray, nonmated_top: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FPIR, FNIR) as the threshold sweeps over every non-mated top score."""
    thresholds = np.sort(np.unique(nonmated_top))[::-1]
    fpir = np.searchsorted(-np.sort(nonmated_top)[::-1], -thresholds, side="right") / len(nonmated_top)
    hit_scores = np.sort(np.where(rank1, mate, -np.inf))
    fnir = np.searchsorted(hit_scores, thresholds, side="left") / len(mate)
    return fpir, fnir


def gallery_sizes(requested: tuple[int, ...], enrollable: int) -> list[int]:
    """The requested sizes that fit, plus 'all'."""
    return sorted({n for n in requested if n < enrollable} | {enrollable})


def gallery_draws(total: int, n: int, draws: int, rng: np.random.Generator) -> list[np.ndarray]:
    """The galleries of size `n` searched: every template when n >= total, else `draws` random ones (sorted
    template indices), drawn from `rng` (the 1:N report and the app's rule draw the same ones)."""
    return [np.arange(total)] if n >= total else [np.sort(rng.choice(total, n, replace=False)) for _ in range(draws)]


def identification_report(
    templates: np.ndarray,
    probe_scores,
    enrollment: Enrollment,
    sizes: list[int],
    draws: int = 5,
    seed: int = 42,
    thresholds: dict | None = None,
) -> tuple[dict, dict[int, tuple[np.ndarray, np.ndarray]]]:
    """Metrics per gallery size -> (JSON-ready report, {size: (FPIR, FNIR) DET curve}).

    probe_scores(probe_image_indices) -> (P, len(templates)) scores. thresholds: {name: value or
    callable(size) -> value} to evaluate too (e.g. the app's fixed threshold and its calibrated one)."""
    s_mated = probe_scores(enrollment.mated)
    s_non = probe_scores(enrollment.nonmated)
    rng = np.random.default_rng(seed)
    total = len(templates)
    report, curves = {}, {}
    for n in sizes:
        runs = gallery_draws(total, n, draws, rng)
        parts = [searches(s_mated, enrollment.mated_owner, s_non, cols) for cols in runs]
        mate, rank1, top = (np.concatenate([p[i] for p in parts]) for i in range(3))
        row: dict[str, object] = {
            "gallery_size": n,
            "draws": len(runs),
            "mated_searches": int(len(mate)),
            "nonmated_searches": int(len(top)),
            "rank1": float(np.mean(rank1)),
        }
        for fpir in FPIR_TARGETS:
            t, resolved = _threshold_at_fpir(top, fpir)
            r = at_threshold(mate, rank1, top, t)
            row[f"fnir@fpir={fpir:g}"] = r["fnir"]
            row[f"threshold@fpir={fpir:g}"] = t
            row[f"fpir={fpir:g}_resolved"] = resolved
        for name, value in (thresholds or {}).items():
            row[name] = at_threshold(mate, rank1, top, value(n) if callable(value) else value)
        report[str(n)] = row
        curves[n] = det_curve(mate, rank1, top)
    return report, curves


def plot_det(
    curves: dict[str, dict[int, tuple[np.ndarray, np.ndarray]]],
    path: str | os.PathLike,
    title: str = "DET (open-set 1:N)",
) -> None:
    """FNIR vs FPIR, log-log, one line per backend and gallery size; saved atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..core.fileio import atomic_savefig

    fig, ax = plt.subplots(figsize=(7, 5))
    styles = ["-", "--", ":", "-."]
    for b, (backend, per_size) in enumerate(curves.items()):
        for s, (size, (fpir, fnir)) in enumerate(sorted(per_size.items())):
            keep = fpir > 0
            ax.plot(
                fpir[keep],
                np.maximum(fnir[keep], 1e-4),
                styles[b % len(styles)],
                color=f"C{s}",
                label=f"{backend}, N={size:,}",
            )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("FPIR (strangers accepted as someone)")
    ax.set_ylabel("FNIR (enrolled people not identified at rank 1)")
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(title)
    ax.legend(fontsize=7, loc="lower left")
    atomic_savefig(path, fig)
    plt.close(fig)
