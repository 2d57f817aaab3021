"""How a run is shown and kept: the printed summary of a pairs run, and the JSON report and plot writers.

`format_summary` and `write_outputs` (<stem>_report.json + <stem>_roc.png) serve the pairs run
(`verification_run`, and bench/bench_peer_lfw.py's side-by-side run); `write_report_and_plot` is the one writer
of a JSON report with its plot, used by both modes: the 1:N run (`open_set`) writes its DET plot with it.
The folder-of-people runs print their own tables beside the run that fills them
(`open_set.format_identification`, `calibrate.format_calibration`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np

from ..core.errors import FaceIDError
from .verification_metrics import plot_roc


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def format_summary(report: dict) -> str:
    """The human-readable lines printed after a pairs run (the JSON report holds everything)."""
    d, m, s, det = report["dataset"], report["metrics"], report["speed"], report["detector"]
    src = d.get("pairs_file") or d.get("bin")
    lines = [
        f"{report['model']['backend']} on {src}: {d['pairs']} pairs ({m['genuine']} same, {m['impostor']} "
        f"different), {d['unique_images']} images",
        f"model       {report['model'].get('weights', report['model'].get('model', ''))}"
        + (
            f" (fingerprint {report['model']['fingerprint']}, crop {report['model']['spec']['crop']}, "
            f"flip {'on' if report['model']['flip'] else 'off'})"
            if "spec" in report["model"]
            else ""
        ),
        f"accuracy    {_pct(m['accuracy'])} ± {_pct(m['accuracy_sem'])} (mean ± standard error over {d['folds']} "
        f"folds, each fold's threshold chosen on the others; mean threshold {m['accuracy_threshold']:.4f})",
        f"ROC AUC     {m['auc']:.4f}",
        f"EER         {_pct(m['eer'])} (threshold {m['eer_threshold']:.4f})",
    ]
    for far in ("0.001", "0.01"):
        note = "" if m[f"far={far}_resolved"] else f" (only {m['impostor']} impostor pairs: strictest point measured)"
        lines.append(f"TAR@FAR={far:<6}{_pct(m[f'tar@far={far}'])} (threshold {m[f'threshold@far={far}']:.4f}){note}")
    if "app_threshold" in report:
        a = report["app_threshold"]
        lines.append(
            f"model thr.  {a['threshold']:.3f} ({'calibrated' if a['calibrated'] else 'uncalibrated default'}): "
            f"accuracy {_pct(a['accuracy'])}, FAR {_pct(a['far'])}, TAR {_pct(a['tar'])}"
        )
    if d["kind"] == "lfw-pairs":
        shown = ", ".join(Path(p).name for p in det["missed_images"][:5]) + (" ..." if det["misses"] > 5 else "")
        lines.append(
            f"misses      {det['misses']} of {d['unique_images']} images had no face ({det['rule']})"
            + (f": {shown}" if det["misses"] else "")
        )
    else:
        lines.append(f"misses      {det['rule']}")
    lines.append(
        f"speed       {s['images']} images in {s['seconds']:.1f} s = {s['images_per_s']} images/s "
        f"({s['from_cache']} from cache)"
    )
    for key in ("report_json", "roc_png"):
        if key in report.get("outputs", {}):
            lines.append(f"wrote       {report['outputs'][key]}")
    return "\n".join(lines)


def write_outputs(
    report: dict, curves: dict[str, tuple[np.ndarray, np.ndarray]], out_dir: str | os.PathLike, stem: str
) -> dict:
    """Write <stem>_report.json and <stem>_roc.png atomically; records their paths in report['outputs']."""
    return write_report_and_plot(
        report,
        out_dir,
        f"{stem}_report.json",
        ("roc_png", f"{stem}_roc.png"),
        lambda path: plot_roc(curves, path, title=f"ROC: {stem}"),
    )


def write_report_and_plot(
    report: dict, out_dir: str | os.PathLike, json_name: str, plot: tuple[str, str], draw: Callable[[str], None]
) -> dict:
    """Draw the plot (`plot` = (key in report['outputs'], file name)) and write the JSON report, both into
    `out_dir`; a folder that cannot be written is one sentence."""
    from ..core.fileio import atomic_write_json

    out = Path(out_dir)
    paths = {"report_json": str(out / json_name), plot[0]: str(out / plot[1])}
    report["outputs"] = paths
    try:
        draw(paths[plot[0]])
        atomic_write_json(paths["report_json"], report)
    except OSError as err:
        raise FaceIDError(f"Cannot write the report into {out}: {err.strerror or err}.") from None
    return report
