"""The text a training run prints and keeps in train.log: its header, one line per epoch, the summary, and
the line an interruption ends with (which says how to resume).

Functions of plain data (`RunSetup`, `Phase`, `Bookkeeping`, the epoch's record), so the wording lives in one
place, apart from the loop that produces the numbers, and can be read and tested without a run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..core.defaults import BEST_CHECKPOINT, FINAL_CHECKPOINT, HISTORY, LABEL_MAP, LAST_CHECKPOINT
from ..core.report import invocation
from ..model.export import default_outputs
from .bookkeeping import Bookkeeping, Phase
from .config import TrainConfig
from .runlog import LOG_NAME


@dataclass(frozen=True)
class RunSetup:
    """What the run is, as its header and summary describe it: the settings as resolved for this machine and
    the sizes of its data. Fixed once the trainer is built."""

    cfg: TrainConfig
    data_kind: str  # "folder" or "rec"
    data_report: dict  # `open_dataset`'s counts: identities and images kept, the filters
    train_identities: int
    train_images: int
    closed_set_images: int  # training identities' images held back for the closed-set accuracy
    heldout_identities: int | None  # identities held out for verification; None: none held out
    head_config: dict  # `heads.head_config`
    batch_size: int  # per process
    world: int  # processes
    precision: str
    channels_last: bool
    decode: str
    workers: int
    device: str
    steps_per_epoch: int
    out: Path


def describe_head(hc: dict) -> str:
    if hc["name"] == "softmax":
        return "softmax head"
    return f"{hc['name']} head (s={hc['scale']:g}, m={hc['margin']:g})"


def fmt_time(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def run_header(
    setup: RunSetup, phase: Phase, book: Bookkeeping, selection: tuple[str, str], validation: list[str]
) -> str:
    """What the run trains on, how, where it starts, what selects the best checkpoint, and what it validates
    on (`validation`: `Validator.describe()`)."""
    r, cfg = setup.data_report, setup.cfg
    held = setup.heldout_identities or 0
    lines = [
        f"data      {cfg.data} ({setup.data_kind}{', ' + r['layout'] if 'layout' in r else ''}): "
        f"{r['identities']} of {r['source_identities']} identities kept (>= {r['min_images']} images, "
        f"<= {r['max_images']} each), {r['images']} images",
        f"split     train on {setup.train_identities} identities ({setup.train_images} images; "
        f"{setup.closed_set_images} held back for closed-set accuracy); {held} identities held out for verification",
        f"recipe    {describe_head(setup.head_config)}, {cfg.optimizer} lr {phase.lr:.3g} ({cfg.scheduler}), batch "
        f"{setup.batch_size} x {setup.world} process(es), {setup.precision}, "
        f"{'channels_last' if setup.channels_last else 'NCHW'}, decode {setup.decode}, {setup.workers} workers"
        f"{', compiled' if cfg.compile else ''}{', deterministic' if cfg.deterministic else ''}, device {setup.device}",
        f"phase     {phase.index}: epochs {phase.start_epoch + 1}-{phase.end_epoch}, "
        f"{setup.steps_per_epoch} steps per epoch; starting at epoch {book.epoch + 1}, step {book.step}",
        f"select    best checkpoint by {selection[0]} {selection[1]}"
        + (" (BENCHMARK DATA: --tune-on-benchmark)" if selection[0] not in ("heldout", "closed_set") else "")
        + f"; calibration table (threshold at FAR {cfg.target_far:g} shown) from "
        + (
            "the held-out identities"
            if setup.heldout_identities is not None
            else "the first benchmark file (--tune-on-benchmark)"
            if cfg.tune_on_benchmark
            else "nothing: uncalibrated"
        ),
    ]
    lines += [f"validate  {line}" for line in validation]
    return "\n".join(lines)


def epoch_line(record: dict, selection: tuple[str, str], is_best: bool) -> str:
    parts = [f"epoch {record['epoch']}: loss {record['train_loss']:.4f}, {record['images_per_s']:.0f} img/s"]
    if "closed_set" in record:
        parts.append(f"closed-set acc {record['closed_set']['accuracy']:.4f}")
    for name, rep in record.items():
        if isinstance(rep, dict) and "auc" in rep:
            parts.append(f"{name} AUC {rep['auc']:.4f} EER {rep['eer']:.4f} TAR@1e-2 {rep['tar@far=0.01']:.4f}")
    if record.get("cpu_decoded"):
        parts.append(f"{record['cpu_decoded']} images decoded on the CPU (nvJPEG could not take them)")
    if "validation_seconds" in record:
        share = record["validation_seconds"] / max(record["validation_seconds"] + record["train_seconds"], 1e-9)
        parts.append(f"validation {fmt_time(record['validation_seconds'])} ({share:.0%} of the epoch)")
    line = "; ".join(parts)
    return line + ("  [best]" if is_best else "")


def run_summary(setup: RunSetup, book: Bookkeeping, seconds: float) -> str:
    """The end of a phase: what was done, the last epoch's numbers, the best checkpoint, the calibration and
    the files written (`seconds`: this phase's wall time)."""
    last = book.history[-1] if book.history else {}
    cal = book.calibration or {}
    rule = "=" * 78
    lines = [
        rule,
        "training summary",
        rule,
        f"epochs        {book.epoch} done ({book.step} steps); this phase {fmt_time(seconds)}, "
        f"{last.get('images_per_s', 0):.0f} img/s in the last epoch",
        f"recipe        {describe_head(setup.head_config)}, {setup.cfg.optimizer}, {setup.precision}, batch "
        f"{setup.batch_size} x {setup.world}",
    ]
    if "closed_set" in last:
        lines.append(
            f"closed set    accuracy {last['closed_set']['accuracy']:.4f} (seed's metric; training identities)"
        )
    for name, rep in last.items():
        if isinstance(rep, dict) and "auc" in rep:
            lines.append(
                f"{name:<13} acc {rep['accuracy']:.4f}  AUC {rep['auc']:.4f}  EER {rep['eer']:.4f}  "
                f"TAR@FAR1e-3 {rep['tar@far=0.001']:.4f}{'' if rep['far=0.001_resolved'] else '*'}  "
                f"TAR@FAR1e-2 {rep['tar@far=0.01']:.4f}{'' if rep['far=0.01_resolved'] else '*'}  "
                f"({rep['genuine']}+{rep['impostor']} pairs)"
            )
    if book.best:
        value = "" if book.best["value"] is None else f" = {book.best['value']:.4f}"
        best_thr = book.best.get("threshold")
        thr = "" if best_thr is None else f"; its threshold {best_thr:.4f} is in {BEST_CHECKPOINT}"
        lines.append(f"best          epoch {book.best['epoch']}: {book.best['set']} {book.best['metric']}{value}{thr}")
    if cal:
        lines.append(
            f"calibration   last epoch: {cal['text']}; TAR {cal['tar']:.4f} (the app reads any FAR, and "
            f"FPIR by gallery size, from the table in the checkpoint)"
        )
    else:
        lines.append("calibration   none (no held-out identities); the app labels its decisions uncalibrated")
    slim = default_outputs(BEST_CHECKPOINT)[1].name
    lines.append(
        f"files         {setup.out}/{{{BEST_CHECKPOINT}, {slim}, {FINAL_CHECKPOINT}, {LAST_CHECKPOINT}, "
        f"{LABEL_MAP}, {HISTORY}, {LOG_NAME}, curves_*.png}}"
    )
    lines.append("              (* = that FAR is finer than the impostor pairs can resolve)")
    lines.append(rule)
    return "\n".join(lines)


def time_limit_line(cfg: TrainConfig, book: Bookkeeping, phase: Phase) -> str:
    """Why a run ended before its last epoch: --time-limit."""
    return (
        f"time limit of {cfg.time_limit:g} minutes of training reached in epoch {book.epoch} of {phase.end_epoch} "
        f"(step {book.step}); that epoch was validated and the final checkpoint written"
    )


def resume_command(world: int, checkpoint: Path) -> str:
    """The command that resumes this run, as the user starts it (under the DDP launcher for several processes)."""
    if world > 1:
        launcher = f"python -m faceid.train.launch --standalone --nproc_per_node {world}"
        return f"{launcher} continue_training.py --checkpoint {checkpoint}"
    return f"{invocation('continue_training.py')} --checkpoint {checkpoint}"


def interruption_line(setup: RunSetup, book: Bookkeeping) -> str:
    """The last line of an interrupted run: where it stopped, what it saved, and how to resume."""
    saved = setup.out / LAST_CHECKPOINT
    return (
        f"Interrupted at epoch {book.epoch + 1}, step {book.step} ({book.step_in_epoch} of "
        f"{setup.steps_per_epoch} in this epoch); saved {saved}. Resume with: "
        f"{resume_command(setup.world, saved)}"
    )
