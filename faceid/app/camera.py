"""Frame sources and the optional preview window.

Every action reads frames through `open_source`, whatever the source is: a webcam index ("0"), a video
file, an image file or a folder of images. They all come out as the same iterator of RGB uint8 frames, so
the app, the tests (which use video files in place of a webcam) and the liveness measurement share one
code path. OpenCV's `VideoCapture` opens both cameras and video files; still images pass the decode gate
(`faceid.core.decode.read_image_file`: size from the header first, a pixel limit, one-sentence errors). In a folder,
a file the gate refuses is skipped, and its name and the reason are kept in `skipped` for the caller to report.

The preview window is used only when a display exists (``DISPLAY``/``WAYLAND_DISPLAY`` on Linux): a Qt
build of OpenCV aborts the whole process when it cannot reach a display, so we never try blindly.
"""

from __future__ import annotations

import os
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from ..core import report
from ..core.decode import IMAGE_EXTENSIONS, WORKING_MAX_PIXELS, DecodeError, fit_pixels, max_pixels, read_image_file
from ..core.errors import FaceIDError
from ..core.fileio import require_regular_file


@dataclass
class FrameSource:
    """An opened source. Iterate it for RGB frames; `frames_read` and `exhausted` tell how it ended.

    `live` is True for a camera: it never ends by itself, so callers bound it with `max_frames`.
    `stills` is True for an image file or a folder: every frame is a different photo (no need to skip frames
    between samples, and there may be only one). `skipped` holds (file name, reason) per folder file refused.
    `start` is where reading began (a video's frame, a folder's file) and `position` where it stands now, so a
    menu session can go on after the frames one action used. Frames over `WORKING_MAX_PIXELS` are shrunk to it.
    """

    description: str
    live: bool
    max_frames: int | None = None
    repeat: int = 1
    frames_read: int = 0
    exhausted: bool = False  # the source ran out of frames (as opposed to being stopped by max_frames)
    stills: bool = False  # an image file or a folder of them (see the class docstring)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    start: int = 0
    current: str = ""  # the file the last frame came from (an image, a folder's file, a video), for per-face rows
    _capture: cv2.VideoCapture | None = None
    _images: list[Path] = field(default_factory=list)
    _first: np.ndarray | None = None  # a frame already decoded when the source was opened (checked early)
    _consumed: int = 0  # frames (video) or files (folder) taken from the underlying stream so far

    @property
    def skipped_files(self) -> list[str]:
        """Names of the folder files that were refused (the reasons are in `skipped`)."""
        return [name for name, _ in self.skipped]

    @property
    def one_photo(self) -> bool:
        """An image file (or a folder of one): every read of it is the same frame."""
        return self.stills and self.start == 0 and len(self._images) == 1

    @property
    def planned(self) -> int | None:
        """How many frames the source should give (its images, or a video's frame count by its header, a hint),
        within max_frames; None for a camera or a video that does not say."""
        count: int | None
        if self._images:
            count = len(self._images) * self.repeat
        elif self._capture is not None and not self.live:
            hinted = self._capture.get(cv2.CAP_PROP_FRAME_COUNT)
            count = max(int(hinted) - self.start, 0) or None if 0 < hinted < 2**31 else None
        else:
            count = None
        return count if self.max_frames is None or count is None else min(count, self.max_frames)

    @property
    def fps(self) -> float | None:
        """A video's frame rate as its file states it (None for stills, a camera, or a file without one)."""
        rate = float(self._capture.get(cv2.CAP_PROP_FPS) or 0) if self._capture is not None and not self.live else 0.0
        return rate if 0 < rate < 1000 else None

    @property
    def source_width(self) -> int | None:
        """A video's frame width as decoded, before frames over `WORKING_MAX_PIXELS` are shrunk."""
        width = int(self._capture.get(cv2.CAP_PROP_FRAME_WIDTH) or 0) if self._capture is not None else 0
        return width or None

    @property
    def last_read(self) -> str:
        """The frame or photo read last, for a note: "frame 41", or a folder's file name ("photo IMG_2.jpg")."""
        if self.stills and self._images:
            return f"photo {self._images[max(self._consumed - 1, 0)].name}"
        return f"frame {self.position - 1}"

    @property
    def position(self) -> int:
        """The frame (video) or file (folder) the next read would return: `start` plus what was taken."""
        return self.start + self._consumed

    def __iter__(self) -> Iterator[np.ndarray]:
        frames = self._frames()
        while self.max_frames is None or self.frames_read < self.max_frames:
            frame = next(frames, None)
            if frame is None:
                self.exhausted = True
                return
            self.frames_read += 1
            yield frame

    def _frames(self) -> Iterator[np.ndarray]:
        if self._capture is not None:
            if self._first is not None:
                first, self._first = self._first, None
                self._consumed += 1
                yield first
            while True:
                ok, bgr = self._capture.read()
                if not ok or bgr is None:
                    return
                self._consumed += 1
                yield cv2.cvtColor(fit_pixels(bgr), cv2.COLOR_BGR2RGB)
        for i, path in enumerate(self._images):
            self._consumed += 1
            self.current = path.name
            if i == 0 and self._first is not None:
                image, self._first = self._first, None
            else:
                try:
                    image = read_image_file(path, fit=WORKING_MAX_PIXELS)
                except DecodeError as err:
                    if len(self._images) == 1:
                        raise
                    self.skipped.append((path.name, err.reason))
                    continue
            for _ in range(self.repeat):
                yield image

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None

    def __enter__(self) -> "FrameSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _quiet_opencv() -> None:
    """OpenCV logs several lines of C++ noise when a camera index does not exist, and FFmpeg its own about a
    damaged video ("moov atom not found"); our error says it once. FACEID_DEBUG=1 keeps them."""
    debug = bool(os.environ.get("FACEID_DEBUG"))
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR if debug else cv2.utils.logging.LOG_LEVEL_SILENT)
    if not debug:
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET; read when a capture opens


def open_source(source: str | int, max_frames: int | None = None, start_frame: int = 0, repeat: int = 1) -> FrameSource:
    """Open a webcam index, video file, image file or folder of images.

    max_frames bounds how many frames the iterator yields; start_frame skips that many first (files and
    folders: a test registers from a clip's first half and verifies with its second; past the end is one
    sentence saying how many there are); repeat yields each still image that many times (a photo held still in
    front of a camera, for the liveness measurement). Only a folder or a regular file is opened: a named pipe,
    a device or a socket is refused, saying which it is.
    """
    _quiet_opencv()
    text = str(source).strip()
    if text.isdigit():
        if start_frame:
            raise FaceIDError("A start frame applies to a video or a folder, not a camera.", "start_frame")
        return _open_camera(int(text), max_frames)
    path = Path(text).expanduser()
    if not path.exists():
        raise FaceIDError(f"Source not found: {path} (give a webcam index such as 0, a video, an image or a folder).")
    if path.is_dir():
        return _open_folder(path, max_frames, start_frame, repeat)
    _require_file(path)
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        if start_frame:
            raise FaceIDError(
                f"The start frame {start_frame} is past the end of the image {path}: an image is one frame.",
                "start_frame",
            )
        # decoded now, so a bad file fails at once with its name; the frame is kept for the first read
        first = read_image_file(path, fit=WORKING_MAX_PIXELS)
        return FrameSource(
            f"image {path}", live=False, max_frames=max_frames, repeat=repeat, stills=True, _images=[path], _first=first
        )
    return _open_video(path, max_frames, start_frame)


def _require_file(path: Path) -> None:
    """A source that is not a folder must be a regular file (a pipe would block, a device is not a video)."""
    st = path.stat()
    if stat.S_ISCHR(st.st_mode) and path.name.startswith("video") and path.name[5:].isdigit():
        raise FaceIDError(
            f"The source {path} is a camera device; give the camera by its index ({path.name[5:]}) instead."
        )
    require_regular_file(path, "The source")


def _open_folder(path: Path, max_frames: int | None, start_frame: int, repeat: int) -> FrameSource:
    images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not images:
        raise FaceIDError(f"The folder {path} contains no images ({', '.join(IMAGE_EXTENSIONS)}).")
    if start_frame >= len(images):
        raise FaceIDError(
            f"The start frame {start_frame} is past the end of the folder {path}: it has only {report.count(len(images), 'image')}.",
            "start_frame",
        )
    return FrameSource(
        f"folder {path} ({report.count(len(images), 'image')}"
        + (f", from image {start_frame}" if start_frame else "")
        + ")",
        live=False,
        max_frames=max_frames,
        repeat=repeat,
        stills=True,
        start=start_frame,
        _images=images[start_frame:],
    )


def _open_camera(index: int, max_frames: int | None) -> FrameSource:
    capture = cv2.VideoCapture(index)
    if not capture.isOpened():
        raise FaceIDError(
            f"No camera at index {index} (is it connected / in use?); use another index, a video "
            f"file, an image or a folder as the source.",
            "source",
        )
    return FrameSource(f"camera {index}", live=True, max_frames=max_frames, _capture=capture)


# A forward decode to the start frame longer than this shows a progress bar (a raw stream decodes ~1,000 frames/s).
SKIP_BAR_FRAMES = 300


def _open_video(path: Path, max_frames: int | None, start_frame: int) -> FrameSource:
    """A video file from `start_frame` on. Its header's frame count is a hint, never a limit (a concatenated file
    holds more; a raw stream has none), so reading goes on until the decoder runs dry."""
    capture = _capture(path)
    width, height = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    if width * height > max_pixels():
        capture.release()
        raise FaceIDError(
            f"Refused the video {path}: its frames are {width}x{height} pixels, over the {max_pixels() / 1e6:g} MP "
            f"limit; downscale it, or raise the limit if it is real.",
            "max_pixels",
        )
    hinted = capture.get(cv2.CAP_PROP_FRAME_COUNT)
    first = None
    if start_frame:
        capture, first = _reach(capture, path, start_frame)
    desc = (
        f"video {path}"
        + (f" from frame {start_frame}" if start_frame else "")
        + (f" (about {int(hinted):,} frames by its header)" if 0 < hinted < 2**31 else "")
    )
    return FrameSource(
        desc, live=False, max_frames=max_frames, start=start_frame, current=path.name, _capture=capture, _first=first
    )


def _capture(path: Path) -> cv2.VideoCapture:
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise FaceIDError(f"Cannot open {path} as a video (unreadable, or not a video or image file).")
    return capture


def _reach(capture: cv2.VideoCapture, path: Path, start: int) -> tuple[cv2.VideoCapture, np.ndarray]:
    """(capture, frame `start`): a seek where the file allows one and lands exactly there, else a forward decode
    from the first frame (a raw MJPEG stream cannot seek; a concatenated MPEG stops a seek at its header's
    count). One past the end is one sentence with the number of frames the stream really has."""
    if capture.set(cv2.CAP_PROP_POS_FRAMES, start) and int(capture.get(cv2.CAP_PROP_POS_FRAMES)) == start:
        ok, bgr = capture.read()
        if ok and bgr is not None:
            return capture, cv2.cvtColor(fit_pixels(bgr), cv2.COLOR_BGR2RGB)
    capture.release()
    capture = _capture(path)
    desc = f"decoding {path.name} up to frame {start:,} (it cannot seek there)"
    frames = 0
    with report.progress(total=start, desc=desc, unit="frame", enabled=start >= SKIP_BAR_FRAMES) as bar:
        while frames < start and capture.grab():
            frames += 1
            bar.update()
    if frames == start:
        ok, bgr = capture.read()
        if ok and bgr is not None:
            return capture, cv2.cvtColor(fit_pixels(bgr), cv2.COLOR_BGR2RGB)
    capture.release()
    raise FaceIDError(
        f"The start frame {start:,} is past the end of {path}: the stream has only {report.count(frames, 'frame')}.",
        "start_frame",
    )


# ----------------------------------------------------------------------------- preview window


def display_available() -> bool:
    """True when a window can be shown: a display server is reachable and OpenCV was built with a GUI."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False
    info = cv2.getBuildInformation()
    gui_line = next((line for line in info.splitlines() if line.strip().startswith("GUI:")), "GUI: NONE")
    return "NONE" not in gui_line.upper()


SYSTEM_FONTS = "/usr/share/fonts"


class Preview:
    """The preview window: the frame, the face box, a score line and a prompt. A no-op when headless.

    `show` returns the key pressed (lower-case character) or None, so the seed's 'c' (capture) and
    'v' (verify) keys keep working; 'q' or Esc cancels.
    """

    WINDOW = "faceid"

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self._open = False
        fontdir = os.environ.get("QT_QPA_FONTDIR", "")
        if enabled and not (fontdir and Path(fontdir).is_dir()) and Path(SYSTEM_FONTS).is_dir():
            # cv2 points Qt at a font folder its wheel does not ship, so Qt warns on every window
            os.environ["QT_QPA_FONTDIR"] = SYSTEM_FONTS

    def show(
        self,
        frame_rgb: np.ndarray,
        box: np.ndarray | None = None,
        lines: tuple[str, ...] = (),
        ok: bool = True,
        wait_ms: int = 1,
    ) -> str | None:
        if not self.enabled:
            return None
        bgr = cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2BGR)
        colour = (0, 200, 0) if ok else (0, 0, 230)
        if box is not None:
            x1, y1, x2, y2 = (int(v) for v in box)
            cv2.rectangle(bgr, (x1, y1), (x2, y2), colour, 2)
        for i, line in enumerate(lines):
            cv2.putText(bgr, line, (10, 25 + 25 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.6, colour, 2, cv2.LINE_AA)
        cv2.imshow(self.WINDOW, bgr)
        self._open = True
        key = cv2.waitKey(wait_ms) & 0xFF
        if key == 27:
            return "q"
        return chr(key).lower() if key != 255 else None

    def close(self) -> None:
        if self._open:
            cv2.destroyWindow(self.WINDOW)
            cv2.waitKey(1)
            self._open = False
