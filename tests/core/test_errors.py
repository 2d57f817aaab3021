"""run_cli's guarantees, on real processes: one sentence, exit 2 for anything but "no match", JSON under
--json for every failure (argument errors included), the traceback only on request, a closed pipe quiet."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUG = "from faceid.core.errors import run_cli\ndef main():\n    return {}['missing']\nrun_cli(main)\n"


def python(*args, env_extra=None, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), **(env_extra or {})}
    env.pop("FACEID_DEBUG", None) if not (env_extra and "FACEID_DEBUG" in env_extra) else None
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120, **kw)


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in stderr, stderr
    return lines[0]


def test_a_bug_is_exit_2_and_one_sentence_and_the_traceback_on_request():
    out = python("-c", BUG)
    line = one_error_line(out.stderr)
    assert (
        out.returncode == 2 and "Unexpected internal error (KeyError: 'missing')" in line and "FACEID_DEBUG=1" in line
    )
    debug = python("-c", BUG, env_extra={"FACEID_DEBUG": "1"})
    assert debug.returncode == 2 and "Traceback" in debug.stderr and "KeyError" in debug.stderr


def test_a_bug_under_json_is_a_json_object():
    out = python("-c", BUG, "--json")
    data = json.loads(out.stdout)
    assert out.returncode == 2 and data["ok"] is False and data["exit_code"] == 2 and "KeyError" in data["error"]


@pytest.mark.parametrize(
    "script, args",
    [
        ("faceid_app.py", ["--samples", "many", "list"]),
        ("faceid_app.py", ["verify"]),  # --name missing
        ("faceid_app.py", ["frobnicate"]),  # no such action
        ("evaluate_model.py", ["--folds", "x"]),
        ("preprocess_dataset.py", ["--workers", "0"]),
        ("export_model.py", ["--opset", "x"]),
        ("train_model.py", ["--epochs", "x"]),
        ("continue_training.py", ["--lr", "x"]),
    ],
)
@pytest.mark.e2e
def test_argument_errors_are_one_sentence_and_json(tmp_path, script, args):
    plain = python(script, *args)
    assert plain.returncode == 2
    one_error_line(plain.stderr)
    out = python(script, *args, "--json")
    assert out.returncode == 2
    data = json.loads(out.stdout)
    assert data["ok"] is False and data["exit_code"] == 2 and "--help" in data["error"]


def test_bad_device_is_one_sentence(tmp_path):
    for action in ("list", "identify"):
        out = python("faceid_app.py", "--device", "bogus", "--data-dir", str(tmp_path / "g"), action)
        assert (
            out.returncode == 2
            and one_error_line(out.stderr) == "error: Unknown device 'bogus'; use auto, cpu, cuda or cuda:N (--device)."
        )
    assert not (tmp_path / "g").exists()


def test_closed_stdout_ends_quietly(tmp_path):
    """`faceid_app.py list | true`: the reader is gone before the answer is written."""
    proc = subprocess.Popen(
        [sys.executable, "faceid_app.py", "--data-dir", str(tmp_path / "g"), "list"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and stderr == ""
