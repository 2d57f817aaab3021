"""The preview window on a real X server (Xvfb): the box and prompt are drawn, and the seed's keys work.

Needs Xvfb and xdotool (Debian packages; .ci/run installs them when it can) and the shared clips; skips with
the reason otherwise. Keys are real X key events sent to the app's OpenCV window by xdotool.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from builders import make_random_checkpoint

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    not (shutil.which("Xvfb") and shutil.which("xdotool")),
    reason="Xvfb and xdotool are not installed (apt-get install xvfb xdotool)",
)


@pytest.fixture(scope="module")
def display():
    number = 90 + os.getpid() % 100
    server = subprocess.Popen(
        ["Xvfb", f":{number}", "-screen", "0", "1024x768x24", "-nolisten", "tcp"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1.5)
    if server.poll() is not None:
        pytest.skip(f"Xvfb could not start on display :{number}")
    yield f":{number}"
    server.terminate()
    server.wait(timeout=10)


def press_in_window(env: dict, key: str, app: subprocess.Popen, timeout: float = 60.0) -> None:
    """Wait for the app's 'faceid' window, then send `key` until the app exits (each press takes a sample)."""
    deadline = time.monotonic() + timeout
    while app.poll() is None and time.monotonic() < deadline:
        found = subprocess.run(["xdotool", "search", "--name", "^faceid$"], env=env, capture_output=True, text=True)
        for window in found.stdout.split():
            subprocess.run(["xdotool", "key", "--window", window, key], env=env, capture_output=True)
        time.sleep(0.7)


def test_register_with_c_and_verify_with_v_in_the_preview(display, shared_data, tmp_path):
    clip = shared_data / "videos" / "d3.mp4"
    model = make_random_checkpoint(tmp_path / "random.pth", seed=1)
    env = {**os.environ, "DISPLAY": display}
    base = [
        sys.executable,
        "faceid_app.py",
        "--data-dir",
        str(tmp_path / "data"),
        "--model",
        str(model),
        "--source",
        str(clip),
        "--threads",
        "1",
    ]

    register = subprocess.Popen(
        base + ["--samples", "2", "register", "--name", "kim"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    press_in_window(env, "c", register)
    out, err = register.communicate(timeout=60)
    assert register.returncode == 0, err[-800:]
    assert "Registered 'kim' from 2 samples" in out
    assert "QFontDatabase" not in err, "Qt font warnings leak to the user"

    verify = subprocess.Popen(
        base + ["--probe-samples", "1", "verify", "--name", "kim", "--json"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    press_in_window(env, "v", verify)
    out, err = verify.communicate(timeout=60)
    assert verify.returncode in (0, 1), err[-800:]  # a random network decides match or not; both are answers
    assert '"action": "verify"' in out and '"score"' in out
