"""The hostile-input corpus (tests/hostile.py) through every entry point, as real processes.

For each: the exit code (2 for every failure, never 1 = "no match"), one sentence on stderr, no traceback,
one JSON object on stdout under --json, the pixel bomb refused in well under 2 s of gate time, and nothing
outside the gallery changed (modes and contents of a bystander folder checked after every run).
(.rec records: tests/test_unpack.py; the gate itself: tests/test_decode.py.)
"""

from __future__ import annotations

import json
import os
import stat
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from builders import make_random_checkpoint
from hostile import BAD_IMAGES, bomb_jpeg, write_bad_images

from faceid.core.errors import FaceIDError
from faceid.gallery.store import Gallery
from faceid.model.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
FAKE_FP = "0123456789abcdef"


# ----------------------------------------------------------------------------- helpers


def snapshot(root: Path) -> dict[str, tuple[int, bytes | None]]:
    out = {}
    for p in [root, *sorted(root.rglob("*"))]:
        st = p.lstat()
        out[str(p.relative_to(root))] = (st.st_mode, p.read_bytes() if stat.S_ISREG(st.st_mode) else None)
    return out


def run(script: str, *args, stdin: str = "", cwd: Path = REPO) -> tuple[subprocess.CompletedProcess, float]:
    start = time.perf_counter()
    env = {k: v for k, v in os.environ.items() if k != "FACEID_DEBUG"}
    out = subprocess.run(
        [sys.executable, str(REPO / script), *map(str, args)],
        input=stdin,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return out, time.perf_counter() - start


def check_failure(out: subprocess.CompletedProcess, want_json: bool, expect: str = "") -> str:
    """Exit 2, no traceback, exactly one error sentence on stderr (other stderr lines are progress/notes),
    and under --json exactly one JSON object on stdout that says the same."""
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)
    assert "Traceback" not in out.stderr + out.stdout
    errors = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, out.stderr
    sentence = errors[0][len("error: ") :]
    assert sentence.endswith(".") and expect in sentence, sentence
    if want_json:
        lines = [line for line in out.stdout.splitlines() if line.strip()]
        assert len(lines) == 1, out.stdout
        data = json.loads(lines[0])
        assert data["ok"] is False and data["error"] == sentence and data["exit_code"] == 2
    return sentence


@pytest.fixture(scope="module")
def world(module_tmp):
    """A bystander folder (modes 1777/0755/0640, some files), the corpus, a gallery holding 'alice'."""
    root = module_tmp / "hostile"
    root.mkdir()
    outside = root / "outside"
    (outside / "shared").mkdir(parents=True)
    (outside / "thesis.txt").write_text("years of work")
    (outside / "shared" / "photo.jpg").write_bytes(b"not really")
    os.chmod(outside / "shared", 0o1777)
    os.chmod(outside / "thesis.txt", 0o640)
    corpus = write_bad_images(root / "corpus")
    gallery = outside / "gallery"
    crops = [np.full((112, 112, 3), 90 + i, np.uint8) for i in range(2)]
    emb = np.random.default_rng(0).standard_normal((2, 512)).astype(np.float32)
    with Gallery.open(gallery) as g:
        g.register("alice", crops, emb, FAKE_FP)
    return {
        "root": root,
        "outside": outside,
        "gallery": gallery,
        "corpus": corpus,
        "before": snapshot(outside),
        "model": make_random_checkpoint(root / "random.pth", seed=0),
    }


def unchanged_outside(world) -> None:
    """Everything under `outside` but the gallery itself is exactly as it was (modes and bytes)."""
    before = {k: v for k, v in world["before"].items() if not k.startswith("gallery")}
    after = {k: v for k, v in snapshot(world["outside"]).items() if not k.startswith("gallery")}
    assert after == before


# ----------------------------------------------------------------------------- the app

ACTIONS = [["register", "--name", "bob"], ["verify", "--name", "alice"], ["identify"], ["liveness"]]


@pytest.mark.parametrize("i, name", list(enumerate(sorted(BAD_IMAGES))))
def test_app_refuses_every_bad_image_before_loading_a_model(world, i, name):
    """A bad --source fails before the network loads: one sentence naming the file, exit 2 (JSON every
    other run). Each image meets a different action; the bomb meets all of them below."""
    bad = world["root"] / "corpus" / name
    want_json = i % 2 == 1
    out, _ = run(
        "faceid_app.py",
        "--data-dir",
        world["gallery"],
        "--model",
        world["model"],
        "--source",
        bad,
        "--no-preview",
        *ACTIONS[i % len(ACTIONS)],
        *(["--json"] if want_json else []),
    )
    check_failure(out, want_json, str(bad))
    assert "model:" not in out.stderr, "the model was loaded before the source was checked"
    unchanged_outside(world)


@pytest.mark.parametrize("action", ACTIONS, ids=lambda a: a[0])
def test_app_refuses_the_bomb_everywhere_quickly(world, action):
    bomb = world["root"] / "corpus" / "bomb.jpg"
    for want_json in (False, True):
        out, seconds = run(
            "faceid_app.py",
            "--data-dir",
            world["gallery"],
            "--model",
            world["model"],
            "--source",
            bomb,
            "--no-preview",
            *action,
            *(["--json"] if want_json else []),
        )
        sentence = check_failure(out, want_json, f"Refused {bomb}: its header claims 65000x65000 pixels")
        assert "over the 120 MP limit" in sentence and "model:" not in out.stderr
        assert sentence.endswith("if it is a real photo (--max-pixels).")  # the app adds its flag
        assert seconds < 30, seconds  # process start included; the gate itself: tests/test_decode.py (< 0.5 s)
    unchanged_outside(world)


def test_menu_survives_the_bomb_and_quits_cleanly(world):
    out, _ = run(
        "faceid_app.py",
        "--data-dir",
        world["gallery"],
        "--model",
        world["model"],
        "--no-preview",
        "--source",
        world["root"] / "corpus" / "bomb.jpg",
        stdin="2\nalice\n3\n4\n",
    )
    assert out.returncode == 0 and "Traceback" not in out.stdout + out.stderr
    assert out.stdout.count("error: Refused") == 2 and "1 registered" in out.stdout and "bye" in out.stdout
    unchanged_outside(world)


@pytest.mark.e2e
def test_folder_of_only_bad_images_says_what_happened(world, tmp_path):
    out, _ = run(
        "faceid_app.py",
        "--data-dir",
        tmp_path / "g",
        "--model",
        world["model"],
        "--no-preview",
        "--source",
        world["root"] / "corpus",
        "register",
        "--name",
        "bob",
        "--json",
    )
    sentence = check_failure(out, True, "None of the images in folder")
    assert "bomb.jpg" in sentence and "no frames were read" not in sentence
    for name in BAD_IMAGES:
        assert f"skipped {name}" in out.stderr
    unchanged_outside(world)


def test_foreign_data_dir_and_symlinks_are_refused_untouched(world, tmp_path):
    out, _ = run("faceid_app.py", "--data-dir", world["outside"] / "shared", "list", "--json")
    check_failure(out, True, "already holds other files")
    target = tmp_path / "precious"
    target.mkdir()
    (target / "thesis.txt").write_text("keep")
    gallery = tmp_path / "g"
    with Gallery.open(gallery):
        pass
    (gallery / "samples").rmdir()
    (gallery / "samples").symlink_to(target)
    out, _ = run("faceid_app.py", "--data-dir", gallery, "list")
    check_failure(out, False, "is a symbolic link")
    assert (target / "thesis.txt").read_text() == "keep" and [p.name for p in target.iterdir()] == ["thesis.txt"]
    unchanged_outside(world)


def test_invisible_name_refused_before_anything_loads(world):
    out, seconds = run(
        "faceid_app.py", "--data-dir", world["gallery"], "--source", "99", "register", "--name", "ali\u200bce", "--json"
    )
    check_failure(out, True, "U+200B ZERO WIDTH SPACE")
    out, _ = run("faceid_app.py", "--data-dir", world["gallery"], "list")
    assert out.returncode == 0 and "1 registered" in out.stdout


def test_missing_camera_fails_before_the_model_loads(world):
    out, _ = run(
        "faceid_app.py", "--data-dir", world["gallery"], "--model", world["model"], "--source", "97", "identify"
    )
    check_failure(out, False, "No camera at index 97")
    assert "model:" not in out.stderr


# ----------------------------------------------------------------------------- photos on defaults


def noisy_png(jpeg: Path) -> bytes:
    """The photo as a PNG with a damaged ancillary chunk: libpng warns about it on stderr by itself."""
    data = bytearray(cv2.imencode(".png", cv2.imread(str(jpeg)))[1].tobytes())
    chunk = b"tEXt" + b"Comment\x00hi"
    return bytes(data[:33]) + struct.pack(">I", len(chunk) - 4) + chunk + b"\0\0\0\0" + bytes(data[33:])


@pytest.mark.e2e
def test_photo_folder_and_single_photo_work_on_defaults(world, shared_data, tmp_path):
    """Issue 8: --sample-gap skipped photos (a folder of 8 failed), one photo failed verify/identify, and the
    errors said "no frames were read". Defaults only: --samples 5, --probe-samples 3, --sample-gap 5."""
    photos = shared_data / "photos" / "face_recognition"
    folder = tmp_path / "photos"
    write_bad_images(folder)
    for name in ("obama.jpg", "obama2.jpg", "obama3.jpg"):
        (folder / name).write_bytes((photos / name).read_bytes())
    (folder / "obama4.png").write_bytes(noisy_png(photos / "obama.jpg"))
    assert zlib.crc32(b"") == 0
    gallery = tmp_path / "g"
    common = ["--data-dir", gallery, "--model", world["model"], "--no-preview"]
    out, _ = run("faceid_app.py", *common, "--source", folder, "register", "--name", "obama", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["registered"] and data["samples"] == 4
    assert any("every usable photo" in n for n in data["notes"])
    assert sum(n.startswith("skipped ") for n in data["notes"]) == len(BAD_IMAGES)
    assert "libpng" not in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.splitlines()) == len(set(out.stderr.splitlines())), "a note was printed twice"
    for action in (["verify", "--name", "obama"], ["identify"]):
        out, _ = run("faceid_app.py", *common, "--source", photos / "obama2.jpg", *action, "--json")
        assert out.returncode in (0, 1), out.stderr
        assert json.loads(out.stdout)["ok"] is True
    unchanged_outside(world)


# ----------------------------------------------------------------------------- the evaluator


def test_evaluator_pairs_and_bin_refuse_the_bomb_in_one_sentence(world, tmp_path):
    images = tmp_path / "lfw"
    for person in ("Ann", "Bob"):
        (images / person).mkdir(parents=True)
        for i in (1, 2):
            (images / person / f"{person}_{i:04d}.jpg").write_bytes(
                bomb_jpeg()
                if (person, i) == ("Bob", 2)
                else cv2.imencode(".jpg", np.full((120, 120, 3), 40 * i, np.uint8))[1].tobytes()
            )
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("2\nAnn\t1\t2\nBob\t1\t2\nAnn\t1\tBob\t2\nBob\t1\tAnn\t2\n")
    out, _ = run(
        "evaluate_model.py",
        "--pairs",
        pairs,
        "--images",
        images,
        "--model",
        world["model"],
        "--no-cache",
        "--out-dir",
        tmp_path / "out",
        "--json",
        "--quiet",
        "--folds",
        "2",
    )
    check_failure(out, True, "Bob_0002.jpg: its header claims 65000x65000 pixels")

    import pickle

    blobs = [cv2.imencode(".jpg", np.full((112, 112, 3), v, np.uint8))[1].tobytes() for v in (10, 20, 30)]
    blobs.append(bomb_jpeg())
    bin_path = tmp_path / "evil.bin"
    bin_path.write_bytes(pickle.dumps((blobs, [True, False])))
    out, _ = run(
        "evaluate_model.py",
        "--bin",
        bin_path,
        "--model",
        world["model"],
        "--no-cache",
        "--out-dir",
        tmp_path / "out",
        "--quiet",
        "--folds",
        "2",
    )
    check_failure(out, False, "65000x65000")
    unchanged_outside(world)


# ----------------------------------------------------------------------------- checkpoints


def tampered(path: Path, **changes) -> Path:
    ckpt = torch.load(path, weights_only=True)
    for key, value in changes.items():
        if key.startswith("preprocess."):
            ckpt["preprocess"][key.split(".", 1)[1]] = value
        else:
            ckpt[key] = value
    out = path.with_name(f"bad-{abs(hash(repr(sorted(changes.items(), key=str)))) % 10**8}.pth")
    torch.save(ckpt, out)  # a hostile file: written raw, as an attacker would, not through our schema
    return out


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"threshold": -5.0}, "threshold"),
        ({"threshold": float("nan")}, "threshold"),
        ({"threshold": "0.5"}, "threshold"),
        ({"preprocess.size": 0}, "preprocess.size"),
        ({"preprocess.size": 100000}, "preprocess.size"),
        ({"preprocess.crop": "weird"}, "preprocess.crop"),
        ({"preprocess.margin": -4}, "preprocess.margin"),
        ({"preprocess.flip": "yes"}, "preprocess.flip"),
        ({"preprocess": [1, 2]}, "preprocess"),
        ({"threshold_info": {"threshold": 9.0}}, "threshold_info.threshold"),
        ({"model": {"w": "not a tensor"}}, "model"),
    ],
)
def test_checkpoint_fields_are_validated_at_load(world, changes, field):
    bad = tampered(world["model"], **changes)
    with pytest.raises(FaceIDError, match=f"field '{field}' is .*; expected"):
        load_checkpoint(bad)


@pytest.mark.e2e
def test_bad_calibration_and_wrong_shapes_and_nan_weights_are_named(world):
    with pytest.raises(FaceIDError, match="calibration table .* is malformed"):
        load_checkpoint(tampered(world["model"], calibration={"format": "nonsense"}))
    from faceid.model.embedder import load_embedder

    ckpt = torch.load(world["model"], weights_only=True)
    ckpt["model"]["last_linear.weight"] = torch.zeros(128, 1792)
    shapes = world["root"] / "shapes.pth"
    torch.save(ckpt, shapes)
    with pytest.raises(FaceIDError, match="does not fit InceptionResnetV1 with 512-d embeddings"):
        load_embedder(model_path=shapes)
    ckpt = torch.load(world["model"], weights_only=True)
    ckpt["model"]["last_linear.weight"][0, 0] = float("nan")
    torch.save(ckpt, shapes)
    with pytest.raises(FaceIDError, match="non-finite weights"):
        load_embedder(model_path=shapes)


@pytest.mark.e2e
def test_app_with_a_lying_checkpoint_is_exit_2_not_a_match(world, shared_data):
    """threshold -5 used to make every face MATCH, "calibrated in training"."""
    bad = tampered(world["model"], threshold=-5.0)
    out, _ = run(
        "faceid_app.py",
        "--data-dir",
        world["gallery"],
        "--model",
        bad,
        "--no-preview",
        "--source",
        shared_data / "photos" / "face_recognition" / "obama.jpg",
        "identify",
        "--json",
    )
    check_failure(out, True, "field 'threshold' is -5.0")
    unchanged_outside(world)


@pytest.mark.parametrize("action", [["list"], ["delete", "--name", "nobody"]])
def test_list_and_delete_never_import_torch(world, action):
    """They need only the gallery; importing torch cost ~2.3 s of a ~3 s `list` (bench/bench_startup.py)."""
    code = (
        "import runpy, sys\nsys.argv = ['faceid_app.py', '--data-dir', sys.argv[1]] + sys.argv[2:]\n"
        "try:\n    runpy.run_path('faceid_app.py', run_name='__main__')\nexcept SystemExit as e:\n"
        "    print('exit', e.code, 'torch' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(world["gallery"]), *action],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.stdout.strip().endswith("False"), out.stdout + out.stderr
