"""The decode gate's cost on normal frames, against the per-frame latency it adds to.

Every still image the app reads (a photo, a folder of them) passes `faceid.core.decode.decode_image`: a header
check (size from the JPEG/PNG header, the pixel limit), stderr silenced around the decoder, then the same
OpenCV decode as before. This measures, on the 640x480 frames of the shared clips encoded as JPEG q95:

- ungated: ``cv2.imdecode`` + BGR->RGB (what the app did before the gate);
- gated:   ``decode_image`` (the gate, decode included);
- header:  ``image_size`` alone (the work the gate adds before decoding);
- frame:   the app's per-frame work, ``FacePipeline.analyze`` (detect + crop + embed), traced network;

interleaved frame by frame so machine load falls on all alike, and prints the gate's added cost as a share of
the per-frame latency (goal: under 1%).

    .venv/bin/python bench/bench_decode_gate.py [--frames-per-clip 4] [--repeats 20] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_latency import load_frames, shared_dir  # noqa: E402

from faceid.core.decode import decode_image, image_size  # noqa: E402
from faceid.core.errors import run_cli  # noqa: E402
from faceid.model.embedder import load_embedder, optimized_for_cpu  # noqa: E402
from faceid.model.face import FacePipeline  # noqa: E402


def best_of(fn, repeats: int) -> float:
    """Median seconds of `repeats` calls (decode timings are microseconds: one call is all noise)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames-per-clip", type=int, default=4, help="frames taken from each clip (default: 4)")
    ap.add_argument("--repeats", type=int, default=20, help="decode timings per frame, median kept (default: 20)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads, as the app (default: 1)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    frames = load_frames(shared_dir("data", "FACEID_SHARED_DATA") / "videos", args.frames_per_clip)
    jpegs = [
        cv2.imencode(".jpg", cv2.cvtColor(f, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
        for f in frames
    ]
    weights = shared_dir("models", "FACEID_SHARED_MODELS") / "pins90_scratch_irv1_fp16.pt"
    embedder = load_embedder(
        weights=weights if weights.is_file() else None, crop="aligned5", device="cpu", download=False
    )
    embedder, note = optimized_for_cpu(embedder)
    print(note)
    pipeline = FacePipeline(embedder)

    def ungated(data: bytes) -> np.ndarray:
        return cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)

    for data, frame in zip(jpegs[:2], frames[:2]):  # warm-up
        decode_image(data), ungated(data), pipeline.analyze(frame)
    rows = []
    with torch.inference_mode():
        for data, frame in zip(jpegs, frames):
            plain = best_of(lambda data=data: ungated(data), args.repeats)
            gated = best_of(lambda data=data: decode_image(data, "frame"), args.repeats)
            header = best_of(lambda data=data: image_size(data, "frame"), args.repeats)
            t0 = time.perf_counter()
            pipeline.analyze(frame)
            rows.append((plain, gated, header, time.perf_counter() - t0))
    plain, gated, header, frame_s = (np.array(c) * 1000 for c in zip(*rows))
    p50 = lambda a: float(np.median(a))  # noqa: E731
    added = p50(gated - plain)
    print(
        f"{len(frames)} frames 640x480 JPEG q95 ({np.mean([len(j) for j in jpegs]) / 1024:.0f} KB), "
        f"{args.threads} torch thread(s), load {os.getloadavg()[0]:.1f}"
    )
    print(f"  ungated decode (cv2.imdecode + RGB)   p50 {p50(plain):8.3f} ms")
    print(f"  gated decode (decode_image)           p50 {p50(gated):8.3f} ms")
    print(f"  header check alone (image_size)       p50 {p50(header):8.3f} ms")
    print(f"  per-frame work (detect+crop+embed)    p50 {p50(frame_s):8.1f} ms")
    print(
        f"  gate added per frame: {added:+.3f} ms (gated - ungated, p50 of per-frame differences) = "
        f"{100 * added / p50(frame_s):+.3f}% of the per-frame latency; header check alone "
        f"{100 * p50(header) / p50(frame_s):.3f}%"
    )
    return 0


if __name__ == "__main__":
    run_cli(main)
