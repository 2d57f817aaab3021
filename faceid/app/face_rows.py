"""One row per face (or per track): the record ``identify --all-faces`` gives, in JSON, JSON Lines and CSV.

The row's schema lives here once: `FaceRow.to_dict` is the object of the ``faces`` list under ``--json`` and one
line of ``--jsonl``; `CSV_COLUMNS` flattens the same fields for ``--csv``. `RowFiles` writes the rows as they
come (one line each, flushed), so a killed run keeps every row it made. It creates its files and refuses one
that exists: the program changes nothing it did not create. Torch-free, like `faceid.app.render`, which
imports it.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING

from ..core.errors import FaceIDError
from ..core.report import printable

if TYPE_CHECKING:
    from .gallery_access import Match

LOW_QUALITY = "low_quality"  # a face found but below the quality gate: reported, never decided


@dataclass
class FaceRow:
    """One face of one picture (`track` None), or one track of a video (its first and last frame, and the
    decision on the track's averaged embedding). `box`: [x1, y1, x2, y2] in source pixels (a track's: the box of
    its best-scoring frame). `decision`: identified / ambiguous / unknown (`faceid.model.margin`) or low_quality
    (`quality` says why)."""

    file: str
    face: int  # index of the face in its picture (largest first), or of the track in its video
    box: list[float]
    detector_score: float
    decision: str
    name: str | None = None
    score: float | None = None
    threshold: float | None = None
    threshold_source: str | None = None
    margin: float | None = None
    runner_up: Match | None = None
    candidates: list[Match] = field(default_factory=list)
    quality: str | None = None
    frame: int | None = None  # video: the frame (a track's first)
    time_s: float | None = None
    track: int | None = None
    last_frame: int | None = None  # tracks only
    last_time_s: float | None = None
    frames: int | None = None  # tracks: frames the face was seen in
    best_frame_score: float | None = None  # tracks: the best single frame's score for `name` (or the best match)

    def to_dict(self) -> dict:
        """The row as JSON: the ``faces`` objects of ``--json`` and the lines of ``--jsonl``."""
        return {
            "file": printable(self.file),
            "frame": self.frame,
            "time_s": _round(self.time_s, 3),
            "track": self.track,
            "last_frame": self.last_frame,
            "last_time_s": _round(self.last_time_s, 3),
            "frames": self.frames,
            "face": self.face,
            "box": [round(float(v), 1) for v in self.box],
            "detector_score": round(float(self.detector_score), 4),
            "decision": self.decision,
            "name": self.name,
            "score": _round(self.score, 4),
            "best_frame_score": _round(self.best_frame_score, 4),
            "threshold": _round(self.threshold, 4),
            "threshold_source": self.threshold_source,
            "margin": _round(self.margin, 4),
            "runner_up": None
            if self.runner_up is None
            else {"name": self.runner_up.name, "score": round(float(self.runner_up.score), 4)},
            "candidates": [{"name": c.name, "score": round(float(c.score), 4)} for c in self.candidates],
            "quality": self.quality,
        }


CSV_COLUMNS = (
    "file", "frame", "time_s", "track", "last_frame", "last_time_s", "frames", "face", "x1", "y1", "x2", "y2",
    "detector_score", "decision", "name", "score", "best_frame_score", "threshold", "threshold_source", "margin",
    "runner_up", "runner_up_score", "candidates", "quality",
)  # fmt: skip
_FORMULA_START = ("=", "+", "-", "@")  # a spreadsheet runs a cell that starts so as a formula


def csv_record(row: dict) -> list:
    """A row's dict (`FaceRow.to_dict`) flattened to `CSV_COLUMNS`; text a spreadsheet would take for a formula
    (a file or person named "=cmd()") is prefixed with a quote."""
    x1, y1, x2, y2 = row["box"]
    runner = row["runner_up"] or {}
    flat = {
        **row,
        "x1": x1,
        "y1": y1,
        "x2": x2,
        "y2": y2,
        "runner_up": runner.get("name"),
        "runner_up_score": runner.get("score"),
        "candidates": ";".join(c["name"] for c in row["candidates"]),
    }
    return ["" if flat[c] is None else _cell(flat[c]) for c in CSV_COLUMNS]


def _cell(value):
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(float(value), digits)


class RowFiles:
    """The ``--csv`` and ``--jsonl`` files, written a row at a time. Both are created new: an existing file (or a
    link in its place) is refused before anything runs, so nothing the user has is overwritten."""

    def __init__(self, csv_path: str | None, jsonl_path: str | None):
        self._files: list[IO[str]] = []
        self._csv: csv.writer | None = None  # type: ignore[valid-type]
        self._jsonl: IO[str] | None = None
        try:
            if csv_path is not None:
                f = self._create(csv_path, "--csv")
                self._csv = csv.writer(f)
                self._csv.writerow(CSV_COLUMNS)
                f.flush()
            if jsonl_path is not None:
                self._jsonl = self._create(jsonl_path, "--jsonl")
        except BaseException:
            self.close()
            raise

    def _create(self, path: str, flag: str) -> IO[str]:
        target = Path(path).expanduser()
        if os.path.lexists(target):
            raise FaceIDError(f"{flag} {target} already exists; choose a new file name (nothing is overwritten).")
        try:
            f = open(target, "x", encoding="utf-8", newline="")  # noqa: SIM115  (kept open for the run)
        except OSError as err:
            raise FaceIDError(f"Cannot create {flag} {target}: {err.strerror or err}.") from None
        self._files.append(f)
        return f

    def write(self, rows: list[dict]) -> None:
        """Append `rows` (dicts of `FaceRow.to_dict`) and flush, so a killed run keeps them."""
        if not rows:
            return
        try:
            if self._csv is not None:
                self._csv.writerows(csv_record(r) for r in rows)
            if self._jsonl is not None:
                buf = io.StringIO()
                for r in rows:
                    buf.write(json.dumps(r, ensure_ascii=False) + "\n")
                self._jsonl.write(buf.getvalue())
            for f in self._files:
                f.flush()
        except OSError as err:
            raise FaceIDError(
                f"Cannot write the rows ({err.strerror or err}); the rows written so far are kept."
            ) from None

    def close(self) -> None:
        for f in self._files:
            f.close()
        self._files = []
