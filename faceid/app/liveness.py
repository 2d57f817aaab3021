"""Active liveness: a random head-turn challenge checked with the landmark pose.

A printed or on-screen photo held to the camera can match a template, but it cannot turn its head on
request: its landmark yaw stays where it is (and tilting the flat picture changes the nose offset and the
eye distance by the same factor, so the yaw ratio does not move either). The challenge:

1. wait for a frontal face (|yaw| <= ``center_deg``): the starting face, embedded for verification;
2. for each of ``prompts`` random directions (left/right): the face must come back to frontal if needed,
   then reach ``turn_deg`` in the asked direction *and* move at least ``min_change_deg`` from the start,
   within ``frames_per_prompt`` frames (and ``seconds_per_prompt`` on a live camera);
3. all along, the face must stay the same track (no jump of the box by more than ``max_jump`` box sizes,
   not missing for more than ``max_missing`` frames) and, at each turn, the same person as the start
   (cosine >= ``min_same_person``).

"left" is the subject's own left: the nose moves toward the image's right in a non-mirrored camera.
bench/measure_liveness.py measures the challenge on photos and clips.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np

from ..model.face import Detection, FacePipeline, FaceResult
from .quality import QualityThresholds, assess, head_pose

DIRECTIONS = {"left": 1.0, "right": -1.0}  # sign of the yaw the prompt asks for
PROMPT_TEXT = {"left": "slowly turn your head to YOUR LEFT", "right": "slowly turn your head to YOUR RIGHT"}
CENTER_TEXT = "look straight at the camera"


@dataclass(frozen=True)
class ChallengeConfig:
    prompts: int = 2
    turn_deg: float = 15.0
    min_change_deg: float = 10.0
    center_deg: float = 10.0
    frames_per_prompt: int = 60
    seconds_per_prompt: float = 8.0  # live cameras only: files are read faster than real time
    max_missing: int = 10
    max_jump: float = 0.6
    min_same_person: float | None = 0.3


@dataclass
class LivenessResult:
    passed: bool
    reason: str
    prompts: list[str]
    frames: int = 0
    yaw_trace: list[float] = field(default_factory=list)
    start: FaceResult | None = None  # the frontal starting face (crop + embedding), for verification
    start_metrics: dict = field(default_factory=dict)  # its quality measurements

    def to_dict(self) -> dict:
        return {
            "passed": self.passed,
            "reason": self.reason,
            "prompts": self.prompts,
            "frames": self.frames,
            "yaw_min": round(min(self.yaw_trace), 1) if self.yaw_trace else None,
            "yaw_max": round(max(self.yaw_trace), 1) if self.yaw_trace else None,
        }


def random_prompts(n: int, rng: random.Random | None = None) -> list[str]:
    """A random left/right sequence; `random.SystemRandom` by default so it cannot be predicted."""
    rng = rng or random.SystemRandom()
    return [rng.choice(sorted(DIRECTIONS)) for _ in range(n)]


class _Track:
    """Follows the largest face from frame to frame and notices when it jumps or disappears."""

    def __init__(self, cfg: ChallengeConfig):
        self.cfg, self.missing = cfg, 0
        self.last_box: np.ndarray | None = None

    def update(self, result: FaceResult) -> str | None:
        """Returns a failure reason, or None while the track holds."""
        if result.face is None:
            self.missing += 1
            return f"the face was lost for {self.missing} frames" if self.missing > self.cfg.max_missing else None
        self.missing = 0
        box = result.face.box
        if self.last_box is not None:
            centre = lambda b: np.array([(b[0] + b[2]) / 2, (b[1] + b[3]) / 2])  # noqa: E731
            jump = float(np.linalg.norm(centre(box) - centre(self.last_box))) / max(result.face.size, 1.0)
            if jump > self.cfg.max_jump:
                return "the face jumped between frames (a different face?)"
        self.last_box = box
        return None


def run_challenge(
    frames: Iterable[np.ndarray],
    pipeline: FacePipeline,
    cfg: ChallengeConfig = ChallengeConfig(),
    prompts: list[str] | None = None,
    live: bool = False,
    quality: QualityThresholds = QualityThresholds(),
    on_prompt: Callable[[str], None] | None = None,
    on_frame: Callable[[np.ndarray, FaceResult, str], bool | None] | None = None,
) -> LivenessResult:
    """Run the challenge over `frames`. on_prompt(text) announces each instruction; on_frame(frame, result,
    instruction) may draw a preview and returns True to cancel."""
    prompts = list(prompts) if prompts is not None else random_prompts(cfg.prompts)
    out = LivenessResult(passed=False, reason="", prompts=prompts)
    track = _Track(cfg)
    steps = ["start"] + prompts
    step, need_center, step_frames, step_t0 = 0, True, 0, time.monotonic()
    say = on_prompt or (lambda text: None)
    say(CENTER_TEXT)
    for frame in frames:
        out.frames += 1
        step_frames += 1
        result = pipeline.analyze(frame, embed=False)
        instruction = CENTER_TEXT if need_center else PROMPT_TEXT.get(steps[step], "")
        if on_frame is not None and on_frame(frame, result, instruction):
            out.reason = "cancelled"
            return out
        if (failure := track.update(result)) is not None:
            out.reason = failure
            return out
        if result.face is not None:
            yaw = head_pose(result.face.landmarks).yaw_deg
            out.yaw_trace.append(yaw)
            done = _advance(steps[step], need_center, yaw, frame, result, result.face, pipeline, cfg, quality, out)
            if isinstance(done, str):
                out.reason = done
                return out
            if done:
                if need_center and steps[step] != "start":
                    need_center = False
                    say(PROMPT_TEXT[steps[step]])
                    continue
                step += 1
                if step == len(steps):
                    out.passed, out.reason = True, "turned as asked"
                    return out
                need_center = abs(yaw) > cfg.center_deg
                step_frames, step_t0 = 0, time.monotonic()
                say(CENTER_TEXT if need_center else PROMPT_TEXT[steps[step]])
                continue
        if step_frames >= cfg.frames_per_prompt or (live and time.monotonic() - step_t0 > cfg.seconds_per_prompt):
            what = "look straight at the camera" if steps[step] == "start" or need_center else f"turn {steps[step]}"
            out.reason = f"did not {what} within {step_frames} frames"
            return out
    out.reason = f"the source ended after {out.frames} frames, before the challenge was complete"
    return out


def _advance(
    step: str,
    need_center: bool,
    yaw: float,
    frame: np.ndarray,
    result: FaceResult,
    face: Detection,
    pipeline: FacePipeline,
    cfg: ChallengeConfig,
    quality: QualityThresholds,
    out: LivenessResult,
) -> bool | str:
    """Has the current step been achieved with this frame (`face`: its largest face)? A string is a failure
    reason."""
    if step == "start":
        report = assess(frame, face, quality)
        if abs(yaw) > cfg.center_deg or not report.ok:
            return False
        out.start_metrics = report.metrics
        result.crop = pipeline.crop(frame, face)
        result.embedding = pipeline.embed_crops([result.crop])[0]
        out.start = result
        return True
    if need_center:
        return abs(yaw) <= cfg.center_deg
    start = out.start
    # the "start" step comes first and stores a frame with a face and its embedding
    assert start is not None and start.face is not None and start.embedding is not None
    start_yaw = head_pose(start.face.landmarks).yaw_deg
    sign = DIRECTIONS[step]
    if sign * yaw < cfg.turn_deg or sign * (yaw - start_yaw) < cfg.min_change_deg:
        return False
    if cfg.min_same_person is not None:
        emb = pipeline.embed_crops([pipeline.crop(frame, face)])[0]
        if float(emb @ start.embedding) < cfg.min_same_person:
            return "the turned face does not look like the starting face"
    return True
