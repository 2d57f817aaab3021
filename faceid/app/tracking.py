"""Faces linked across a video's frames into tracks, so that a person is reported once, on more evidence.

Why: one frame of a clip is a weak probe (motion blur, a turned head), and a row per frame per face says the
same thing hundreds of times. A track is one face followed through the video; its decision is made on the
template (`faceid.model.embeddings.template_of`, the rule of every probe) of its gated frames' embeddings.

Linking, frame by frame: a face joins the open track whose last box overlaps it most (IoU at least `MIN_IOU`),
unless both have embeddings that disagree (cosine below `MIN_LINK_COSINE`: two people crossing); a face that
overlaps no track joins one it matches strongly (cosine at least `REJOIN_COSINE`, after an occlusion),
else starts a new track. A track not seen for `MAX_GAP_FRAMES` analysed frames is closed. A track keeps at most
`KEPT_EMBEDDINGS` embeddings, evenly spread over its length (every other one is dropped when full), so memory
stays constant however long the video.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..model.embeddings import template_of
from .faces import Face

MIN_IOU = 0.3
MIN_LINK_COSINE = 0.3  # overlapping boxes whose faces score below this are different people
REJOIN_COSINE = 0.6  # a face that overlaps no track rejoins one it scores this well with
MAX_GAP_FRAMES = 25  # analysed frames a track may go unseen (occlusion, a missed detection) before it closes
KEPT_EMBEDDINGS = 64


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two [x1, y1, x2, y2] boxes."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


@dataclass
class Track:
    """One face followed through a video: where and when it was seen, and the embeddings of its gated frames."""

    id: int
    first_frame: int
    first_time: float | None
    last_frame: int
    last_time: float | None
    box: np.ndarray  # the last box seen (for linking)
    best: Face  # the frame's face with the highest detector score among gated ones (else any): the row's box
    frames: int = 1
    unseen: int = 0
    embeddings: list[np.ndarray] = field(default_factory=list)
    _stride: int = 1  # keep every _stride-th gated embedding (doubles when the list is full)
    _gated: int = 0

    def add(self, face: Face, frame: int, time: float | None) -> None:
        self.last_frame, self.last_time, self.box = frame, time, face.detection.box
        self.frames, self.unseen = self.frames + 1, 0
        if face.embedding is None:
            return
        if self.best.embedding is None or face.detection.prob > self.best.detection.prob:
            self.best = face
        if self._gated % self._stride == 0:
            self.embeddings.append(face.embedding)
            if len(self.embeddings) >= 2 * KEPT_EMBEDDINGS:
                self.embeddings, self._stride = self.embeddings[::2], self._stride * 2
        self._gated += 1

    @property
    def template(self) -> np.ndarray | None:
        """The probe a track is decided on (None: no frame passed the quality gate)."""
        return template_of(np.stack(self.embeddings)) if self.embeddings else None

    def cosine(self, embedding: np.ndarray | None) -> float | None:
        if embedding is None or not self.embeddings:
            return None
        return float(self.embeddings[-1] @ embedding)


class Tracker:
    """Links each analysed frame's faces to tracks (`update`), and hands back the tracks as they close."""

    def __init__(self) -> None:
        self.open: list[Track] = []
        self._next = 0

    def update(self, faces: list[Face], frame: int, time: float | None) -> tuple[list[int], list[Track]]:
        """(the track id of each face, the tracks that closed with this frame)."""
        pairs = []
        for ti, track in enumerate(self.open):
            for fi, face in enumerate(faces):
                overlap = iou(track.box, face.detection.box)
                cos = track.cosine(face.embedding)
                linked = overlap >= MIN_IOU and (cos is None or cos >= MIN_LINK_COSINE)
                if linked or (cos is not None and cos >= REJOIN_COSINE):
                    pairs.append((overlap + (cos or 0.0), ti, fi))
        ids: list[int | None] = [None] * len(faces)
        seen: set[int] = set()
        for _, ti, fi in sorted(pairs, reverse=True):  # the strongest links first, each track and face once
            if ti not in seen and ids[fi] is None:
                self.open[ti].add(faces[fi], frame, time)
                ids[fi] = self.open[ti].id
                seen.add(ti)
        for fi, face in enumerate(faces):
            if ids[fi] is None:
                track = Track(self._next, frame, time, frame, time, face.detection.box, face, frames=0)
                track.add(face, frame, time)
                seen.add(len(self.open))
                self.open.append(track)
                ids[fi], self._next = track.id, self._next + 1
        for ti, track in enumerate(self.open):
            if ti not in seen:
                track.unseen += 1
        closed = [t for t in self.open if t.unseen > MAX_GAP_FRAMES]
        self.open = [t for t in self.open if t.unseen <= MAX_GAP_FRAMES]
        return [i for i in ids if i is not None], closed

    def close_all(self) -> list[Track]:
        closed, self.open = self.open, []
        return closed
