"""Per-frame latency of detect + crop + embed on 640x480 frames from the shared clips: p50 and p95.

Two pipelines on the same frames, in the same run (so machine load affects both alike):
- seed: the original app's way - facenet-pytorch ``MTCNN(image_size=160)`` returning the crop tensor from the
  full frame, then one InceptionResnetV1 forward (no flip);
- faceid: this project's `FacePipeline.analyze` (MTCNN on a downscaled frame, the checkpoint's crop, a
  flip-averaged embedding).
Weights do not change the timing; the stand-in weights are used when present, else a random init.

    .venv/bin/python bench/bench_latency.py [--frames-per-clip 6] [--device cpu|cuda] [--threads N] [--json OUT]
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from faceid.core.errors import FaceIDError, run_cli  # noqa: E402
from faceid.model.embedder import load_embedder, optimized_for_cpu  # noqa: E402
from faceid.model.face import DETECT_MAX_SIDE, DETECT_MIN_FACE, FaceDetector, FacePipeline  # noqa: E402  # noqa: E402
from faceid.model.network import build_backbone  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def shared_dir(kind: str, env: str) -> Path:
    return Path(os.environ.get(env, REPO.parent / "shared" / kind))


def load_frames(videos: Path, per_clip: int) -> list[np.ndarray]:
    """`per_clip` evenly spaced frames of every d*.mp4 clip, resized to 640x480 RGB."""
    frames = []
    for path in sorted(glob.glob(str(videos / "d*.mp4"))):
        cap = cv2.VideoCapture(path)
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        for idx in np.linspace(0, max(total - 1, 0), per_clip).astype(int):
            cap.set(cv2.CAP_PROP_POS_FRAMES, int(idx))
            ok, bgr = cap.read()
            if ok:
                frames.append(
                    cv2.cvtColor(cv2.resize(bgr, (640, 480), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
                )
        cap.release()
    if not frames:
        raise FaceIDError(f"No clips found in {videos}; set FACEID_SHARED_DATA to the shared data folder.")
    return frames


def time_interleaved(fns: dict, frames: list[np.ndarray], device: torch.device, warmup: int = 3) -> dict:
    """Per-frame milliseconds of each pipeline, alternating them frame by frame so that other load on the
    machine falls on both alike."""
    for frame in frames[:warmup]:
        for fn in fns.values():
            fn(frame)
    out = {name: [] for name in fns}
    for frame in frames:
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn(frame)
            if device.type == "cuda":
                torch.cuda.synchronize()
            out[name].append((time.perf_counter() - t0) * 1000)
    return {name: np.array(v) for name, v in out.items()}


def seed_pipeline(device: torch.device, weights: Path | None):
    """The seed app's per-frame work: MTCNN(image_size=160) crop tensor -> InceptionResnetV1, no flip."""
    from facenet_pytorch import MTCNN

    mtcnn = MTCNN(image_size=160, device=device)
    net = build_backbone()
    if weights is not None:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        net.load_state_dict({k: v.float() for k, v in state.items() if not k.startswith("logits.")})
    net.eval().to(device)

    @torch.inference_mode()
    def run(frame):
        crop = mtcnn(frame)
        if crop is not None:
            net(crop.unsqueeze(0).to(device))

    return run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames-per-clip", type=int, default=6)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--eager", action="store_true", help="faceid: skip the app's traced/frozen CPU network")
    ap.add_argument(
        "--max-side", type=int, default=DETECT_MAX_SIDE, help="faceid detector: downscale frames to this side"
    )
    ap.add_argument("--min-face", type=int, default=DETECT_MIN_FACE, help="faceid detector: MTCNN min_face_size")
    ap.add_argument("--json", help="also write the numbers to this file")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise FaceIDError("--device cuda was asked for but no CUDA device is available.")
    frames = load_frames(shared_dir("data", "FACEID_SHARED_DATA") / "videos", args.frames_per_clip)
    weights = shared_dir("models", "FACEID_SHARED_MODELS") / "pins90_scratch_irv1_fp16.pt"
    weights = weights if weights.is_file() else None
    if weights is not None:
        embedder = load_embedder(weights=weights, crop="aligned5", device=args.device, download=False)
    else:
        import tempfile

        from faceid.model.checkpoint import (
            Checkpoint,
            save_checkpoint,
        )  # random init: timing does not depend on weights
        from faceid.model.preprocessing import ALIGNED_SPEC

        tmp = Path(tempfile.mkdtemp()) / "random.pth"
        save_checkpoint(tmp, Checkpoint(model=build_backbone().state_dict(), preprocess=ALIGNED_SPEC.to_dict()))
        embedder = load_embedder(model_path=tmp, device=args.device)
    if not args.eager:
        embedder, note = optimized_for_cpu(embedder)
        print(note)
    ours = FacePipeline(embedder, FaceDetector(device=device, max_side=args.max_side, min_face_size=args.min_face))
    seed = seed_pipeline(device, weights)
    with torch.inference_mode():
        times = time_interleaved({"seed": seed, "faceid": ours.analyze}, frames, device)
    t_seed, t_ours = times["seed"], times["faceid"]
    result = {
        "frames": len(frames),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "load_avg_1m": os.getloadavg()[0],
        "max_side": args.max_side,
        "min_face": args.min_face,
        "network": "eager" if args.eager else "traced",
        "seed_ms": {"p50": float(np.percentile(t_seed, 50)), "p95": float(np.percentile(t_seed, 95))},
        "faceid_ms": {"p50": float(np.percentile(t_ours, 50)), "p95": float(np.percentile(t_ours, 95))},
    }
    result["ratio_p50_seed_over_faceid"] = result["seed_ms"]["p50"] / result["faceid_ms"]["p50"]
    print(f"{len(frames)} frames 640x480 on {device} ({result['threads']} threads, load {result['load_avg_1m']:.1f})")
    for name in ("seed", "faceid"):
        print(f"  {name:<7} p50 {result[name + '_ms']['p50']:7.1f} ms   p95 {result[name + '_ms']['p95']:7.1f} ms")
    print(f"  ratio   seed p50 / faceid p50 = {result['ratio_p50_seed_over_faceid']:.2f}")
    if args.json:
        from faceid.core.fileio import atomic_write_json

        atomic_write_json(args.json, result)
    return 0


if __name__ == "__main__":
    run_cli(main)
