"""Optional peer backend: the `face_recognition` package (dlib's ResNet, 128-d; published LFW accuracy 99.38%).

A measurement tool, not part of the faceid package: bench scripts (and the evaluator's test, when the peer
is installed) import it as ``bench.peer_face_recognition``; face_recognition is not a project dependency.
Install it into the venv without compiling dlib:

    pip install dlib-bin face-recognition-models
    pip install --no-deps face_recognition        # its other deps (Click, numpy, Pillow) are already there

face_recognition_models 0.3.0 calls ``pkg_resources.resource_filename``, which setuptools >= 81 no longer
ships. Rather than pin setuptools in the shared venv, `import_face_recognition` installs a one-function
stand-in for ``pkg_resources`` (importlib.resources) in this process only when the real one is absent.

Pipeline (the library's defaults): dlib HOG detector with one upsampling, the detection closest to the
image centre (as for our backend), 5-point landmarks, one jitter, 128-d descriptor. Score: negative
Euclidean distance (the library's ``face_distance``; its default match rule is distance <= 0.6).
Detector misses: the descriptor of a centred square box, 43% of the shorter side (about the size and
place of dlib's HOG box on LFW's 250x250 images), counted and listed like ours.
"""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import importlib.util
import sys
import time
import types

import numpy as np

from faceid.core.errors import FaceIDError

INSTALL = "pip install dlib-bin face-recognition-models && pip install --no-deps face_recognition"
FALLBACK_SIDE = 0.43
PUBLISHED_LFW = 0.9938


def _pkg_resources_shim() -> None:
    """Provide pkg_resources.resource_filename when setuptools no longer has it (>= 81)."""
    if importlib.util.find_spec("pkg_resources") is not None:
        return
    shim = types.ModuleType("pkg_resources")
    shim.resource_filename = lambda package, resource: str(importlib.resources.files(package).joinpath(resource))
    sys.modules["pkg_resources"] = shim


def import_face_recognition():
    """Import face_recognition, or raise one clear error that gives the install command."""
    missing = [
        m for m in ("dlib", "face_recognition_models", "face_recognition") if importlib.util.find_spec(m) is None
    ]
    if missing:
        raise FaceIDError(f"The peer backend needs {', '.join(missing)}, which is not installed; run: {INSTALL}")
    _pkg_resources_shim()
    import face_recognition

    return face_recognition


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class FaceRecognitionBackend:
    """face_recognition as an evaluator backend (same interface as evaluate.FaceIDBackend, minus .bin input)."""

    name = "face_recognition"
    flip = False

    def __init__(self, upsample: int = 1, detector: str = "hog", landmarks: str = "small", jitters: int = 1):
        self.fr = import_face_recognition()
        self.upsample, self.detector, self.landmarks, self.jitters = upsample, detector, landmarks, jitters
        self.versions = {d: _version(d) for d in ("face_recognition", "face-recognition-models", "dlib-bin")}
        settings = f"{detector}-up{upsample}|{landmarks}|jit{jitters}|central|centre_box{FALLBACK_SIDE}"
        self.cache_tag = "face_recognition|" + "|".join(f"{k}={v}" for k, v in self.versions.items()) + "|" + settings
        self.stage_seconds = {"detect": 0.0, "embed": 0.0}

    def describe(self) -> dict:
        return {
            "backend": f"face_recognition {self.versions['face_recognition']} (dlib ResNet, 128-d)",
            "model": f"dlib_face_recognition_resnet_model_v1.dat from face-recognition-models "
            f"{self.versions['face-recognition-models']}, dlib-bin {self.versions['dlib-bin']}",
            "published_lfw_accuracy": PUBLISHED_LFW,
            "detector": f"dlib {self.detector.upper()}, upsample {self.upsample}; {self.landmarks} landmarks, "
            f"{self.jitters} jitter",
            "face_choice": "detection closest to the image centre (LFW convention)",
            "miss_rule": f"centred square box, {FALLBACK_SIDE:.0%} of the shorter side, counted and listed",
            "score": "negative Euclidean distance",
            "threshold": -0.6,
            "threshold_calibrated": False,
            "embedding_dim": 128,
            "flip": False,
            "device": "cpu",
        }

    def embed_images(self, images: list[np.ndarray]) -> tuple[np.ndarray, list[dict]]:
        """RGB uint8 (H, W, 3) images -> (N, 128) float32 descriptors and info dicts; dlib's HOG runs per image."""
        from faceid.eval.evaluator import central_index

        out, infos = [], []
        for image in images:
            image = np.ascontiguousarray(image)
            h, w = image.shape[:2]
            t0 = time.perf_counter()
            locs = self.fr.face_locations(image, number_of_times_to_upsample=self.upsample, model=self.detector)
            t1 = time.perf_counter()
            info = {"detected": bool(locs), "faces": len(locs), "box": None}
            if locs:
                boxes = [(left, top, right, bottom) for top, right, bottom, left in locs]
                top, right, bottom, left = locs[central_index(boxes, h, w)]
                info["box"] = [left, top, right, bottom]
            else:
                side = int(min(h, w) * FALLBACK_SIDE)
                top, left = (h - side) // 2, (w - side) // 2
                bottom, right = top + side, left + side
                info.update(reason="no face found", fallback="centre_box")
            enc = self.fr.face_encodings(
                image, [(top, right, bottom, left)], num_jitters=self.jitters, model=self.landmarks
            )
            out.append(np.asarray(enc[0], np.float32))
            infos.append(info)
            self.stage_seconds["detect"] += t1 - t0
            self.stage_seconds["embed"] += time.perf_counter() - t1
        return np.stack(out) if out else np.zeros((0, 128), np.float32), infos

    def scores(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return -np.linalg.norm(a - b, axis=1)

    def template(self, embeddings: np.ndarray) -> np.ndarray:
        """Several known encodings of one person: their mean descriptor."""
        return np.asarray(embeddings, np.float32).mean(0)

    def score_matrix(self, probes: np.ndarray, templates: np.ndarray) -> np.ndarray:
        d2 = (probes**2).sum(1)[:, None] + (templates**2).sum(1)[None, :] - 2 * probes @ templates.T
        return -np.sqrt(np.maximum(d2, 0))
