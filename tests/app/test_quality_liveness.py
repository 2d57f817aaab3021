"""The quality gate, landmark pose, and the head-turn liveness challenge.

The challenge's logic is tested with a scripted pipeline (landmarks at chosen yaws); its real use - still
photos fed repeatedly through MTCNN - with the real detector and a randomly initialised embedder.
"""

from __future__ import annotations

import math
import random

import cv2
import numpy as np
import pytest

from faceid.app.liveness import ChallengeConfig, random_prompts, run_challenge
from faceid.app.quality import QualityThresholds, assess, head_pose, sharpness
from faceid.model.face import Detection, FaceResult

RNG = np.random.default_rng(0)
TEXTURE = RNG.integers(40, 215, (300, 300, 3), dtype=np.uint8)  # sharp, mid-grey: passes the gate


def landmarks(yaw_deg: float = 0.0, roll_deg: float = 0.0, dx: float = 0.0) -> np.ndarray:
    """Five MTCNN-style points of a face at the given yaw/roll (eye distance 60 px), shifted by dx."""
    ratio = 0.5 * math.tan(math.radians(yaw_deg))
    pts = np.array([[-30, -30], [30, -30], [60 * ratio, 0], [-20, 30], [20, 30]], np.float64)
    a = math.radians(roll_deg)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return (pts @ rot.T + [150 + dx, 150]).astype(np.float32)


def detection(yaw=0.0, roll=0.0, size=120.0, prob=0.999, dx=0.0) -> Detection:
    box = np.array([150 + dx - size / 2, 150 - size / 2, 150 + dx + size / 2, 150 + size / 2], np.float32)
    return Detection(box=box, prob=prob, landmarks=landmarks(yaw, roll, dx))


# ----------------------------------------------------------------------------- pose and gate


def test_pose_from_landmarks():
    assert head_pose(landmarks(0)).yaw_deg == pytest.approx(0, abs=1e-6)
    assert head_pose(landmarks(20)).yaw_deg == pytest.approx(20, abs=0.01)
    assert head_pose(landmarks(-30)).yaw_deg == pytest.approx(-30, abs=0.01)
    rolled = head_pose(landmarks(20, roll_deg=15))
    assert rolled.roll_deg == pytest.approx(15, abs=0.01) and rolled.yaw_deg == pytest.approx(20, abs=0.01)


def test_yaw_ratio_does_not_change_when_a_flat_photo_is_tilted():
    """Turning a printed photo about its vertical axis squeezes x: nose offset and eye distance alike."""
    lm = landmarks(12)
    squeezed = lm.copy()
    squeezed[:, 0] = 150 + (squeezed[:, 0] - 150) * 0.6
    assert head_pose(squeezed).yaw_ratio == pytest.approx(head_pose(lm).yaw_ratio, abs=1e-6)


def test_sharpness_drops_with_blur():
    assert sharpness(cv2.GaussianBlur(TEXTURE, (0, 0), 3)) < sharpness(TEXTURE) / 10


@pytest.mark.parametrize(
    "frame, det, reason",
    [
        (TEXTURE, detection(size=50), "face too small"),
        (TEXTURE, detection(prob=0.8), "unsure it is a face"),
        (TEXTURE // 8, detection(), "too dark"),
        (np.full_like(TEXTURE, 250), detection(), "too bright"),
        (cv2.GaussianBlur(TEXTURE, (0, 0), 4), detection(), "too blurry"),
        (TEXTURE, detection(yaw=40), "turned sideways"),
        (TEXTURE, detection(roll=35), "head tilted"),
    ],
)
def test_gate_rejects_with_a_reason(frame, det, reason):
    report = assess(frame, det)
    assert not report.ok and any(reason in r for r in report.reasons), report.reasons


def test_gate_accepts_a_good_face_and_thresholds_are_configurable():
    assert assess(TEXTURE, detection()).ok
    assert not assess(TEXTURE, detection(size=120), QualityThresholds(min_face_px=200)).ok


# ----------------------------------------------------------------------------- challenge logic


class ScriptedPipeline:
    """Stands in for FacePipeline: the n-th analyzed frame shows the n-th (yaw, dx, person) of a script."""

    def __init__(self, script):
        self.script, self.i = list(script), 0
        self.people = {p: np.eye(512, dtype=np.float32)[k] for k, p in enumerate("AB")}

    def analyze(self, frame, embed=False):
        step = self.script[min(self.i, len(self.script) - 1)]
        self.i += 1
        if step is None:
            return FaceResult(detections=[])
        yaw, dx, person = step
        det = detection(yaw=yaw, dx=dx)
        det.person = person
        return FaceResult(detections=[det])

    def crop(self, frame, det):
        return np.full((112, 112, 3), ord(det.person), np.uint8)

    def embed_crops(self, crops):
        return np.stack([self.people[chr(int(c[0, 0, 0]))] for c in crops])


def frames(n):
    return (TEXTURE for _ in range(n))


def sweep(*targets, person="A"):
    """Yaw moving smoothly through the given targets (degrees), 4 frames per leg."""
    out, prev = [], 0.0
    for t in targets:
        out += [(prev + (t - prev) * k / 4, 0.0, person) for k in range(1, 5)]
        prev = t
    return out


CFG = ChallengeConfig(prompts=2, frames_per_prompt=20)


def test_following_the_prompts_passes():
    script = [(0.0, 0.0, "A")] + sweep(25, 0, -25)
    result = run_challenge(frames(60), ScriptedPipeline(script), CFG, prompts=["left", "right"])
    assert result.passed, result.reason
    assert result.start is not None and result.start.embedding is not None


def test_turning_the_wrong_way_fails():
    script = [(0.0, 0.0, "A")] + sweep(-25, 0, -25)
    result = run_challenge(frames(60), ScriptedPipeline(script), CFG, prompts=["left", "right"])
    assert not result.passed and "turn left" in result.reason


def test_a_constant_pose_fails_whatever_the_prompts():
    for prompts in (["left", "left"], ["right", "left"]):
        result = run_challenge(frames(100), ScriptedPipeline([(3.0, 0.0, "A")]), CFG, prompts=prompts)
        assert not result.passed and "within 20 frames" in result.reason


def test_a_photo_already_turned_fails():
    """Starting turned (not frontal) never starts the challenge."""
    result = run_challenge(frames(100), ScriptedPipeline([(30.0, 0.0, "A")]), CFG, prompts=["left"])
    assert not result.passed and "look straight" in result.reason


def test_swapping_faces_fails():
    jump = [(0.0, 0.0, "A"), (5.0, 0.0, "A"), (20.0, 200.0, "A")]
    assert "jumped" in run_challenge(frames(30), ScriptedPipeline(jump), CFG, prompts=["left"]).reason
    other = [(0.0, 0.0, "A")] + sweep(25, person="B")
    assert "does not look like" in run_challenge(frames(30), ScriptedPipeline(other), CFG, prompts=["left"]).reason


def test_losing_the_face_or_the_source_fails():
    lost = [(0.0, 0.0, "A")] + [None] * 20
    assert "lost" in run_challenge(frames(40), ScriptedPipeline(lost), CFG, prompts=["left"]).reason
    short = run_challenge(frames(3), ScriptedPipeline([(0.0, 0.0, "A")]), CFG, prompts=["left"])
    assert not short.passed and "ended" in short.reason


def test_prompts_are_random_left_right():
    seqs = {tuple(random_prompts(3, random.Random(seed))) for seed in range(40)}
    assert len(seqs) > 4 and all(set(s) <= {"left", "right"} for s in seqs)


# ----------------------------------------------------------------------------- real stills fail


@pytest.fixture(scope="module")
def random_pipeline():
    """The real detector with a randomly initialised embedder (the challenge only needs landmarks)."""
    import torch

    from faceid.model.embedder import Embedder
    from faceid.model.face import FaceDetector, FacePipeline
    from faceid.model.network import backbone_fingerprint, build_backbone
    from faceid.model.preprocessing import ALIGNED_SPEC

    torch.manual_seed(0)
    net = build_backbone().eval()
    emb = Embedder(
        model=net,
        spec=ALIGNED_SPEC,
        threshold=0.5,
        threshold_calibrated=False,
        fingerprint=backbone_fingerprint(net, ALIGNED_SPEC),
        source="random init",
        device=torch.device("cpu"),
    )
    return FacePipeline(emb, FaceDetector(max_side=480))


@pytest.mark.parametrize("photo", ["face_recognition/obama.jpg", "deepface/img1.jpg"])
def test_still_photo_fed_repeatedly_fails(shared_data, random_pipeline, photo):
    from faceid.app.camera import open_source

    cfg = ChallengeConfig(prompts=2, frames_per_prompt=6)
    src = open_source(shared_data / "photos" / photo, repeat=40)
    result = run_challenge(src, random_pipeline, cfg)
    assert not result.passed, result.reason
    assert result.start is not None, "the still should at least have started the challenge (frontal face)"
    assert len(set(np.round(result.yaw_trace, 3))) == 1  # a still's yaw never moves
