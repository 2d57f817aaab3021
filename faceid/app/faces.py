"""Every face of a picture, each with its own decision (``identify --all-faces``).

The single-face path keeps the largest face of a frame; a group photo, an event folder or a CCTV clip needs
them all. `FaceFinder` detects every face of a batch of pictures (MTCNN takes pictures of one size as one
batch), puts each through the quality gate (`faceid.app.quality`: a face below it is reported, not dropped)
and embeds the faces that pass in one batch. `FaceDecider` decides each of them with the app's rule
(`faceid.app.decision`, `faceid.model.margin`): IDENTIFIED / AMBIGUOUS / UNKNOWN with its score, threshold,
margin and runner-up. The threshold is read at --fpir for every comparison the picture makes (its gated
faces x the people registered): five strangers in a photo are five chances to name someone, so the picture as
a whole keeps the rate asked for.

The detector here searches the whole frame for faces from `ALL_FACES_MIN_FACE` pixels (half the gate's
minimum), instead of the single-face path's 320-px downscale that finds only a face filling the frame: faces
too small to decide are found and reported as such.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ..model.margin import IDENTIFIED
from .decision import comparison, decision_margin, gallery_pairs, identified, identify_threshold, people_compared
from .face_rows import LOW_QUALITY
from .quality import QualityReport, QualityThresholds, assess

if TYPE_CHECKING:
    from ..model.calibration import Threshold
    from ..model.embedder import Embedder
    from ..model.face import Detection
    from ..model.margin import Margin
    from .gallery_access import Gallery, Match

ALL_FACES_MIN_FACE = 40  # source pixels: half the gate's 80 px, so a face just too small is reported, not missed


@dataclass
class Face:
    """One face found in a picture: its detection, the gate's verdict, its embedding (None below the gate) and,
    once `FaceDecider.decide` ran, its decision."""

    detection: Detection
    quality: QualityReport
    embedding: np.ndarray | None = None
    images: int = 1  # images the embedding averages (a track's gated frames)
    matches: list[Match] = field(default_factory=list)  # the gallery's best two, once searched
    decision: str = LOW_QUALITY
    best: Match | None = None  # the best match (named when IDENTIFIED)
    runner_up: Match | None = None
    candidates: list[Match] = field(default_factory=list)
    threshold: Threshold | None = None
    margin: Margin | None = None

    @property
    def name(self) -> str | None:
        return self.best.name if self.decision == IDENTIFIED and self.best is not None else None


class FaceFinder:
    """Pictures -> every face in each, gated, the good ones embedded (one detector and embedder batch per call)."""

    def __init__(self, embedder: Embedder, limits: QualityThresholds, threads: int = 1):
        from ..model.face import FacePipeline, detector_for

        self.limits = limits
        detector = detector_for(embedder, threads, min_face_size=ALL_FACES_MIN_FACE, max_side=None)
        self.pipeline = FacePipeline(embedder, detector)

    def find(self, pictures: list[np.ndarray]) -> list[list[Face]]:
        """Per picture, its faces largest first; those that pass the gate carry their embedding."""
        found: list[list[Face]] = []
        crops, owners = [], []
        for picture, detections in zip(pictures, self.pipeline.detector.detect_batch(pictures)):
            faces = [Face(d, assess(picture, d, self.limits)) for d in detections]
            for face in faces:
                if face.quality.ok:
                    crops.append(self.pipeline.crop(picture, face.detection))
                    owners.append(face)
            found.append(faces)
        for face, embedding in zip(owners, self.pipeline.embed_crops(crops)):
            face.embedding = embedding
        return found


class FaceDecider:
    """Decides faces against an open gallery with the app's rule; the gallery's pairs and the people count are
    read once for the run, thresholds once per comparison kind and number of faces."""

    def __init__(self, args, embedder: Embedder, gallery: Gallery):
        self.args, self.embedder, self.gallery = args, embedder, gallery
        self.fingerprint = embedder.fingerprint
        self.people = people_compared(gallery.fingerprints(), self.fingerprint)
        self.pairs = gallery_pairs(args, gallery, self.fingerprint)
        self._samples: dict[str, int] = {}
        self._thresholds: dict[tuple, Threshold] = {}

    def decide(self, faces: list[Face]) -> None:
        """Decide every gated face of one picture; the threshold holds for all of them together."""
        for face in faces:
            self.search(face)
        self.judge(faces)

    def search(self, face: Face) -> None:
        """The gallery's two best matches for a gated face (the margin needs the second); none below the gate."""
        if face.embedding is not None:
            face.matches = self.gallery.identify(face.embedding, self.fingerprint, k=2)

    def judge(self, faces: list[Face]) -> None:
        """The decision of each searched face, the threshold read for all of `faces` decided together (the gated
        faces of a picture, or the tracks of a video: `Face.images` is then the frames its probe averages)."""
        gated = [f for f in faces if f.embedding is not None]
        for face in gated:
            matches = face.matches
            kind = comparison(self._template_images(matches[0].name) if matches else 1, face.images)
            face.threshold = self._threshold(kind, len(gated))
            face.margin = decision_margin(self.args, self.embedder, kind)
            face.decision, _, face.candidates = identified(matches, face.threshold, face.margin)
            face.best = matches[0] if matches else None
            face.runner_up = matches[1] if len(matches) > 1 else None

    def _template_images(self, name: str) -> int:
        if name not in self._samples:
            person = self.gallery.get(name)
            self._samples[name] = person.n_samples if person is not None else 1
        return self._samples[name]

    def _threshold(self, kind: tuple[int, int], searches: int) -> Threshold:
        key = (kind, searches)
        if key not in self._thresholds:
            self._thresholds[key] = identify_threshold(
                self.args, self.embedder, self.people, kind, self.pairs, searches=searches
            )
        return self._thresholds[key]
