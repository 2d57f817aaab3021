"""fp32 vs INT8 embedder in one run: file size, per-frame latency (detect + crop + embed, 640x480 clip frames, the
models alternating frame by frame) at 1 and 2 threads, LFW View 1 DevTest accuracy / AUC / TAR@FAR 1e-3 through
the evaluator, and the clip people (each clip's person registered from 5 frames of its first half, 3 probe frames
of its second half scored against all: right person first, lowest own score, highest other score).

    .venv/bin/python preprocess_dataset.py --rec ../shared/data/recordio/pins90_112x112/train.rec --output-dir /tmp/pins90
    .venv/bin/python export_model.py --weights ../shared/models/pins90_scratch_irv1_fp16.pt --crop aligned5 \\
        --onnx /tmp/m.onnx --no-inference-checkpoint --int8 --int8-data /tmp/pins90
    .venv/bin/python bench/bench_int8.py --onnx /tmp/m.onnx

Both models use the same detector (the ONNX MTCNN beside --onnx) and the same images; the INT8 file is
<stem>.int8.onnx beside --onnx (export_model.py --int8 writes it). Calibrated on pins90 (training data), never LFW.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_detector_onnx import CLIPS, clip_frames  # noqa: E402
from bench_latency import load_frames, shared_dir, time_interleaved  # noqa: E402

from faceid.model.embeddings import template_of  # noqa: E402
from faceid.model.face import FaceDetector, FacePipeline  # noqa: E402
from faceid.model.onnx_model import load_onnx_embedder  # noqa: E402
from faceid.model.quantize import int8_path  # noqa: E402


def clip_people(pipe: FacePipeline, clips: dict[str, tuple[list, list]]) -> dict:
    templates, probes = {}, {}
    for clip, (first, second) in clips.items():
        for frames, into in ((first, templates), (second, probes)):
            embs = [r.embedding for r in map(pipe.analyze, frames) if r.embedding is not None]
            if embs:
                into[clip] = template_of(np.stack(embs))
    names = sorted(templates)
    gallery = np.stack([templates[n] for n in names])
    right, own, other = 0, [], []
    for clip, probe in probes.items():
        scores = gallery @ probe
        right += names[int(np.argmax(scores))] == clip
        own += [float(s) for n, s in zip(names, scores) if n == clip]
        other += [float(s) for n, s in zip(names, scores) if n != clip]
    return {"probes": len(probes), "right": right, "lowest_own": min(own), "highest_other": max(other)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--onnx", required=True, help="the fp32 export; its INT8 file <stem>.int8.onnx lies beside it")
    ap.add_argument("--frames-per-clip", type=int, default=4, help="latency frames from each d*.mp4 clip (default: 4)")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts (default: 1 2)")
    ap.add_argument("--no-lfw", action="store_true", help="skip the LFW evaluation (minutes)")
    args = ap.parse_args()
    data = shared_dir("data", "FACEID_SHARED_DATA")
    models = {"fp32": Path(args.onnx), "int8": int8_path(args.onnx)}
    for name, path in models.items():
        print(f"{name}: {path} {path.stat().st_size / 2**20:.1f} MiB")
    frames = load_frames(data / "videos", args.frames_per_clip)
    for threads in args.threads:
        detector = FaceDetector(onnx_stages=models["fp32"], threads=threads)
        pipes = {k: FacePipeline(load_onnx_embedder(p, threads=threads), detector) for k, p in models.items()}
        times = time_interleaved({k: p.analyze for k, p in pipes.items()}, frames, SimpleNamespace(type="cpu"))
        load = os.getloadavg()[0]
        line = ", ".join(
            f"{k} p50 {np.percentile(t, 50):.1f} ms p95 {np.percentile(t, 95):.1f} ms" for k, t in times.items()
        )
        ratio = np.percentile(times["fp32"], 50) / np.percentile(times["int8"], 50)
        print(f"{len(frames)} frames, {threads} thread(s), load {load:.1f}: {line}; fp32/int8 at p50 {ratio:.2f}x")
        embed_only = {}
        crops = [
            pipes["fp32"].crop(f, r.face) for f in frames[:16] if (r := pipes["fp32"].analyze(f, embed=False)).face
        ]
        for k, p in pipes.items():
            p.embed_crops(crops[:2])
            t0 = time.perf_counter()
            for c in crops:
                p.embed_crops([c])
            embed_only[k] = (time.perf_counter() - t0) * 1000 / len(crops)
        print(f"  embed only, one crop: fp32 {embed_only['fp32']:.1f} ms, int8 {embed_only['int8']:.1f} ms")
    clips = {c: clip_frames(data / "videos" / f"{c}.mp4") for c in CLIPS}
    detector = FaceDetector(onnx_stages=models["fp32"])
    for name, path in models.items():
        r = clip_people(FacePipeline(load_onnx_embedder(path), detector), clips)
        print(
            f"clip people {name}: right person {r['right']}/{r['probes']}, lowest own {r['lowest_own']:.3f}, "
            f"highest other {r['highest_other']:.3f}"
        )
    if not args.no_lfw:
        from faceid.eval.verification_run import run_evaluation

        for name, path in models.items():
            rep = run_evaluation(
                pairs=str(data / "lfw/pairsDevTest.txt"),
                images=str(data / "lfw/images"),
                model=str(path),
                out_dir=Path(args.onnx).parent / f"eval-{name}",
                threads=1,
                progress=False,
            )
            m = rep["metrics"]
            print(
                f"LFW DevTest {name}: accuracy {100 * m['accuracy']:.2f} ± {100 * m['accuracy_sem']:.2f}%, AUC "
                f"{m['auc']:.4f}, TAR@FAR1e-3 {100 * m['tar@far=0.001']:.2f}%"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
