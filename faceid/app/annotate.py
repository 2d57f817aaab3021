"""``identify --all-faces --annotate OUT``: the decisions drawn where the faces are, for a person to look at.

An image gives an annotated copy at OUT (its format from OUT's extension), a folder annotated copies in the new
folder OUT (same file names), a video an annotated video at OUT (``.mp4``, or ``.avi``: OpenCV's writer). Each
face gets its box and a label, coloured by decision: green identified (name and score), orange ambiguous (the
tied names), red unknown (best score), grey below the quality gate. A video's labels are its tracks' decisions,
made at the end, so the video is drawn in a second pass over the source with the boxes kept from the first (a
few bytes per face per frame); frames between analysed ones (``--every``) keep the last boxes.

OUT is created new (an existing file or folder is refused before anything runs) and written atomically
(`faceid.core.fileio`; the video through a temporary file renamed at the end), so a failed run leaves nothing
half-written.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from ..core.decode import IMAGE_EXTENSIONS
from ..core.errors import FaceIDError
from ..core.fileio import atomic_write_bytes
from ..model.margin import AMBIGUOUS, IDENTIFIED, UNKNOWN
from .camera import open_source
from .face_rows import LOW_QUALITY

COLOURS = {  # BGR
    IDENTIFIED: (40, 190, 40),
    AMBIGUOUS: (0, 150, 255),
    UNKNOWN: (40, 40, 230),
    LOW_QUALITY: (150, 150, 150),
}
VIDEO_CODECS = {".mp4": "mp4v", ".avi": "MJPG"}


def label(row: dict) -> str:
    """What is written above a face's box (ASCII: OpenCV's font has no other characters)."""
    decision = row["decision"]
    if decision == IDENTIFIED:
        text = f"{row['name']} {row['score']:.2f}"
    elif decision == AMBIGUOUS:
        text = "? " + " / ".join(c["name"] for c in row["candidates"])
    elif decision == UNKNOWN:
        text = "unknown" + (f" {row['score']:.2f}" if row["score"] is not None else "")
    else:
        text = "low quality"
    return text.encode("ascii", "replace").decode()


def draw(frame_rgb: np.ndarray, rows: list[dict], scale: float = 1.0) -> np.ndarray:
    """A BGR copy of the frame with every row's box and label (boxes in source pixels, `scale` of them per frame
    pixel: a photo over the working size is drawn on at that size)."""
    out = cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2BGR)
    size = max(out.shape[:2]) / 640
    thick, font = max(1, round(2 * size)), 0.5 * max(size, 0.6)
    for row in rows:
        colour = COLOURS[row["decision"]]
        x1, y1, x2, y2 = (int(round(v / scale)) for v in row["box"])
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, thick)
        text = label(row)
        (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font, thick)
        top = max(y1 - h - base - 4, 0)
        cv2.rectangle(out, (x1, top), (x1 + w + 4, top + h + base + 4), colour, -1)
        cv2.putText(
            out, text, (x1 + 2, top + h + 2), cv2.FONT_HERSHEY_SIMPLEX, font, (255, 255, 255), thick, cv2.LINE_AA
        )
    return out


class Annotator:
    """Writes the annotated output of one run. Construct it before the run (it refuses an OUT that exists), call
    `picture` for each picture's rows, and `finish` at the end (a video's second pass)."""

    def __init__(self, out: str, source: str):
        self.out = Path(out).expanduser()
        if os.path.lexists(self.out):
            raise FaceIDError(f"--annotate {self.out} already exists; choose a new name (nothing is overwritten).")
        text = str(source).strip()
        if text.isdigit():
            raise FaceIDError("--annotate draws on a video, an image or a folder, not on a camera's frames.")
        path = Path(text).expanduser()
        self.folder = path.is_dir()
        self.stills = self.folder or path.suffix.lower() in IMAGE_EXTENSIONS
        suffix = self.out.suffix.lower()
        if self.folder:
            if suffix:
                raise FaceIDError(f"--annotate for a folder is a new folder, not {self.out.name!r}.")
        elif self.stills and suffix not in IMAGE_EXTENSIONS:
            raise FaceIDError(f"--annotate for an image needs an image name ({', '.join(IMAGE_EXTENSIONS)}).")
        elif not self.stills and suffix not in VIDEO_CODECS:
            raise FaceIDError(f"--annotate for a video needs a {' or '.join(VIDEO_CODECS)} name.")
        if not self.out.parent.is_dir():
            raise FaceIDError(f"--annotate {self.out}: the folder {self.out.parent} does not exist.")
        self._frames: dict[int, list[tuple[list[float], int | None, dict]]] = {}  # a video's boxes per frame
        self._scale = 1.0

    def picture(self, frame_rgb: np.ndarray, file: str, index: int | None, rows: list[dict], scale: float) -> None:
        """A photo's copy is written now; a video frame's boxes are kept for `finish` (`rows`: the frame's rows,
        or under tracking just each face's box and track)."""
        if not self.stills:
            assert index is not None
            self._frames[index] = [(r["box"], r.get("track"), r) for r in rows]
            self._scale = scale
            return
        target = self.out
        if self.folder:
            self.out.mkdir(exist_ok=True)
            target = self.out / file
        ok, data = cv2.imencode(target.suffix or ".jpg", draw(frame_rgb, rows, scale))
        if not ok:
            raise FaceIDError(f"Cannot encode the annotated copy of {file} as {target.suffix}.")
        atomic_write_bytes(target, data.tobytes())

    def finish(self, args, fps: float | None, tracks: list[dict] | None) -> None:
        """A video: read the source again and write every frame with its faces drawn (`tracks`: the track rows,
        whose decisions label their faces; None under --per-frame, where each frame's own rows do)."""
        if self.stills:
            return
        by_track = {t["track"]: t for t in tracks or []}
        source = open_source(args.source, max_frames=args.max_frames, start_frame=args.start_frame)
        tmp = self.out.with_name(f".{self.out.stem}.{os.getpid()}.tmp{self.out.suffix}")
        writer = None
        try:
            current: list[dict] = []
            for i, frame in enumerate(source):
                index = args.start_frame + i
                if index in self._frames:
                    current = [
                        {**(by_track.get(track, row) if tracks is not None else row), "box": box}
                        for box, track, row in self._frames[index]
                    ]
                if writer is None:
                    h, w = frame.shape[:2]
                    code = cv2.VideoWriter.fourcc(*VIDEO_CODECS[self.out.suffix.lower()])
                    writer = cv2.VideoWriter(str(tmp), code, fps or 25.0, (w, h))
                    if not writer.isOpened():
                        raise FaceIDError(f"OpenCV cannot write a {self.out.suffix} video at {self.out}.")
                writer.write(draw(frame, current, self._scale))
            if writer is None:
                raise FaceIDError("The video gave no frames to annotate.")
            writer.release()
            os.replace(tmp, self.out)
        except BaseException:
            if writer is not None:
                writer.release()
            tmp.unlink(missing_ok=True)
            raise
        finally:
            source.close()
