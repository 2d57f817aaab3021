"""The model tests' shared export: export_model.py run once per session on the stand-in weights (~1 minute)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def exported(tmp_path_factory, stand_in) -> tuple[Path, dict]:
    """(folder, report): export_model.py run as a user would, writing m.onnx and the slim m.pth there."""
    pytest.importorskip("onnxruntime", reason="onnxruntime not installed (requirements-dev.txt pins it)")
    pytest.importorskip("onnxscript", reason="onnxscript not installed (requirements-dev.txt pins it)")
    out = tmp_path_factory.mktemp("export")
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "export_model.py"),
            "--weights",
            str(stand_in),
            "--crop",
            "aligned5",
            "--onnx",
            str(out / "m.onnx"),
            "--inference-checkpoint",
            str(out / "m.pth"),
            "--json",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return out, json.loads(result.stdout)
