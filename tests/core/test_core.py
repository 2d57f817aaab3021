"""Shared core: atomic writes, the preprocessing spec, weights resolution, checkpoints, the face pipeline."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from shared_paths import STAND_IN

from faceid.core.errors import FaceIDError
from faceid.core.fileio import atomic_write, atomic_write_json, sha256_file
from faceid.model.checkpoint import Checkpoint, load_checkpoint, read_state_dict, save_checkpoint
from faceid.model.embedder import load_embedder, optimized_for_cpu
from faceid.model.network import WEIGHTS_ENV, build_backbone, load_backbone_weights, resolve_weights
from faceid.model.preprocessing import (
    ALIGNED_SPEC,
    ARCFACE_TEMPLATE_112,
    PreprocessSpec,
    align_five_points,
    box_crop,
    to_network_input,
)

REPO = Path(__file__).resolve().parents[2]


def test_atomic_write_keeps_old_file_when_writer_fails(tmp_path):
    target = tmp_path / "report.json"
    atomic_write_json(target, {"v": 1})

    def explode(f):
        f.write(b"half")
        raise RuntimeError("disk gone")

    with pytest.raises(RuntimeError):
        atomic_write(target, explode)
    assert target.read_text().strip().startswith("{") and '"v": 1' in target.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"], "temp file left behind"
    assert len(sha256_file(target)) == 64


def test_alignment_maps_landmarks_onto_template():
    """Draw five dots where a rotated, scaled face would have them; after alignment they sit on the template."""
    rng = np.random.default_rng(0)
    angle, scale, shift = np.deg2rad(12), 2.3, np.array([140.0, 90.0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    landmarks = ARCFACE_TEMPLATE_112 @ rot.T + shift
    image = np.zeros((480, 640, 3), np.uint8)
    image[:] = rng.integers(0, 30, size=3, dtype=np.uint8)
    for x, y in landmarks:
        cv2.circle(image, (int(round(x)), int(round(y))), 4, (255, 255, 255), -1)
    aligned = align_five_points(image, landmarks)
    assert aligned.shape == (112, 112, 3)
    for x, y in ARCFACE_TEMPLATE_112:
        assert aligned[int(round(y)), int(round(x))].min() > 200, "landmark not at its template position"


def test_box_crop_and_network_input_ranges():
    image = np.full((300, 400, 3), 200, np.uint8)
    crop = box_crop(image, np.array([50, 40, 250, 260]), size=160, margin=20)
    assert crop.shape == (160, 160, 3)
    x = to_network_input(torch.from_numpy(np.stack([crop, crop])), PreprocessSpec(crop="box"))
    assert x.shape == (2, 3, 160, 160) and x.dtype == torch.float32
    assert torch.allclose(x, torch.full_like(x, (200 - 127.5) / 128))
    small = to_network_input(torch.zeros(1, 3, 112, 112, dtype=torch.uint8), ALIGNED_SPEC)
    assert small.shape == (1, 3, 160, 160) and float(small.min()) == pytest.approx(-127.5 / 128)


def test_spec_rejects_unknown_crop_and_round_trips():
    with pytest.raises(FaceIDError):
        PreprocessSpec(crop="tight")
    assert PreprocessSpec.from_dict(ALIGNED_SPEC.to_dict()) == ALIGNED_SPEC


def test_offline_without_weights_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(FaceIDError, match="give its path") as err:
        resolve_weights(None, download=False)
    assert "--" not in str(err.value) and err.value.settings == ("weights", "from_scratch")
    with pytest.raises(FaceIDError, match="does not exist"):
        resolve_weights(tmp_path / "nope.pt")
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path / "also-missing.pt"))
    with pytest.raises(FaceIDError, match=WEIGHTS_ENV):
        resolve_weights(None)


def test_bad_weights_files_are_refused(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(FaceIDError, match="Cannot read weights"):
        read_state_dict(junk)
    wrong = tmp_path / "wrong.pt"
    torch.save({"fc.weight": torch.zeros(2, 2)}, wrong)
    with pytest.raises(FaceIDError, match="does not fit InceptionResnetV1"):
        load_backbone_weights(build_backbone(), read_state_dict(wrong), str(wrong))


@pytest.mark.e2e
def test_checkpoint_round_trip_and_corruption(tmp_path):
    model = build_backbone()
    path = tmp_path / "best_face_model.pth"
    save_checkpoint(path, Checkpoint(model=model.state_dict(), preprocess=ALIGNED_SPEC.to_dict(), threshold=0.42))
    embedder = load_embedder(model_path=path, device="cpu")
    assert embedder.threshold == pytest.approx(0.42) and embedder.threshold_calibrated
    assert embedder.spec == ALIGNED_SPEC and len(embedder.fingerprint) == 16
    plain = embedder.with_flip(False)  # a new embedder: the original (and its fingerprint) stay as they were
    assert not plain.spec.flip and embedder.spec.flip and plain.fingerprint != embedder.fingerprint
    assert plain.model is embedder.model and embedder.with_flip(True) is embedder
    x = to_network_input(torch.randint(0, 256, (3, 112, 112, 3), dtype=torch.uint8), embedder.spec)
    emb = embedder.embed_batch(x)
    assert emb.shape == (3, 512) and torch.allclose(emb.norm(dim=1), torch.ones(3), atol=1e-5)
    traced, note = optimized_for_cpu(embedder)  # a new embedder: whoever holds `embedder` keeps the eager one
    assert note == "network: traced and frozen for CPU" and isinstance(traced.model, torch.jit.ScriptModule)
    assert not isinstance(embedder.model, torch.jit.ScriptModule) and traced.fingerprint == embedder.fingerprint
    assert torch.allclose(traced.embed_batch(x), emb, atol=1e-4)
    assert optimized_for_cpu(traced)[0] is traced  # already traced: nothing to do

    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(FaceIDError, match="corrupt"):
        load_checkpoint(truncated)
    plain = tmp_path / "plain.pth"
    torch.save(model.state_dict(), plain)
    with pytest.raises(FaceIDError, match="not a faceid checkpoint"):
        load_checkpoint(plain)


@pytest.mark.e2e
def test_a_failed_checkpoint_write_is_one_sentence_and_keeps_the_old_file(tmp_path):
    """A real failed write: the process may write only 2 MB per file (RLIMIT_FSIZE, as a full disk would stop
    it). torch alone says "unexpected pos ..."; the user gets the OS's reason, and the earlier file is whole."""
    old = tmp_path / "last_face_model.pth"
    save_checkpoint(old, Checkpoint(model={"w": torch.zeros(4)}, preprocess=ALIGNED_SPEC.to_dict()))
    before = old.read_bytes()
    script = (
        "import resource, signal, sys, torch\n"
        "from faceid.model.checkpoint import Checkpoint, save_checkpoint\n"
        "from faceid.core.errors import FaceIDError\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (2_000_000, 2_000_000))\n"
        "try:\n"
        "    save_checkpoint(sys.argv[1], Checkpoint(model={'w': torch.zeros(1_000_000)}, preprocess={}))\n"
        "except FaceIDError as err:\n"
        "    print(err)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(old)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    assert out.stdout.startswith(f"Cannot write the checkpoint {old}: File too large (") and "unchanged" in out.stdout
    assert old.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == [old.name]  # no temp file left


def test_checkpoint_with_code_is_not_executed(tmp_path):
    """A pickle that would call os.system must be refused by weights_only loading, not run."""
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pth"
    torch.save({"format": "faceid-checkpoint", "evil": Evil()}, path)
    with pytest.raises(FaceIDError):
        load_checkpoint(path)
    assert not marker.exists()


@pytest.mark.skipif(not STAND_IN.is_file(), reason=f"stand-in weights not found at {STAND_IN}")
@pytest.mark.e2e
def test_pipeline_recognises_the_same_person_across_a_clip():
    """Real frames through MTCNN, alignment and the stand-in network: same clip scores above other clips."""
    from faceid.model.face import FacePipeline

    videos = STAND_IN.parents[1] / "data" / "videos"
    if not videos.is_dir():
        pytest.skip(f"shared videos not found at {videos}")
    pipeline = FacePipeline(load_embedder(weights=STAND_IN, crop="aligned5", download=False, device="cpu"))

    def embeddings(clip, frame_ids):
        cap = cv2.VideoCapture(str(videos / f"{clip}.mp4"))
        out, i = [], 0
        while len(out) < len(frame_ids):
            ok, frame = cap.read()
            assert ok, f"{clip} ended early"
            if i in frame_ids:
                result = pipeline.analyze(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
                assert result.embedding is not None, result.notes
                out.append(result.embedding)
            i += 1
        return np.stack(out)

    a_early, a_late, b = embeddings("d0", {5, 15}), embeddings("d0", {60, 70}), embeddings("d10", {5, 60})
    same = float((a_early @ a_late.T).mean())
    other = float((a_early @ b.T).mean())
    assert same > other + 0.2, (same, other)


@pytest.mark.e2e
def test_script_entry_points_exist_and_show_help():
    """Every top-level script answers --help with exit 0 (argparse documents each flag with its default)."""
    for script in (
        "download_dataset.py",
        "preprocess_dataset.py",
        "train_model.py",
        "continue_training.py",
        "faceid_app.py",
        "evaluate_model.py",
        "train_gan.py",
        "generate_faces.py",
        "train_detector.py",
    ):
        proc = subprocess.run([sys.executable, script, "--help"], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, (script, proc.stderr[-500:])
        assert "default" in proc.stdout.lower(), f"{script} --help does not state defaults"
