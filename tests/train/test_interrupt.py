"""SIGTERM to the job's process group (how scancel, preemption and `kill` stop a job), single process and
2-process gloo DDP under faceid.train.launch: the ranks stop at one step boundary, rank 0 writes a resumable
checkpoint, the job exits 143 with one "Resume with:" line, and the resumed run ends bitwise equal to an
uninterrupted one. Real data: ../shared/data/recordio/video_faces (10 people x 6 frames), random weights.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from faceid.model.checkpoint import Checkpoint, load_checkpoint
from faceid.train.trainer import FINAL, LAST

REPO = Path(__file__).resolve().parents[2]
STEPS = 6


@pytest.fixture(scope="module")
def video_rec(shared_data) -> Path:
    rec = shared_data / "recordio" / "video_faces" / "train.rec"
    if not rec.is_file():
        pytest.skip(f"{rec} is absent")
    return rec


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "FACEID_WEIGHTS": ""}


def _launch(world: int) -> list[str]:
    if world == 1:
        return [sys.executable]
    return [sys.executable, "-m", "faceid.train.launch", "--standalone", "--nproc_per_node", str(world)]


def _train_cmd(world: int, data: Path, out: Path) -> list[str]:
    return [
        *_launch(world),
        "train_model.py",
        "--data",
        str(data),
        "--out",
        str(out),
        "--from-scratch",
        "--epochs",
        "1",
        "--limit-steps",
        str(STEPS),
        "--batch-size",
        "2",
        "--workers",
        "1",
        "--min-images",
        "4",
        "--holdout-fraction",
        "0",
        "--val-fraction",
        "0",
        "--no-bins",
        "--device",
        "cpu",
    ]


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)


def _sigterm_after_header(cmd: list[str]) -> tuple[int, str, str]:
    """Start `cmd` in its own process group, SIGTERM the whole group once training has started."""
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    head = []
    for line in proc.stdout:
        head.append(line)
        if line.startswith("select"):  # printed after the signal handlers are installed
            break
    time.sleep(1.5)
    os.killpg(proc.pid, signal.SIGTERM)
    out, err = proc.communicate(timeout=600)
    return proc.returncode, "".join(head) + out, err


def _assert_same_training_state(a: Checkpoint, b: Checkpoint) -> None:
    ta, tb = a.training, b.training
    assert (ta.epoch, ta.step) == (tb.epoch, tb.step)
    for part, pa, pb in (("model", a.model, b.model), ("head", ta.head, tb.head)):
        for k, v in pa.items():
            assert torch.equal(pb[k], v), f"{part}.{k} differs"
    for i, state in ta.optimizer["state"].items():
        for k, v in state.items():
            assert torch.equal(tb.optimizer["state"][i][k], v), f"optimizer {i}.{k} differs"
    assert ta.scheduler == tb.scheduler


@pytest.mark.parametrize("world", [1, 2])
@pytest.mark.e2e
def test_sigterm_to_the_process_group_then_resume_is_exact(video_rec, tmp_path, world):
    ref = _run(_train_cmd(world, video_rec, tmp_path / "ref"))
    assert ref.returncode == 0, ref.stderr[-3000:]

    code, out, err = _sigterm_after_header(_train_cmd(world, video_rec, tmp_path / "run"))
    assert code == 143, err[-3000:]
    resume = [ln for ln in out.splitlines() if "Resume with:" in ln]
    assert len(resume) == 1, out
    assert "Traceback" not in err and "killed by signal" not in err, err[-3000:]
    saved = load_checkpoint(tmp_path / "run" / LAST)
    assert saved.kind == "interrupted" and saved.training.step < STEPS and saved.training.world_size == world
    assert len(saved.training.rng) == world  # every rank stopped at the same step and took part

    command = resume[0].split("Resume with: ", 1)[1].split()
    assert command[0] == "python" and command[-1] == str(tmp_path / "run" / LAST)
    res = _run([sys.executable, *command[1:]])
    assert res.returncode == 0, res.stderr[-3000:]
    _assert_same_training_state(load_checkpoint(tmp_path / "ref" / FINAL), load_checkpoint(tmp_path / "run" / FINAL))


@pytest.mark.e2e
def test_launcher_passes_a_failing_rank_exit_code_on_without_a_traceback(video_rec, tmp_path):
    res = _run(
        [
            *_launch(2),
            "train_model.py",
            "--data",
            str(video_rec),
            "--out",
            str(tmp_path),
            "--workers",
            "-1",
            "--device",
            "cpu",
        ]
    )
    assert res.returncode == 2, res.stderr[-3000:]
    assert "Traceback" not in res.stderr and "ChildFailedError" not in res.stderr, res.stderr[-3000:]
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error: ")]
    assert errors and all("workers must be 0 or more" in ln and "--workers" in ln for ln in errors)
