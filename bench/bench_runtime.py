"""The embedder on torch vs onnxruntime: per-frame detect + crop + embed latency on 640x480 frames, p50/p95,
with one thread and with two, in the same run (frames alternate between the runtimes, so machine load falls
on both alike); plus each runtime's load time (what a one-shot command pays).

- torch: the app's network traced and frozen for CPU (`model.optimized_for_cpu`, what the menu uses; a one-shot
  subcommand runs it eager, which is slower);
- onnx: the export_model.py file on onnxruntime (`onnx_model.load_onnx_embedder`).
Both share one MTCNN detector (torch), so the difference is the embedder alone. Stand-in weights, aligned crop.

    .venv/bin/python bench/bench_runtime.py [--onnx FILE] [--frames-per-clip 4] [--threads 1 2] [--json OUT]

Without --onnx the stand-in weights are exported to a temporary file first (about a minute).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_latency import load_frames, shared_dir, time_interleaved  # noqa: E402

from faceid.core.errors import run_cli  # noqa: E402
from faceid.model.embedder import load_embedder, optimized_for_cpu  # noqa: E402
from faceid.model.export import run_export  # noqa: E402
from faceid.model.face import FaceDetector, FacePipeline  # noqa: E402
from faceid.model.onnx_model import load_onnx_embedder  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--onnx", help="an export_model.py file of the stand-in weights (default: export one now)")
    ap.add_argument("--frames-per-clip", type=int, default=4, help="frames from each d*.mp4 clip (default: 4)")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts to compare (default: 1 2)")
    ap.add_argument("--json", help="also write the numbers to this file")
    args = ap.parse_args()
    weights = shared_dir("models", "FACEID_SHARED_MODELS") / "pins90_scratch_irv1_fp16.pt"
    frames = load_frames(shared_dir("data", "FACEID_SHARED_DATA") / "videos", args.frames_per_clip)
    onnx_path = args.onnx
    if onnx_path is None:
        onnx_path = str(Path(tempfile.mkdtemp()) / "stand_in.onnx")
        run_export(None, str(weights), "aligned5", onnx_path, None, slim=False)
    result = {"frames": len(frames), "load_avg_1m_start": os.getloadavg()[0], "runs": {}}
    detector = FaceDetector(device="cpu")
    for threads in args.threads:
        torch.set_num_threads(threads)
        t0 = time.perf_counter()
        torch_embedder = load_embedder(weights=weights, crop="aligned5", device="cpu", download=False)
        t_torch_load = time.perf_counter() - t0
        torch_embedder, _ = optimized_for_cpu(torch_embedder)
        t_torch_traced = time.perf_counter() - t0
        t0 = time.perf_counter()
        onnx_embedder = load_onnx_embedder(onnx_path, threads=threads)
        t_onnx_load = time.perf_counter() - t0
        pipes = {"torch": FacePipeline(torch_embedder, detector), "onnx": FacePipeline(onnx_embedder, detector)}
        with torch.inference_mode():
            times = time_interleaved({k: p.analyze for k, p in pipes.items()}, frames, torch.device("cpu"))
        run = {
            name: {"p50": float(np.percentile(t, 50)), "p95": float(np.percentile(t, 95))} for name, t in times.items()
        }
        run["load_s"] = {"torch": t_torch_load, "torch_traced": t_torch_traced, "onnx": t_onnx_load}
        run["ratio_p50_torch_over_onnx"] = run["torch"]["p50"] / run["onnx"]["p50"]
        result["runs"][threads] = run
        print(f"{len(frames)} frames 640x480, {threads} thread(s), load {os.getloadavg()[0]:.1f}")
        for name in ("torch", "onnx"):
            print(f"  {name:<6} p50 {run[name]['p50']:7.1f} ms   p95 {run[name]['p95']:7.1f} ms")
        print(f"  load   torch {t_torch_load:.2f} s (+ trace: {t_torch_traced:.2f} s), onnxruntime {t_onnx_load:.2f} s")
        print(f"  ratio  torch p50 / onnx p50 = {run['ratio_p50_torch_over_onnx']:.2f}", flush=True)
    if args.json:
        from faceid.core.fileio import atomic_write_json

        atomic_write_json(args.json, result)
    return 0


if __name__ == "__main__":
    run_cli(main)
