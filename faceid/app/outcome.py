"""The app's shared vocabulary, at the bottom of the package: what an action returns, and the constants and
exception the other app modules share. Nothing here loads a model, opens a file or prints.

Every action (`faceid.app.actions`) returns one of the result types below; `faceid.app.render` turns a result
into the lines a person reads and the JSON object a script reads, and each result says its own exit code.
The types name the gallery's and the liveness check's objects only for the type checker, so importing this
module imports neither (``list`` and ``delete`` must not pay for torch).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ..core.errors import EXIT_OK
from ..model.calibration import Calibration, Threshold
from ..model.margin import IDENTIFIED, Margin

if TYPE_CHECKING:
    from .gallery_access import Match, Person
    from .liveness import LivenessResult

EXIT_NO_MATCH = 1  # no match, nobody identified, liveness failed: an answer, not an error (those are 2)
LIVE_FRAME_LIMIT = 300  # headless camera: give up after this many frames rather than wait forever


@dataclass
class Outcome:
    """A result as printed: its exit code, the JSON-able record and the lines a person reads."""

    code: int
    data: dict
    lines: list[str] = field(default_factory=list)


@dataclass
class Sample:
    """One quality-gated face: its crop (stored by register), embedding and quality measurements; a probe's
    embedding is the template of `count` such faces (the comparison kind its threshold is read for)."""

    crop: np.ndarray
    embedding: np.ndarray
    metrics: dict
    count: int = 1
    synthetic: float | None = None  # the synthetic-face detector's score (highest of `count`), when one runs


@dataclass(frozen=True)
class SyntheticVerdict:
    """What the synthetic-face detector said of one action's faces (`faceid.app.synthetic_check`): the highest
    score and the detector's threshold."""

    score: float
    threshold: float
    detector: str
    samples: int

    @property
    def flagged(self) -> bool:
        return self.score >= self.threshold

    def to_dict(self) -> dict:
        return {
            "score": round(self.score, 4),
            "threshold": round(self.threshold, 4),
            "flagged": self.flagged,
            "detector": self.detector,
        }

    def line(self) -> str:
        verdict = "looks GENERATED" if self.flagged else "looks real"
        return (
            f"synthetic-face check: {verdict} (score {self.score:.3f} {'>=' if self.flagged else '<'} threshold "
            f"{self.threshold:.3f}, highest of {self.samples} sample{'s' if self.samples != 1 else ''})"
        )


@dataclass(frozen=True)
class ModelInfo:
    """Which model made a decision and where its threshold came from (the ``model`` object of the JSON)."""

    source: str
    runtime: str
    fingerprint: str
    crop: str
    threshold_source: str  # "option", "table", "checkpoint" or "default" (faceid.app.decision)
    calibration: Calibration | None


# ----------------------------------------------------------------------------- one result per action


@dataclass
class Registered:
    """register: `name` stored from `samples`; `similar_to` is the closest other person, and `looks_like_them`
    says whether identify would take this face for them (at `duplicate_threshold`)."""

    name: str
    samples: int
    min_sample_cosine: float  # the lowest sample-to-template cosine: how consistent the samples were
    similar_to: Match | None
    looks_like_them: bool
    duplicate_threshold: Threshold
    notes: list[str]
    liveness: LivenessResult | None
    model: ModelInfo
    exit_code: int = EXIT_OK
    synthetic: SyntheticVerdict | None = None


@dataclass
class LivenessRefused:
    """register / verify / identify under --liveness: the head-turn challenge failed, or (register) the samples
    taken after it show another face than the one that passed it (`face_score`, its cosine to that face)."""

    action: str
    liveness: LivenessResult
    name: str | None = None  # register's name
    face_score: float | None = None
    exit_code: int = EXIT_NO_MATCH


@dataclass
class Verified:
    """verify: `name`'s template against the probe, decided at `threshold` and `margin`; `beaten_by` is the
    other person who scored more than the margin above `name` (then no match, whatever the threshold says)."""

    name: str
    score: float
    threshold: Threshold
    match: bool
    closest_other: Match | None
    quality: dict
    notes: list[str]
    liveness: LivenessResult | None
    model: ModelInfo
    margin: Margin
    beaten_by: Match | None = None
    synthetic: SyntheticVerdict | None = None

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.match else EXIT_NO_MATCH


@dataclass
class Identified:
    """identify: the top `matches` (best first) and the `decision` at `threshold` and `margin`: "identified"
    (`identified` is the person), "ambiguous" (the `candidates` at or above the threshold within the margin of
    the best: no one is named) or "unknown" (`faceid.model.margin`)."""

    matches: list[Match]
    threshold: Threshold
    identified: Match | None
    quality: dict
    notes: list[str]
    liveness: LivenessResult | None
    model: ModelInfo
    margin: Margin
    decision: str = IDENTIFIED
    candidates: list[Match] = field(default_factory=list)
    synthetic: SyntheticVerdict | None = None

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.identified is not None else EXIT_NO_MATCH


@dataclass
class FacesFound:
    """identify --all-faces: one row per face (`faceid.app.face_rows.FaceRow.to_dict`; per track for a video
    unless --per-frame) and the run's `summary` (pictures, faces, decisions, skipped files, people seen)."""

    rows: list[dict]
    summary: dict
    notes: list[str]
    model: ModelInfo
    source: str

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.summary["identified"] else EXIT_NO_MATCH


@dataclass
class PersonEnrolled:
    """One subfolder's outcome: registered or not (`reason`), from how many samples, what was rejected."""

    name: str  # the folder's name as printed (control characters escaped)
    registered: bool
    samples: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    reason: str | None = None  # why not registered
    similar_to: Match | None = None
    warning: str | None = None
    replaced: bool = False


@dataclass
class Enrolled:
    """enroll: every person of the tree at `folder`."""

    folder: str
    people: list[PersonEnrolled]
    model: ModelInfo

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.people and all(p.registered for p in self.people) else EXIT_NO_MATCH


@dataclass
class Listed:
    """list: everyone registered."""

    people: list[Person]
    exit_code: int = EXIT_OK


@dataclass
class Checked:
    """check: the gallery at `db_path` is intact and holds `templates` templates; its search index at `index_path`
    was checked against it in full and rebuilt, `index_problem` saying what was wrong with it (None: nothing)."""

    db_path: str
    templates: int
    index_path: str
    index_problem: str | None
    exit_code: int = EXIT_OK


@dataclass
class Deleted:
    name: str
    exit_code: int = EXIT_OK


@dataclass
class Reenrolled:
    """reenroll: `people` templates recomputed; `imported_kept`: people imported from a seed, kept as they are."""

    people: int
    imported_kept: list[str]
    model: ModelInfo
    exit_code: int = EXIT_OK


@dataclass
class SeedImported:
    people: int
    path: str
    model: ModelInfo
    exit_code: int = EXIT_OK


@dataclass
class LivenessChecked:
    """liveness: the head-turn challenge on its own."""

    liveness: LivenessResult

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.liveness.passed else EXIT_NO_MATCH


Result = (
    Registered
    | LivenessRefused
    | Verified
    | Identified
    | FacesFound
    | Enrolled
    | Listed
    | Checked
    | Deleted
    | Reenrolled
    | SeedImported
    | LivenessChecked
)


class Rejected(Exception):
    """Raised out of the probe when the liveness challenge fails: verify / identify then answer with a
    `LivenessRefused` instead of a decision (`faceid.app.actions.run_action` turns one into the other)."""

    def __init__(self, liveness: LivenessResult):
        super().__init__(liveness.reason)
        self.liveness = liveness
