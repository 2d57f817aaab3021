"""Verification metrics and pair formats: known-answer metrics, real LFW pair lists, real and hostile .bin files."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest

from faceid.core.errors import FaceIDError
from faceid.eval.verification import (
    best_accuracy_threshold,
    equal_error_rate,
    kfold_accuracy,
    load_verification_bin,
    plot_roc,
    read_pairs,
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


# ----------------------------------------------------------------------------- LFW pair lists


def test_real_view1_pair_lists(shared_data):
    test = read_pairs(shared_data / "lfw" / "pairsDevTest.txt")
    train = read_pairs(shared_data / "lfw" / "pairsDevTrain.txt")
    assert len(test) == 1000 and sum(p.same for p in test) == 500
    assert len(train) == 2200 and sum(p.same for p in train) == 1100
    assert test[0].same and test[0].name1 == test[0].name2 and not test[-1].same
    # View 1 is one set: its pairs get 10 stratified folds of 50 + 50
    folds = np.array([p.fold for p in test])
    labels = np.array([p.same for p in test])
    assert all(labels[folds == f].sum() == 50 and (~labels[folds == f]).sum() == 50 for f in range(10))
    a, b = test[0].paths(shared_data / "lfw" / "images")
    assert a.is_file() and b.is_file() and a.name.endswith("_0013.jpg")


def _write_view2(path: Path) -> None:
    lines = ["2\t3"]  # 2 folds x 3 pairs of each kind
    for f in range(2):
        lines += [f"Same_{f}\t1\t{k + 2}" for k in range(3)]
        lines += [f"A_{f}\t{k + 1}\tB_{f}\t{k + 1}" for k in range(3)]
    path.write_text("\n".join(lines) + "\n")


def test_view2_header_keeps_the_files_folds(tmp_path):
    _write_view2(tmp_path / "pairs.txt")
    pairs = read_pairs(tmp_path / "pairs.txt")
    assert len(pairs) == 12
    assert [p.fold for p in pairs] == [0] * 6 + [1] * 6
    assert [p.same for p in pairs] == ([True] * 3 + [False] * 3) * 2
    assert pairs[7] == pairs[7].__class__("Same_1", 1, "Same_1", 3, True, 1)
    assert pairs[10].paths(tmp_path)[1] == tmp_path / "B_1" / "B_1_0002.jpg"


@pytest.mark.parametrize(
    "text, words",
    [
        ("", "header"),
        ("pairs\nA\t1\t2\n", "header"),
        ("2\nA\t1\t2\nA\t1\t3\nA\t1\tB\t2\n", "promises 4 pairs but 3"),
        ("1\nA\t1\t2\nA\tone\tB\t2\n", "line 3"),
    ],
)
def test_bad_pairs_files_are_one_clear_error(tmp_path, text, words):
    (tmp_path / "bad.txt").write_text(text)
    with pytest.raises(FaceIDError, match=words):
        read_pairs(tmp_path / "bad.txt")


def test_missing_pairs_file_is_one_clear_error(tmp_path):
    with pytest.raises(FaceIDError, match="Cannot read the pairs file"):
        read_pairs(tmp_path / "nope.txt")


# ----------------------------------------------------------------------------- insightface .bin


def test_real_lfw_dev_bin_loads(shared_data):
    images, issame = load_verification_bin(shared_data / "recordio" / "pins90_112x112" / "lfw_dev.bin")
    assert len(images) == 2000 and issame.shape == (1000,) and issame.sum() == 500
    face = cv2.imdecode(np.frombuffer(images[0], np.uint8), cv2.IMREAD_COLOR)
    assert face.shape == (112, 112, 3)


class _Hostile:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_hostile_bin_is_refused_without_running_code(tmp_path, protocol):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.bin"
    path.write_bytes(pickle.dumps(([b"x", _Hostile(marker)], [True]), protocol=protocol))
    with pytest.raises(FaceIDError, match="not allowed"):
        load_verification_bin(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "obj, words",
    [
        ({"a": 1}, "not an insightface verification file"),
        (([b"a", b"b", b"c"], [True]), "3 images for 1 pairs"),
        (([b"a", 7], [True]), "not an insightface verification file"),
    ],
)
def test_malformed_bins_are_one_clear_error(tmp_path, obj, words):
    path = tmp_path / "bad.bin"
    path.write_bytes(pickle.dumps(obj))
    with pytest.raises(FaceIDError, match=words):
        load_verification_bin(path)


def test_truncated_bin_is_one_clear_error(tmp_path):
    path = tmp_path / "cut.bin"
    path.write_bytes(pickle.dumps(([b"a" * 100, b"b" * 100], [True]))[:50])
    with pytest.raises(FaceIDError, match="Cannot read verification file"):
        load_verification_bin(path)
