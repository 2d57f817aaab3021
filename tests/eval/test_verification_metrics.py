"""Verification metrics on known inputs: ROC, AUC, EER, TAR at FAR, k-fold accuracy, stratified folds, the ROC plot."""

from __future__ import annotations

import numpy as np
import pytest

from faceid.eval.verification_metrics import (
    best_accuracy_threshold,
    equal_error_rate,
    kfold_accuracy,
    plot_roc,
    roc_auc,
    roc_curve,
    stratified_folds,
    threshold_at_far,
    verification_report,
)

# ----------------------------------------------------------------------------- metrics on known inputs

# Genuine 0.9, 0.7, 0.5; impostor 0.8, 0.6, 0.4. By hand: 6 of the 9 genuine/impostor orderings are right,
# so AUC = 2/3; at threshold 0.7 one genuine is rejected and one impostor accepted: EER = 1/3.
SMALL_SCORES = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
SMALL_LABELS = np.array([True, False, True, False, True, False])


def test_perfect_separation_gives_auc_1_eer_0():
    scores = np.r_[np.linspace(0.6, 0.9, 100), np.linspace(-0.2, 0.3, 100)]
    labels = np.r_[np.ones(100, bool), np.zeros(100, bool)]
    fpr, tpr, thr = roc_curve(scores, labels)
    assert roc_auc(fpr, tpr) == 1.0
    eer, eer_thr = equal_error_rate(fpr, tpr, thr)
    assert eer == 0.0 and 0.3 <= eer_thr <= 0.6
    report = verification_report(scores, labels, folds=10)
    assert report["accuracy"] == 1.0 and report["accuracy_std"] == 0.0
    assert report["tar@far=0.01"] == 1.0 and report["far=0.01_resolved"] and not report["far=0.001_resolved"]


def test_hand_computed_small_case():
    fpr, tpr, thr = roc_curve(SMALL_SCORES, SMALL_LABELS)
    np.testing.assert_allclose(fpr, [0, 0, 1 / 3, 1 / 3, 2 / 3, 2 / 3, 1])
    np.testing.assert_allclose(tpr, [0, 1 / 3, 1 / 3, 2 / 3, 2 / 3, 1, 1])
    assert roc_auc(fpr, tpr) == pytest.approx(2 / 3)
    eer, eer_thr = equal_error_rate(fpr, tpr, thr)
    assert eer == pytest.approx(1 / 3) and eer_thr == pytest.approx(0.7)
    assert threshold_at_far(SMALL_SCORES, SMALL_LABELS, 0.0) == (pytest.approx(0.9), pytest.approx(1 / 3))
    assert threshold_at_far(SMALL_SCORES, SMALL_LABELS, 0.5) == (pytest.approx(0.7), pytest.approx(2 / 3))
    # accuracy 4/6 is reached first between 0.4 and 0.5 (accept all but the 0.4 impostor)
    assert best_accuracy_threshold(SMALL_SCORES, SMALL_LABELS) == pytest.approx(0.45)


def test_tied_scores_form_one_roc_point():
    fpr, tpr, thr = roc_curve(np.array([0.5, 0.5, 0.5, 0.1]), np.array([True, False, True, False]))
    np.testing.assert_allclose(thr[1:], [0.5, 0.1])
    np.testing.assert_allclose(tpr, [0, 1, 1])
    np.testing.assert_allclose(fpr, [0, 0.5, 1])


def test_kfold_picks_each_threshold_on_the_other_folds():
    # fold 0 separates anywhere in (0.2, 0.8); fold 1 only in (0.35, 0.45).
    scores = np.array([0.9, 0.8, 0.1, 0.2, 0.45, 0.5, 0.3, 0.35])
    labels = np.array([True, True, False, False, True, True, False, False])
    folds = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    result = kfold_accuracy(scores, labels, folds)
    # fold 0 is tested at fold 1's threshold (0.4): all right. Fold 1 is tested at fold 0's first best
    # threshold (0.5, midway 0.2..0.8): its 0.45 genuine pair is rejected. Tuning on itself would give 1.0.
    assert result["thresholds"] == [pytest.approx(0.4), pytest.approx(0.5)]
    assert result["folds"] == [1.0, 0.75]
    assert result["mean"] == pytest.approx(0.875)


def test_stratified_folds_balance_each_class():
    labels = np.r_[np.ones(500, bool), np.zeros(500, bool)]
    folds = stratified_folds(labels, 10)
    for f in range(10):
        assert (labels[folds == f]).sum() == 50 and (~labels[folds == f]).sum() == 50


def test_roc_needs_both_classes():
    with pytest.raises(ValueError):
        roc_curve(np.array([0.1, 0.2]), np.array([True, True]))


def test_plot_roc_writes_png(tmp_path):
    fpr, tpr, _ = roc_curve(SMALL_SCORES, SMALL_LABELS)
    plot_roc({"small": (fpr, tpr)}, tmp_path / "roc.png")
    assert (tmp_path / "roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
