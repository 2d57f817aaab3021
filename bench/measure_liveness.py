#!/usr/bin/env python3
"""Measure the head-turn liveness challenge (faceid.app.liveness) on stills and clips: every still must fail.

    python bench/measure_liveness.py PATHS... [app model options, e.g. --weights FILE --crop aligned5]

Each still is fed repeatedly, as if held in front of a camera; each clip is run with --seeds different random
prompt sequences. One JSON record per run is printed; --summary writes them all. The README's "Liveness,
measured" numbers come from this script on ../shared/data/photos and ../shared/data/videos.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from faceid.app.camera import open_source  # noqa: E402
from faceid.app.cli import build_parser  # noqa: E402
from faceid.app.liveness import ChallengeConfig, random_prompts, run_challenge  # noqa: E402
from faceid.app.session import load_model  # noqa: E402
from faceid.core.decode import IMAGE_EXTENSIONS  # noqa: E402
from faceid.core.errors import run_cli  # noqa: E402
from faceid.core.fileio import atomic_write_json  # noqa: E402
from faceid.model.face import FaceDetector, FacePipeline  # noqa: E402


def measure(paths: list[str], pipeline: FacePipeline, cfg: ChallengeConfig, seeds: int) -> list[dict]:
    """Run the challenge on each still (fed repeatedly, as if held in front of a camera) and each clip
    (with `seeds` different random prompt sequences). Returns one record per run."""

    frames_needed = (cfg.prompts + 1) * cfg.frames_per_prompt + 1
    records = []
    for index, path in enumerate(paths):
        still = path.lower().endswith(IMAGE_EXTENSIONS)
        for seed in [index] if still else range(seeds):  # stills: a different prompt sequence each
            prompts = random_prompts(cfg.prompts, random.Random(seed))
            with open_source(path, repeat=frames_needed if still else 1) as src:
                result = run_challenge(src, pipeline, cfg, prompts=prompts)
            records.append({"source": path, "kind": "still" if still else "clip", "seed": seed, **result.to_dict()})
            print(json.dumps(records[-1]), flush=True)
    return records


def main(argv: list[str] | None = None) -> int:
    """measure_liveness.py [model options] PATH... : measure the challenge on stills and clips."""
    ap = argparse.ArgumentParser(description="Measure the head-turn challenge: every still must fail.")
    ap.add_argument("paths", nargs="+", help="image files and/or video clips")
    ap.add_argument("--seeds", type=int, default=4, help="prompt sequences tried per clip")
    ap.add_argument("--frames-per-prompt", type=int, default=ChallengeConfig.frames_per_prompt)
    ap.add_argument("--summary", help="write the records as JSON here")
    args, rest = ap.parse_known_args(argv)
    model_args = build_parser().parse_args(rest)
    torch.set_num_threads(model_args.threads)
    pipeline = FacePipeline(load_model(model_args), FaceDetector())
    cfg = ChallengeConfig(frames_per_prompt=args.frames_per_prompt)
    records = measure(args.paths, pipeline, cfg, args.seeds)
    stills = [r for r in records if r["kind"] == "still"]
    print(
        f"stills: {sum(r['passed'] for r in stills)} of {len(stills)} passed (must be 0); reasons: "
        f"{dict(Counter(r['reason'].split(' within')[0] for r in stills))}"
    )
    clips = [r for r in records if r["kind"] == "clip"]
    print(f"clips: {sum(r['passed'] for r in clips)} of {len(clips)} runs passed")
    if args.summary:
        atomic_write_json(args.summary, records)
    return 0


if __name__ == "__main__":
    run_cli(main)
