"""identify --all-faces (issue 20): every face of a picture, a folder or a video, each with its own decision.

Real multi-face pictures built here by pasting frames of the shared clips and an LFW face onto one canvas (so
where each face is, and who it is, is known), the shared two_people.jpg and couple.jpg, a real SQLite gallery
and the stand-in weights. The gallery holds four clip people registered from the first halves of their clips;
the canvases use frames of the second halves, and of two clips nobody registered (d19, d20).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from faceid.app import render
from faceid.app.actions import run_action
from faceid.app.annotate import COLOURS
from faceid.app.cli import parse_args
from faceid.app.decision import identify_threshold
from faceid.app.face_rows import CSV_COLUMNS
from faceid.app.session import Session, load_pipeline
from faceid.app.tracking import iou
from faceid.core.decode import read_image_file
from faceid.core.errors import FaceIDError
from faceid.model.calibration import Calibration
from faceid.model.face import FacePipeline

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
ENROLLED = ("d0", "d11", "d14", "d18")  # well apart for the stand-in weights (own clip 0.7-0.98, others < 0.52)
STRANGERS = ("d19", "d20")
TILE = 320


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


def frame_count(clip: Path) -> int:
    cap = cv2.VideoCapture(str(clip))
    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    return count


def clip_frame(videos: Path, clip: str, at: float) -> np.ndarray:
    """The BGR frame at fraction `at` of a clip."""
    path = videos / f"{clip}.mp4"
    cap = cv2.VideoCapture(str(path))
    cap.set(cv2.CAP_PROP_POS_FRAMES, int(frame_count(path) * at))
    ok, frame = cap.read()
    cap.release()
    assert ok, (clip, at)
    return frame


def tile(image: np.ndarray, side: int = TILE) -> np.ndarray:
    """`image` shrunk (never enlarged) to fit a side x side grey square, centred."""
    h, w = image.shape[:2]
    scale = min(1.0, side / max(h, w))
    image = cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    out = np.full((side, side, 3), 90, np.uint8)
    y, x = (side - image.shape[0]) // 2, (side - image.shape[1]) // 2
    out[y : y + image.shape[0], x : x + image.shape[1]] = image
    return out


@pytest.fixture(scope="module")
def videos(shared_data) -> Path:
    return shared_data / "videos"


@pytest.fixture(scope="module")
def gallery(module_tmp, videos, options, pipeline) -> Path:
    data = module_tmp / "gallery"
    for clip in ENROLLED:
        path = videos / f"{clip}.mp4"
        code, reg, _ = act(
            pipeline, "--data-dir", data, *options, "--source", path, "--max-frames", frame_count(path) // 2,
            "register", "--name", f"Clip {clip}",
        )  # fmt: skip
        assert code == 0 and reg["registered"], reg
    return data


@pytest.fixture(scope="module")
def canvas(module_tmp, videos, shared_data) -> tuple[Path, list[str | None]]:
    """A 3 x 2 group picture: d0, d11, d18 (registered), d19, d20 (not), and an LFW face (not); and who is in
    each tile (None: nobody registered)."""
    lfw = cv2.imread(str(shared_data / "lfw" / "images" / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg"))
    tiles = [tile(clip_frame(videos, c, 0.8)) for c in ("d0", "d11", "d18", "d19", "d20")] + [tile(lfw)]
    picture = np.vstack([np.hstack(tiles[:3]), np.hstack(tiles[3:])])
    path = module_tmp / "group.png"
    assert cv2.imwrite(str(path), picture)
    return path, ["Clip d0", "Clip d11", "Clip d18", None, None, None]


def tile_of(box: list[float]) -> int:
    """Which canvas tile a box's centre lies in (row-major)."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return int(cy // TILE) * 3 + int(cx // TILE)


def test_every_face_of_a_group_picture_gets_its_own_decision(gallery, canvas, options, pipeline):
    path, who = canvas
    code, data, lines = act(pipeline, "--data-dir", gallery, *options, "--source", path, "identify", "--all-faces")
    assert code == 0 and data["action"] == "identify", data
    faces = data["faces"]
    by_tile = {tile_of(f["box"]): f for f in faces}
    assert len(by_tile) == len(faces) == 6, faces  # one face per tile, every tile's face found
    for i, name in enumerate(who):
        face = by_tile[i]
        x1, y1, x2, y2 = face["box"]
        assert 40 <= x2 - x1 <= TILE and 40 <= y2 - y1 <= TILE and face["detector_score"] > 0.9, face
        if name is not None:
            assert face["decision"] == "identified" and face["name"] == name, (i, face)
            assert face["score"] >= face["threshold"] and face["runner_up"]["score"] < face["score"], face
        else:
            assert face["decision"] in ("unknown", "low_quality") and face["name"] is None, (i, face)
    summary = data["summary"]
    assert summary["faces"] == 6 and summary["identified"] == 3 and summary["pictures"] == 1, summary
    assert summary["people"] == {"Clip d0": 1, "Clip d11": 1, "Clip d18": 1}, summary
    decided = 6 - summary["low_quality"]
    assert f"for {decided} faces x 4 people" in summary["thresholds"][0], summary["thresholds"]
    assert any("IDENTIFIED 'Clip d11'" in line for line in lines), lines
    assert any(line.startswith("6 faces in 1 photo") and "3 identified" in line for line in lines), lines


def test_the_threshold_holds_for_all_the_faces_of_a_picture(gallery, canvas, options, pipeline, videos, shared_data):
    """With a table, six faces are six chances to name a stranger: the threshold is read for faces x people
    comparisons, higher than one face's. The table: real scores of the stand-in weights (impostors: the first
    photos of 80 LFW people; genuine: frames of one clip)."""

    def embed(frames_rgb) -> np.ndarray:
        found = [pipeline.analyze(f).embedding for f in frames_rgb]
        return np.stack([x for x in found if x is not None])

    people = sorted((shared_data / "lfw" / "images").iterdir())[:80]
    strangers = embed(read_image_file(sorted(p.iterdir())[0]) for p in people)
    same = embed(cv2.cvtColor(clip_frame(videos, "d3", at), cv2.COLOR_BGR2RGB) for at in np.linspace(0.1, 0.9, 8))
    table = Calibration.from_scores(
        (same @ same.T)[np.triu_indices(len(same), 1)],
        (strangers @ strangers.T)[np.triu_indices(len(strangers), 1)],
        1,
        1,
        "LFW photos and frames of a shared clip",
    )
    calibrated = FacePipeline(replace(pipeline.embedder, calibration=table), pipeline.detector)
    path, _ = canvas
    code, data, _ = act(calibrated, "--data-dir", gallery, *options, "--source", path, "identify", "--all-faces")
    decided = [f for f in data["faces"] if f["decision"] != "low_quality"]
    args = parse_args(["identify"])
    # one kind here: every template is of 5 images, every probe one face; the table has only 1 vs 1
    one = identify_threshold(args, calibrated.embedder, 4, (5, 1))
    together = identify_threshold(args, calibrated.embedder, 4, (5, 1), searches=len(decided))
    assert together.value > one.value and len(decided) >= 5, (together.value, one.value)
    assert {f["threshold"] for f in decided} == {round(together.value, 4)}, decided
    assert f"for {len(decided)} faces x 4 people" in data["summary"]["thresholds"][0]


def test_two_people_photo_names_both(module_tmp, shared_data, options, pipeline):
    """face_recognition's own example: register Obama and Biden from their other photos, then two_people.jpg."""
    photos = shared_data / "photos" / "face_recognition"
    data = module_tmp / "two"
    for name, files in (("Obama", ("obama.jpg", "obama2.jpg", "obama3.jpg")), ("Biden", ("biden.jpg",))):
        folder = module_tmp / name
        folder.mkdir()
        for f in files:
            os.symlink(photos / f, folder / f)
        code, reg, _ = act(pipeline, "--data-dir", data, *options, "--source", folder, "register", "--name", name)
        assert code == 0, reg
    drawn = module_tmp / "two_annotated.png"
    code, out, _ = act(
        pipeline, "--data-dir", data, *options, "--source", photos / "two_people.jpg", "identify", "--all-faces",
        "--annotate", drawn,
    )  # fmt: skip
    faces = sorted(out["faces"], key=lambda f: f["box"][0])  # left to right: Obama, then Biden
    assert code == 0 and [f["name"] for f in faces] == ["Obama", "Biden"], faces
    assert [f["decision"] for f in faces] == ["identified", "identified"]
    # the annotated copy: the source's size, each box drawn in the "identified" green on its left edge
    picture, source = cv2.imread(str(drawn)), cv2.imread(str(photos / "two_people.jpg"))
    assert picture.shape == source.shape
    for f in faces:
        x1, y1, x2, y2 = (int(round(v)) for v in f["box"])
        edge = picture[(y1 + y2) // 2, x1].astype(int)
        assert np.abs(edge - np.array(COLOURS["identified"])).max() < 40, (edge, f)
    # the faces are where face_recognition's example finds them (its face_locations on this file)
    assert faces[0]["box"][0] < 300 < faces[0]["box"][2] and faces[1]["box"][0] < 860 < faces[1]["box"][2], faces
    # a photo over the working size (read shrunk): the boxes are still in the file's own pixels
    big = module_tmp / "two_people_x5.jpg"
    source = cv2.imread(str(photos / "two_people.jpg"))
    assert cv2.imwrite(str(big), cv2.resize(source, (source.shape[1] * 5, source.shape[0] * 5)))
    code, large, _ = act(pipeline, "--data-dir", data, *options, "--source", big, "identify", "--all-faces")
    boxes = sorted((f["box"] for f in large["faces"] if f["decision"] == "identified"), key=lambda b: b[0])
    assert len(boxes) == 2, large["faces"]
    for small, scaled in zip(faces, boxes):
        assert iou(np.array(scaled) / 5, np.array(small["box"])) > 0.8, (scaled, small["box"])


def test_strangers_in_couple_photo_are_unknown(gallery, shared_data, options, pipeline):
    path = shared_data / "photos" / "deepface" / "couple.jpg"
    code, data, lines = act(pipeline, "--data-dir", gallery, *options, "--source", path, "identify", "--all-faces")
    assert code == 1 and len(data["faces"]) == 2, data  # exit 1: nobody identified
    assert all(f["decision"] == "unknown" and f["name"] is None for f in data["faces"]), data["faces"]
    assert data["summary"]["unknown"] == 2 and any("2 unknown" in line for line in lines), lines


def test_a_folder_streams_rows_to_csv_and_jsonl_and_skips_bad_files(module_tmp, gallery, canvas, options, pipeline):
    folder = module_tmp / "event"
    folder.mkdir()
    path, _ = canvas
    shutil.copy(path, folder / "a_group.png")
    (folder / "b_broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg at all")
    shutil.copy(path, folder / "c_again.png")
    out_csv, out_jsonl, drawn = module_tmp / "rows.csv", module_tmp / "rows.jsonl", module_tmp / "drawn"
    code, data, lines = act(
        pipeline, "--data-dir", gallery, *options, "--source", folder,
        "identify", "--all-faces", "--csv", out_csv, "--jsonl", out_jsonl, "--annotate", drawn,
    )  # fmt: skip
    assert code == 0, data
    assert sorted(p.name for p in drawn.iterdir()) == ["a_group.png", "c_again.png"]  # a copy per readable photo
    assert cv2.imread(str(drawn / "a_group.png")).shape == (2 * TILE, 3 * TILE, 3)
    summary = data["summary"]
    assert summary["pictures"] == 2 and summary["faces"] == 12 and summary["skipped_files"] == 1, summary
    assert summary["skipped"][0]["file"] == "b_broken.jpg" and any("skipped b_broken.jpg" in n for n in data["notes"])
    rows = [json.loads(line) for line in out_jsonl.read_text().splitlines()]
    assert rows == data["faces"] and {r["file"] for r in rows} == {"a_group.png", "c_again.png"}
    with open(out_csv, newline="") as f:
        table = list(csv.reader(f))
    assert tuple(table[0]) == CSV_COLUMNS and len(table) == 13
    named = [r for r in table[1:] if r[CSV_COLUMNS.index("decision")] == "identified"]
    assert sorted(r[CSV_COLUMNS.index("name")] for r in named) == sorted(["Clip d0", "Clip d11", "Clip d18"] * 2)
    # the files are created, never overwritten: the existing one is refused before anything runs
    before = out_csv.read_bytes()
    with pytest.raises(FaceIDError, match="already exists"):
        act(pipeline, "--data-dir", gallery, *options, "--source", folder, "identify", "--all-faces", "--csv", out_csv)
    assert out_csv.read_bytes() == before


def two_person_clip(videos: Path, path: Path, frames: int = 36) -> Path:
    """d0 on the left, d18 on the right (second halves of their clips), side by side at 25 fps."""
    caps = [cv2.VideoCapture(str(videos / f"{c}.mp4")) for c in ("d0", "d18")]
    for cap, clip in zip(caps, ("d0", "d18")):
        cap.set(cv2.CAP_PROP_POS_FRAMES, frame_count(videos / f"{clip}.mp4") // 2)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (2 * TILE, TILE))
    for _ in range(frames):
        parts = []
        for cap in caps:
            ok, frame = cap.read()
            assert ok
            parts.append(tile(frame))
        writer.write(np.hstack(parts))
    writer.release()
    for cap in caps:
        cap.release()
    return path


def test_a_video_with_two_people_gives_two_tracks(module_tmp, gallery, videos, options, pipeline):
    clip, drawn = two_person_clip(videos, module_tmp / "two.avi"), module_tmp / "two_annotated.mp4"
    code, data, lines = act(
        pipeline, "--data-dir", gallery, *options, "--source", clip, "identify", "--all-faces", "--annotate", drawn
    )
    tracks = data["faces"]
    assert code == 0 and len(tracks) == 2, tracks
    left, right = sorted(tracks, key=lambda t: t["box"][0])
    assert (left["name"], right["name"]) == ("Clip d0", "Clip d18"), tracks
    for t in tracks:
        assert t["decision"] == "identified" and t["frame"] == 0 and t["last_frame"] == 35 and t["frames"] == 36, t
        assert t["last_time_s"] == pytest.approx(35 / 25) and t["best_frame_score"] >= t["score"] - 0.3, t
    assert left["box"][2] <= TILE + 20 and right["box"][0] >= TILE - 20  # each where its person is
    assert any("track 0 frames 0-35" in line for line in lines), lines
    annotated = cv2.VideoCapture(str(drawn))
    assert (
        int(annotated.get(cv2.CAP_PROP_FRAME_COUNT)) == 36 and int(annotated.get(cv2.CAP_PROP_FRAME_WIDTH)) == 2 * TILE
    )
    annotated.release()
    # --per-frame: the raw rows, one per face per analysed frame, each with its track
    code, per, _ = act(
        pipeline, "--data-dir", gallery, *options, "--source", clip, "identify", "--all-faces", "--per-frame",
        "--every", "4",
    )  # fmt: skip
    frames = {r["frame"] for r in per["faces"]}
    assert frames == set(range(0, 36, 4)) and {r["track"] for r in per["faces"]} == {0, 1}, per["faces"]
    assert per["summary"]["pictures"] == 9 and per["faces"][1]["time_s"] == 0.0


def test_all_faces_command_line_prints_one_json_object(tmp_path, gallery, canvas, options):
    """The real program: --json is one object on stdout, and a flag of --all-faces without it is an error."""
    path, _ = canvas
    base = [sys.executable, str(REPO / "faceid_app.py"), "--data-dir", str(gallery), *map(str, options)]
    res = subprocess.run(
        [*base, "--source", str(path), "identify", "--all-faces", "--json"], capture_output=True, text=True,
        timeout=600, cwd=REPO,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    data = json.loads(res.stdout)
    assert data["ok"] and data["action"] == "identify" and len(data["faces"]) == 6 and data["summary"]["faces"] == 6
    res = subprocess.run([*base, "identify", "--csv", str(tmp_path / "x.csv")], capture_output=True, text=True)
    assert res.returncode == 2 and "--csv needs --all-faces" in res.stderr and not (tmp_path / "x.csv").exists()


# ----------------------------------------------------------------------------- enroll DIR


def test_enroll_a_folder_per_person_tree(module_tmp, shared_data, options, pipeline):
    """face_recognition's known_people layout: one line per person, each registered whole or not at all."""
    train = shared_data / "photos" / "face_recognition" / "knn_examples" / "train"
    tree = module_tmp / "known_people"
    tree.mkdir()
    for person in ("biden", "obama", "kit_harington"):
        os.symlink(train / person, tree / person)
    (tree / "Clip d18").mkdir()
    os.symlink(shared_data / "videos" / "d18.mp4", tree / "Clip d18" / "d18.mp4")  # a clip as the samples
    (tree / "group").mkdir()
    os.symlink(shared_data / "photos" / "face_recognition" / "two_people.jpg", tree / "group" / "two.jpg")
    (tree / "bell\x07").mkdir()  # a name with a control character: refused like --name
    (tree / "broken").mkdir()
    (tree / "broken" / "a.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    data = module_tmp / "enrolled"
    code, out, lines = act(pipeline, "--data-dir", data, *options, "enroll", tree)
    people = {p["name"]: p for p in out["people"]}
    assert code == 1 and out["summary"] == {"people": 7, "enrolled": 4, "not_enrolled": 3}, out
    assert people["biden"]["registered"] and people["biden"]["samples"] == 2, people["biden"]
    assert people["Clip d18"]["registered"] and people["Clip d18"]["samples"] == 5, people["Clip d18"]
    kit = people["kit_harington"]  # one of its two photos shows the face turned away
    assert kit["registered"] and kit["samples"] == 1 and sum(kit["rejected"].values()) == 1, kit
    assert people["group"]["rejected"] == {"more than one face in the photo": 1} and not people["group"]["registered"]
    assert "control character" in people["bell\\x07"]["reason"], people
    assert "unreadable file" in next(iter(people["broken"]["rejected"])), people["broken"]
    assert "Enrolled 4 of 7 people" in lines[-1] and any(line.startswith("NOT ENROLLED 'group'") for line in lines)
    code, listed, _ = act(pipeline, "--data-dir", data, *options, "list")
    assert sorted(p["name"] for p in listed["people"]) == ["Clip d18", "biden", "kit_harington", "obama"]
    # again: everyone already there is skipped without --replace, and registered anew with it
    code, again, _ = act(pipeline, "--data-dir", data, *options, "enroll", tree)
    assert code == 1 and again["summary"]["enrolled"] == 0
    assert "already registered" in {p["name"]: p for p in again["people"]}["obama"]["reason"]
    shutil.rmtree(tree / "group"), shutil.rmtree(tree / "bell\x07"), shutil.rmtree(tree / "broken")
    code, replaced, lines = act(pipeline, "--data-dir", data, *options, "enroll", tree, "--replace")
    assert code == 0 and all(p["replaced"] for p in replaced["people"]), replaced
    assert lines[0].startswith("Re-enrolled 'Clip d18' from 5 samples"), lines
