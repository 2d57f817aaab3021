"""What a huge photo costs the app: peak memory and time of one `register` from it, this checkout vs a baseline.

Issue 19 found a 10900x10900 PNG (just under the 120 MP limit) costing 1.9 GB and ~9 s to say "no face". Each run
here is a fresh process (`faceid_app.py --source PHOTO register`, stand-in weights), its peak RSS read from the
kernel (`os.wait4`'s rusage of that very child) and its wall time taken from process start to answer. The same
command on a 1x1 photo gives the model's own cost in the same run, so what the photo adds is the difference.
Both checkouts alternate, median of `--repeats`.

    git worktree add /tmp/faceid-before 451d2cf        # a checkout from before the change
    .venv/bin/python bench/bench_big_photo.py --baseline /tmp/faceid-before [--side 10900] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
STAND_IN = REPO.parent / "shared" / "models" / "pins90_scratch_irv1_fp16.pt"


def run(repo: Path, photo: Path, data_dir: Path, weights: Path) -> tuple[float, float, int]:
    """(seconds, peak RSS in MB, exit code) of one register from `photo` with `repo`'s app."""
    argv = [sys.executable, str(repo / "faceid_app.py"), "--data-dir", str(data_dir), "--weights", str(weights)]
    argv += ["--crop", "aligned5", "--offline", "--no-preview", "--quiet", "--source", str(photo)]
    argv += ["register", "--name", "x"]
    start = time.perf_counter()
    child = subprocess.Popen(argv, cwd=repo, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    return time.perf_counter() - start, usage.ru_maxrss / 1024, child.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, required=True, help="a checkout from before the change")
    parser.add_argument("--side", type=int, default=10900, help="the photo's side in pixels (default: 10900)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per checkout and photo (default: 3)")
    parser.add_argument("--weights", type=Path, default=STAND_IN, help=f"backbone weights (default: {STAND_IN})")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        big, tiny = tmp_path / "big.png", tmp_path / "tiny.png"
        image = np.full((args.side, args.side, 3), 128, np.uint8)
        image[::7] = np.random.default_rng(0).integers(0, 256, image[::7].shape, dtype=np.uint8)  # not all flat
        cv2.imwrite(str(big), image)
        del image
        cv2.imwrite(str(tiny), np.zeros((1, 1, 3), np.uint8))
        print(f"photo {args.side}x{args.side} PNG, {big.stat().st_size / 1e6:.1f} MB; median of {args.repeats}")
        results: dict[tuple[str, str], list[tuple[float, float, int]]] = {}
        for i in range(args.repeats):
            for label, repo in (("before", args.baseline.resolve()), ("now", REPO)):
                for name, photo in (("1x1", tiny), ("big", big)):
                    results.setdefault((label, name), []).append(
                        run(repo, photo, tmp_path / f"g{i}{label}", args.weights)
                    )
        print(f"{'checkout':<8} {'photo':<5} {'seconds':>8} {'peak MB':>8} {'exit':>5}")
        for (label, name), runs in results.items():
            seconds = statistics.median(r[0] for r in runs)
            peak = statistics.median(r[1] for r in runs)
            print(f"{label:<8} {name:<5} {seconds:>8.1f} {peak:>8.0f} {runs[0][2]:>5}")
        for label in ("before", "now"):
            extra = statistics.median(r[1] for r in results[(label, "big")]) - statistics.median(
                r[1] for r in results[(label, "1x1")]
            )
            slower = statistics.median(r[0] for r in results[(label, "big")]) - statistics.median(
                r[0] for r in results[(label, "1x1")]
            )
            print(f"{label}: the big photo adds {extra:,.0f} MB and {slower:.1f} s over the 1x1 photo")


if __name__ == "__main__":
    main()
