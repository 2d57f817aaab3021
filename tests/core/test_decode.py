"""The decode gate (faceid/core/decode.py): header first, a pixel limit, one sentence for every refusal."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from hostile import BAD_IMAGES, bomb_jpeg, bomb_png, small_jpeg

from faceid.core.decode import (
    DEFAULT_MAX_PIXELS,
    MAX_PIXELS_ENV,
    DecodeError,
    check_packed_headers,
    decode_image,
    fit_pixels,
    image_size,
    max_bytes,
    read_image_file,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", sorted(BAD_IMAGES))
def test_every_bad_image_is_one_sentence_naming_it(name):
    with pytest.raises(DecodeError) as err:
        decode_image(BAD_IMAGES[name](), name)
    text = str(err.value)
    assert text.startswith(("Cannot decode " + name, "Refused " + name)) and "\n" not in text
    assert text.endswith(".") and err.value.reason in text


def test_bombs_are_refused_from_the_header_quickly():
    """The 631-byte 65000x65000 JPEG of the issue and a 20000x20000 PNG: refused before any pixel is decoded."""
    jpeg = bomb_jpeg()
    assert len(jpeg) < 1000
    for data, size in ((jpeg, "65000x65000"), (bomb_png(), "20000x20000")):
        start = time.perf_counter()
        with pytest.raises(DecodeError, match=f"claims {size} pixels .* over the 120 MP limit"):
            decode_image(data, "x")
        assert time.perf_counter() - start < 0.5


def test_limit_is_the_flag_or_env_and_default_fits_real_photos(monkeypatch, shared_data):
    photos = sorted((shared_data / "photos").rglob("*.jp*g"))[:5]
    assert photos, "no shared photos"
    for path in photos:
        rgb = read_image_file(path)
        assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
        assert rgb.shape[0] * rgb.shape[1] <= DEFAULT_MAX_PIXELS
    assert image_size(bomb_jpeg(12000, 9000)) == (12000, 9000)  # 108 MP: a real phone sensor fits
    monkeypatch.setenv(MAX_PIXELS_ENV, "1000")
    with pytest.raises(DecodeError, match="over the 0.001 MP limit"):
        decode_image(small_jpeg(40), "a 40x40 image")
    assert decode_image(small_jpeg(30), "x").shape == (30, 30, 3)
    monkeypatch.setenv(MAX_PIXELS_ENV, "lots")
    with pytest.raises(Exception, match="is not a number of pixels"):
        decode_image(small_jpeg(30), "x")


def test_decoded_pixels_match_opencv():
    """The gate adds checks, not a different decoder: the pixels are OpenCV's, in RGB order."""
    img = np.random.default_rng(1).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    for ext in (".png", ".jpg", ".bmp"):
        data = cv2.imencode(ext, img)[1].tobytes()
        ref = cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        assert np.array_equal(decode_image(data), ref)
    progressive = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes()
    assert image_size(progressive) == (64, 48)


def test_files_are_sized_before_they_are_read(tmp_path, monkeypatch):
    monkeypatch.setenv(MAX_PIXELS_ENV, "100")
    big = tmp_path / "big.jpg"
    with open(big, "wb") as f:  # sparse: its size is checked, its bytes are never read
        f.truncate(max_bytes(100) + 1)
    with pytest.raises(DecodeError, match="MB is more than any image within the"):
        read_image_file(big)
    with pytest.raises(DecodeError, match="it is a folder, not a regular file"):
        read_image_file(tmp_path)
    with pytest.raises(DecodeError, match="does not exist"):
        read_image_file(tmp_path / "missing.jpg")
    fifo = tmp_path / "fifo.jpg"
    os.mkfifo(fifo)
    with pytest.raises(DecodeError, match="it is a named pipe \\(FIFO\\), not a regular file"):
        read_image_file(fifo)  # would block forever if it were opened


def test_big_photos_are_decoded_to_the_working_size(tmp_path):
    """`fit`: a JPEG is decoded at 1/2, 1/4 or 1/8 by libjpeg itself, a PNG decoded once and shrunk; both come out
    at most `fit` pixels with the photo's aspect ratio, and a photo within it is returned exactly as decoded."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (1200, 1600, 3), dtype=np.uint8)
    for ext in (".jpg", ".png"):
        path = tmp_path / f"photo{ext}"
        cv2.imwrite(str(path), img)
        small = read_image_file(path, fit=100_000)
        assert small.shape[0] * small.shape[1] <= 100_000 and small.shape[2] == 3
        assert abs(small.shape[1] / small.shape[0] - 4 / 3) < 0.02
        assert np.array_equal(read_image_file(path, fit=1600 * 1200), read_image_file(path))
    thin = fit_pixels(np.zeros((20, 20000, 3), np.uint8), 1000)
    assert thin.shape[:2] == (1, 1000)


def test_nothing_decodes_outside_the_gate():
    """No module decodes an image except faceid/core/decode.py (grep: one gate, not one per caller)."""
    offenders = []
    for path in sorted((REPO / "faceid").glob("*.py")):
        text = path.read_text()
        if path.name != "decode.py" and ("cv2.imdecode" in text or "Image.open" in text or "cv2.imread" in text):
            offenders.append(path.name)
    assert offenders == []


def test_pixel_limit_flag_reaches_every_command_line():
    for script in ("faceid_app.py", "evaluate_model.py", "preprocess_dataset.py"):
        out = subprocess.run([sys.executable, script, "--help"], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0 and "--max-pixels" in out.stdout, script


def test_decode_error_survives_a_process_boundary():
    """Worker processes send exceptions through __reduce__; copy.copy rebuilds one the same way."""
    import copy

    err = copy.copy(DecodeError("Refused", "x.jpg", "too big.", "max_pixels"))
    assert str(err) == "Refused x.jpg: too big." and err.reason == "too big." and err.exit_code == 2
    assert err.settings == ("max_pixels",)


def _packed(images: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.zeros(len(images) + 1, np.int64)
    np.cumsum([len(b) for b in images], out=offsets[1:])
    return np.frombuffer(b"".join(images), np.uint8), offsets


def test_the_packed_header_check_is_image_size_on_every_image_at_once(shared_data):
    """The training feed's vectorised gate: the same images pass, the same sentences refuse, names built only
    for a refusal (the .rec payloads are real JPEGs; the rest are the hostile corpus and other formats)."""
    from faceid.data.recordio import RecordIOReader

    reader = RecordIOReader(shared_data / "recordio" / "pins90_112x112" / "train.rec")
    faces = [reader.read(k).payload for k in range(1, 65)]
    rgb = np.random.default_rng(2).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    others = [
        cv2.imencode(".png", rgb)[1].tobytes(),
        cv2.imencode(".jpg", rgb, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes(),
        b"\xff\xd8\xff\xff" + small_jpeg()[2:],  # a fill byte before the first marker: left to image_size
    ]
    built: list[int] = []

    def name_of(i: int) -> str:
        built.append(i)
        return f"image {i}"

    good = faces + others
    is_jpeg = check_packed_headers(*_packed(good), name_of)
    assert is_jpeg.tolist() == [True] * 64 + [False, True, True]
    assert all(image_size(b) for b in good) and built == [64, 66]  # the PNG and the fill byte: image_size's path
    refused = 0
    for name, make in sorted(BAD_IMAGES.items()):  # truncated.jpg has a sound header: refused by the decoder
        batch = _packed(faces[:3] + [make()] + faces[3:6])
        try:
            image_size(make(), "image 3")
        except DecodeError as expected:
            built.clear()
            with pytest.raises(DecodeError) as got:
                check_packed_headers(*batch, name_of)
            assert str(got.value) == str(expected) and built == [3], name
            refused += 1
        else:
            assert check_packed_headers(*batch, name_of).all(), name
    assert refused == len(BAD_IMAGES) - 1
    assert check_packed_headers(*_packed([]), name_of).tolist() == []
