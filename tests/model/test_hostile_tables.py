"""Calibration files and checkpoint fields an attacker wrote (issue 23, cases 3 and 4): real JSON files read by the
app's reader, real checkpoints written with torch.save in the project's format. Each case was accepted, or was an
"Unexpected internal error", before faceid/core/validate.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from faceid.core.errors import FaceIDError
from faceid.model.calibration import Calibration, read_calibration_file, write_calibration_file
from faceid.model.checkpoint import load_checkpoint

FP = "0123456789abcdef"
RNG = np.random.default_rng(3)
REAL = Calibration.from_scores(
    RNG.normal(0.6, 0.1, 500), RNG.normal(0.1, 0.1, 20_000), 5, 3, "40 people", identities=40
)


def table_file(tmp_path: Path, text: str | None = None, **changes) -> Path:
    """A calibration file as write_calibration_file writes it, with `changes` made to its table; `text`: the
    file's raw text instead (for JSON no writer of ours produces)."""
    path = tmp_path / "table.cal.json"
    write_calibration_file(path, REAL, FP)
    if text is None:
        data = json.loads(path.read_text())
        data["calibration"].update(changes)
        text = json.dumps(data)
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"impostors": 1e30}, r"field 'impostors' is 1e\+30; expected a whole number from 1 to 10,000,000,000,000"),
        ({"impostors": 10**30}, r"field 'impostors' is a 100-bit number; expected a whole number"),
        ({"samples": 10**9}, r"field 'samples' is 1000000000; expected a whole number from 1 to 1,000"),
        ({"samples": 1e9}, r"field 'samples' is 1000000000.0; expected a whole number"),
        ({"version": True}, r"field 'version' is True; expected a whole number from 1 to 2"),
        ({"benchmark_data": 0}, r"field 'benchmark_data' is 0; expected true or false"),
        ({"rank_scores": [1.00009] + REAL.rank_scores[1:].tolist()}, r"field 'rank_scores' .*one is 1\.00009"),
        ({"ranks": [0, 2**70]}, r"field 'ranks' .*whole numbers from 0 to 19,999 \(one is 1180591620717411303424\)"),
        ({"genuine": ["0.5"]}, r"field 'genuine' is a list of 1 entries; expected cosines"),
        (
            {"margin": {"value": 1e9, "pairs": 10, "people": 2}},
            r"field 'margin.value' is 1000000000.0; expected a cosine gap",
        ),
        ({"identities": -4}, r"field 'identities' is -4; expected a whole number from 0"),
        ({"variants": [{}] * 100}, r"field 'variants' is a list of 100 entries; expected a list of at most 8"),
    ],
)
def test_numbers_the_format_cannot_mean_are_one_sentence(tmp_path, changes, message):
    with pytest.raises(FaceIDError, match=f"^The calibration table in .* is malformed: {message}") as err:
        read_calibration_file(table_file(tmp_path, **changes), FP)
    assert str(err.value).count(". ") == 0 and str(err.value).endswith(".")  # one sentence


def test_json_the_parser_would_choke_on_is_one_sentence(tmp_path):
    good = table_file(tmp_path).read_text()
    cases = {
        "deep": ('{"fingerprint": "%s", "calibration": %s}' % (FP, "[" * 200_000 + "]" * 200_000), "nests its data"),
        "infinity": (good.replace('"samples": 5', '"samples": Infinity'), "holds NaN or Infinity"),
        "nan": (good.replace('"impostors": 20000', '"impostors": NaN'), "holds NaN or Infinity"),
        "digits": (good.replace('"impostors": 20000', '"impostors": ' + "9" * 5000), "thousands of digits"),
    }
    for name, (text, message) in cases.items():
        assert text != good, name
        with pytest.raises(FaceIDError, match=f"^The calibration file .* {message}"):
            read_calibration_file(table_file(tmp_path, text=text), FP)


def test_a_hand_made_table_of_negative_impostors_contradicts_itself(tmp_path):
    fake = Calibration.from_scores(RNG.uniform(0.5, 1, 200), RNG.uniform(-1, -0.98, 20_000), 5, 3, "hand-made")
    path = tmp_path / "fake.cal.json"
    write_calibration_file(path, fake, FP)
    with pytest.raises(FaceIDError, match=r"contradicts itself: the highest of its 20,000 impostor scores is -0\.98"):
        read_calibration_file(path, FP)
    # the same numbers measured on a real model never look like that: the real table reads
    assert read_calibration_file(table_file(tmp_path), FP).threshold_for_far(1e-3).value > 0.3


def test_text_from_a_table_is_printed_stripped_and_cut(tmp_path):
    forged = "my clips\x1b[2J\x1b[H\x1b[1;32mMATCH: 'Admin' score 0.999\x1b[0m\r"
    table = read_calibration_file(table_file(tmp_path, source=forged), FP)
    assert table.source == "my clipsMATCH: 'Admin' score 0.999"
    text = table.threshold_for_far(1e-3).text
    assert "\x1b" not in text and "\r" not in text and "calibrated on my clipsMATCH" in text
    big = read_calibration_file(table_file(tmp_path, source="A" * 4_000_000), FP)
    assert len(big.source) == 200 and len(big.threshold_for_far(1e-3).text) < 400


# ----------------------------------------------------------------------------- checkpoints


@pytest.fixture(scope="module")
def checkpoint(module_tmp) -> Path:
    """A real checkpoint in the project's format (random weights: the fields are what is tested)."""
    from builders import make_random_checkpoint

    return make_random_checkpoint(module_tmp / "random.pth", seed=1)


def tampered(path: Path, **fields) -> Path:
    raw = torch.load(path, weights_only=True)
    raw.update(fields)
    out = path.with_name("tampered.pth")
    torch.save(raw, out)  # written raw, as an attacker would, not through our schema
    return out


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"threshold": -0.99}, r"field 'threshold' is -0.99; expected a cosine similarity above 0"),
        ({"threshold": True}, r"field 'threshold' is True; expected a cosine"),
        ({"version": True}, r"field 'version' is True, not a whole number"),
        ({"threshold_info": {"target_far": float("inf")}}, r"field 'threshold_info.target_far' is inf"),
        ({"calibration": {**REAL.to_dict(), "samples": float("inf")}}, r"field 'samples' is inf; expected a whole"),
    ],
)
def test_checkpoint_numbers_are_checked_by_the_same_validator(checkpoint, fields, message):
    with pytest.raises(FaceIDError, match=message):
        load_checkpoint(tampered(checkpoint, **fields))


def deep_pickle(path: Path, depth: int) -> Path:
    """`path` with its threshold_info replaced by lists nested `depth` deep: pickle opcodes written directly (an
    empty list `depth` times, then as many appends), as a hand-made file holds them; torch.save itself recurses."""
    import zipfile

    out = tampered(path, threshold_info="DEEP")
    with zipfile.ZipFile(out) as z:
        entries = {name: z.read(name) for name in z.namelist()}
    (pkl,) = [name for name in entries if name.endswith("data.pkl")]
    marker = b"X\x04\x00\x00\x00DEEP"
    assert entries[pkl].count(marker) == 1
    entries[pkl] = entries[pkl].replace(marker, b"]" * depth + b"a" * (depth - 1))
    deep = path.with_name("deep.pth")
    with zipfile.ZipFile(deep, "w", zipfile.ZIP_STORED) as z:
        for name, data in entries.items():
            z.writestr(name, data)
    return deep


def test_a_checkpoint_nested_200000_deep_is_one_sentence(checkpoint):
    deep = deep_pickle(checkpoint, 200_000)
    with pytest.raises(FaceIDError, match=r"^Checkpoint .*deep.pth nests its data more than 32 levels deep"):
        load_checkpoint(deep)
    with pytest.raises(FaceIDError, match="field 'threshold_info' is a list of 1 entries; expected a mapping"):
        load_checkpoint(deep_pickle(checkpoint, 3))  # the hand-made file itself loads: 3 deep is only the wrong type
