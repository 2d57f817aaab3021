"""Hostile media and paths (issue 19): degenerate images and videos, streams that cannot seek, pipes and devices.

Every file is made here with real encoders: PNGs with OpenCV, a raw MJPEG stream (JPEGs back to back, no container,
so it cannot seek), MPEG-1 program streams concatenated (the header of the first claims ~40 frames, 120 are there),
an MJPG AVI, real named pipes (os.mkfifo) and a real character device (/dev/null). Each case ends in a right
answer or one sentence, within seconds; nothing is ever opened that could block (a pipe is only stat-ed).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from faceid.app.camera import open_source
from faceid.core.errors import FaceIDError
from faceid.gallery.records import GalleryError
from faceid.gallery.store import Gallery

REPO = Path(__file__).resolve().parents[1]


def frame(i: int, w: int = 160, h: int = 120) -> np.ndarray:
    """Frame i of a test stream: a flat grey of level 2*i (mod 250), so the frame a reader got can be told apart."""
    return np.full((h, w, 3), (2 * i) % 250, np.uint8)


def level(rgb: np.ndarray) -> int:
    """Which frame this is (JPEG / MPEG keep a flat grey within a level or two: see `near`)."""
    return int(round(float(rgb.mean()) / 2))


def near(levels: list[int], first: int) -> bool:
    """Whether `levels` are those of frames first, first + 1, ... (each within one frame's grey step)."""
    return all(abs(got - want) <= 1 for got, want in zip(levels, range(first, first + len(levels))))


def write_raw_mjpeg(path: Path, count: int) -> Path:
    with open(path, "wb") as f:
        for i in range(count):
            f.write(cv2.imencode(".jpg", frame(i))[1].tobytes())
    return path


def write_video(path: Path, count: int, fourcc: str, first: int = 0, size=(160, 120)) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 25, size)
    assert writer.isOpened(), f"OpenCV cannot write {fourcc} here"
    for i in range(first, first + count):
        writer.write(frame(i, *size))
    writer.release()
    return path


def within(seconds: float, fn, *args):
    """fn(*args) in a thread, failing (rather than hanging the suite) when it takes longer: a pipe that is opened
    blocks until a writer comes."""
    box: dict = {}

    def target():
        try:
            box["value"] = fn(*args)
        except BaseException as err:  # handed back to the test
            box["error"] = err

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"{fn.__name__} blocked for more than {seconds} s"
    if "error" in box:
        raise box["error"]
    return box.get("value")


# ----------------------------------------------------------------------------- streams that cannot seek


def test_a_raw_mjpeg_stream_reaches_the_start_frame_by_decoding_forward(tmp_path):
    stream = write_raw_mjpeg(tmp_path / "cam.mjpeg", 150)
    assert cv2.VideoCapture(str(stream)).get(cv2.CAP_PROP_POS_FRAMES) == 0  # it really cannot seek:
    probe = cv2.VideoCapture(str(stream))
    probe.set(cv2.CAP_PROP_POS_FRAMES, 120)
    assert level(cv2.cvtColor(probe.read()[1], cv2.COLOR_BGR2RGB)) == 0  # OpenCV alone gives frame 0
    with open_source(str(stream), start_frame=120) as src:
        frames = list(src)
    assert near([level(f) for f in frames[:3]], 120) and len(frames) == 30
    assert src.position == 150 and src.exhausted
    with pytest.raises(FaceIDError, match=r"start frame 5,000 is past the end of .*the stream has only 150 frames"):
        within(20, open_source, str(stream), None, 5000)


def test_header_frame_counts_are_hints_not_limits(tmp_path):
    parts = [write_video(tmp_path / f"part{k}.mpg", 40, "PIM1", first=40 * k) for k in range(3)]
    joined = tmp_path / "joined.mpg"
    joined.write_bytes(b"".join(p.read_bytes() for p in parts))
    hinted = int(cv2.VideoCapture(str(joined)).get(cv2.CAP_PROP_FRAME_COUNT))  # the first part's estimate
    assert 0 < hinted <= 40
    with open_source(str(joined)) as src:
        assert len(list(src)) == 120 and f"about {hinted} frames by its header" in src.description
    with open_source(str(joined), start_frame=60) as src:  # a seek stops at 40: decoded forward instead
        frames = list(src)
    assert near([level(f) for f in frames[:3]], 60) and len(frames) == 60
    with pytest.raises(FaceIDError, match="the stream has only 120 frames"):
        open_source(str(joined), start_frame=120)


def test_one_past_the_end_of_a_seekable_clip_says_how_many_frames_it_has(tmp_path):
    clip = write_video(tmp_path / "clip.avi", 78, "MJPG")
    with open_source(str(clip), start_frame=77) as src:
        levels = [level(f) for f in src]
    assert len(levels) == 1 and near(levels, 77)
    with pytest.raises(
        FaceIDError, match=r"start frame 78 is past the end of .*clip.avi: the stream has only 78 frames"
    ):
        open_source(str(clip), start_frame=78)


def test_a_start_frame_on_an_image_a_folder_or_a_camera_is_never_ignored(tmp_path):
    photo = tmp_path / "one.png"
    cv2.imwrite(str(photo), frame(5))
    with pytest.raises(FaceIDError, match="an image is one frame"):
        open_source(str(photo), start_frame=1)
    with pytest.raises(FaceIDError, match="it has only 1 image"):
        open_source(str(tmp_path), start_frame=1)
    with pytest.raises(FaceIDError, match="not a camera"):
        open_source("0", start_frame=3)


# ----------------------------------------------------------------------------- pipes, devices, sockets


def test_pipes_and_devices_are_refused_as_sources_naming_what_they_are(tmp_path):
    fifo = tmp_path / "clip.mp4"
    os.mkfifo(fifo)
    with pytest.raises(FaceIDError, match=r"clip.mp4 is a named pipe \(FIFO\), not a regular file"):
        within(5, open_source, str(fifo))
    picture = tmp_path / "photo.jpg"
    os.mkfifo(picture)
    with pytest.raises(FaceIDError, match=r"named pipe \(FIFO\)"):
        within(5, open_source, str(picture))
    with pytest.raises(FaceIDError, match="/dev/null is a character device"):
        open_source("/dev/null")
    folder = tmp_path / "photos"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), frame(3, 200, 200))
    os.mkfifo(folder / "b.jpg")  # a pipe inside a folder is not one of its images
    with open_source(str(folder)) as src:
        assert len(list(src)) == 1


@pytest.mark.parametrize("flag", ["--model", "--weights", "--calibration"])
@pytest.mark.parametrize("name", ["x.pth", "x.onnx"])
def test_a_pipe_as_a_model_file_is_named_before_anything_opens_it(tmp_path, flag, name):
    from faceid.app.cli import parse_args

    fifo = tmp_path / name
    os.mkfifo(fifo)
    with pytest.raises(FaceIDError, match=r"is a named pipe \(FIFO\), not a regular file") as err:
        within(5, parse_args, ["--data-dir", str(tmp_path / "g"), flag, str(fifo), "list"])
    assert "not found" not in str(err.value) and "does not exist" not in str(err.value)
    with pytest.raises(FaceIDError, match="does not exist"):
        parse_args([flag, str(tmp_path / "missing.pth"), "list"])


def test_a_socket_or_a_device_as_a_model_or_a_source_is_named(tmp_path):
    import socket

    from faceid.app.cli import parse_args

    path = tmp_path / "model.pth"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.bind(str(path))
        with pytest.raises(FaceIDError, match="model.pth is a socket, not a regular file"):
            parse_args(["--model", str(path), "list"])
        with pytest.raises(FaceIDError, match="is a socket"):
            open_source(str(path))
    finally:
        server.close()
    with pytest.raises(FaceIDError, match="/dev/zero is a character device"):
        parse_args(["--weights", "/dev/zero", "list"])


def test_a_pipe_or_device_where_a_gallery_file_belongs_is_refused(tmp_path):
    for name in ("search_index.bin", "gallery.sqlite3-wal"):
        data = tmp_path / name.replace(".", "_")
        Gallery.open(data).close()
        os.mkfifo(data / name)
        with pytest.raises(GalleryError, match=rf"{name} is a named pipe \(FIFO\), not the file a gallery keeps"):
            within(5, Gallery.open, data)


def test_the_app_answers_a_pipe_source_in_one_sentence(tmp_path):
    """As a user meets it: a process, exit 2, one sentence, in seconds (the pipe is never opened)."""
    fifo = tmp_path / "stream.mp4"
    os.mkfifo(fifo)
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, str(REPO / "faceid_app.py"), "--data-dir", str(tmp_path / "g"), "--source", str(fifo)]
        + ["--json", "liveness"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert json.loads(out.stdout)["error"].endswith("could block or never end).")
    assert time.perf_counter() - start < 30
    pickle_pipe = tmp_path / "face_embeddings.pkl"
    os.mkfifo(pickle_pipe)
    out = subprocess.run(
        [sys.executable, str(REPO / "faceid_app.py"), "--data-dir", str(tmp_path / "g"), "import-seed"]
        + ["--pickle", str(pickle_pipe)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "The seed pickle" in out.stderr and "named pipe (FIFO)" in out.stderr


# ----------------------------------------------------------------------------- the app on degenerate media


def app(*args, stdin: str = "", timeout: float = 240) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "FACEID_DEBUG"}
    return subprocess.run(
        [sys.executable, str(REPO / "faceid_app.py"), *map(str, args)],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def one_sentence(out: subprocess.CompletedProcess) -> str:
    assert out.returncode == 2 and "Traceback" not in out.stderr and "Unexpected internal error" not in out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, out.stderr
    return errors[0]


@pytest.fixture(scope="module")
def stand_in_args(stand_in) -> list[str]:
    return ["--weights", str(stand_in), "--crop", "aligned5", "--offline", "--no-preview"]


@pytest.fixture(scope="module")
def degenerate(module_tmp) -> dict[str, Path]:
    """A 67-byte 1x1 PNG, 20000x20 and 20x20000 PNGs, and 1x1, 2x2 and 4000x16 videos, as the issue found them."""
    folder = module_tmp / "degenerate"
    folder.mkdir()
    made = {}
    for name, (w, h) in {"1x1.png": (1, 1), "wide.png": (20000, 20), "tall.png": (20, 20000)}.items():
        cv2.imwrite(str(folder / name), np.full((h, w, 3), 120, np.uint8))
        made[name] = folder / name
    assert made["1x1.png"].stat().st_size < 100
    for name, (w, h) in {"1x1.avi": (1, 1), "2x2.avi": (2, 2), "4000x16.avi": (4000, 16)}.items():
        made[name] = write_video(folder / name, 5, "MJPG", size=(w, h))
    return made


@pytest.mark.e2e
def test_images_and_frames_too_small_or_thin_for_the_detector_are_no_face(degenerate, stand_in_args, tmp_path):
    for name, path in degenerate.items():
        h, w = (cv2.VideoCapture(str(path)).read()[1] if path.suffix == ".avi" else cv2.imread(str(path))).shape[:2]
        out = app("--data-dir", tmp_path / "g", *stand_in_args, "--source", path, "register", "--name", "x")
        assert f"no face (image is {w}x{h})" in one_sentence(out), (name, out.stderr)


@pytest.mark.e2e
def test_a_tiny_photo_in_a_folder_of_good_ones_is_a_rejected_photo_not_the_end(shared_data, stand_in_args, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    clip = cv2.VideoCapture(str(shared_data / "videos" / "d18.mp4"))
    for i in range(2):
        ok, bgr = clip.read()
        assert ok
        cv2.imwrite(str(folder / f"face{i}.jpg"), bgr)
    cv2.imwrite(str(folder / "0tiny.png"), np.zeros((1, 1, 3), np.uint8))
    out = app("--data-dir", tmp_path / "g", *stand_in_args, "--source", folder, "--json", "register", "--name", "d18")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["samples"] == 2
    assert "1 photo rejected: no face (image is 1x1)" in out.stderr
    verbose = app(
        "--data-dir", tmp_path / "g2", *stand_in_args, "--verbose", "--source", folder, "register", "--name", "x"
    )
    assert "photo 0tiny.png rejected: no face (image is 1x1)" in verbose.stderr


@pytest.mark.e2e
def test_a_short_clip_says_where_every_frame_went(shared_data, stand_in_args, tmp_path):
    """`--samples 50` on a 78-frame clip: every frame is accounted for (taken, left out by the gap, rejected)."""
    src = cv2.VideoCapture(str(shared_data / "videos" / "d18.mp4"))
    ok, first = src.read()
    h, w = first.shape[:2]
    writer = cv2.VideoWriter(str(tmp_path / "short.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 25, (w, h))
    writer.write(first)
    for _ in range(77):
        writer.write(src.read()[1])
    writer.release()
    out = app(
        "--data-dir",
        tmp_path / "g",
        *stand_in_args,
        "--source",
        tmp_path / "short.avi",
        "--samples",
        "50",
        "register",
        "--name",
        "x",
    )
    sentence = one_sentence(out)
    taken = int(sentence.split(" taken")[0].rsplit(" ", 1)[1])
    assert f"78 frames read, {taken} taken, {78 - taken} left between samples by the 5-frame gap" in sentence
    assert "rejected frames: none; use a longer video, fewer samples or a smaller gap (--samples, --sample-gap)" in (
        sentence
    )


@pytest.mark.e2e
def test_rejected_frames_are_one_line_and_verbose_lists_each(shared_data, stand_in_args, tmp_path):
    """30 blank frames before a face: one summary line on stderr; --verbose adds one line per frame."""
    src = cv2.VideoCapture(str(shared_data / "videos" / "d18.mp4"))
    ok, face = src.read()
    h, w = face.shape[:2]
    clip = tmp_path / "blank_then_face.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 25, (w, h))
    for _ in range(30):
        writer.write(np.full_like(face, 40))
    writer.write(face)
    for _ in range(20):
        writer.write(src.read()[1])
    writer.release()
    args = ["--data-dir", tmp_path / "g", *stand_in_args, "--source", clip, "--samples", "2", "--sample-gap", "2"]
    quiet = app(*args, "register", "--name", "a")
    assert quiet.returncode == 0, quiet.stderr
    rejected = [line for line in quiet.stderr.splitlines() if "rejected:" in line]
    assert rejected == ["30 frames rejected: no face found x30"], quiet.stderr
    loud = app(*args, "--verbose", "register", "--name", "b")
    assert sum("rejected: no face found" in line for line in loud.stderr.splitlines()) == 31
    assert "Registered 'b' from 2 samples" in loud.stdout and "note:" not in loud.stdout


@pytest.mark.e2e
def test_the_menu_goes_on_after_the_frames_register_used_and_says_so(shared_data, stand_in_args, tmp_path):
    clip = shared_data / "videos" / "d18.mp4"
    answers = "1\nd18\n2\nd18\n"
    out = app("--data-dir", tmp_path / "g", *stand_in_args, "--source", clip, "--samples", "1", stdin=answers)
    assert out.returncode == 0, out.stderr
    assert "Registered 'd18' from 1 sample " in out.stdout and "MATCH: 'd18'" in out.stdout
    assert f"note: continuing {clip} at frame 1, after the frame 0 the last action used" in out.stderr


@pytest.mark.e2e
def test_thousands_of_empty_files_are_named_up_to_ten_then_counted_and_each_note_is_said_once(
    shared_data, stand_in_args, tmp_path
):
    """A folder of one real photo and 3,000 empty .jpg files: 10 named, one line for the 2,990 others (--json keeps
    the same), the "used 1 sample" note once on stderr and never again on stdout."""
    folder = tmp_path / "photos"
    folder.mkdir()
    ok, face = cv2.VideoCapture(str(shared_data / "videos" / "d18.mp4")).read()
    cv2.imwrite(str(folder / "0face.jpg"), face)
    for i in range(3000):
        (folder / f"empty{i:04d}.jpg").write_bytes(b"")
    out = app("--data-dir", tmp_path / "g", *stand_in_args, "--source", folder, "register", "--name", "d18")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Registered 'd18' from 1 sample " in out.stdout and "note:" not in out.stdout
    lines = out.stderr.splitlines()
    assert sum(line.startswith("note: skipped empty") for line in lines) == 10
    assert lines.count("note: skipped 2,990 more files that could not be read (--verbose names each)") == 1
    assert sum("used 1 sample (asked for 5)" in line for line in lines) == 1
    assert len(lines) < 40, len(lines)
    data = json.loads(
        app(
            "--data-dir", tmp_path / "g2", *stand_in_args, "--source", folder, "--json", "register", "--name", "x"
        ).stdout
    )
    assert len(data["notes"]) == 12 and data["samples"] == 1
