"""What the app itself answers, search by search, in the 1:N run: its threshold, margin and decision rule.

The FNIR-at-FPIR columns of the 1:N report set their threshold from the strangers' own scores (the best any
threshold could do). Users get the app's rule instead (`faceid.app.decision`): a threshold read from the
calibration table for the gallery size and the comparison kind of the best candidate (template of k images vs a
probe of one), checked against the gallery's own cross-person pairs, and the margin. This module applies that
rule to every search of the same galleries and counts what it answers:

- non-mated searches (strangers): IDENTIFIED is a false positive (FPIR); AMBIGUOUS and UNKNOWN are not;
- mated searches: IDENTIFIED as the right person is a hit (1 - FNIR); IDENTIFIED as someone else is a wrong
  name at exit 0 (the worst error); AMBIGUOUS and UNKNOWN are misses that say so;
- verify claims on the same galleries: a mated probe claiming its own name (genuine), and claiming the closest
  other enrolled person (an enrolled impostor, as in issue 23's "Clip d10" on frames of d14).

Variants, all in one run so they compare on the same searches (`RULES`): "before" is the rule as it was (the
table read up to its strictest point, no margin, no gallery check); then the tail fit, the gallery's pairs and the
margin are added one by one; "no table" rows are what backbone weights without a table get (the seed's 0.6
before; the gallery's pairs, where there are enough, and the default margin now).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..model.calibration import FAR_TARGET, Calibration, Threshold, wilson_interval
from ..model.gallery_pairs import GalleryPairs, decision_threshold, read_from_gallery
from ..model.margin import AMBIGUOUS, DEFAULT_MARGIN, IDENTIFIED, identify_decisions, verify_decisions
from .identification_metrics import Enrollment, gallery_draws

NO_TABLE_THRESHOLD = 0.6  # the seed's default, what a model without a table decided with before


@dataclass(frozen=True)
class Rule:
    """One variant of the decision rule: with the table (`table`) or without; tail fit, gallery check, margin."""

    name: str
    table: bool
    tail: bool
    gallery: bool
    margin: bool


RULES = (
    Rule("before: table to its strictest point, no margin", True, False, False, False),
    Rule("+ tail fit", True, True, False, False),
    Rule("+ gallery pairs", True, True, True, False),
    Rule("+ margin (the app now)", True, True, True, True),
    Rule("no table, before: 0.6, no margin", False, False, False, False),
    Rule("no table: gallery pairs, no margin", False, True, True, False),
    Rule("no table, now: gallery pairs, default margin", False, True, True, True),
)


def _top2(scores: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(best template index, best score, second score) of each search against the gallery `cols`."""
    sub = scores[:, cols]
    if sub.shape[1] == 1:
        return cols[np.zeros(len(sub), np.int64)], sub[:, 0], np.full(len(sub), -np.inf)
    part = np.argpartition(-sub, 1, axis=1)[:, :2]
    two = np.take_along_axis(sub, part, axis=1)
    first = np.argmax(two, axis=1)
    best = part[np.arange(len(sub)), first]
    return cols[best], two.max(1), two.min(1)


class RuleRun:
    """The rule's thresholds and margins for one gallery: per comparison kind, cached."""

    def __init__(self, rule: Rule, table: Calibration | None, fpir: float, size: int, pairs: GalleryPairs | None):
        self.rule, self.table, self.fpir, self.size, self.pairs = rule, table, fpir, size, pairs
        self._cache: dict = {}

    def threshold(self, kind: tuple[int, int], verify: bool) -> Threshold:
        key = (kind, verify)
        if key not in self._cache:
            fpir = None if verify else self.fpir
            pairs = self.pairs if self.rule.gallery else None
            if self.rule.table and self.table is not None:
                t = decision_threshold(self.table, FAR_TARGET, fpir, self.size, kind, pairs, tail=self.rule.tail)
            else:
                own = read_from_gallery(pairs, FAR_TARGET, fpir, self.size) if self.rule.gallery else None
                t = Threshold(NO_TABLE_THRESHOLD, "the seed's default", "default") if own is None else own
            self._cache[key] = t
        return self._cache[key]

    def margin(self, kind: tuple[int, int], verify: bool) -> float:
        """The margin of this kind; without the margin rule, one that never acts (verify: no one is ever
        "more than it" above; identify: no two scores are ever closer than 0)."""
        if not self.rule.margin:
            return np.inf if verify else 0.0
        if self.rule.table and self.table is not None:
            return self.table.margin_for(kind).value
        return DEFAULT_MARGIN

    def per_search(self, sizes: np.ndarray, verify: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(thresholds, margins) for searches whose candidate templates hold `sizes` images (probe of 1)."""
        kinds = [(max(1, int(k)), 1) for k in sizes]
        return (
            np.array([self.threshold(k, verify).value for k in kinds], dtype=np.float64),
            np.array([self.margin(k, verify) for k in kinds], dtype=np.float64),
        )


def app_rule_report(
    s_mated: np.ndarray,
    s_non: np.ndarray,
    templates: np.ndarray,
    enrollment: Enrollment,
    sizes: list[int],
    table: Calibration | None,
    fpir: float,
    draws: int = 5,
    seed: int = 42,
) -> dict:
    """{gallery size: {rule name: counts and rates}} for the galleries `identification_report` searches."""
    rng = np.random.default_rng(seed)
    total = len(templates)
    n_images = np.array([len(t) for t in enrollment.templates])
    out: dict = {}
    for n in sizes:
        counts: dict[str, dict[str, int]] = {r.name: {} for r in RULES}
        stated: dict[str, list[Threshold]] = {r.name: [] for r in RULES}
        for cols in gallery_draws(total, n, draws, rng):
            t = templates[cols]
            pairs = GalleryPairs.from_templates(t, len(t))
            in_gallery = np.isin(enrollment.mated_owner, cols)
            sm, owner = s_mated[in_gallery], enrollment.mated_owner[in_gallery]
            m_best, m1, m2 = _top2(sm, cols)
            u_best, u1, u2 = _top2(s_non, cols)
            own = sm[np.arange(len(sm)), owner]
            others = sm[:, cols].copy()
            others[np.arange(len(sm)), np.searchsorted(cols, owner)] = -np.inf
            rival = cols[others.argmax(1)] if len(cols) > 1 else owner
            rival_score = others.max(1)
            for rule in RULES:
                if rule.table and table is None:
                    continue
                run = RuleRun(rule, table, fpir, len(cols), pairs)
                c = counts[rule.name]
                stated[rule.name].append(run.threshold(ONE_PHOTO, verify=False))
                thr, mar = run.per_search(n_images[m_best])
                d = identify_decisions(m1, m2, thr, mar)
                _add(c, "mated", len(d))
                _add(c, "hit", int(np.sum((d == IDENTIFIED) & (m_best == owner))))
                _add(c, "wrong", int(np.sum((d == IDENTIFIED) & (m_best != owner))))
                _add(c, "ambiguous_mated", int(np.sum(d == AMBIGUOUS)))
                thr, mar = run.per_search(n_images[u_best])
                d = identify_decisions(u1, u2, thr, mar)
                _add(c, "nonmated", len(d))
                _add(c, "false_positive", int(np.sum(d == IDENTIFIED)))
                _add(c, "ambiguous_nonmated", int(np.sum(d == AMBIGUOUS)))
                # verify: the genuine claim, and the claim of the closest other person
                thr, mar = run.per_search(n_images[owner], verify=True)
                ok, _ = verify_decisions(own, rival_score, thr, mar)
                _add(c, "genuine_claims", len(ok))
                _add(c, "genuine_accepted", int(ok.sum()))
                if len(cols) > 1:
                    thr, mar = run.per_search(n_images[rival], verify=True)
                    ok, _ = verify_decisions(rival_score, own, thr, mar)
                    _add(c, "impostor_claims", len(ok))
                    _add(c, "impostor_accepted", int(ok.sum()))
        out[str(n)] = {name: {**_rates(c), **_stated(stated[name])} for name, c in counts.items() if c}
    return out


ONE_PHOTO = (1, 1)  # the comparison kind of most searches of a folder of photos (LFW)


def _stated(thresholds: list[Threshold]) -> dict:
    """What the rule's 1-photo threshold claimed over the draws: its values and the highest 95% FPIR bound."""
    highs = [t.rate_high for t in thresholds if t.rate_high is not None]
    return {
        "threshold_1v1": [round(min(t.value for t in thresholds), 4), round(max(t.value for t in thresholds), 4)],
        "stated_fpir_95_high": max(highs) if highs else None,
        "threshold_sources": sorted({t.source for t in thresholds}),
        "tail_fit": any(t.tail_fit for t in thresholds),
    }


def _add(c: dict, key: str, value: int) -> None:
    c[key] = c.get(key, 0) + int(value)


def _rates(c: dict) -> dict:
    """Counts -> rates, FPIR with its 95% interval (searches of one draw share strangers: a rough interval)."""
    fp, nm, m = c["false_positive"], max(c["nonmated"], 1), max(c["mated"], 1)
    low, high = wilson_interval(fp, nm)
    return {
        **c,
        "fpir": fp / nm,
        "fpir_95": [low, high],
        "fnir": 1 - c["hit"] / m,
        "wrong_rate": c["wrong"] / m,
        "ambiguous_mated_rate": c["ambiguous_mated"] / m,
        "ambiguous_nonmated_rate": c["ambiguous_nonmated"] / nm,
        "genuine_accept_rate": c["genuine_accepted"] / max(c["genuine_claims"], 1),
        "impostor_accept_rate": c.get("impostor_accepted", 0) / max(c.get("impostor_claims", 0), 1),
    }
