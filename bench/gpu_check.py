#!/usr/bin/env python3
"""The whole GPU check as one prepared, time-boxed call: ``bench/gpu_check.sh OUTDIR`` (this module does the work).

A GPU is lent for minutes at a time, so everything it should answer runs in one command of at most 9 minutes
on one H200, each step under its own time limit; a step that fails or runs out of time is recorded and the
next one runs. Steps, in order:

1. environment: nvidia-smi, Python, torch / CUDA / cuDNN / torchvision / numpy / OpenCV / onnxruntime /
   facenet-pytorch versions, the GPU, bf16 support, whether the project imports;
2. cuda_tests: ``pytest -m cuda`` (every test that skips without a GPU);
3. throughput: bench/bench_train.py on pins90's JPEG bytes: the step's ceiling, the trainer's own loop eager
   and compiled, the seed's recipe; img/s and the ratios;
4. heads: a from-scratch pins90 run per head (softmax, ArcFace, CosFace) and the seed's config, equal
   minutes of training each (--time-limit; epochs sized from step 3's img/s), validated once at the end:
   LFW dev (lfw_dev.bin) accuracy / AUC and the held-out identities' EER: the table that picks the default head;
5. resume: train_model.py, the same run interrupted at a fixed step, continue_training.py; the final weights
   compared bit for bit (--deterministic);
6. app_eval: the app's per-frame pipeline (bench/bench_latency.py) and the evaluator (evaluate_model.py on
   lfw_dev.bin, process start to answer) on the GPU and on the CPU, for the ratios.

Optional (``--steps ...,synthetic``; always in the dry run, so CI exercises it): 7. synthetic: a short DCGAN
run on pins90 (train_gan.py: img/s, its last sample grid copied to OUTDIR/gan_samples.png), generate_faces.py,
and a short train_detector.py run on those faces (img/s, held-out accuracy and AUC). Its 60 s come on top of
the 9 minutes: ask for it on its own (``--steps environment,synthetic``) or in place of another step.

OUTDIR gets gpu_check.json (per step: status, seconds, figures, the exact commands; rewritten after every
step, so a killed run still leaves what it did) and gpu_check.log (every command's output); the table is
printed at the end. Scratch files (runs, checkpoints) go to --work (default: a temporary folder).

--dry-run (or DRY_RUN=1) runs the same steps on the CPU shrunk to seconds (a tiny .bin, a few steps, the
"eager" compile backend), so every path, flag and file the real run needs is exercised; CI runs it and checks
the JSON with ``--verify FILE``. The data comes from bench/gpu_pack.sh's folder (device_data/data) or
$FACEID_SHARED_DATA, else ../shared/data.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

STEPS = ("environment", "cuda_tests", "throughput", "heads", "resume", "app_eval")
OPTIONAL_STEPS = ("synthetic",)  # run when asked for, and always in the dry run
BUDGET_S = 540  # 9 minutes: the device runs one command for at most 10
# each step's own limit (GPU run; the sum is the budget); a step never runs past the whole budget either
STEP_LIMITS_S = {"environment": 20, "cuda_tests": 90, "throughput": 130, "heads": 200, "resume": 40, "app_eval": 60}
OPTIONAL_LIMITS_S = {"synthetic": 60}
HEADS = ("softmax", "arcface", "cosface", "seed")
HEAD_MINUTES = 0.4  # training minutes per step-4 run on the GPU (validation and start-up come on top)
RESUME_STOP_AT = 3  # the interrupted run stops after this many optimizer steps
PINS90 = Path("recordio") / "pins90_112x112"


class StepFailed(Exception):
    """A step's own verdict: what went wrong, in one sentence."""


class StepTimeout(Exception):
    pass


@dataclass
class StepResult:
    name: str
    status: str = "not run"  # ok | failed | timeout | not run
    seconds: float = 0.0
    figures: dict = field(default_factory=dict)
    commands: list[str] = field(default_factory=list)
    error: str | None = None


class Check:
    """One run of the check: where things are, the time left, the log, each step's record."""

    def __init__(self, out: Path, work: Path, data: Path, dry: bool, budget_s: float):
        self.out, self.work, self.data, self.dry = out, work, data, dry
        self.started = time.monotonic()
        self.deadline = self.started + budget_s
        self.budget_s = budget_s
        self.results: list[StepResult] = []
        self.current: StepResult | None = None
        self.step_deadline = self.deadline
        self.log = open(out / "gpu_check.log", "a", encoding="utf-8")
        self.env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "FACEID_SHARED_DATA": str(data),
            "FACEID_WEIGHTS": "",  # nothing may download: the device has no network
            "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
        }
        if dry:
            self.env["FACEID_COMPILE_BACKEND"] = "eager"  # inductor's CPU code generation takes minutes
        self.device = "cpu" if dry else "cuda"

    @property
    def pins90(self) -> Path:
        return self.data / PINS90

    def run(self, argv: list[str], what: str, timeout: float | None = None, check: bool = True) -> str:
        """Run one command of the current step (its output appended to the log); returns its output. A
        non-zero exit is StepFailed (unless `check` is False), running past the step's time StepTimeout."""
        assert self.current is not None
        line = shlex.join(argv)
        self.current.commands.append(line)
        left = self.step_deadline - time.monotonic()
        if timeout is not None:
            left = min(left, timeout)
        if left <= 1:
            raise StepTimeout(f"no time left for {what}")
        self.log.write(f"\n$ {line}\n")
        self.log.flush()
        try:
            done = subprocess.run(
                argv, cwd=REPO, env=self.env, capture_output=True, text=True, timeout=left, stdin=subprocess.DEVNULL
            )
        except subprocess.TimeoutExpired as err:
            self.log.write(_text(err.stdout) + _text(err.stderr) + f"\n[timed out after {left:.0f} s]\n")
            raise StepTimeout(f"{what} ran out of time ({left:.0f} s)") from None
        self.log.write(done.stdout + done.stderr + f"[exit {done.returncode}]\n")
        self.log.flush()
        if check and done.returncode != 0:
            raise StepFailed(f"{what} exited {done.returncode}: {_last_line(done.stderr or done.stdout)}")
        return done.stdout + done.stderr

    def python(self, *args: str) -> list[str]:
        return [sys.executable, *args]

    def save(self) -> None:
        """gpu_check.json as it stands (written after every step)."""
        from faceid.core.fileio import atomic_write_json

        env = next((r.figures for r in self.results if r.name == "environment"), {})
        atomic_write_json(
            self.out / "gpu_check.json",
            {
                "dry_run": self.dry,
                "device": env.get("gpu") or ("CPU (dry run)" if self.dry else None),
                "budget_s": self.budget_s,
                "total_s": round(time.monotonic() - self.started, 1),
                "steps": [vars(r) for r in self.results],
            },
        )


def _text(value) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else (value or "")


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and "%|" not in ln]
    return lines[-1][:300] if lines else "no output"


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise StepFailed(f"{path.name} was not written ({err})") from None


# --------------------------------------------------------------------------------------------- the steps


def step_environment(c: Check) -> dict:
    figures: dict = {}
    smi = "nvidia-smi"
    try:
        figures["nvidia_smi"] = c.run([smi, "--query-gpu=name,memory.total,driver_version", "--format=csv"], smi, 15)
    except (FileNotFoundError, StepFailed) as err:
        if not c.dry:
            raise StepFailed(f"nvidia-smi: {err}") from None
        figures["nvidia_smi"] = f"absent ({err.__class__.__name__}; dry run)"
    probe = c.run(c.python(str(Path(__file__).resolve()), "--probe-env", str(c.work / "env.json")), "the probe")
    figures.update(_read_json(c.work / "env.json"))
    if not c.dry and not figures.get("cuda_usable"):
        raise StepFailed(f"CUDA is not usable here: {figures.get('cuda_problem')}; {_last_line(probe)}")
    return figures


def probe_environment(path: Path) -> int:
    """--probe-env: the versions and the GPU, as JSON (its own process, so a broken import is this step's)."""
    import platform

    import numpy as np
    import torch

    from faceid.core.device import cuda_problem, describe_device, resolve_device
    from faceid.core.fileio import atomic_write_json

    figures: dict = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__}
    figures["cuda_build"] = torch.version.cuda
    figures["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    for module in ("torchvision", "cv2", "onnxruntime", "facenet_pytorch", "PIL", "matplotlib", "tqdm"):
        try:
            mod = __import__(module)
            figures[module] = getattr(mod, "__version__", "installed")
        except ImportError as err:
            figures[module] = f"missing ({err})"
    import faceid.cli  # noqa: F401  (the project imports on this interpreter)
    import faceid.train.trainer  # noqa: F401

    available = torch.cuda.is_available()
    problem = cuda_problem(torch.device("cuda:0")) if available else "torch.cuda.is_available() is False"
    figures.update(cuda_available=available, cuda_usable=problem is None, cuda_problem=problem)
    device = resolve_device("auto")
    figures["gpu"] = describe_device(device) if device.type == "cuda" else None
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        figures.update(
            capability=f"{props.major}.{props.minor}",
            memory_gib=round(props.total_memory / 2**30, 1),
            multiprocessors=props.multi_processor_count,
            bf16=torch.cuda.is_bf16_supported(),
        )
    atomic_write_json(path, figures)
    print(json.dumps(figures, indent=1))
    return 0


def step_cuda_tests(c: Check) -> dict:
    out = c.run(c.python("-m", "pytest", "-m", "cuda", "-q", "-rs", "-p", "no:cacheprovider", "tests"), "pytest")
    counts = {k: 0 for k in ("passed", "failed", "skipped", "error")}
    summary = [ln for ln in out.splitlines() if " in " in ln and ("passed" in ln or "skipped" in ln)]
    if summary:
        tokens = summary[-1].replace(",", " ").split()
        for number, word in zip(tokens, tokens[1:]):
            for key in counts:
                if word.startswith(key) and number.isdigit():
                    counts[key] = int(number)
    if not c.dry and counts["passed"] == 0:
        raise StepFailed(f"no CUDA test passed: {summary[-1] if summary else _last_line(out)}")
    return counts


def step_throughput(c: Check) -> dict:
    path = c.work / "bench_train.json"
    sizes = ["--steps", "1", "--warmup", "1", "--batch-size", "4", "--seed-batch-size", "2", "--workers", "1"]
    sizes += ["--head-classes", "90"]  # a CASIA-wide head costs a CPU seconds per step
    argv = c.python("bench/bench_train.py", "--data", str(c.pins90), "--compile", "--json-out", str(path))
    c.run(argv + (sizes + ["--device", "cpu"] if c.dry else ["--device", "cuda"]), "bench_train.py")
    figures = _read_json(path)
    return {k: figures[k] for k in ("ceiling", "trainer", "compiled", "seed") if k in figures}


def _train_args(c: Check, out: Path) -> list[str]:
    args = ["--data", str(c.pins90), "--out", str(out), "--from-scratch", "--device", c.device]
    if c.dry:  # 8 faces per person, 2 people held out, a handful of pairs: validation in seconds on a CPU
        args += ["--max-images", "8", "--holdout-fraction", "0.02", "--pairs", "4", "--val-images", "2"]
        args += ["--batch-size", "4", "--workers", "1", "--eval-batch-size", "16"]
    return args


def step_heads(c: Check) -> dict:
    """Equal minutes of training per head; epochs sized from step 3 so the schedule roughly ends with them."""
    rates = next((r.figures for r in c.results if r.name == "throughput" and r.status == "ok"), {})
    minutes = 0.05 if c.dry else HEAD_MINUTES
    train_images = 14_882 * 0.9 * 0.8  # pins90 after the held-out identities and the closed-set split
    rows: dict = {}
    # the dry run takes one margin head and the seed's config: every path (--head, --config) in half the time
    heads = ("arcface", "seed") if c.dry else HEADS
    for head in heads:
        rate = rates.get("seed" if head == "seed" else "trainer", {}).get("img_s")
        guess = 1500.0 if head == "seed" else 8000.0  # without step 3's figure: a cautious H200 guess
        epochs = 1 if c.dry else max(1, math.ceil(minutes * 60 * (rate or guess) / train_images))
        out = c.work / "heads" / head
        args = _train_args(c, out) + ["--epochs", str(epochs), "--time-limit", f"{minutes:g}", "--val-every", "1000"]
        args += ["--config", "configs/seed.json"] if head == "seed" else ["--head", head]
        if c.dry:
            args += ["--limit-steps", "1"]
        try:
            c.run(c.python("train_model.py", *args), f"the {head} run")
            history = _read_json(out / "history.json")
        except StepFailed as err:
            rows[head] = {"error": str(err)}
            continue
        last = history[-1]
        lfw = next((v for k, v in last.items() if k.startswith("lfw") and isinstance(v, dict)), {})
        rows[head] = {
            "lfw_accuracy": lfw.get("accuracy"),
            "lfw_auc": lfw.get("auc"),
            "heldout_eer": last.get("heldout", {}).get("eer"),
            "epochs": len(history),
            "planned_epochs": epochs,
            "train_minutes": round(sum(h["train_seconds"] for h in history) / 60, 3),
            "img_s": round(last["images_per_s"], 1),
        }
    ranked = [h for h in HEADS[:3] if rows.get(h, {}).get("lfw_auc") is not None]
    if not ranked:
        raise StepFailed(f"no head run finished: {rows}")
    best = max(ranked, key=lambda h: rows[h]["lfw_auc"])
    figures = {"minutes_each": minutes, "runs": rows, "best_head_by_lfw_auc": best}
    if rows.get("seed", {}).get("lfw_accuracy") is not None:
        figures["best_over_seed_lfw_points"] = round(
            100 * (rows[best]["lfw_accuracy"] - rows["seed"]["lfw_accuracy"]), 2
        )
    if any("error" in rows[h] for h in heads):
        raise StepFailed(f"some runs failed: {', '.join(h for h in heads if 'error' in rows[h])}")
    return figures


class StopAtStep:
    """--interrupted-run: a StopFlag that acts like a Ctrl-C arriving during step RESUME_STOP_AT."""

    @staticmethod
    def make():
        from faceid.train.recipe import StopFlag

        class _Stop(StopFlag):
            def poll(self, step: int) -> bool:
                return step >= RESUME_STOP_AT

        return _Stop(enabled=False)


def interrupted_run(argv: list[str]) -> int:
    """--interrupted-run TRAIN_ARGS: train_model.py's run, stopped as if by a Ctrl-C during a fixed step."""
    from faceid.core.errors import run_cli
    from faceid.train.cli import train_config
    from faceid.train.trainer import train

    run_cli(lambda: train(train_config(argv), stop=StopAtStep.make()), argv)
    return 0


def step_resume(c: Check) -> dict:
    import torch

    from faceid.model.checkpoint import load_checkpoint

    common = ["--epochs", "2", "--limit-steps", "3", "--deterministic", "--no-bins", "--val-every", "2"]
    if not c.dry:
        common += ["--batch-size", "64", "--max-images", "20", "--pairs", "200", "--val-images", "256"]
    ref, cut = c.work / "resume" / "reference", c.work / "resume" / "interrupted"
    c.run(c.python("train_model.py", *_train_args(c, ref), *common), "the reference run")
    out = c.run(
        c.python(str(Path(__file__).resolve()), "--interrupted-run", *_train_args(c, cut), *common),
        "the interrupted run",
        check=False,
    )
    if "Resume with:" not in out:
        raise StepFailed(f"the interrupted run printed no 'Resume with:' line: {_last_line(out)}")
    c.run(c.python("continue_training.py", "--checkpoint", str(cut / "last_face_model.pth")), "continue_training.py")
    a, b = load_checkpoint(ref / "final_face_model.pth"), load_checkpoint(cut / "final_face_model.pth")
    differ = [k for k, v in a.model.items() if not torch.equal(v, b.model[k])]
    differ += [f"head.{k}" for k, v in a.training.head.items() if not torch.equal(v, b.training.head[k])]
    figures = {"steps": a.training.step, "stopped_at": RESUME_STOP_AT, "tensors": len(a.model) + len(a.training.head)}
    figures["differing_tensors"] = len(differ)
    if differ or a.training.step != b.training.step:
        raise StepFailed(f"the resumed run differs from the uninterrupted one in {len(differ)} tensors ({differ[:3]})")
    return figures


def step_app_eval(c: Check) -> dict:
    """The app's per-frame pipeline and the evaluator, on the GPU and on the CPU, same step."""
    import torch

    from faceid.model.checkpoint import Checkpoint, save_checkpoint
    from faceid.model.network import build_backbone
    from faceid.model.preprocessing import ALIGNED_SPEC

    best = c.work / "heads" / "softmax" / "best_face_model.pth"
    model = best if best.is_file() else c.work / "random_init.pth"
    if not best.is_file():  # step 4 did not leave one: timing does not depend on the weights
        torch.manual_seed(0)
        save_checkpoint(model, Checkpoint(model=build_backbone().state_dict(), preprocess=ALIGNED_SPEC.to_dict()))
    figures: dict = {"model": "step 4's softmax run" if best.is_file() else "random weights"}
    devices = ["cpu"] if c.dry else ["cuda", "cpu"]
    bin_file = c.pins90 / "lfw_dev.bin"
    for device in devices:
        path = c.work / f"latency_{device}.json"
        frames = ["--frames-per-clip", "1"] if c.dry else ["--frames-per-clip", "6"]
        c.run(c.python("bench/bench_latency.py", "--device", device, *frames, "--json", str(path)), f"latency {device}")
        lat = _read_json(path)
        figures[f"frame_ms_{device}"] = {**lat["faceid_ms"], "frames": lat["frames"]}
        limit = ["--limit", "4" if c.dry else "200"] if c.dry or device == "cpu" else []  # the CPU: a share
        t0 = time.perf_counter()
        out = c.run(
            c.python(
                "evaluate_model.py",
                "--bin",
                str(bin_file),
                "--model",
                str(model),
                "--device",
                device,
                "--no-cache",
                "--out-dir",
                str(c.work / f"eval_{device}"),
                "--json",
                *limit,
            ),
            f"evaluate_model.py on {device}",
        )
        seconds = time.perf_counter() - t0
        report = json.loads(out[out.index("{") : out.rindex("}") + 1])
        images = report["dataset"]["unique_images"]
        figures[f"eval_{device}"] = {
            "images": images,
            "pairs": report["dataset"]["pairs"],
            "seconds": round(seconds, 2),  # process start to answer, as a user waits
            "img_s": round(images / seconds, 1),
            "embed_img_s": report["speed"].get("images_per_s"),  # the embedding loop alone
        }
    if "frame_ms_cuda" in figures:
        figures["frame_p50_cpu_over_cuda"] = figures["frame_ms_cpu"]["p50"] / figures["frame_ms_cuda"]["p50"]
    return figures


def step_synthetic(c: Check) -> dict:
    """A short DCGAN run, generated faces, and a short detector run on them (docs/synthetic.md)."""
    import shutil

    gan, fakes, det = c.work / "synthetic" / "gan", c.work / "synthetic" / "fakes", c.work / "synthetic" / "detector"
    sizes = ["--workers", "1"] if c.dry else []
    gan_args = ["--data", str(c.pins90), "--out", str(gan), "--epochs", "2", "--device", c.device]
    gan_args += ["--batch-size", "8", "--width", "8", "--max-images", "2", "--limit-steps", "2"] if c.dry else []
    gan_args += ["--batch-size", "128", "--limit-steps", "60"] if not c.dry else []
    c.run(c.python("train_gan.py", *gan_args, *sizes, "--quiet"), "train_gan.py")
    history = json.loads((gan / "history.json").read_text(encoding="utf-8"))
    shutil.copyfile(gan / f"samples_epoch_{len(history):03d}.png", c.out / "gan_samples.png")
    count = "64" if c.dry else "512"
    c.run(c.python("generate_faces.py", str(gan / "gan_final.pth"), "--count", count, "--out", str(fakes),
                   "--device", c.device, "--quiet"), "generate_faces.py")  # fmt: skip
    det_args = ["--real", str(c.pins90), "--synthetic", str(fakes), "--out", str(det), "--from-scratch"]
    det_args += ["--epochs", "1", "--device", c.device]
    if c.dry:
        det_args += ["--freeze-backbone", "--input-size", "80", "--batch-size", "16", "--max-images", "2"]
        det_args += ["--limit-steps", "2", "--workers", "1"]
    else:
        det_args += ["--batch-size", "64", "--max-images", "10", "--limit-steps", "30"]
    c.run(c.python("train_detector.py", *det_args, "--quiet"), "train_detector.py")
    val = json.loads((det / "history.json").read_text(encoding="utf-8"))[-1]
    return {
        "gan_img_s": history[-1]["images_per_s"],
        "gan_steps": sum(h["steps"] for h in history),
        "grid": str(c.out / "gan_samples.png"),
        "detector_img_s": val["images_per_s"],
        "detector_accuracy": val["val"]["accuracy"],
        "detector_auc": val["val"]["auc"],
    }


STEP_FUNCTIONS: dict[str, Callable[[Check], dict]] = {
    "environment": step_environment,
    "cuda_tests": step_cuda_tests,
    "throughput": step_throughput,
    "heads": step_heads,
    "resume": step_resume,
    "app_eval": step_app_eval,
    "synthetic": step_synthetic,
}


# --------------------------------------------------------------------------------------------- the runner


def run_steps(c: Check, steps: dict[str, Callable[[Check], dict]], limits: dict[str, float]) -> list[StepResult]:
    """Each step under its own limit (never past the whole budget); a failure or time-out is recorded and the
    next step runs; the JSON is rewritten after each."""
    for name in steps:
        result = StepResult(name)
        c.results.append(result)
    for result in c.results:
        c.current = result
        t0 = time.monotonic()
        c.step_deadline = min(c.deadline, t0 + limits[result.name])
        print(f"[{time.monotonic() - c.started:5.0f} s] {result.name} (up to {c.step_deadline - t0:.0f} s)", flush=True)
        try:
            if c.step_deadline - t0 <= 1:
                raise StepTimeout("the budget was spent before this step")
            result.figures = steps[result.name](c) or {}
            result.status = "ok"
        except StepTimeout as err:
            result.status, result.error = "timeout", str(err)
        except Exception as err:  # the check goes on: this step's failure is its record
            result.status, result.error = (
                "failed",
                f"{type(err).__name__}: {err}" if not isinstance(err, StepFailed) else str(err),
            )
        result.seconds = round(time.monotonic() - t0, 1)
        c.save()
    return c.results


def table(results: list[StepResult]) -> str:
    lines = [f"{'step':<12} {'status':<8} {'seconds':>7}  figures"]
    for r in results:
        lines.append(f"{r.name:<12} {r.status:<8} {r.seconds:>7.1f}  {summary(r)}")
    return "\n".join(lines)


def summary(r: StepResult) -> str:
    f = r.figures
    if r.status != "ok":
        return (r.error or "")[:110]
    if r.name == "environment":
        return f"{f.get('gpu') or 'CPU'}; torch {f.get('torch')}, CUDA {f.get('cuda_build')}, cuDNN {f.get('cudnn')}"
    if r.name == "cuda_tests":
        return ", ".join(f"{v} {k}" for k, v in f.items() if v)
    if r.name == "throughput":
        return ", ".join(f"{k} {v['img_s']:.0f} img/s" for k, v in f.items())
    if r.name == "heads":
        runs = f["runs"]
        return f"best {f['best_head_by_lfw_auc']}; " + ", ".join(
            f"{h} LFW {v['lfw_accuracy']:.3f}/AUC {v['lfw_auc']:.3f}"
            for h, v in runs.items()
            if v.get("lfw_auc") is not None
        )
    if r.name == "resume":
        return f"bitwise equal after {f['steps']} steps (stopped at {f['stopped_at']})"
    if r.name == "synthetic":
        return (
            f"GAN {f['gan_img_s']:.0f} img/s, detector {f['detector_img_s']:.0f} img/s, held-out accuracy "
            f"{f['detector_accuracy']:.3f} / AUC {f['detector_auc']:.3f}; grid {Path(f['grid']).name}"
        )
    if r.name == "app_eval":
        return ", ".join(f"{k} p50 {v['p50']:.1f} ms" for k, v in f.items() if k.startswith("frame_ms"))
    return ""


def verify(path: Path) -> int:
    """--verify FILE: every step present, in order, and ok (what CI asks of the dry run)."""
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
        steps = [(s["name"], s["status"], s["commands"], s["seconds"], s["figures"]) for s in report["steps"]]
    except (OSError, ValueError, KeyError, TypeError) as err:
        print(f"error: {path} is not a complete gpu_check.json ({err}).", file=sys.stderr)
        return 1
    names = [s[0] for s in steps]
    want = list(STEPS) + [s for s in OPTIONAL_STEPS if report.get("dry_run") or s in names]
    bad = [f"{n} {status}" for n, status, *_ in steps if status != "ok"]
    if names != want or bad or not all(cmds for _, _, cmds, _, _ in steps):
        print(f"error: {path}: steps {names} (want {want}); not ok: {bad or 'none'}.", file=sys.stderr)
        return 1
    print(f"{path}: all {len(steps)} steps ok in {report['total_s']:.0f} s (dry run: {report['dry_run']})")
    return 0


def dry_data(work: Path, shared: Path) -> Path:
    """The dry run's data: pins90's train.rec / .idx / property as they are (links), and a .bin of the first
    2 same and 2 different pairs of lfw_dev.bin, so every path of the real run is taken in seconds."""
    from faceid.eval.pairs import load_verification_bin

    src, dst = shared / PINS90, work / "dry_data" / PINS90
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("train.rec", "train.idx", "property"):
        if not (dst / name).exists():
            (dst / name).symlink_to((src / name).resolve())
    images, issame = load_verification_bin(src / "lfw_dev.bin")
    pairs = [0, 1, 500, 501]
    small = [images[2 * p + k] for p in pairs for k in (0, 1)]
    (dst / "lfw_dev.bin").write_bytes(pickle.dumps((small, [bool(issame[p]) for p in pairs]), protocol=4))
    videos = work / "dry_data" / "videos"
    if not videos.exists():
        videos.symlink_to((shared / "videos").resolve())
    return work / "dry_data"


def data_root(pack: Path) -> Path:
    for candidate in (pack / "data", Path(os.environ.get("FACEID_SHARED_DATA", "")), REPO.parent / "shared" / "data"):
        if str(candidate) and (candidate / PINS90 / "train.rec").is_file():
            return candidate.resolve()
    raise SystemExit(f"error: no pins90 data: run bench/gpu_pack.sh (it fills {pack}/data) or set FACEID_SHARED_DATA.")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--interrupted-run"]:
        return interrupted_run(argv[1:])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", nargs="?", help="folder for gpu_check.json and gpu_check.log")
    p.add_argument(
        "--dry-run",
        action="store_true",
        default=os.environ.get("DRY_RUN", "") not in ("", "0"),
        help="the same steps on the CPU in seconds (default: off, or on with DRY_RUN=1)",
    )
    p.add_argument(
        "--pack", default=str(REPO / "device_data"), help="bench/gpu_pack.sh's folder (default: %(default)s)"
    )
    p.add_argument("--work", help="scratch folder for runs and checkpoints (default: a new temporary folder)")
    p.add_argument("--budget", type=float, help=f"seconds for all steps (default: {BUDGET_S}; dry run 900)")
    p.add_argument(
        "--steps",
        help=f"steps to run, comma-separated, from {', '.join(STEPS + OPTIONAL_STEPS)} (default: the first "
        f"{len(STEPS)}; the dry run adds {', '.join(OPTIONAL_STEPS)})",
    )
    p.add_argument("--probe-env", metavar="FILE", help=argparse.SUPPRESS)
    p.add_argument("--verify", metavar="FILE", help="check a gpu_check.json: every step present and ok; exit 1 if not")
    args = p.parse_args(argv)
    if args.probe_env:
        return probe_environment(Path(args.probe_env))
    if args.verify:
        return verify(Path(args.verify))
    if not args.out:
        p.error("give the output folder")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="faceid-gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    data = data_root(Path(args.pack))
    if args.dry_run:
        data = dry_data(work, data)
    default_steps = STEPS + (OPTIONAL_STEPS if args.dry_run else ())
    wanted = [s for s in (args.steps or ",".join(default_steps)).split(",") if s]
    unknown = sorted(set(wanted) - set(STEPS + OPTIONAL_STEPS))
    if unknown:
        p.error(f"unknown steps {unknown}; choose from {', '.join(STEPS + OPTIONAL_STEPS)}")
    (out / "gpu_check.log").write_text("", encoding="utf-8")
    extra = sum(OPTIONAL_LIMITS_S[s] for s in wanted if s in OPTIONAL_LIMITS_S)
    budget = args.budget or ((900 if args.dry_run else BUDGET_S) + extra)
    check = Check(out, work, data, args.dry_run, budget)
    print(f"gpu check{' (dry run, CPU)' if args.dry_run else ''}: data {data}, scratch {work}, budget {budget:.0f} s")
    # the dry run's limits: a shared 2-core CPU, where one training step and one validation take seconds each
    limits = {**STEP_LIMITS_S, **OPTIONAL_LIMITS_S}
    if args.dry_run:
        limits = {
            **{k: 90 for k in limits},
            "throughput": 200,
            "heads": 240,
            "resume": 150,
            "app_eval": 150,
            "synthetic": 300,
        }
    results = run_steps(check, {s: STEP_FUNCTIONS[s] for s in STEPS + OPTIONAL_STEPS if s in wanted}, limits)
    print(table(results))
    print(f"total {time.monotonic() - check.started:.0f} s; {out / 'gpu_check.json'}, {out / 'gpu_check.log'}")
    return 0 if all(r.status == "ok" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
