"""The real-vs-synthetic detector on real data: pins90 faces (real) against an early DCGAN's outputs (synthetic),
trained on CPU for about a minute of CPU time; and the app using it on a real clip.

What is easy here is said plainly: an early GAN's faces are far from real ones, so the held-out accuracy must
be high (>= 90%); a detector that passes this says nothing about generators it never saw (docs/synthetic.md).
Early-GAN faces are not faces to MTCNN either (it finds none in them), so the app refuses them before the
detector runs; the detector's own refusal is exercised on a real clip with the same detector file at a
threshold of 0 (every face flagged), which is the boundary `--allow-synthetic` must override.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from faceid.core.errors import FaceIDError
from faceid.synthetic.detector_config import DetectorConfig
from faceid.synthetic.detector_model import load_synthetic_detector, read_detector_checkpoint
from faceid.synthetic.detector_train import (
    DETECTOR_BEST,
    DETECTOR_FINAL,
    DETECTOR_LAST,
    DetectorRun,
    detector_metrics,
    threshold_at_frr,
)
from faceid.synthetic.gan_checkpoint import GAN_FINAL
from faceid.synthetic.gan_config import GanConfig
from faceid.synthetic.gan_train import GanRun
from faceid.synthetic.generate import generate_faces

REPO = Path(__file__).resolve().parents[2]


def test_the_threshold_flags_at_most_the_asked_share_of_real_faces():
    real = np.linspace(0.0, 0.5, 200)
    t = threshold_at_frr(real, 0.05)
    assert (real >= t).mean() <= 0.05 and (real >= np.nextafter(t, 0) - 0.003).mean() > 0.04
    scores = np.r_[real, np.full(50, 0.9)]
    labels = np.r_[np.zeros(200, int), np.ones(50, int)]
    m = detector_metrics(scores, labels, 0.01)
    assert m["auc"] == 1.0 and m["synthetic_caught"] == 1.0 and m["frr"] <= 0.01


def test_synthetic_folders_are_grouped_and_a_foreign_manifest_is_refused(tmp_path):
    from builders import face_jpeg

    from faceid.synthetic.detector_data import scan_synthetic

    (tmp_path / "flat").mkdir()
    for k in range(3):
        (tmp_path / "flat" / f"{k}.jpg").write_bytes(face_jpeg(k, 0))
    for who in ("a", "b"):
        (tmp_path / "flat" / who).mkdir()
        for k in range(2):
            (tmp_path / "flat" / who / f"{k}.jpg").write_bytes(face_jpeg(k, 1))
    source = scan_synthetic(tmp_path / "flat")
    assert source.groups == [0, 1, 2, 3, 3, 4, 4]  # three loose images, then one group per subfolder
    (tmp_path / "flat" / "manifest.json").write_text(json.dumps({"format": "faceid-generated-faces",
                                                                  "faces": [{"file": "../../etc/passwd"}]}))  # fmt: skip
    with pytest.raises(FaceIDError, match="not a manifest written by generate_faces.py"):
        scan_synthetic(tmp_path / "flat")


@pytest.fixture(scope="module")
def detector(shared_data, stand_in, module_tmp) -> Path:
    """An early GAN (a few steps), 160 of its faces, and a detector trained on them and on pins90 faces."""
    pins90 = shared_data / "recordio" / "pins90_112x112"
    gan = GanConfig(
        data=str(pins90), out=str(module_tmp / "gan"), epochs=1, batch_size=16, width=8, max_images=2,
        limit_steps=4, quality_samples=0, workers=0,
    )  # fmt: skip
    GanRun(gan).run()
    generate_faces(module_tmp / "gan" / GAN_FINAL, 160, module_tmp / "fakes", device="cpu")
    cfg = DetectorConfig(
        real=str(pins90), synthetic=[str(module_tmp / "fakes")], out=str(module_tmp / "detector"),
        weights=str(stand_in), freeze_backbone=True, input_size=80, epochs=1, batch_size=32, lr=1e-2,
        max_images=2, workers=0, device="cpu",
    )  # fmt: skip
    assert DetectorRun(cfg).run() == 0
    return module_tmp / "detector" / DETECTOR_BEST


@pytest.mark.e2e
def test_the_detector_separates_held_out_real_and_generated_faces(detector):
    ckpt = read_detector_checkpoint(detector)
    val = ckpt.metrics
    assert val["real"] >= 30 and val["synthetic"] >= 30  # unseen people, unseen generated faces
    assert val["accuracy"] >= 0.9, val
    assert val["auc"] >= 0.95, val
    assert 0 < ckpt.threshold <= 1 and ckpt.threshold == val["threshold"]
    assert ckpt.trained_on["synthetic"][0]["kind"] == "generate_faces.py"
    history = json.loads((detector.parent / "history.json").read_text())
    assert history[0]["val"]["accuracy"] == val["accuracy"]
    assert (detector.parent / "curves_detector.png").stat().st_size > 1000


@pytest.mark.e2e
def test_a_damaged_detector_file_is_one_sentence(detector, tmp_path):
    raw = torch.load(detector, weights_only=True)
    raw["threshold"] = 7.0  # a threshold no score reaches would let every generated face through
    bad = tmp_path / "bad.pth"
    torch.save(raw, bad)
    with pytest.raises(FaceIDError, match="threshold"):
        load_synthetic_detector(bad)
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(FaceIDError, match="corrupt"):
        load_synthetic_detector(tmp_path / "junk.pth")


@pytest.mark.e2e
def test_a_resumed_detector_run_ends_bit_for_bit_where_an_uninterrupted_one_does(detector, stand_in, tmp_path):
    trained = read_detector_checkpoint(detector).training
    assert trained is not None
    base = {**trained["config"], "epochs": 2, "limit_steps": 2}
    DetectorRun(DetectorConfig(**{**base, "out": str(tmp_path / "whole")})).run()
    DetectorRun(DetectorConfig(**{**base, "out": str(tmp_path / "parts"), "epochs": 1})).run()
    DetectorRun.resume(tmp_path / "parts" / DETECTOR_LAST, epochs=2).run()
    whole, parts = (read_detector_checkpoint(tmp_path / p / DETECTOR_FINAL) for p in ("whole", "parts"))
    assert all(torch.equal(whole.model[k], parts.model[k]) for k in whole.model)
    assert whole.metrics == parts.metrics


def run_app(*argv) -> tuple[int, dict, str]:
    proc = subprocess.run(
        [sys.executable, str(REPO / "faceid_app.py"), *map(str, argv), "--json"],
        capture_output=True, text=True, cwd=REPO, timeout=600,
    )  # fmt: skip
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, (proc.stdout, proc.stderr[-2000:])
    return proc.returncode, json.loads(lines[0]), proc.stderr


@pytest.mark.e2e
def test_the_app_accepts_a_real_clip_and_refuses_what_the_detector_flags(detector, shared_data, stand_in, tmp_path):
    clip = shared_data / "videos" / "d18.mp4"
    common = [
        "--data-dir", tmp_path / "g", "--weights", stand_in, "--crop", "aligned5", "--offline", "--no-preview",
        "--samples", "2", "--sample-gap", "8", "--max-frames", "60",
    ]  # fmt: skip
    code, out, _ = run_app(*common, "--source", clip, "--synthetic-detector", detector, "register", "--name", "d18")
    assert code == 0 and out["registered"], out
    assert out["synthetic"]["flagged"] is False and out["synthetic"]["score"] < out["synthetic"]["threshold"]

    # the same detector at threshold 0 flags every face: register refuses (exit 1), --allow-synthetic overrides
    raw = torch.load(detector, weights_only=True)
    raw["threshold"] = 0.0
    strict = tmp_path / "strict.pth"
    torch.save(raw, strict)
    code, out, err = run_app(*common, "--source", clip, "--synthetic-detector", strict, "register", "--name", "x")
    assert code == 1 and out["ok"] is False and out["registered"] is False and out["refused"] == "synthetic"
    assert out["synthetic"]["flagged"] is True and "looks generated" in err
    code, out, _ = run_app(
        *common, "--source", clip, "--synthetic-detector", strict, "--allow-synthetic", "register", "--name", "x"
    )
    assert code == 0 and out["registered"] and out["synthetic"]["flagged"] is True
    # verify reports the score; --reject-synthetic refuses instead of deciding
    code, out, _ = run_app(
        *common, "--source", clip, "--start-frame", "100", "--synthetic-detector", strict, "--reject-synthetic",
        "verify", "--name", "d18",
    )  # fmt: skip
    assert code == 1 and out["refused"] == "synthetic" and "match" not in out

    # an early GAN's face is no face to MTCNN: refused before the detector is asked (exit 2, one sentence)
    fake = sorted((detector.parents[1] / "fakes").glob("face_*.png"))[0]
    code, out, _ = run_app(*common, "--source", fake, "--synthetic-detector", detector, "register", "--name", "fake")
    assert code == 2 and "no face" in out["error"], out
