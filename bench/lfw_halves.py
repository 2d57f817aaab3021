"""Split LFW's people in two halves (folders of links), to calibrate on one and measure on the other.

Issue 23 asks whether the app's stated FPIR holds on people never seen: calibrate on half of LFW's people
(`evaluate_model.py --calibrate ... --tune-on-benchmark`: LFW is benchmark data, so the table is stamped; fine
for a measurement, never a default) and measure the app's rule on the other half (`--open-set`). The split is by
person (seeded), so no one is in both halves; the links point at the shared images, so the evaluator's embedding
cache (keyed by the resolved file) serves both halves and any earlier run over all of LFW.

Usage: .venv/bin/python bench/lfw_halves.py [--images ../shared/data/lfw/images] [--out faceid_data/lfw_halves]
Then (bench/README.md, "The decision rule on held-out people"):
  evaluate_model.py --calibrate faceid_data/lfw_halves/calibrate --tune-on-benchmark ...
  evaluate_model.py --open-set --images faceid_data/lfw_halves/measure --calibration ... --distractors 480
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT.parent / "shared/data/lfw/images"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", default=str(IMAGES), help=f"LFW's <Name>/*.jpg folder (default: {IMAGES})")
    p.add_argument("--out", default="faceid_data/lfw_halves", help="output folder (default: faceid_data/lfw_halves)")
    p.add_argument("--seed", type=int, default=23, help="the split's seed (default: 23)")
    args = p.parse_args()
    people = sorted(d for d in Path(args.images).iterdir() if d.is_dir())
    order = np.random.default_rng(args.seed).permutation(len(people))
    halves = {"calibrate": order[: len(people) // 2], "measure": order[len(people) // 2 :]}
    for half, chosen in halves.items():
        images = 0
        for i in chosen:
            person = people[int(i)]
            folder = Path(args.out) / half / person.name
            folder.mkdir(parents=True, exist_ok=True)
            for image in sorted(person.glob("*.jpg")):
                link = folder / image.name
                if not link.is_symlink():
                    os.symlink(image.resolve(), link)
                images += 1
        print(f"{half}: {len(chosen)} people, {images} images -> {Path(args.out) / half}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
