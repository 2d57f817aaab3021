"""The margin and the decision rule: a score must clear the threshold AND beat the other candidates clearly.

Why: a threshold says whether a score is high enough, not whether someone else fits the face better. With the
stand-in weights, ``verify --name d10`` on frames of d14 scored 0.622 >= 0.600 and said MATCH while d14 scored
0.847; identify named d14 (0.654) over d10 (0.612) with no hint that the two were all but tied (issue 23).

What the margin is, measured on held-out people (`measure_margin`): score one probe against two templates of
its own person and the two scores differ only by noise (which images made each template), since both are the
right person. The margin is the 95th percentile of that difference: two candidates closer than it are, for this
model and this kind of comparison, as alike as one person is to themself; one candidate ahead by more is
clearly the better one. It is measured for each comparison kind of a calibration table (template of 5 vs
probe of 3, 1 vs 1, ...: single images are noisier, so their margin is wider) and stored next to its threshold.

The rule (`verify_decisions`, `identify_decisions`), the one the app decides by and the evaluator's 1:N mode
measures:
- verify: MATCH when the claimed person scores at or above the threshold and no other registered person
  scores more than the margin above them; otherwise NO MATCH, because of the threshold or of that person.
- identify: the best candidate at or above the threshold is IDENTIFIED, unless the second is at or above the
  threshold too and within the margin of the first: AMBIGUOUS (both named, exit 1). Nobody at or above the
  threshold: UNKNOWN.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MARGIN_QUANTILE = 0.95  # the share of same-person score differences the margin covers
MIN_MARGIN_PAIRS = 20  # fewer same-person differences than this: no margin from the data
DEFAULT_MARGIN = 0.1  # without a measured margin (uncalibrated, like the default threshold 0.6)
MAX_MARGIN_ROUNDS = 10  # template pairs per person used for the measurement, at most

IDENTIFIED, AMBIGUOUS, UNKNOWN = "identified", "ambiguous", "unknown"


@dataclass(frozen=True)
class MarginMeasure:
    """A margin measured on held-out people: `value` covers MARGIN_QUANTILE of `pairs` same-person score
    differences (probes of `people` people, each scored against two of its own person's templates)."""

    value: float
    pairs: int
    people: int

    def to_dict(self) -> dict:
        return {"value": float(self.value), "pairs": self.pairs, "people": self.people}


def measure_margin(scores: np.ndarray, template_owner: np.ndarray, probe_owner: np.ndarray) -> MarginMeasure | None:
    """The margin from a template x probe score matrix of held-out people; None when fewer than
    MIN_MARGIN_PAIRS differences exist (people need two templates each)."""
    diffs, people = [], 0
    for person in np.unique(template_owner):
        rows = np.nonzero(template_owner == person)[0]
        probes = np.nonzero(probe_owner == person)[0]
        if len(rows) < 2 or len(probes) == 0:
            continue
        people += 1
        pairs = [(rows[i], rows[j]) for i in range(len(rows)) for j in range(i + 1, len(rows))][:MAX_MARGIN_ROUNDS]
        diffs += [np.abs(scores[a, probes] - scores[b, probes]) for a, b in pairs]
    if not diffs:
        return None
    d = np.concatenate(diffs)
    if len(d) < MIN_MARGIN_PAIRS:
        return None
    return MarginMeasure(float(np.quantile(d, MARGIN_QUANTILE)), int(len(d)), people)


@dataclass(frozen=True)
class Margin:
    """The margin a decision uses and where it came from: "table" (measured with the calibration table),
    "option" (``--margin``) or "default" (uncalibrated); `text` is what the app prints."""

    value: float
    source: str
    text: str

    def decision_fields(self) -> dict:
        """What a decision's JSON says about its margin."""
        return {"margin": round(self.value, 4), "margin_source": self.source, "margin_text": self.text}


def margin_text(measure: MarginMeasure, comparison: str) -> str:
    """The margin's sentence: what it is and what it was measured on."""
    return (
        f"margin {measure.value:.3f}: two templates of one person score their probe up to {measure.value:.3f} "
        f"apart ({MARGIN_QUANTILE:.0%} of {measure.pairs:,} differences over {measure.people} held-out people, "
        f"{comparison})"
    )


# ----------------------------------------------------------------------------- the rule


def verify_decisions(
    claimed: np.ndarray, best_other: np.ndarray, threshold: float | np.ndarray, margin: float | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(match, beaten) per claim: match = claimed >= threshold and not beaten; beaten = another person scores
    more than `margin` above the claimed one (best_other: -inf where there is nobody else)."""
    claimed, best_other = np.asarray(claimed, dtype=np.float64), np.asarray(best_other, dtype=np.float64)
    beaten = best_other - claimed > margin
    return (claimed >= threshold) & ~beaten, beaten


def identify_decisions(
    top1: np.ndarray, top2: np.ndarray, threshold: float | np.ndarray, margin: float | np.ndarray
) -> np.ndarray:
    """IDENTIFIED / AMBIGUOUS / UNKNOWN per search from its two best scores (top2: -inf with one candidate)."""
    top1, top2 = np.asarray(top1, dtype=np.float64), np.asarray(top2, dtype=np.float64)
    above = top1 >= threshold
    tied = above & (top2 >= threshold) & (top1 - top2 < margin)
    return np.where(tied, AMBIGUOUS, np.where(above, IDENTIFIED, UNKNOWN))


def verify_decision(claimed: float, best_other: float | None, threshold: float, margin: float) -> tuple[bool, bool]:
    """One verify claim: (match, beaten by someone else) - `verify_decisions` for one score."""
    match, beaten = verify_decisions(
        np.array([claimed]), np.array([-np.inf if best_other is None else best_other]), threshold, margin
    )
    return bool(match[0]), bool(beaten[0])


def identify_decision(scores: list[float], threshold: float, margin: float) -> str:
    """One search, its scores best first - `identify_decisions` for one search."""
    if not scores:
        return UNKNOWN
    second = scores[1] if len(scores) > 1 else -np.inf
    return str(identify_decisions(np.array([scores[0]]), np.array([second]), threshold, margin)[0])
