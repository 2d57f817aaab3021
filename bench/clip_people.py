"""Write evenly spaced frames of the shared webcam clips as a folder of people, for calibration.

The stand-in weights were trained on all 90 pins90 identities, so no held-out people come with them; the
shared clips (../shared/data/videos, one real person each, not a benchmark) are the held-out people at hand.
d13 is left out: it may show d12's person (../shared/data/README.md). Frames of one clip are strongly
correlated, so a table from them is coarse; it is what a user with a few enrolment videos would have.

Usage: .venv/bin/python bench/clip_people.py [--frames 80] [--out faceid_data/clip_people]
Then:  .venv/bin/python evaluate_model.py --calibrate faceid_data/clip_people --weights W.pt --crop aligned5
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
VIDEOS = ROOT.parent / "shared/data/videos"
SKIP = {"d13", "hamilton_short"}  # d13: maybe d12's person; hamilton: many faces


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=80, help="frames per clip, evenly spaced (default: 80)")
    p.add_argument("--videos", default=str(VIDEOS), help=f"clip folder (default: {VIDEOS})")
    p.add_argument("--out", default="faceid_data/clip_people", help="output folder (default: faceid_data/clip_people)")
    args = p.parse_args()
    for clip in sorted(Path(args.videos).glob("*.mp4")):
        if clip.stem in SKIP:
            continue
        cap = cv2.VideoCapture(str(clip))
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        wanted = set(np.linspace(0, count - 1, min(args.frames, count)).round().astype(int).tolist())
        folder = Path(args.out) / clip.stem
        folder.mkdir(parents=True, exist_ok=True)
        i, written = 0, 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            if i in wanted:
                cv2.imwrite(str(folder / f"{clip.stem}_{i:04d}.jpg"), frame, [cv2.IMWRITE_JPEG_QUALITY, 95])
                written += 1
            i += 1
        cap.release()
        print(f"{clip.stem}: {written} frames of {count}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
