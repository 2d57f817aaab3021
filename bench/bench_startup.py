"""Start-up of the app's `list` and `delete`, process start to answer: this checkout against a baseline one.

`list` and `delete` need only the gallery (SQLite + a folder), never the network, so they must not import
torch. Each command is run as a fresh process (`python faceid_app.py ... list`) from both checkouts,
alternating, on the same small gallery; the median wall time of each is printed with the ratio, and whether
torch was imported (`python -X importtime`, the same command once more).

    git worktree add /tmp/faceid-before 61f19f0        # a checkout from before the change
    .venv/bin/python bench/bench_startup.py --baseline /tmp/faceid-before [--runs 7]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from faceid.core.errors import FaceIDError, run_cli  # noqa: E402

COMMANDS = {"list": ["list"], "delete": ["delete", "--name", "nobody"]}


def timed(repo: Path, argv: list[str]) -> tuple[float, int]:
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, str(repo / "faceid_app.py"), *argv],
        cwd=repo,
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(repo)},
    )
    return time.perf_counter() - t0, out.returncode


def imports_torch(repo: Path, argv: list[str]) -> bool:
    out = subprocess.run(
        [sys.executable, "-X", "importtime", str(repo / "faceid_app.py"), *argv],
        cwd=repo,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(repo)},
    )
    return any(line.rstrip().endswith("| torch") for line in out.stderr.splitlines())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline", required=True, help="a checkout of the code before the change (git worktree)")
    ap.add_argument("--runs", type=int, default=7, help="runs per command and checkout (default: 7)")
    args = ap.parse_args()
    baseline = Path(args.baseline).resolve()
    if not (baseline / "faceid_app.py").is_file():
        raise FaceIDError(f"{baseline} is not a faceid checkout (no faceid_app.py).")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, tail in COMMANDS.items():
            times = {"before": [], "after": []}
            for i in range(args.runs + 1):  # run 0 warms the file cache, not counted
                for label, repo in (("before", baseline), ("after", REPO)):
                    seconds, _ = timed(repo, ["--data-dir", f"{tmp}/{label}", *tail])
                    if i:
                        times[label].append(seconds)
            torch_used = {
                label: imports_torch(repo, ["--data-dir", f"{tmp}/{label}", *tail])
                for label, repo in (("before", baseline), ("after", REPO))
            }
            results[name] = {k: float(np.median(v)) for k, v in times.items()}
            print(
                f"{name:<7} before {results[name]['before']:.2f} s (torch imported: {torch_used['before']})   "
                f"after {results[name]['after']:.2f} s (torch imported: {torch_used['after']})   "
                f"before/after {results[name]['before'] / results[name]['after']:.2f}x   "
                f"(median of {args.runs}, load {os.getloadavg()[0]:.1f})"
            )
    return 0


if __name__ == "__main__":
    run_cli(main)
