"""Equality of the torch-free ONNX path with the torch path, on real images: the same faces found, box IoU,
landmark distance, embedding cosine, and the same decisions (issue #21's table).

    .venv/bin/python export_model.py --weights ../shared/models/pins90_scratch_irv1_fp16.pt --crop aligned5 \\
        --onnx /tmp/m.onnx --no-inference-checkpoint
    .venv/bin/python bench/bench_detector_onnx.py --onnx /tmp/m.onnx --pair-stride 5

Torch path: facenet-pytorch's MTCNN and the torch network of --weights (what `--weights` runs in the app).
ONNX path: the three MTCNN stages beside --onnx with the numpy steps, and the exported embedder (what
`--model FILE.onnx` runs; no torch). Both detect as the app does (frames over 320 px downscaled, faces >= 40 px)
and embed the largest face of each image.

Images: LFW View 1 DevTest pairs (every --pair-stride-th pair of each kind), decisions = same/different at the
thresholds listed (--thresholds); and the shared clips: each clip's person registered from 5 frames of its first
half and 3 probe frames of its second half scored against every clip's person, decisions = the best-scoring
person and whether the score passes each threshold.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from faceid.model.embeddings import template_of  # noqa: E402
from faceid.model.face import FaceDetector, FacePipeline, detector_for  # noqa: E402

SHARED = REPO.parent / "shared"
CLIPS = ("d0", "d3", "d10", "d11", "d12", "d13", "d14", "d18", "d19", "d20")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--onnx", required=True, help="an export of --weights by export_model.py (detector files beside it)")
    p.add_argument(
        "--weights",
        default=str(SHARED / "models/pins90_scratch_irv1_fp16.pt"),
        help="the weights --onnx was exported from (default: the stand-in weights)",
    )
    p.add_argument("--crop", default="aligned5", help="crop style of --weights (default: aligned5)")
    p.add_argument("--lfw", default=str(SHARED / "data/lfw"), help="LFW folder (default: ../shared/data/lfw)")
    p.add_argument("--videos", default=str(SHARED / "data/videos"), help="clips (default: ../shared/data/videos)")
    p.add_argument("--pair-stride", type=int, default=5, help="every N-th DevTest pair of each kind (default: 5)")
    p.add_argument(
        "--thresholds",
        type=float,
        nargs="+",
        default=[0.3, 0.4, 0.5],
        help="decision thresholds (default: 0.3 0.4 0.5)",
    )
    return p.parse_args()


def read_pairs(lfw: Path, stride: int) -> list[tuple[Path, Path, bool]]:
    lines = (lfw / "pairsDevTest.txt").read_text().splitlines()[1:]
    pairs = []
    for k, line in enumerate(lines):
        f = line.split("\t")
        if len(f) == 3:
            a, b, same = (f[0], int(f[1])), (f[0], int(f[2])), True
        else:
            a, b, same = (f[0], int(f[1])), (f[2], int(f[3])), False
        if k % stride == 0:
            pairs.append((*(lfw / "images" / n / f"{n}_{i:04d}.jpg" for n, i in (a, b)), same))
    return pairs


def rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def clip_frames(path: Path) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """5 frames spread over the first half of the clip and 3 over the second."""
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    half = len(frames) // 2
    first = [frames[int(i)] for i in np.linspace(0, half - 1, 5)]
    second = [frames[int(i)] for i in np.linspace(half, len(frames) - 1, 3)]
    return first, second


def iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return w * h / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h)


class Compare:
    """Both pipelines on each image; keeps the per-face figures and each image's embedding on both."""

    def __init__(self, torch_pipe: FacePipeline, onnx_pipe: FacePipeline):
        self.pipes = {"torch": torch_pipe, "onnx": onnx_pipe}
        self.images = self.count_differs = self.faces = 0
        self.ious: list[float] = []
        self.landmark_px: list[float] = []
        self.cosines: list[float] = []
        self.seconds = {"torch": 0.0, "onnx": 0.0}

    def __call__(self, image: np.ndarray) -> dict[str, np.ndarray | None]:
        results = {}
        for name, pipe in self.pipes.items():
            t0 = time.perf_counter()
            results[name] = pipe.analyze(image)
            self.seconds[name] += time.perf_counter() - t0
        t, o = results["torch"], results["onnx"]
        self.images += 1
        if len(t.detections) != len(o.detections):
            self.count_differs += 1
        else:
            self.faces += len(t.detections)
            for a, b in zip(t.detections, o.detections):
                self.ious.append(iou(a.box, b.box))
                self.landmark_px.append(float(np.abs(a.landmarks - b.landmarks).max()))
        if t.embedding is not None and o.embedding is not None:
            self.cosines.append(float(t.embedding @ o.embedding))
        return {name: r.embedding for name, r in results.items()}


def lfw_part(compare: Compare, pairs, thresholds) -> dict:
    cache: dict[Path, dict] = {}
    for a, b, _ in pairs:
        for p in (a, b):
            if p not in cache:
                cache[p] = compare(rgb(p))
    differ = {t: 0 for t in thresholds}
    scored = 0
    for a, b, _ in pairs:
        ea, eb = cache[a], cache[b]
        if any(e is None for e in (*ea.values(), *eb.values())):
            continue
        scored += 1
        for t in thresholds:
            if (ea["torch"] @ eb["torch"] >= t) != (ea["onnx"] @ eb["onnx"] >= t):
                differ[t] += 1
    return {"pairs": len(pairs), "scored": scored, "differ": differ}


def clip_part(compare: Compare, videos: Path, thresholds) -> dict:
    templates: dict[str, dict[str, np.ndarray]] = {"torch": {}, "onnx": {}}
    probes: dict[str, dict[str, np.ndarray]] = {"torch": {}, "onnx": {}}
    for clip in CLIPS:
        first, second = clip_frames(videos / f"{clip}.mp4")
        for frames, into in ((first, templates), (second, probes)):
            embs = [compare(f) for f in frames]
            for runtime in ("torch", "onnx"):
                kept = [e[runtime] for e in embs if e[runtime] is not None]
                if kept:
                    into[runtime][clip] = template_of(np.stack(kept))
    decisions = {}
    for runtime in ("torch", "onnx"):
        names = sorted(templates[runtime])
        gallery = np.stack([templates[runtime][n] for n in names])
        for clip, probe in probes[runtime].items():
            scores = gallery @ probe
            best = int(np.argmax(scores))
            decisions.setdefault(clip, {})[runtime] = (names[best], [bool(scores[best] >= t) for t in thresholds])
    same = sum(1 for d in decisions.values() if d.get("torch") == d.get("onnx"))
    right = {r: sum(1 for c, d in decisions.items() if d.get(r, ("",))[0] == c) for r in ("torch", "onnx")}
    return {"probes": len(decisions), "same_decisions": same, "right_person": right}


def main() -> int:
    args = parse_args()
    import torch

    from faceid.model.embedder import load_embedder
    from faceid.model.onnx_model import load_onnx_embedder

    torch.set_num_threads(1)  # both paths on one thread (onnxruntime sessions are opened with one)
    torch_embedder = load_embedder(weights=args.weights, crop=args.crop, device="cpu", download=False)
    onnx_embedder = load_onnx_embedder(args.onnx)
    if onnx_embedder.fingerprint != torch_embedder.fingerprint:
        raise SystemExit(f"{args.onnx} was not exported from {args.weights} (fingerprints differ)")
    onnx_detector = detector_for(onnx_embedder)
    if onnx_detector.runtime != "onnx":
        raise SystemExit(f"no detector files beside {args.onnx}: export it again with export_model.py")
    compare = Compare(FacePipeline(torch_embedder, FaceDetector()), FacePipeline(onnx_embedder, onnx_detector))
    lfw = lfw_part(compare, read_pairs(Path(args.lfw), args.pair_stride), args.thresholds)
    lfw_images, lfw_counts = compare.images, compare.count_differs
    clips = clip_part(compare, Path(args.videos), args.thresholds)
    ious, lms, cos = np.array(compare.ious), np.array(compare.landmark_px), np.array(compare.cosines)
    print(
        f"\nimages: {lfw_images} LFW View 1 DevTest + {compare.images - lfw_images} clip frames; faces compared: {compare.faces}"
    )
    print("| measure | result | goal |")
    print("|---|---|---|")
    print(
        f"| images where the face count differs | {compare.count_differs} of {compare.images} (LFW {lfw_counts}) | 0 |"
    )
    print(f"| box IoU, lowest / median | {ious.min():.5f} / {np.median(ious):.6f} | >= 0.95 |")
    print(f"| landmarks, largest difference | {lms.max():.4f} px (median {np.median(lms):.5f}) | <= 1 px |")
    print(f"| embedding cosine, lowest / median | {cos.min():.6f} / {np.median(cos):.6f} | >= 0.999 |")
    differ = ", ".join(f"{v} at {t}" for t, v in lfw["differ"].items())
    print(f"| LFW pairs decided differently ({lfw['scored']} of {lfw['pairs']} pairs scored) | {differ} | 0 |")
    print(
        f"| clip probes decided differently (best person + pass at each threshold) | "
        f"{clips['probes'] - clips['same_decisions']} of {clips['probes']} (right person: torch "
        f"{clips['right_person']['torch']}, onnx {clips['right_person']['onnx']}) | 0 |"
    )
    per = {k: 1000 * v / compare.images for k, v in compare.seconds.items()}
    print(f"| detect + embed per image, 1 thread | torch {per['torch']:.0f} ms, onnx {per['onnx']:.0f} ms | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
