"""``identify --all-faces``: every face of an image, a folder or a video, one row each, streamed.

The source is read a few pictures at a time (`CHUNK`, or `CHUNK_PIXELS`: detection and embedding are batched
over them) and nothing of a picture is kept once its rows are made, so a folder of 10,000 photos runs in
constant memory: rows go to ``--csv`` / ``--jsonl`` as they are made (a killed run keeps what it did), and only
the counts stay; the rows are kept for stdout only when they are printed there (``--json``'s one object, or the
text without a file: about a kilobyte a face).
A file the decode gate refuses is skipped with a note and counted; an error that stops the run is one sentence,
exit 2 (the rows written so far stay).

A video is followed face by face (`faceid.app.tracking`): one row per track, decided on the track's averaged
embedding, with the threshold read for all of the video's tracks together; ``--per-frame`` gives a row per face
per analysed frame instead (with its track's id). Pictures (an image, each photo of a folder, each frame under
``--per-frame``) are decided face by face with the threshold read for the picture's faces together
(`faceid.app.faces`).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core import report
from ..core.decode import WORKING_MAX_PIXELS, check_image_file
from ..core.errors import FaceIDError
from ..model.margin import AMBIGUOUS, IDENTIFIED, UNKNOWN
from .annotate import Annotator
from .face_rows import LOW_QUALITY, FaceRow, RowFiles
from .faces import Face, FaceDecider, FaceFinder
from .outcome import FacesFound
from .session import Session
from .tracking import Track, Tracker

CHUNK = 8  # pictures detected (MTCNN batches pictures of one size) and embedded together
CHUNK_PIXELS = 16_000_000  # ... or fewer, so a chunk of 4K frames stays a few hundred MB
DECISIONS = (IDENTIFIED, AMBIGUOUS, UNKNOWN, LOW_QUALITY)


@dataclass
class Picture:
    """One picture of the source: a photo, or a video's frame (its index and time)."""

    frame: np.ndarray
    file: str
    index: int | None = None
    time_s: float | None = None
    scale: float = 1.0  # source pixels per frame pixel (a photo or video over WORKING_MAX_PIXELS is read shrunk)


@dataclass
class _TrackResult:
    """A closed track, searched, waiting for the video's end to be decided with the others."""

    track: Track
    face: Face
    best_frame_score: float | None


class Tally:
    """The run's counts: pictures, faces by decision, people seen, skipped files, thresholds used."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.pictures = 0
        self.faces = 0
        self.decisions: Counter[str] = Counter()
        self.people: Counter[str] = Counter()
        self.thresholds: dict[str, None] = {}  # the distinct threshold sentences, in order

    def add(self, row: dict, face: Face) -> None:
        self.faces += 1
        self.decisions[row["decision"]] += 1
        if row["name"] is not None:
            self.people[row["name"]] += 1
        if face.threshold is not None:
            self.thresholds.setdefault(face.threshold.text)

    @property
    def rate(self) -> float:
        return self.faces / max(time.perf_counter() - self.started, 1e-9)

    def summary(self, skipped: list[tuple[str, str]], unit: str, rows: str, files: list[str]) -> dict:
        seconds = time.perf_counter() - self.started
        return {
            "pictures": self.pictures,
            "unit": unit,
            "rows": rows,
            "written_to": files,
            "faces": self.faces,
            **{d: self.decisions[d] for d in DECISIONS},
            "people": dict(self.people.most_common()),
            "skipped_files": len(skipped),
            "skipped": [{"file": report.printable(n), "reason": r} for n, r in skipped],
            "thresholds": list(self.thresholds),
            "seconds": round(seconds, 2),
            "faces_per_s": round(self.faces / max(seconds, 1e-9), 2),
        }


def identify_all_faces(session: Session, model_info) -> FacesFound:
    """Every face at the source, decided; the cheap checks first (gallery, output files, source), then the model."""
    args = session.args
    with session.gallery() as g:
        if not g.fingerprints():
            raise FaceIDError("No one is registered yet; register someone first.")
    files = RowFiles(args.csv, args.jsonl)
    try:
        session.check_source()
        annotator = None if args.annotate is None else Annotator(args.annotate, args.source)
        with session.gallery() as g:
            g.check_model(session.embedder.fingerprint)
            run = _Run(session, FaceDecider(args, session.embedder, g), files, annotator)
            run.run()
    finally:
        files.close()
    return FacesFound(
        rows=run.rows,
        summary=run.tally.summary(
            run.source.skipped,
            run.unit,
            "faces" if run.per_frame else "tracks",
            [report.printable(f) for f in (args.csv, args.jsonl) if f is not None],
        ),
        notes=run.notes,
        model=model_info(session),
        source=run.source.description,
    )


class _Run:
    """One pass over the source: pictures in chunks -> faces -> decisions -> rows (and tracks for a video)."""

    def __init__(self, session: Session, decider: FaceDecider, files: RowFiles, annotator: Annotator | None):
        self.args = session.args
        self.annotator = annotator
        self.finder = FaceFinder(session.embedder, session.limits, session.args.threads)
        self.decider = decider
        self.files = files
        self.source = session.take_source()
        self.video = not self.source.stills
        self.per_frame = bool(getattr(self.args, "per_frame", False)) or not self.video
        self.unit = "photo" if self.source.stills else "frame"
        # the rows are kept for stdout (the JSON object, or the text), unless they go only to --csv / --jsonl files
        self.keep_rows = bool(self.args.json) or not (self.args.csv or self.args.jsonl)
        self.rows: list[dict] = []
        self.notes: list[str] = []
        self.tally = Tally()
        self.tracker = Tracker() if self.video else None
        self.tracks: list[_TrackResult] = []
        self.track_scale = 1.0  # a video's source pixels per frame pixel
        self._skipped_seen = 0

    def run(self) -> None:
        fps = self.source.fps
        bar = report.progress(total=self.source.planned, unit=self.unit, desc="all faces", enabled=not self.args.json)
        try:
            for chunk in self._chunks():
                found = self.finder.find([p.frame for p in chunk])
                for picture, faces in zip(chunk, found):
                    self._picture(picture, faces)
                self.tally.pictures += len(chunk)
                bar.update(len(chunk))
                bar.set_postfix_str(f"{self.tally.faces} faces, {self.tally.rate:.1f} faces/s", refresh=False)
                self._note_skipped()
        finally:
            bar.close()
            self.source.close()
        self._note_skipped()
        track_rows = None
        if self.tracker is not None and not self.per_frame:
            self._closed(self.tracker.close_all())
            track_rows = self._decide_tracks()
        if self.annotator is not None:
            self.annotator.finish(self.args, fps, track_rows)

    # ------------------------------------------------------------------ reading
    def _pictures(self) -> Iterator[Picture]:
        src, every = self.source, max(1, int(getattr(self.args, "every", 1) or 1))
        fps = src.fps
        for frame in src:
            if src.stills:
                yield Picture(frame, src.current, scale=self._photo_scale(src.current, frame))
                continue
            index = src.start + src.frames_read - 1
            if (index - src.start) % every == 0:
                time_s = None if fps is None else index / fps
                yield Picture(frame, src.current or src.description, index, time_s, self._video_scale(frame))

    def _photo_scale(self, name: str, frame: np.ndarray) -> float:
        """A photo read shrunk to WORKING_MAX_PIXELS: its header's width over the frame's, so boxes are given in
        the file's own pixels (a header read, only for a frame at the working limit)."""
        if frame.shape[0] * frame.shape[1] < 0.9 * WORKING_MAX_PIXELS:
            return 1.0
        root = Path(str(self.args.source)).expanduser()
        width, _ = check_image_file(root / name if root.is_dir() else root)
        return width / frame.shape[1]

    def _video_scale(self, frame: np.ndarray) -> float:
        width = self.source.source_width
        return width / frame.shape[1] if width else 1.0

    def _chunks(self) -> Iterator[list[Picture]]:
        chunk: list[Picture] = []
        pixels = 0
        for picture in self._pictures():
            chunk.append(picture)
            pixels += picture.frame.shape[0] * picture.frame.shape[1]
            if len(chunk) >= CHUNK or pixels >= CHUNK_PIXELS:
                yield chunk
                chunk, pixels = [], 0
        if chunk:
            yield chunk

    def _note_skipped(self) -> None:
        for name, reason in self.source.skipped[self._skipped_seen :]:
            note = f"skipped {report.printable(name)}: {reason.rstrip('.')}"
            self.notes.append(note)
            report.note(f"note: {note}")
        self._skipped_seen = len(self.source.skipped)

    # ------------------------------------------------------------------ deciding
    def _picture(self, picture: Picture, faces: list[Face]) -> None:
        ids: list[int | None] = [None] * len(faces)
        closed: list[Track] = []
        if self.tracker is not None:
            assert picture.index is not None
            self.track_scale = picture.scale
            found_ids, closed = self.tracker.update(faces, picture.index, picture.time_s)
            ids = list(found_ids)
        if self.per_frame:
            self.decider.decide(faces)
            rows = [(self._face_row(picture, i, f, ids[i]), f) for i, f in enumerate(faces)]
            self._emit(rows)
            drawn = [r for r, _ in rows]
        else:
            self._closed(closed)
            drawn = [
                {"box": [float(v) * picture.scale for v in f.detection.box], "track": ids[i]}
                for i, f in enumerate(faces)
            ]
        if self.annotator is not None:
            self.annotator.picture(picture.frame, picture.file, picture.index, drawn, picture.scale)

    def _closed(self, tracks: list[Track]) -> None:
        """Tracks that ended: their probe (the template of their gated frames) searched now, decided at the end."""
        for track in tracks:
            best = track.best
            face = Face(best.detection, best.quality, track.template, images=max(len(track.embeddings), 1))
            self.decider.search(face)
            best_frame = None
            if face.matches:
                name = face.matches[0].name
                fp = self.decider.fingerprint
                best_frame = max(self.decider.gallery.verify(name, e, fp) for e in track.embeddings)
            track.embeddings = []  # the template is made: keep memory flat over a long video
            self.tracks.append(_TrackResult(track, face, best_frame))

    def _decide_tracks(self) -> list[dict]:
        """Every track of the video decided together (the threshold holds for all of them), as rows in the order
        the tracks appeared (their ids)."""
        self.decider.judge([t.face for t in self.tracks])
        rows = []
        for t in sorted(self.tracks, key=lambda t: t.track.id):
            row = self._face_row(
                Picture(
                    np.zeros((0, 0, 3), np.uint8),
                    self.source.current,
                    t.track.first_frame,
                    t.track.first_time,
                    self.track_scale,
                ),
                t.track.id,
                t.face,
                t.track.id,
            )
            row.update(
                last_frame=t.track.last_frame,
                last_time_s=None if t.track.last_time is None else round(t.track.last_time, 3),
                frames=t.track.frames,
                best_frame_score=None if t.best_frame_score is None else round(t.best_frame_score, 4),
            )
            rows.append((row, t.face))
        self._emit(rows)
        return [r for r, _ in rows]

    def _face_row(self, picture: Picture, i: int, face: Face, track: int | None) -> dict:
        d = face.detection
        return FaceRow(
            file=picture.file,
            face=i,
            box=[float(v) * picture.scale for v in d.box],
            detector_score=d.prob,
            decision=face.decision,
            name=face.name,
            score=None if face.best is None else face.best.score,
            threshold=None if face.threshold is None else face.threshold.value,
            threshold_source=None if face.threshold is None else face.threshold.source,
            margin=None if face.margin is None else face.margin.value,
            runner_up=face.runner_up,
            candidates=face.candidates,
            quality=None if face.embedding is not None else face.quality.summary(),
            frame=picture.index,
            time_s=picture.time_s,
            track=track,
        ).to_dict()

    def _emit(self, rows: list[tuple[dict, Face]]) -> None:
        self.files.write([r for r, _ in rows])
        for row, face in rows:
            if self.keep_rows:
                self.rows.append(row)
            self.tally.add(row, face)
