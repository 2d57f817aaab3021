"""The JSON every action prints, pinned: its keys and their types, and that the text a person reads says the same.

Real actions on real media: clips from ../shared/data/videos and photos from ../shared/data/photos, a real SQLite
gallery, the stand-in weights. Each action runs once (`run_action`), and both its JSON object and its text lines
are made from that one result by `faceid.app.render`, exactly as the command line prints them.
"""

from __future__ import annotations

import json
import pickle
import re
from dataclasses import replace

import numpy as np
import pytest

from faceid.app import render
from faceid.app.actions import run_action
from faceid.app.cli import parse_args, run
from faceid.app.liveness import LivenessResult
from faceid.app.outcome import EXIT_NO_MATCH, LivenessRefused, Outcome
from faceid.app.session import Session, load_pipeline
from faceid.core.errors import EXIT_OK
from faceid.core.report import count
from faceid.model.calibration import Calibration
from faceid.model.face import FacePipeline

pytestmark = pytest.mark.e2e

OPTIONAL_STR = (str, type(None))
OPTIONAL_DICT = (dict, type(None))
MODEL = {
    "source": str,
    "runtime": str,
    "fingerprint": str,
    "crop": str,
    "threshold_source": str,
    "calibration": OPTIONAL_DICT,
}
TABLE_MODEL_CALIBRATION = {"source": str, "benchmark_data": bool, "comparison": str, "impostor_comparisons": int}
DECISION = {
    "threshold": float,
    "threshold_source": str,
    "threshold_text": str,
    "calibration": OPTIONAL_DICT,
    "margin": float,
    "margin_source": str,
    "margin_text": str,
}
TABLE_READING = {
    "threshold": float,
    "rate": str,
    "target": float,
    "gallery_size": (int, type(None)),
    "measured_rate": float,
    "rate_95_high": float,
    "resolved": bool,
    "beyond_data": bool,
    "tar": (float, type(None)),
    "text": str,
    "tail_fit": bool,
    "threshold_95_range": (list, type(None)),
    "measured_for": str,
    "used_for": OPTIONAL_STR,
    "gallery": OPTIONAL_DICT,
}
LIVENESS = {
    "passed": bool,
    "reason": str,
    "prompts": list,
    "frames": int,
    "yaw_min": (float, type(None)),
    "yaw_max": (float, type(None)),
}
MATCH = {"name": str, "score": float}
SCHEMAS = {
    "register": {
        "action": str,
        "name": str,
        "registered": bool,
        "samples": int,
        "min_sample_cosine": float,
        "warning": OPTIONAL_STR,
        "notes": list,
        "similar_to": OPTIONAL_DICT,
        "liveness": OPTIONAL_DICT,
        "model": dict,
    },
    "verify": {
        "action": str,
        "name": str,
        "match": bool,
        "score": float,
        **DECISION,
        "reason": OPTIONAL_STR,
        "beaten_by": OPTIONAL_DICT,
        "closest_other": OPTIONAL_DICT,
        "quality": dict,
        "notes": list,
        "liveness": OPTIONAL_DICT,
        "model": dict,
    },
    "identify": {
        "action": str,
        "decision": str,
        "identified": OPTIONAL_STR,
        "candidates": list,
        "matches": list,
        **DECISION,
        "quality": dict,
        "notes": list,
        "liveness": OPTIONAL_DICT,
        "model": dict,
    },
    "list": {"action": str, "people": list},
    "delete": {"action": str, "name": str, "deleted": bool},
    "check": {"action": str, "intact": bool, "templates": int, "search_index": dict},
    "reenroll": {"action": str, "people": int, "imported_kept": list, "model": dict},
    "import-seed": {"action": str, "people": int, "model": dict},
    "liveness": {"action": str, **LIVENESS},
}
REFUSED_REGISTER = {"action": str, "name": str, "registered": bool, "liveness": dict}
REFUSED_DECISION = {"liveness": dict, "match": bool, "action": str}
PERSON = {"name": str, "samples": int, "created": str, "fingerprint": str}
CLIP_FRAMES = {"d18": 216, "d19": 250}  # frame counts: register from the first half, probe with the second


def assert_schema(obj: dict, schema: dict, what: str) -> None:
    assert set(obj) == set(schema), (what, sorted(set(obj) ^ set(schema)))
    for key, kind in schema.items():
        if kind is float:  # a JSON number: an int only where Python rounded a whole number
            assert isinstance(obj[key], (float, int)) and not isinstance(obj[key], bool), (what, key, obj[key])
        else:
            assert isinstance(obj[key], kind), (what, key, type(obj[key]), obj[key])
    json.dumps(obj, ensure_ascii=False)  # and it is JSON


def number_after(prefix: str, line: str) -> float:
    found = re.search(re.escape(prefix) + r"\s*(-?\d+\.\d+)", line)
    assert found, (prefix, line)
    return float(found.group(1))


def close(text_value: float, json_value: float) -> bool:
    """The text shows 3 decimals of the value the JSON rounds to 4."""
    return abs(text_value - json_value) <= 0.0006


# ----------------------------------------------------------------------------- running real actions


@pytest.fixture(scope="module")
def model_options(stand_in) -> list:
    return ["--weights", stand_in, "--crop", "aligned5", "--offline", "--no-preview", "--sample-gap", "8"]


@pytest.fixture(scope="module")
def pipeline(model_options) -> FacePipeline:
    """The stand-in weights, loaded once for the module."""
    return load_pipeline(parse_args([str(a) for a in model_options]))


@pytest.fixture(scope="module")
def calibrated(pipeline) -> FacePipeline:
    """The same network with a calibration table (scores made up, the table real), for the "table" fields."""
    rng = np.random.default_rng(0)
    table = Calibration.from_scores(
        genuine=rng.uniform(0.6, 1.0, 200),
        impostor=rng.uniform(-0.2, 0.5, 5000),
        samples=3,
        probe_samples=3,
        source="made-up scores for tests",
    )
    return FacePipeline(replace(pipeline.embedder, calibration=table), pipeline.detector)


def act(pipeline: FacePipeline, *argv) -> tuple[object, Outcome]:
    """Run one action as the command line does under --json: (its result, the result as printed)."""
    args = parse_args([*map(str, argv), "--json"])
    session = Session(args, pipeline_factory=lambda _: pipeline)
    try:
        result = run_action(session, args.action, args)
    finally:
        session.close()
    return result, render.outcome(result)


@pytest.fixture(scope="module")
def world(module_tmp, shared_data, model_options, pipeline, calibrated) -> dict[str, Outcome]:
    """Every action once, in a session's order, on one gallery; each outcome by a name."""
    videos, photos = shared_data / "videos", shared_data / "photos" / "face_recognition"
    opts = ["--data-dir", module_tmp / "gallery", *model_options]

    def half(clip: str, second: bool) -> list:
        frames = CLIP_FRAMES[clip] // 2
        return [
            "--source",
            videos / f"{clip}.mp4",
            *(["--start-frame", frames] if second else ["--max-frames", frames]),
        ]

    seed = module_tmp / "face_embeddings.pkl"
    vector = np.random.default_rng(1).normal(size=512).astype(np.float32)
    seed.write_bytes(pickle.dumps({"seed person": vector / np.linalg.norm(vector)}))
    probe = ["--probe-samples", "3"]
    runs = {
        "register": (pipeline, *opts, *half("d18", False), "--samples", "3", "register", "--name", "d18"),
        "register another": (pipeline, *opts, *half("d19", False), "--samples", "3", "register", "--name", "d19"),
        "verify": (pipeline, *opts, *half("d18", True), *probe, "verify", "--name", "d18"),
        "verify other": (pipeline, *opts, *half("d19", True), *probe, "verify", "--name", "d18"),
        "identify": (pipeline, *opts, *half("d18", True), *probe, "identify"),
        "verify calibrated": (calibrated, *opts, *half("d18", True), *probe, "verify", "--name", "d18"),
        "identify calibrated": (calibrated, *opts, *half("d19", True), *probe, "identify"),
        "import-seed": (pipeline, *opts, "import-seed", "--pickle", seed),
        "reenroll": (pipeline, *opts, "reenroll"),
        "list": (pipeline, *opts, "list"),
        "check": (pipeline, *opts, "check"),
        "liveness": (pipeline, *opts, *half("d18", False), "liveness"),
        "register refused": (
            pipeline,
            *opts,
            "--source",
            photos / "obama.jpg",
            "--liveness",
            "register",
            "--name",
            "o",
        ),
        "verify refused": (pipeline, *opts, "--source", photos / "obama.jpg", "--liveness", "verify", "--name", "d18"),
        "delete": (pipeline, *opts, "delete", "--name", "d19"),
    }
    return {what: act(*argv)[1] for what, argv in runs.items()}


# ----------------------------------------------------------------------------- the schema of every action


@pytest.mark.parametrize(
    "what",
    ["register", "register another", "verify", "verify other", "identify", "verify calibrated", "identify calibrated"]
    + ["import-seed", "reenroll", "list", "check", "liveness", "delete"],
)
def test_every_action_has_its_keys_and_types(world, what):
    out = world[what]
    action = out.data["action"]
    assert action == what.split()[0]
    assert_schema(out.data, SCHEMAS[action], what)
    if "model" in out.data:
        assert_schema(out.data["model"], MODEL, f"{what}: model")
    if out.data.get("liveness") is not None:
        assert_schema(out.data["liveness"], LIVENESS, f"{what}: liveness")
    for key in ("similar_to", "closest_other"):
        if out.data.get(key) is not None:
            assert_schema(out.data[key], MATCH, f"{what}: {key}")
    for match in out.data.get("matches", []):
        assert_schema(match, MATCH, f"{what}: matches")
    for person in out.data.get("people", []) if action == "list" else []:
        assert_schema(person, PERSON, f"{what}: person")


def test_the_uncalibrated_and_the_calibrated_decision(world):
    for what in ("verify", "identify"):
        assert world[what].data["calibration"] is None and world[what].data["model"]["calibration"] is None
        assert world[what].data["threshold_source"] == world[what].data["model"]["threshold_source"] != "table"
    for what in ("verify calibrated", "identify calibrated"):
        data = world[what].data
        assert data["threshold_source"] == data["model"]["threshold_source"] == "table"
        assert_schema(data["calibration"], TABLE_READING, f"{what}: calibration")
        assert_schema(data["model"]["calibration"], TABLE_MODEL_CALIBRATION, f"{what}: model calibration")
        assert data["calibration"]["text"] == data["threshold_text"]
    assert world["verify calibrated"].data["calibration"]["rate"] == "FAR"
    assert world["identify calibrated"].data["calibration"]["rate"] == "FPIR"


def test_liveness_refusals_have_their_keys(world):
    register, verify = world["register refused"], world["verify refused"]
    assert_schema(register.data, REFUSED_REGISTER, "register refused")
    assert register.data["action"] == "register" and register.data["registered"] is False
    assert_schema(verify.data, REFUSED_DECISION, "verify refused")
    assert verify.data["action"] == "verify" and verify.data["match"] is False
    for out in (register, verify):
        assert_schema(out.data["liveness"], LIVENESS, "refused: liveness")
        assert out.code == EXIT_NO_MATCH and not out.data["liveness"]["passed"]
        assert out.lines == [f"LIVENESS FAILED: {out.data['liveness']['reason']}."]


def test_the_printed_object_is_ok_plus_the_data(world, module_tmp, model_options, pipeline, capsys):
    """What --json prints is {"ok": true, **data}: the command line adds only "ok"."""
    argv = ["--data-dir", module_tmp / "gallery", *model_options, "check"]
    _, rendered = act(pipeline, *argv)
    capsys.readouterr()
    code = run(Session(parse_args([*map(str, argv), "--json"])))
    printed = json.loads(capsys.readouterr().out)
    assert code == rendered.code == 0 and printed == {"ok": True, **rendered.data}


# ----------------------------------------------------------------------------- text and JSON agree


def test_register_text_and_json_agree(world):
    for what in ("register", "register another"):
        out = world[what]
        data = out.data
        assert out.code == EXIT_OK and data["registered"] is True
        assert out.lines[0].startswith(f"Registered {data['name']!r} from {data['samples']} samples")
        assert close(number_after("cosine", out.lines[0]), data["min_sample_cosine"])
        warnings = [line for line in out.lines if line.startswith("WARNING")]
        assert warnings == ([f"WARNING: {data['warning']}."] if data["warning"] else [])
        if data["warning"]:
            assert data["similar_to"] is not None and repr(data["similar_to"]["name"]) in data["warning"]


def test_verify_text_and_json_agree(world):
    for what in ("verify", "verify other", "verify calibrated"):
        out = world[what]
        data, first = out.data, out.lines[0]
        assert first.startswith(("MATCH: " if data["match"] else "NO MATCH: ") + repr(data["name"]))
        assert out.code == (EXIT_OK if data["match"] else EXIT_NO_MATCH)
        assert close(number_after("score", first), data["score"])
        assert (data["reason"] is None) == data["match"]
        beaten = data["beaten_by"]
        assert (beaten is not None) == (data["reason"] == "beaten by another person")
        if beaten is not None:  # someone else scores more than the margin above the claimed person
            assert f"but {beaten['name']!r} scores" in first and close(number_after("scores", first), beaten["score"])
            assert close(number_after("the margin", first), data["margin"])
            assert beaten["score"] - data["score"] > data["margin"] and beaten == data["closest_other"]
        else:
            assert close(number_after(">=" if data["match"] else "<", first), data["threshold"])
        assert f"({data['threshold_text']})." in first
        assert f"{data['margin_text']}." in out.lines
        other = data["closest_other"]
        closest = [line for line in out.lines if line.startswith("closest other person:")]
        assert len(closest) == (other is not None)
        if other is not None:
            assert repr(other["name"]) in closest[0] and close(
                number_after(repr(other["name"]), closest[0]), other["score"]
            )
        assert not any(line.startswith("note:") for line in out.lines)  # notes go to stderr once, as they happen
    assert world["verify"].data["match"] and not world["verify other"].data["match"]


def test_identify_text_and_json_agree(world):
    for what in ("identify", "identify calibrated"):
        out = world[what]
        data, first = out.data, out.lines[0]
        assert out.code == (EXIT_OK if data["identified"] else EXIT_NO_MATCH)
        assert data["decision"] == ("identified" if data["identified"] else data["decision"])
        if data["identified"] is not None:
            assert first.startswith(f"IDENTIFIED: {data['identified']!r}") and data["candidates"] == []
            assert data["identified"] == data["matches"][0]["name"]
        elif data["decision"] == "ambiguous":
            assert first.startswith("AMBIGUOUS: ") and len(data["candidates"]) >= 2
            assert all(repr(c["name"]) in first for c in data["candidates"])
        else:
            assert data["decision"] == "unknown" and first.startswith("UNKNOWN: nobody scored at or above")
        assert f"({data['threshold_text']})." in first
        ranked = out.lines[1 : 1 + len(data["matches"])]
        assert len(ranked) == len(data["matches"]) > 0
        for i, (line, match) in enumerate(zip(ranked, data["matches"]), 1):
            assert line.startswith(f"  {i}. {match['name']}") and close(
                number_after(match["name"], line), match["score"]
            )
            if abs(match["score"] - data["threshold"]) > 0.001:
                assert ("<- above threshold" in line) == (match["score"] >= data["threshold"])
        assert out.lines[1 + len(ranked) :] == [f"{data['margin_text']}."]  # notes: stderr only, as they happen
    assert world["identify"].data["identified"] == "d18"


def test_gallery_actions_text_and_json_agree(world):
    listed = world["list"]
    people = listed.data["people"]
    assert listed.lines[0] == f"{len(people)} registered:" and len(listed.lines) == 1 + len(people)
    for line, person in zip(listed.lines[1:], people):
        assert person["name"] in line and count(person["samples"], "sample") in line and person["fingerprint"] in line
    assert sorted(p["name"] for p in people) == ["d18", "d19", "seed person"]

    check = world["check"]
    assert check.data["intact"] is True and f"intact ({count(check.data['templates'], 'template')})" in check.lines[0]
    assert check.data["templates"] == 3

    seed = world["import-seed"]
    assert seed.lines[0].startswith("Imported 1 person from ") and seed.data["people"] == 1

    again = world["reenroll"]
    data = again.data
    people = count(data["people"], "person", "people")
    assert again.lines[0] == f"Recomputed the templates of {people} with {data['model']['source']}."
    assert data["imported_kept"] == ["seed person"]
    assert f"Kept 1 imported person as they are (e.g. {'seed person'!r})" in again.lines[1]

    gone = world["delete"]
    assert gone.data == {"action": "delete", "name": "d19", "deleted": True} and gone.lines == ["Deleted 'd19'."]


def test_liveness_text_and_json_agree(world):
    out = world["liveness"]
    data = out.data
    assert out.code == (EXIT_OK if data["passed"] else EXIT_NO_MATCH)
    assert out.lines == [
        f"LIVENESS {'PASSED' if data['passed'] else 'FAILED'}: {data['reason']} "
        f"(prompts {', '.join(data['prompts'])}; {data['frames']} frames)."
    ]


def test_a_registration_whose_face_changed_after_the_challenge():
    """The one refusal real media cannot stage cheaply: the samples show another face than the one that turned."""
    live = LivenessResult(passed=True, reason="turned as asked", prompts=["left"], frames=40, yaw_trace=[0.0, 20.0])
    out = render.outcome(LivenessRefused("register", live, name="alice", face_score=0.1234))
    assert out.code == EXIT_NO_MATCH
    assert_schema(out.data, REFUSED_REGISTER, "register refused after the challenge")
    assert out.data["name"] == "alice" and out.data["registered"] is False and out.data["liveness"]["passed"]
    assert out.lines == [
        "LIVENESS FAILED: the registered face (score 0.123) is not the one that passed the head-turn challenge."
    ]
