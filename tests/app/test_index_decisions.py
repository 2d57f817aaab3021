"""A damaged search index never steers the app's decision, and ``check`` says it was damaged (issue 23): a real
gallery registered from the shared clips with the stand-in weights, its real search_index.bin damaged byte by byte
as the issue did, the app's own identify / verify / check run in-process on real frames.

On the code before this, 400 flipped bytes in the matrix gave ``IDENTIFIED: 'Clip d13' score 49.402``, a permuted id
column identified d18 as 'Clip d13', and ``check`` said "intact ... search index rebuilt" without a word of either."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from faceid.app import render
from faceid.app.actions import run_action
from faceid.app.cli import parse_args
from faceid.app.session import Session, load_pipeline
from faceid.gallery.index_file import HEADER_BLOCK, IndexFile, _layout
from faceid.gallery.records import INDEX_NAME
from faceid.model.face import FacePipeline

pytestmark = pytest.mark.e2e

CLIPS = ("d10", "d13", "d14", "d18")


@pytest.fixture(scope="module")
def options(stand_in) -> list:
    return ["--weights", stand_in, "--crop", "aligned5", "--offline", "--no-preview", "--sample-gap", "8"]


@pytest.fixture(scope="module")
def pipeline(options) -> FacePipeline:
    return load_pipeline(parse_args([str(a) for a in options]))


def act(pipeline: FacePipeline, *argv) -> tuple[int, dict, list[str]]:
    """One action as the command line runs it under --json: (exit code, JSON object, text lines)."""
    args = parse_args([*map(str, argv), "--json"])
    session = Session(args, pipeline_factory=lambda _: pipeline)
    try:
        out = render.outcome(run_action(session, args.action, args))
    finally:
        session.close()
    return out.code, out.data, out.lines


def half(videos: Path, clip: str, second: bool) -> list:
    cap = cv2.VideoCapture(str(videos / f"{clip}.mp4"))
    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    where = ["--start-frame", count // 2] if second else ["--max-frames", count // 2]
    return ["--source", videos / f"{clip}.mp4", *where]


@pytest.fixture(scope="module")
def gallery(module_tmp, shared_data, options, pipeline) -> Path:
    """Four people registered from the first halves of their clips, the index saved by one identify."""
    data = module_tmp / "gallery4"
    for clip in CLIPS:
        code, reg, _ = act(
            pipeline, "--data-dir", data, *options, *half(shared_data / "videos", clip, False),
            "register", "--name", f"Clip {clip}",
        )  # fmt: skip
        assert code == 0 and reg["registered"], reg
    return data


@pytest.fixture
def copy(gallery, tmp_path) -> Path:
    """The gallery with a current, faithful index (each test damages its own copy)."""
    data = tmp_path / "gallery"
    shutil.copytree(gallery, data)
    return data


def identify_d18(pipeline, data: Path, options, shared_data) -> dict:
    code, out, _ = act(pipeline, "--data-dir", data, *options, *half(shared_data / "videos", "d18", True), "identify")
    assert code in (0, 1), out
    return out


def test_flipped_bytes_in_the_matrix_leave_the_decision_to_the_database(copy, options, pipeline, shared_data, capsys):
    before = identify_d18(pipeline, copy, options, shared_data)
    assert before["identified"] == "Clip d18", before
    path = copy / INDEX_NAME
    f = IndexFile.open(path)
    start = _layout(f.header["capacity"], 512, f.header["sketch_bits"])[2]
    raw = bytearray(path.read_bytes())
    for at in np.random.default_rng(0).choice(f.count * 2048, size=400, replace=False):
        raw[start + int(at)] ^= 0xFF
    path.write_bytes(bytes(raw))
    damaged = bytes(raw)

    after = identify_d18(pipeline, copy, options, shared_data)
    assert (after["decision"], after["identified"]) == (before["decision"], before["identified"])
    assert [m["name"] for m in after["matches"]] == [m["name"] for m in before["matches"]]
    assert [m["score"] for m in after["matches"]] == pytest.approx([m["score"] for m in before["matches"]])
    assert all(-1 <= m["score"] <= 1 for m in after["matches"])
    assert f"The search index {path} was damaged" in capsys.readouterr().err

    path.write_bytes(damaged)  # and `check`, before anything repaired it, says so, naming the file and what
    code, checked, lines = act(pipeline, "--data-dir", copy, "check")
    assert (
        code == 0
        and checked["intact"]
        and checked["search_index"]
        == {
            "path": str(path),
            "damaged": True,
            "problem": "its template matrix does not match its checksums",
        }
    )
    assert lines[1] == (
        f"The search index {path} was damaged (its template matrix does not match its checksums); "
        "rebuilt it from the database."
    )
    assert act(pipeline, "--data-dir", copy, "check")[1]["search_index"]["damaged"] is False  # repaired


def test_a_permuted_id_column_still_names_the_right_person(copy, options, pipeline, shared_data):
    code, own, _ = act(
        pipeline, "--data-dir", copy, *options, *half(shared_data / "videos", "d18", True), "verify", "--name",
        "Clip d18",
    )  # fmt: skip
    path = copy / INDEX_NAME
    raw = bytearray(path.read_bytes())
    count = IndexFile.open(path).count
    ids = np.frombuffer(bytes(raw[HEADER_BLOCK : HEADER_BLOCK + 8 * count]), "<i8")
    raw[HEADER_BLOCK : HEADER_BLOCK + 8 * count] = np.roll(ids, 1).tobytes()  # every id on another row
    path.write_bytes(bytes(raw))
    permuted = bytes(raw)

    found = identify_d18(pipeline, copy, options, shared_data)
    assert found["identified"] == "Clip d18" and found["decision"] == "identified", found
    path.write_bytes(permuted)
    code, again, _ = act(
        pipeline, "--data-dir", copy, *options, *half(shared_data / "videos", "d18", True), "verify", "--name",
        "Clip d18",
    )  # fmt: skip
    assert again["closest_other"] == own["closest_other"] and again["score"] == pytest.approx(own["score"])
    path.write_bytes(permuted)
    code, checked, _ = act(pipeline, "--data-dir", copy, "check")
    assert code == 0 and checked["search_index"]["problem"] == "its id column does not match its checksum"
