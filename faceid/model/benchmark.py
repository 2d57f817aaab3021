"""Which folders are benchmark data (LFW): the one rule that keeps calibration and INT8 quantisation off them.

Benchmark images stay test data: a threshold table calibrated on them (evaluate_model.py --calibrate) or an INT8
model whose ranges were measured on them (export_model.py --int8-data) would make the benchmark's numbers lie.
"""

from __future__ import annotations

from pathlib import Path

BENCHMARK_MARKERS = ("pairs.txt", "pairsDevTest.txt", "pairsDevTrain.txt", "people.txt", "peopleDevTest.txt")


def benchmark_reason(root: Path) -> str | None:
    """Why this folder looks like benchmark data (LFW), or None. Checks the folder and its parent for LFW's
    pair/people lists and any path part named like LFW."""
    root = root.resolve()
    for folder in (root, root.parent):
        for marker in BENCHMARK_MARKERS:
            if (folder / marker).is_file():
                return f"{folder / marker} lies beside it (an LFW pair or people list)"
    if any("lfw" in part.lower() for part in root.parts):
        return f"its path {root} names LFW"
    return None
