"""The one validator for values read from files (faceid/core/validate.py): exact types, bounds, depth, clean text."""

from __future__ import annotations

import json

import pytest

from faceid.core.errors import FaceIDError
from faceid.core.validate import MAX_DEPTH, MAX_TEXT, Fields, clean_text, depth_of, load_json, shown

WHERE = "The test file"


def test_counts_are_exact_ints_in_range():
    f = Fields({"n": 5, "yes": True, "float": 1e9, "big": 10**30, "neg": -1}, WHERE)
    assert f.whole("n", 1, 10) == 5
    for key in ("yes", "float", "big", "neg"):
        with pytest.raises(
            FaceIDError, match=rf"^The test file: field '{key}' is .*; expected a whole number from 0 to 1,000\.$"
        ):
            f.whole(key, 0, 1000)
    with pytest.raises(FaceIDError, match="field 'absent' is missing"):
        f.whole("absent", 0, 1)
    assert f.whole("absent", 0, 1, default=0) == 0


def test_reals_refuse_bools_nan_infinity_and_out_of_range():
    f = Fields({"x": 0.5, "nan": float("nan"), "inf": float("inf"), "b": False, "s": "0.5"}, WHERE)
    assert f.cosine("x") == 0.5
    for key in ("nan", "inf", "b", "s"):
        with pytest.raises(FaceIDError, match=f"field '{key}' is"):
            f.cosine(key)
    g = Fields({"scores": [0.9, 0.5, 1.00009], "ranks": [0, 2**70], "ok": [0.3, -0.2, 1.000001]}, WHERE)
    with pytest.raises(FaceIDError, match=r"field 'scores' is a list of 3 entries; expected cosines .*one is 1\.00009"):
        g.cosines("scores")
    with pytest.raises(
        FaceIDError, match=r"field 'ranks' .*whole numbers from 0 to 100 \(one is 1180591620717411303424\)"
    ):
        g.wholes("ranks", 0, 100)
    assert shown(10**5000) == "a 16610-bit number"
    assert g.cosines("ok").tolist() == [0.3, -0.2, 1.0]  # float32 rounding above 1 is clipped, not refused


def test_json_with_nan_infinity_or_deep_nesting_is_one_sentence():
    with pytest.raises(FaceIDError, match=r"^The test file is unreadable \(it holds NaN or Infinity"):
        load_json('{"samples": Infinity}', WHERE)
    with pytest.raises(FaceIDError, match=r"^The test file is unreadable \(not JSON\)\.$"):
        load_json(b"\xff\xfe{", WHERE)
    deep = "[" * 200_000 + "]" * 200_000
    with pytest.raises(FaceIDError, match=r"^The test file nests its data more than 32 levels deep"):
        load_json(deep, WHERE)
    shallow_but_too_deep = "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1)  # parses, then the depth check refuses it
    with pytest.raises(FaceIDError, match="more than 32 levels deep"):
        load_json(shallow_but_too_deep, WHERE)
    assert load_json(json.dumps({"a": [[1]]}), WHERE) == {"a": [[1]]}
    nested: list = []
    for _ in range(100_000):  # built without recursion, as an unpickler would build it
        nested = [nested]
    assert depth_of(nested) == MAX_DEPTH + 1  # stops counting past the limit
    assert shown(nested) == "a list of 1 entries"  # never a repr of the whole structure


def test_text_from_files_loses_escapes_and_controls_and_is_cut():
    forged = "clips\x1b[2J\x1b[H\x1b[32mMATCH: 'Admin' score 0.999\x1b[0m\rok\x07\u202e\u200bend"
    clean = clean_text(forged)
    assert clean == "clipsMATCH: 'Admin' score 0.999 okend", clean
    assert all(c.isprintable() for c in clean)
    assert clean_text("a\x1b]0;title\x07b\x9b31mc") == "abc"  # OSC title and the 8-bit CSI
    huge = clean_text("x" * 4_000_000)
    assert len(huge) == MAX_TEXT and huge.endswith("...")
    assert clean_text("Zoë 李 ✓") == "Zoë 李 ✓"  # any script stays
    f = Fields({"source": forged, "n": 3}, WHERE)
    assert f.text("source") == clean
    with pytest.raises(FaceIDError, match="field 'n' is 3; expected text"):
        f.text("n")
