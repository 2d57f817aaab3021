"""The evaluator's backends, and embedding every image of a `Dataset` once; the runs that score them live elsewhere.

Backends: `FaceIDBackend` is this project's pipeline; `Backend` is the protocol a peer recogniser follows to be
compared on the same images (bench/peer_face_recognition.py). `load_faceid_backend` chooses the model as the
app does.

Pipeline for image files (identical to the app's): each unique image is decoded once (cv2, a thread pool,
one batch read ahead), MTCNN runs on batches of equal-size images, the face is chosen, cropped per the
model's PreprocessSpec and embedded in batches (flip-averaged unless ``flip=False``).
- Face choice: the detection whose box centre is closest to the image centre. LFW labels the centred
  person (other people often appear at the edges), so this is the standard LFW rule; the app itself
  uses the largest face.
- Detector misses: the image gets ``preprocessing.center_crop`` (the central square; its central 70% for
  aligned crops) instead of a detected face. Misses are counted and listed in the report, never dropped.
- ``.bin`` files already hold aligned 112x112 faces: detection is skipped and they are embedded directly.

Embeddings are cached (``embed_cache``) by image file + model fingerprint + flip.

Neighbours: `pairs` (and `people`) say which images to embed; `verification_run` scores pairs with them,
`open_set` searches galleries, `calibrate` builds a calibration table; `report` prints and writes the results.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Protocol, Sequence

import cv2
import numpy as np

from ..core import report
from ..core.decode import check_image_file, decode_image, image_size, read_image_file
from ..core.device import describe_device
from ..core.errors import FaceIDError
from ..model.embeddings import EMBEDDING_DIM, template_of
from .embed_cache import CacheKey, EmbedCache, bytes_key, file_key
from .pairs import Dataset

FACE_CHOICE = "detection closest to the image centre (LFW convention)"
MISS_RULE = "centre crop (preprocessing.center_crop), counted and listed"


# ----------------------------------------------------------------------------- backends


class Backend(Protocol):
    """What the evaluator needs from a recogniser (this project's, or a peer for comparison)."""

    name: str
    cache_tag: str  # changes whenever the embeddings would: weights, spec, detector settings, rules
    flip: bool
    stage_seconds: dict

    def describe(self) -> dict: ...

    def embed_images(self, images: list[np.ndarray]) -> tuple[np.ndarray, list[dict]]:
        """RGB uint8 images (H, W, 3) -> (N, D) float32 embeddings and one info dict per image."""

    def scores(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """(P, D), (P, D) -> (P,) similarity, higher = more alike."""

    def template(self, embeddings: np.ndarray) -> np.ndarray:
        """(K, D) embeddings of one person -> (D,) their gallery template (the 1:N run, `open_set`)."""

    def score_matrix(self, probes: np.ndarray, templates: np.ndarray) -> np.ndarray:
        """(P, D) probes, (T, D) templates -> (P, T) similarity, higher = more alike (the 1:N run)."""


def central_index(boxes: Sequence[Sequence[float]] | Sequence[np.ndarray], height: int, width: int) -> int:
    """Index of the box (x1, y1, x2, y2) whose centre is nearest the image centre (ties: the larger)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    dist = np.hypot((b[:, 0] + b[:, 2]) / 2 - width / 2, (b[:, 1] + b[:, 3]) / 2 - height / 2)
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return int(np.lexsort((-area, np.round(dist, 3)))[0])


class FaceIDBackend:
    """This project's pipeline: FaceDetector (MTCNN) -> central face -> crop per spec -> embed_crops."""

    name = "faceid"

    def __init__(self, embedder, batch_size: int = 64, flip: bool | None = None):
        from ..model.embedder import optimized_for_cpu
        from ..model.face import FaceDetector, FacePipeline

        if flip is not None:
            embedder = embedder.with_flip(flip)
        # the app's menu runs the same traced network on CPU; over thousands of images the trace pays off
        embedder, self.network = optimized_for_cpu(embedder)
        self.embedder, self.batch_size = embedder, batch_size
        self.detector = FaceDetector(device=embedder.device)
        self.pipeline = FacePipeline(embedder, self.detector)
        self.flip = embedder.spec.flip
        d = self.detector
        settings = f"mtcnn(min={d.mtcnn.min_face_size},thr={d.mtcnn.thresholds},max_side={d.max_side})"
        self.cache_tag = f"faceid|{embedder.fingerprint}|{settings}|central|center_crop"
        self.stage_seconds = {"detect": 0.0, "crop": 0.0, "embed": 0.0}

    def describe(self) -> dict:
        e, d = self.embedder, self.detector
        return {
            "backend": "faceid (this project)",
            "weights": e.source,
            "fingerprint": e.fingerprint,
            "spec": e.spec.to_dict(),
            "flip": self.flip,
            "device": str(e.device),
            "network": self.network,
            "threshold": e.threshold,
            "threshold_calibrated": e.threshold_calibrated,
            "detector": f"facenet-pytorch MTCNN, min_face_size {d.mtcnn.min_face_size}, thresholds "
            f"{list(d.mtcnn.thresholds)}, frames over {d.max_side} px downscaled",
            "face_choice": FACE_CHOICE,
            "miss_rule": MISS_RULE,
            "embedding_dim": EMBEDDING_DIM,
            "score": "cosine",
        }

    def embed_images(self, images: list[np.ndarray]) -> tuple[np.ndarray, list[dict]]:
        from ..model.preprocessing import center_crop

        t0 = time.perf_counter()
        detections = self.detector.detect_batch(images)
        t1 = time.perf_counter()
        crops, infos = [], []
        for image, dets in zip(images, detections):
            info: dict[str, object] = {"detected": False, "faces": len(dets), "box": None, "prob": None}
            if dets:
                det = dets[central_index([d.box for d in dets], *image.shape[:2])]
                info.update(box=[round(float(v), 1) for v in det.box], prob=round(det.prob, 4))
                try:
                    crops.append(self.pipeline.crop(image, det))
                    info["detected"] = True
                except FaceIDError as err:  # degenerate landmarks: handled by the miss rule, and recorded
                    info["reason"] = str(err)
            if not info["detected"]:
                info.setdefault("reason", "no face found")
                info["fallback"] = "center_crop"
                crops.append(center_crop(image, self.embedder.spec))
            infos.append(info)
        t2 = time.perf_counter()
        emb = self.pipeline.embed_crops(crops, batch_size=self.batch_size)
        self.stage_seconds["detect"] += t1 - t0
        self.stage_seconds["crop"] += t2 - t1
        self.stage_seconds["embed"] += time.perf_counter() - t2
        return emb, infos

    def embed_aligned(self, faces: list[np.ndarray]) -> tuple[np.ndarray, list[dict]]:
        """Pre-aligned face crops (a .bin's 112x112 images): no detection; resized by to_network_input."""
        t0 = time.perf_counter()
        side = self.embedder.spec.crop_size
        crops = [
            f if f.shape[:2] == (side, side) else cv2.resize(f, (side, side), interpolation=cv2.INTER_AREA)
            for f in faces
        ]
        emb = self.pipeline.embed_crops(crops, batch_size=self.batch_size)
        self.stage_seconds["embed"] += time.perf_counter() - t0
        return emb, [{"detected": None, "aligned_input": True} for _ in faces]

    def scores(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.einsum("ij,ij->i", a, b)

    def template(self, embeddings: np.ndarray) -> np.ndarray:
        """The app's template rule (`embeddings.template_of`)."""
        return template_of(embeddings)

    def score_matrix(self, probes: np.ndarray, templates: np.ndarray) -> np.ndarray:
        return probes @ templates.T


def load_faceid_backend(
    model: str | None = None,
    weights: str | None = None,
    crop: str | None = None,
    device: str | None = None,
    flip: bool = True,
    batch_size: int = 64,
    calibration: str | None = None,
) -> FaceIDBackend:
    """The app's model choice: --model, else ./checkpoints/best_face_model.pth if present (unless --weights),
    else backbone weights (--weights, $FACEID_WEIGHTS, torch's cache, download; one clear error offline)."""
    from ..model.embedder import choose_embedder

    if model is not None and str(model).lower().endswith(".onnx"):  # an export (fp32 or --int8) on onnxruntime
        from dataclasses import replace

        from ..model.calibration import read_calibration_file
        from ..model.runtime import choose_runtime

        embedder, _ = choose_runtime(model, weights, crop, device, download=False, runtime="onnx")
        if calibration is not None:
            embedder = replace(embedder, calibration=read_calibration_file(calibration, embedder.fingerprint))
    else:
        embedder = choose_embedder(model, weights, crop, device, download=True, calibration=calibration)
    report.note(f"device: {describe_device(embedder.device)}")
    return FaceIDBackend(embedder, batch_size=batch_size, flip=flip)


# ----------------------------------------------------------------------------- embedding images


def decode_file(path: Path) -> np.ndarray:
    """Image file -> RGB uint8 (H, W, 3) through the decode gate; an unreadable file is one clear error."""
    return read_image_file(path)


def decode_bytes(data: bytes) -> np.ndarray:
    """Encoded image bytes from a verification .bin -> RGB uint8 (H, W, 3) through the decode gate."""
    return decode_image(data, "an image inside the verification file")


def check_headers(dataset: Dataset) -> None:
    """Every image through the decode gate's header check before the model loads (tens of seconds on a CPU):
    a bad file fails the run at once, naming it, instead of after the model load and part of the embedding."""
    for item in dataset.items:
        if isinstance(item, Path):
            check_image_file(item)
        else:
            image_size(item, "an image inside the verification file")


def _decoded_batches(items: list, decode: Callable, batch: int, workers: int):
    """Yield (start, decoded images) per batch; the next batch decodes in the pool meanwhile."""
    if not items:
        return
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        submit = lambda s: [pool.submit(decode, x) for x in items[s : s + batch]]  # noqa: E731
        pending = submit(0)
        for start in range(0, len(items), batch):
            current = [f.result() for f in pending]
            if start + batch < len(items):
                pending = submit(start + batch)
            yield start, current


def embed_items(
    backend: Backend,
    dataset: Dataset,
    cache: EmbedCache | None = None,
    batch_size: int = 64,
    workers: int = 2,
    progress: bool = True,
) -> tuple[np.ndarray, list[dict], dict]:
    """Embed every unique image of `dataset` once (cached ones are read back) -> (N, D), infos, timing stats."""
    start = time.perf_counter()
    stages_before = dict(backend.stage_seconds)  # the backend accumulates over its lifetime
    is_bin = dataset.kind == "verification-bin"
    keys: list[CacheKey] = [bytes_key(x) if is_bin else file_key(x) for x in dataset.items]
    found = cache.get_many(keys, backend.cache_tag, backend.flip) if cache else {}
    todo = [i for i, k in enumerate(keys) if k not in found]
    results: dict[int, tuple[np.ndarray, dict]] = {i: found[k] for i, k in enumerate(keys) if k in found}
    decode = decode_bytes if is_bin else decode_file
    embed = backend.embed_images
    if is_bin:
        if not hasattr(backend, "embed_aligned"):
            raise FaceIDError(f"The {backend.name} backend cannot embed pre-aligned .bin crops; give it LFW images.")
        embed = backend.embed_aligned
    decode_wait = 0.0
    with report.progress(
        total=len(keys), initial=len(found), unit="img", desc=f"embed ({backend.name})", enabled=progress, smoothing=0.1
    ) as bar:
        batches = _decoded_batches([dataset.items[i] for i in todo], decode, batch_size, workers)
        while True:
            t0 = time.perf_counter()
            nxt = next(batches, None)
            decode_wait += time.perf_counter() - t0
            if nxt is None:
                break
            offset, images = nxt
            emb, infos = embed(images)
            new = [(todo[offset + j], emb[j], infos[j]) for j in range(len(images))]
            for i, vec, info in new:
                results[i] = (vec, info)
            if cache:
                cache.put_many([(keys[i], vec, info) for i, vec, info in new], backend.cache_tag, backend.flip)
            bar.update(len(images))
    embeddings = np.stack([results[i][0] for i in range(len(keys))]).astype(np.float32)
    infos = [results[i][1] for i in range(len(keys))]
    seconds = time.perf_counter() - start
    stats = {
        "images": len(keys),
        "from_cache": len(found),
        "computed": len(todo),
        "seconds": round(seconds, 3),
        "images_per_s": round(len(keys) / seconds, 2) if seconds > 0 else None,
        "stage_seconds": {
            "decode_wait": round(decode_wait, 3),
            **{k: round(v - stages_before.get(k, 0.0), 3) for k, v in backend.stage_seconds.items()},
        },
    }
    return embeddings, infos, stats


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse instead of returning it to the kernel (Linux/glibc only;
    False elsewhere, where nothing changes).

    Why: every batch's activations are blocks of 10-100+ MB (64 images and their mirrors through the network,
    MTCNN's pyramid). glibc serves blocks above its mmap threshold (at most 32 MB) with a fresh mmap and
    unmaps them on free, so every layer of every batch faulted its pages in again: a cold LFW run spent a fifth
    of its CPU time in the kernel (77 M minor page faults). With mmap off and a high trim threshold the same
    memory is reused (bench numbers in docs/evaluation.md). The cost is a somewhat higher peak RSS."""
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_max = -1, -4  # <malloc.h>
    return bool(mallopt(m_mmap_max, 0)) and bool(mallopt(m_trim_threshold, 1 << 30))
