"""The decision rule with its margin, tables per comparison kind, the tail fit, and the gallery's own pairs.

Scores here are drawn from known distributions, so each claim (the margin covers 95% of same-person noise, the
fit recovers the tail, the gallery refuses a table that is not of this model) is checked against the truth;
the app-level cases on real clips and real tables are in tests/app/test_decisions.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from faceid.core.errors import FaceIDError
from faceid.model.calibration import Calibration
from faceid.model.gallery_pairs import MIN_PAIRS, GalleryPairs, check_with_gallery, read_from_gallery
from faceid.model.heldout import KINDS, build_tables
from faceid.model.margin import (
    AMBIGUOUS,
    IDENTIFIED,
    UNKNOWN,
    identify_decision,
    identify_decisions,
    measure_margin,
    verify_decision,
)
from faceid.model.tail_fit import TailFit

RNG = np.random.default_rng(23)


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def people(n_people: int, images: int, noise: float, dim: int = 512, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings of `n_people` made-up people: a direction each, plus per-image noise."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_people, dim))
    labels = np.repeat(np.arange(n_people), images)
    return unit(centres[labels] + noise * np.sqrt(dim) * rng.normal(size=(len(labels), dim)) / np.sqrt(dim)), labels


# ----------------------------------------------------------------------------- the rule


def test_verify_needs_the_threshold_and_nobody_clearly_closer():
    assert verify_decision(0.62, 0.40, 0.6, 0.1) == (True, False)
    assert verify_decision(0.62, 0.847, 0.6, 0.1) == (False, True)  # issue 23: 'Clip d10' on frames of d14
    assert verify_decision(0.62, 0.72, 0.6, 0.1) == (True, False)  # ahead by exactly the margin: not "more than"
    assert verify_decision(0.55, 0.30, 0.6, 0.1) == (False, False)  # below the threshold
    assert verify_decision(0.62, None, 0.6, 0.1) == (True, False)  # nobody else registered


def test_identify_is_ambiguous_when_the_best_two_are_above_and_close():
    assert identify_decision([0.654, 0.612, 0.2], 0.6, 0.1) == AMBIGUOUS  # issue 23: d14 over d10
    assert identify_decision([0.80, 0.612], 0.6, 0.1) == IDENTIFIED
    assert identify_decision([0.654, 0.58], 0.6, 0.1) == IDENTIFIED  # the second is below the threshold
    assert identify_decision([0.55, 0.54], 0.6, 0.1) == UNKNOWN
    assert identify_decision([0.7], 0.6, 0.1) == IDENTIFIED and identify_decision([], 0.6, 0.1) == UNKNOWN
    many = identify_decisions(np.array([0.7, 0.7, 0.5]), np.array([0.65, 0.55, 0.45]), np.array([0.6, 0.6, 0.6]), 0.1)
    assert list(many) == [AMBIGUOUS, IDENTIFIED, UNKNOWN]


def test_the_margin_covers_95_percent_of_one_persons_noise():
    # 3 templates x 4 probes per person; every score = the person's own level + noise of sd 0.05 per template
    owners_t, owners_p = np.repeat(np.arange(30), 3), np.repeat(np.arange(30), 4)
    noise = RNG.normal(0, 0.05, (90, 120))
    scores = 0.7 + noise
    m = measure_margin(scores, owners_t, owners_p)
    # the difference of two independent N(0, 0.05) scores: |N(0, 0.0707)|, whose 95th percentile is 0.1386
    assert m is not None and m.pairs == 30 * 3 * 4 and m.people == 30
    assert m.value == pytest.approx(1.96 * 0.05 * np.sqrt(2), rel=0.12)
    assert measure_margin(scores[::3], owners_t[::3], owners_p) is None  # one template each: nothing to measure


# ----------------------------------------------------------------------------- tables per comparison kind


@pytest.fixture(scope="module")
def tables() -> Calibration:
    emb, labels = people(40, 24, noise=1.2)
    table, counts = build_tables(emb, labels, lambda c: f"{c['identities']} made-up people")
    return table


def test_every_kind_is_measured_with_its_margin_and_stored(tables):
    kinds = [(k.samples, k.probe_samples) for k in tables.kinds()]
    assert kinds == list(KINDS)
    for k in tables.kinds():
        assert k.margin is not None and k.margin.people == 40 and k.impostors > 0
    one, five = tables.for_comparison(1, 1).margin, tables.for_comparison(5, 3).margin
    assert one is not None and five is not None and one.value > five.value  # single images are noisier
    again = Calibration.from_dict(json.loads(json.dumps(tables.to_dict())))
    for kind in KINDS:
        assert again.threshold_for_fpir(1e-3, 100, kind) == tables.threshold_for_fpir(1e-3, 100, kind)
        assert again.margin_for(kind) == tables.margin_for(kind)


def test_a_comparison_without_its_kind_uses_the_nearest_with_fewer_images_and_says_so(tables):
    exact = tables.threshold_for_far(1e-3, (1, 1))
    assert exact.used_for is None and "template of 1 vs probe of 1" in exact.text
    three = tables.threshold_for_far(1e-3, (3, 1))
    assert three.value == exact.value and three.used_for == "template of 3 vs probe of 1"
    assert "template of 1 vs probe of 1, used for template of 3 vs probe of 1 (no table for that)" in three.text
    only_5v3 = Calibration.from_dict({**tables.to_dict(), "variants": []})
    t = only_5v3.threshold_for_far(1e-3, (1, 1))
    assert "template of 5 vs probe of 3, used for template of 1 vs probe of 1" in t.text
    assert only_5v3.threshold_for_far(1e-3, (5, 3)).used_for is None


def test_hostile_margins_and_variants_are_one_sentence(tables):
    good = tables.to_dict()
    bad = [
        {**good, "margin": {"value": -0.1, "pairs": 10, "people": 2}},
        {**good, "margin": {"value": float("nan"), "pairs": 10, "people": 2}},
        {**good, "margin": {"value": 0.1, "pairs": True, "people": 2}},
        {**good, "margin": {"value": 0.1, "pairs": 10}},
        {**good, "margin": [0.1]},
        {**good, "variants": {"a": 1}},
        {**good, "variants": [good["variants"][0]] * 2},  # the same kind twice
        {**good, "variants": [good] * 9},
        {**good, "variants": [{**good["variants"][0], "variants": good["variants"]}]},  # nested
        {**good, "genuine_comparisons": 3},  # fewer than the scores kept
    ]
    for data in bad:
        with pytest.raises(FaceIDError, match=r"calibration table in the checkpoint.* is malformed"):
            Calibration.from_dict(data)


# ----------------------------------------------------------------------------- the tail fit


def test_the_tail_fit_recovers_a_known_generalised_pareto_tail():
    # 200,000 scores: below u anything; above it (1%) a GPD with xi = -0.25, sigma = 0.05
    n, m, xi, sigma, u = 200_000, 2_000, -0.25, 0.05, 0.6
    y = sigma / xi * ((1 - RNG.random(m)) ** (-xi) - 1)  # GPD quantile transform
    scores = np.r_[RNG.uniform(-0.2, u, n - m), u + y]
    top = -np.sort(-scores)[:101]
    fit = TailFit.from_top_scores(top, n)
    assert fit is not None
    for far in (1e-5, 1e-6):
        q = far * n / m  # P(exceedance > y | above u)
        truth = u + sigma / xi * (q ** (-xi) - 1)
        low, high = fit.threshold_range(far)
        assert low <= truth <= high, (far, truth, low, high)
        assert fit.threshold_for_far(far) == pytest.approx(truth, abs=0.03)
    assert TailFit.from_top_scores(top, 500) is None  # too few comparisons to fit


# ----------------------------------------------------------------------------- the gallery's own pairs


def test_a_table_the_gallery_contradicts_is_refused():
    templates, _ = people(60, 1, noise=0.0, seed=3)  # 60 different people: cross-person cosines near 0
    pairs = GalleryPairs.from_templates(templates, 60)
    assert pairs is not None and pairs.pairs == 60 * 59 // 2
    # a well-formed table whose impostors all score about -0.99: it puts FAR 1e-3 at about -0.99
    fake = Calibration.from_scores(RNG.uniform(0.5, 1, 100), RNG.uniform(-1, -0.98, 5000), 5, 3, "hand-made")
    t = fake.threshold_for_far(1e-3)
    assert t.value < -0.98
    with pytest.raises(FaceIDError, match="contradicted by this gallery: 1,770 of its 1,770 cross-person"):
        check_with_gallery(t, pairs)
    real = Calibration.from_scores(RNG.uniform(0.5, 1, 100), RNG.normal(0, 0.05, 50_000), 5, 3, "plausible")
    kept = check_with_gallery(real.threshold_for_far(1e-3), pairs)
    assert kept.source == "table" and kept.gallery["pairs_above"] == 0


def test_the_gallery_sets_the_threshold_without_a_table_and_raises_a_loose_one():
    templates, _ = people(100, 1, noise=0.0, seed=4)
    pairs = GalleryPairs.from_templates(templates, 100)
    assert pairs is not None and pairs.pairs >= MIN_PAIRS
    own = read_from_gallery(pairs, 1e-3, 1e-3, 100)
    assert own is not None and own.source == "gallery" and "this gallery's own 4,950 cross-person" in own.text
    assert own.value > np.max((templates @ templates.T)[np.triu_indices(100, 1)])  # FAR 1e-5 from 4,950 pairs
    assert read_from_gallery(GalleryPairs.from_templates(templates[:20], 20), 1e-3, 1e-3, 20) is None
    loose = Calibration.from_scores(RNG.uniform(0.5, 1, 100), RNG.normal(0, 0.035, 50_000), 5, 3, "loose")
    t = loose.threshold_for_fpir(1e-3, 100)
    raised = check_with_gallery(t, pairs)
    assert raised.value > t.value and raised.source == "gallery" and "raised from" in raised.text
