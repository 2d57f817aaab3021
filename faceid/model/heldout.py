"""Held-out people -> the comparisons a calibration table is measured from, for every comparison kind the app makes.

What is compared (the app's comparison, not single images): a template averaged from ``samples`` images
(register's ``--samples``) against a probe averaged from ``probe_samples`` images (``--probe-samples``),
both made by the template rule (`embeddings.template_of`, the function the app and the gallery call),
cosine score. Each person's images, shuffled once, give disjoint templates (first half) and probes (second
half); genuine scores pair a person's templates with their own probes, impostor scores every template
with every other person's probes (cheap once the embeddings exist).

Which kinds (`KINDS`): the app's defaults (template of 5 vs probe of 3) and the single-photo cases a user
meets as soon as they register or verify from one photo (1 vs 3, 5 vs 1, 1 vs 1). Single images are
noisier, and their impostor tail is heavier at strict rates (stand-in weights on the shared clips: 0.813 at
FAR 1e-3 for 1 vs 1 against 0.766 for 5 vs 3), so a 5-vs-3 threshold is too loose for one photo. Each kind
also gets its margin (`faceid.model.margin`), from the same scores.

`build_tables` makes one `Calibration` whose first kind is the first of KINDS with data, the others riding
along as its variants; training's validation and ``evaluate_model.py --calibrate`` both call it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..core.errors import FaceIDError
from .calibration import PROBE_SAMPLES, SAMPLES, Calibration
from .embeddings import template_of
from .margin import MarginMeasure, measure_margin

KINDS = ((SAMPLES, PROBE_SAMPLES), (1, PROBE_SAMPLES), (SAMPLES, 1), (1, 1))  # (template, probe) images


@dataclass(frozen=True)
class Split:
    """Which images make which comparison: index groups of `samples` images (templates) and of `probe_samples`
    images (probes) per person, disjoint within a person, and whose each group is."""

    template_groups: list[np.ndarray]
    template_owner: np.ndarray
    probe_groups: list[np.ndarray]
    probe_owner: np.ndarray
    skipped_identities: int


def split_by_person(labels: np.ndarray, samples: int, probe_samples: int, seed: int = 42) -> Split:
    """Each person's images, shuffled once: the first half gives templates of `samples`, the rest probes of
    `probe_samples`. People with fewer than samples + probe_samples images are left out (counted)."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    t_groups: list[np.ndarray] = []
    p_groups: list[np.ndarray] = []
    t_owner, p_owner, skipped = [], [], 0
    for person in np.unique(labels):
        idx = rng.permutation(np.nonzero(labels == person)[0])
        if len(idx) < samples + probe_samples:
            skipped += 1
            continue
        n_templates = max(1, (len(idx) // 2) // samples)
        n_probes = (len(idx) - n_templates * samples) // probe_samples
        t_groups += [idx[t * samples : (t + 1) * samples] for t in range(n_templates)]
        t_owner += [person] * n_templates
        rest = idx[n_templates * samples :]
        p_groups += [rest[p * probe_samples : (p + 1) * probe_samples] for p in range(n_probes)]
        p_owner += [person] * n_probes
    return Split(t_groups, np.asarray(t_owner), p_groups, np.asarray(p_owner), skipped)


def templates_of(embeddings: np.ndarray, groups: list[np.ndarray]) -> np.ndarray:
    """(G, D): one template per index group, by the rule the app and the gallery use (`template_of`)."""
    embeddings = np.asarray(embeddings, dtype=np.float32)
    return np.stack([template_of(embeddings[g]) for g in groups])


@dataclass(frozen=True)
class Comparisons:
    """One kind's scores on held-out people: genuine and impostor scores, the margin measured from them, and
    the counts (identities, templates, probes, images)."""

    genuine: np.ndarray
    impostor: np.ndarray
    margin: MarginMeasure | None
    counts: dict


def compare(
    embeddings: np.ndarray, labels: np.ndarray, samples: int = SAMPLES, probe_samples: int = PROBE_SAMPLES, seed=42
) -> Comparisons:
    """Templates of `samples` vs probes of `probe_samples` of held-out people (`split_by_person`).

    embeddings: (N, D) unit vectors, one per image; labels: (N,) identity of each. Deterministic for a seed."""
    split = split_by_person(labels, samples, probe_samples, seed)
    if not split.template_groups:
        raise FaceIDError(
            f"No identity has the {samples + probe_samples} images a template of {samples} and a "
            f"probe of {probe_samples} need; calibration needs more images per person."
        )
    scores = templates_of(embeddings, split.template_groups) @ templates_of(embeddings, split.probe_groups).T
    same = split.template_owner[:, None] == split.probe_owner[None, :]
    counts = {
        "identities": int(len(np.unique(split.template_owner))),
        "skipped_identities": split.skipped_identities,
        "templates": len(split.template_groups),
        "probes": len(split.probe_groups),
        "images": int(len(labels)),
    }
    margin = measure_margin(scores, split.template_owner, split.probe_owner)
    return Comparisons(scores[same].astype(np.float64), scores[~same].astype(np.float64), margin, counts)


def template_probe_scores(
    embeddings: np.ndarray,
    labels: np.ndarray,
    samples: int = SAMPLES,
    probe_samples: int = PROBE_SAMPLES,
    seed: int = 42,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """(genuine scores, impostor scores, counts) of templates of `samples` vs probes of `probe_samples`."""
    c = compare(embeddings, labels, samples, probe_samples, seed)
    return c.genuine, c.impostor, c.counts


def build_tables(
    embeddings: np.ndarray,
    labels: np.ndarray,
    source: Callable[[dict], str],
    benchmark_data: bool = False,
    kinds: tuple[tuple[int, int], ...] = KINDS,
) -> tuple[Calibration, dict]:
    """One table per kind that the held-out people have the images for -> (the first as the table, the others
    its variants; the counts of the first). `source(counts)` says in words what a kind was measured on.
    One sentence when no kind can be measured (fewer than two people with enough images)."""
    tables: list[Calibration] = []
    first_counts: dict = {}
    for samples, probe_samples in kinds:
        _, per_person = np.unique(labels, return_counts=True)
        if int((per_person >= samples + probe_samples).sum()) < 2:
            continue
        c = compare(embeddings, labels, samples, probe_samples)
        if len(c.impostor) == 0 or len(c.genuine) == 0:
            continue
        tables.append(
            Calibration.from_scores(
                c.genuine,
                c.impostor,
                samples,
                probe_samples,
                source(c.counts),
                benchmark_data=benchmark_data,
                identities=c.counts["identities"],
                margin=c.margin,
            )
        )
        first_counts = first_counts or c.counts
    if not tables:
        need = min(s + p for s, p in kinds)
        raise FaceIDError(
            f"Calibration needs at least two people with {need} or more images each (a template and a probe); "
            f"these held-out people have fewer."
        )
    return tables[0].with_variants(tuple(tables[1:])), first_counts
