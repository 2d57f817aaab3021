"""Frame sources: one iterator of RGB frames for cameras, videos, images and folders, and clear errors."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from faceid.app.camera import Preview, display_available, open_source
from faceid.core.errors import FaceIDError


def write_video(path, n: int, size=(64, 48)) -> None:
    """An MJPG .avi whose frame i is uniformly grey level 20*i (so tests can tell frames apart)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, size)
    assert writer.isOpened()
    for i in range(n):
        writer.write(np.full((size[1], size[0], 3), 20 * i, np.uint8))
    writer.release()


def test_image_is_returned_as_rgb(tmp_path):
    bgr = np.zeros((20, 30, 3), np.uint8)
    bgr[..., 0] = 255  # pure blue in OpenCV's BGR order
    cv2.imwrite(str(tmp_path / "blue.png"), bgr)
    frames = list(open_source(tmp_path / "blue.png"))
    assert len(frames) == 1 and frames[0].shape == (20, 30, 3)
    assert frames[0][0, 0].tolist() == [0, 0, 255]


def test_image_repeat_feeds_a_still_several_times(tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((8, 8, 3), np.uint8))
    assert len(list(open_source(tmp_path / "a.png", repeat=4))) == 4
    assert len(list(open_source(tmp_path / "a.png", repeat=4, max_frames=3))) == 3


def test_folder_yields_images_in_order_and_skips_unreadable(tmp_path):
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.full((8, 8, 3), 10 * i, np.uint8))
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "notes.txt").write_text("ignored")
    src = open_source(tmp_path)
    frames = list(src)
    assert [int(f[0, 0, 0]) for f in frames] == [0, 10, 20]
    assert src.skipped_files == ["broken.jpg"] and src.exhausted
    assert len(list(open_source(tmp_path, start_frame=2))) == 1


def test_video_start_max_frames_and_end(tmp_path):
    write_video(tmp_path / "v.avi", 6)
    src = open_source(tmp_path / "v.avi")
    assert len(list(src)) == 6 and src.exhausted and not src.live
    limited = open_source(tmp_path / "v.avi", max_frames=2)
    assert len(list(limited)) == 2 and not limited.exhausted and limited.frames_read == 2
    later = list(open_source(tmp_path / "v.avi", start_frame=4))
    assert len(later) == 2 and abs(int(later[0].mean()) - 80) <= 6


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p / "missing.mp4", "Source not found"),
        (lambda p: (p / "junk.mp4").write_bytes(b"\0" * 100) and p / "junk.mp4", "Cannot open"),
        (
            lambda p: (p / "junk.jpg").write_bytes(b"garbage") and p / "junk.jpg",
            "Cannot decode .*junk.jpg: it is not an image",
        ),
        (lambda p: (p / "empty").mkdir() or p / "empty", "contains no images"),
    ],
)
def test_bad_sources_are_one_clear_error(tmp_path, make, message):
    with pytest.raises(FaceIDError, match=message):
        open_source(make(tmp_path))


def test_missing_camera_says_so():
    with pytest.raises(FaceIDError, match=r"No camera at index 9 \(is it connected / in use\?\)"):
        open_source("9")


def test_no_display_means_no_window(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert display_available() is False
    assert Preview(enabled=False).show(np.zeros((4, 4, 3), np.uint8), None, ("hello",)) is None
