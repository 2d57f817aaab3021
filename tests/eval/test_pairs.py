"""Pair formats: real LFW pair lists (View 1 and View 2 headers), bad pairs files, real and hostile .bin files."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest

from faceid.core.errors import FaceIDError
from faceid.eval.pairs import load_verification_bin, read_pairs

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
