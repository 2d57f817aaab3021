"""The gallery's own cross-person template pairs: impostor comparisons of the very model that decides.

Why: a gallery of N people made by one model holds N(N-1)/2 pairs of different people (~500,000 at N = 1,000),
each an impostor comparison of this model on this gallery's kind of faces. They are used three ways:

1. no calibration table: with at least `MIN_PAIRS` pairs the threshold is read from them (the same reading
   as a table's: measured ranks, then the tail fit) instead of the uncalibrated default;
2. a table: the threshold is never looser than what the gallery's pairs show at the same rate (where the
   table runs out of data, the gallery often has far more comparisons than it);
3. a table the gallery contradicts (far more of its pairs clear the threshold than the table's rate allows:
   `CONTRADICTION_FACTOR` times its 95% bound, by the lower end of the gallery's own 95% interval) is
   refused: it is not a calibration of this model.

Caveats: these are template-vs-template pairs, not template-vs-probe ones; a person registered twice under two
names puts a genuine score among them (a handful of such pairs cannot refuse a table: the refusal needs
`CONTRADICTION_FACTOR` times the rate). Above `SAMPLED_TEMPLATES` templates, a seeded sample of them is used
(~2 million pairs), so the cost stays a fraction of a second at any gallery size.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..core.errors import FaceIDError
from .calibration import Calibration, Threshold, far_for_fpir, wilson_interval

SAMPLED_TEMPLATES = 2_000  # templates the pairs are computed from, at most
MIN_PAIRS = 1_000  # fewer pairs than this (N < 46): the gallery sets no threshold of its own
CONTRADICTION_FACTOR = 10  # the gallery's rate (95% low) above this many times the table's (95% high): refused
MIN_CONTRADICTING = 2  # and at least this many pairs clear the threshold


@dataclass(frozen=True)
class GalleryPairs:
    """The cross-person pairs of `sampled` of the gallery's `people` templates, as an impostor-only table."""

    table: Calibration
    people: int
    sampled: int
    scores: np.ndarray  # every pair's cosine, ascending (to count how many clear a threshold)

    @classmethod
    def from_templates(cls, templates: np.ndarray, people: int) -> GalleryPairs | None:
        """From the templates (one per person, unit rows) read from the gallery; None with fewer than 2."""
        t = np.asarray(templates, dtype=np.float32)
        if len(t) < 2:
            return None
        scores = (t @ t.T)[np.triu_indices(len(t), k=1)]
        pairs = len(scores)
        source = (
            f"this gallery's own {pairs:,} cross-person template pairs"
            if len(t) >= people
            else f"{pairs:,} cross-person pairs of {len(t):,} of this gallery's {people:,} templates"
        )
        table = Calibration.from_scores(np.zeros(0), scores, 0, 0, source, need_genuine=False)
        return cls(table, int(people), int(len(t)), np.sort(scores))

    @property
    def pairs(self) -> int:
        return self.table.impostors

    def accepted(self, threshold: float) -> tuple[int, float]:
        """(pairs at or above `threshold`, the lower end of the 95% interval of their rate)."""
        k = int(len(self.scores) - np.searchsorted(self.scores, threshold, side="left"))
        return k, wilson_interval(k, self.pairs)[0]

    def record(self, threshold: float) -> dict:
        k, low = self.accepted(threshold)
        return {"pairs": self.pairs, "templates": self.sampled, "people": self.people, "pairs_above": k}


def contradicts(accepted: int, low: float, allowed: float) -> bool:
    """Whether `accepted` impostor comparisons of a witness (the gallery's pairs, the model's validation record)
    clearing a threshold, at least `low` of them by the lower end of their 95% interval, contradict a table that
    allows the rate `allowed` there: the one refusal rule for tables."""
    return accepted >= MIN_CONTRADICTING and low > CONTRADICTION_FACTOR * allowed


def read_from_gallery(pairs: GalleryPairs | None, far: float, fpir: float | None, people: int) -> Threshold | None:
    """The threshold from the gallery's pairs alone (no table), or None when it has fewer than MIN_PAIRS.
    `fpir`: identify among `people` (then `far` is ignored); None: verify at `far`."""
    if pairs is None or pairs.pairs < MIN_PAIRS:
        return None
    t = pairs.table.threshold_for_far(far) if fpir is None else pairs.table.threshold_for_fpir(fpir, people)
    text = t.text.replace("calibrated on", "from").replace(", template vs template", " (template vs template)")
    return replace(t, text=text + "; no calibration table", source="gallery", gallery=pairs.record(t.value))


def check_with_gallery(threshold: Threshold, pairs: GalleryPairs | None) -> Threshold:
    """A table's threshold against the gallery: refused (one sentence) when the gallery contradicts it, raised
    to the gallery's own reading when that is stricter and rests on at least MIN_PAIRS pairs."""
    if pairs is None or threshold.source != "table" or threshold.target is None or threshold.rate_high is None:
        return threshold
    far = threshold.target if threshold.gallery_size is None else far_for_fpir(threshold.target, threshold.gallery_size)
    claimed_high = (
        threshold.rate_high
        if threshold.gallery_size is None
        else far_for_fpir(min(threshold.rate_high, 1 - 1e-12), threshold.gallery_size)
    )
    k, low = pairs.accepted(threshold.value)
    if contradicts(k, low, max(claimed_high, far)):
        raise FaceIDError(
            f"The calibration table is contradicted by this gallery: {k:,} of its {pairs.pairs:,} cross-person "
            f"template pairs score at or above the threshold {threshold.value:.3f}, at least {low:.2g} of them "
            f"where the table allows {max(claimed_high, far):.2g}; it is not a calibration of this model: "
            f"calibrate it (evaluate_model.py --calibrate) or pass --threshold.",
            "calibration",
            "threshold",
        )
    if pairs.pairs < MIN_PAIRS:
        return replace(threshold, gallery=pairs.record(threshold.value))
    own = pairs.table.read(far)
    if own.value <= threshold.value:
        return replace(threshold, gallery=pairs.record(threshold.value))
    how = "a tail fit of them" if own.fit is not None else "measured"
    note = f"; raised from {threshold.value:.3f} to what {pairs.table.source} show at FAR {far:.2g} ({how})"
    return replace(
        threshold,
        value=own.value,
        text=threshold.text.replace(f"threshold {threshold.value:.3f} =", f"threshold {own.value:.3f} =", 1) + note,
        source="gallery",
        tar=None,
        gallery=pairs.record(own.value),
    )


def decision_threshold(
    table: Calibration,
    far: float,
    fpir: float | None,
    people: int,
    kind: tuple[int, int] | None,
    pairs: GalleryPairs | None,
    tail: bool = True,
) -> Threshold:
    """A table's threshold for one decision - verify at `far` (fpir None) or identify at `fpir` among `people` -
    for this comparison kind, checked against the gallery's pairs: the app's rule (`faceid.app.decision`), and
    what the evaluator's 1:N mode measures."""
    reading = (
        table.threshold_for_far(far, kind, tail) if fpir is None else table.threshold_for_fpir(fpir, people, kind, tail)
    )
    return check_with_gallery(reading, pairs)
