"""The trainer end to end on CPU with tiny data: outputs, exact resume, new phase, Ctrl-C, 2-process gloo, errors.

InceptionResnetV1 at 160x160 costs ~0.1-0.3 s per image forward+backward here, so every run uses a handful
of images, batch 2 and two steps per epoch; weights are random (--from-scratch) so no file is needed.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from builders import face_jpeg, make_folder_tree

from faceid.core.errors import EXIT_INTERRUPTED, FaceIDError
from faceid.model.calibration import Calibration
from faceid.model.checkpoint import load_checkpoint, save_checkpoint
from faceid.model.embedder import load_embedder
from faceid.train.config import TrainConfig
from faceid.train.recipe import StopFlag
from faceid.train.runlog import tensorboard_available
from faceid.train.trainer import BEST, FINAL, LAST, continue_training, train

REPO = Path(__file__).resolve().parents[2]
SLIM = "best_face_model_inference.pth"  # the slim inference checkpoint written beside best_face_model.pth
PY = sys.executable


@pytest.fixture(scope="module")
def tiny_data(module_tmp) -> Path:
    """5 people x 8 faces (2 held out for verification and calibration, 3 trained on) and an lfw.bin of 4 pairs
    beside them."""
    base = module_tmp / "data"
    base.mkdir()
    root = make_folder_tree(base / "faces", {f"person{i}": 8 for i in range(5)})
    images = [face_jpeg(10 + p // 2, p) for p in range(8)]  # pairs (0,1),(2,3) same person...
    images[5], images[7] = face_jpeg(20, 0), face_jpeg(21, 0)  # ...pairs 2 and 3 different people
    (base / "faces" / "lfw.bin").write_bytes(pickle.dumps((images, [True, True, False, False]), protocol=4))
    return root


def tiny_config(data: Path, out: Path, **kw) -> TrainConfig:
    base = dict(
        data=str(data),
        out=str(out),
        from_scratch=True,
        epochs=2,
        batch_size=2,
        limit_steps=2,
        workers=0,
        pairs=40,
        eval_batch_size=8,
        head="arcface",
        min_images=4,
        device="cpu",  # CPU tests stay on the CPU on a GPU machine too (the CUDA ones below say cuda)
    )
    return TrainConfig(**{**base, **kw})


class StopAt(StopFlag):
    """Acts like a Ctrl-C arriving during step `step`."""

    def __init__(self, step: int):
        super().__init__(enabled=False)
        self.at = step

    def poll(self, step: int) -> bool:
        return step >= self.at


def _plain(obj) -> bool:
    if isinstance(obj, torch.Tensor) or obj is None or isinstance(obj, (str, int, float, bool)):
        return True
    if isinstance(obj, (list, tuple)):
        return all(_plain(v) for v in obj)
    if isinstance(obj, dict):
        return all(isinstance(k, (str, int)) and _plain(v) for k, v in obj.items())
    return False


@pytest.fixture(scope="module")
def full_run(tiny_data, module_tmp) -> Path:
    torch.manual_seed(0)
    out = module_tmp / "full"
    out.mkdir()
    assert train(tiny_config(tiny_data, out), stop=StopFlag(enabled=False)) == 0
    return out


@pytest.mark.e2e
def test_tiny_run_writes_loadable_outputs(full_run):
    names = {p.name for p in full_run.iterdir()}
    assert {
        BEST,
        SLIM,
        FINAL,
        LAST,
        "label_map.json",
        "history.json",
        "train.log",
        "curves_loss.png",
        "curves_accuracy.png",
        "curves_verification.png",
    } <= names
    log = (full_run / "train.log").read_text(encoding="utf-8")
    assert "  data      " in log.splitlines()[0] and log.count("epoch 1: loss") == 1 and "training summary" in log
    # TensorBoard scalars only when the optional package is installed; without it nothing is written
    assert (full_run / "tensorboard").is_dir() == tensorboard_available()
    assert not [n for n in names if n.endswith(".tmp")]
    for name in (BEST, FINAL, LAST):
        raw = torch.load(full_run / name, weights_only=True)
        assert _plain(raw), f"{name} holds a non-plain object"
        assert isinstance(raw["threshold"], float) and raw["preprocess"]["crop"] == "aligned5"
        assert not any(k.startswith("logits.") for k in raw["model"])
        for key in ("head", "optimizer", "scheduler", "scaler", "epoch", "step", "rng", "config", "metrics"):
            assert key in raw
    ckpt = load_checkpoint(full_run / FINAL)
    state = ckpt.training
    assert state.epoch == 2 and state.step == 4 and ckpt.kind == "final"
    history = state.history
    assert [h["epoch"] for h in history] == [1, 2]
    assert {"closed_set", "heldout", "lfw", "calibration"} <= set(history[-1])
    assert history[-1]["lfw"]["pairs"] == 4 and history[-1]["heldout"]["impostor"] == 40
    # the table compares what the app compares, on the held-out people only: 2 people x 8 images give each
    # one template of 5 and one probe of 3, so 2 genuine and 2 impostor comparisons
    table = Calibration.from_dict(ckpt.calibration)
    assert not table.benchmark_data and table.impostors == 2 and (table.samples, table.probe_samples) == (5, 3)
    assert ckpt.threshold_info["source"].startswith("2 held-out identities") and not ckpt.threshold_info["resolved"]
    # the model's own validation record: the held-out pairs it scored (faceid/model/validation_record.py)
    record = Calibration.from_dict(ckpt.validation)
    assert record.impostors == 40 and (record.samples, record.probe_samples) == (1, 1) and "held-out" in record.source
    embedder = load_embedder(model_path=full_run / BEST, device="cpu")
    slim, best = load_checkpoint(full_run / SLIM), load_checkpoint(full_run / BEST)
    assert slim.kind == "inference" and slim.training is None and slim.calibration == best.calibration
    assert slim.validation == best.validation is not None
    assert load_embedder(model_path=full_run / SLIM, device="cpu").fingerprint == embedder.fingerprint
    assert embedder.threshold_calibrated and embedder.spec.size == 160


@pytest.mark.e2e
def test_interrupt_then_resume_matches_uninterrupted_run(tiny_data, full_run, tmp_path):
    torch.manual_seed(0)
    cfg = tiny_config(tiny_data, tmp_path, bins=False)  # validation never touches the training math or RNG
    assert train(cfg, stop=StopAt(3)) == EXIT_INTERRUPTED
    saved_ckpt = load_checkpoint(tmp_path / LAST)
    saved = saved_ckpt.training
    assert (saved_ckpt.kind, saved.epoch, saved.step, saved.step_in_epoch) == ("interrupted", 1, 3, 1)
    assert all(int(s["step"]) == 3 for s in saved.optimizer["state"].values())
    assert not (tmp_path / FINAL).exists()

    assert continue_training(tmp_path / LAST, stop=StopFlag(enabled=False)) == 0
    resumed_ckpt, reference_ckpt = load_checkpoint(tmp_path / FINAL), load_checkpoint(full_run / FINAL)
    resumed, reference = resumed_ckpt.training, reference_ckpt.training
    assert (resumed.epoch, resumed.step) == (reference.epoch, reference.step)
    for part, res, ref in (("model", resumed_ckpt.model, reference_ckpt.model), ("head", resumed.head, reference.head)):
        for k, v in ref.items():
            assert torch.allclose(res[k].float(), v.float(), atol=1e-6), f"{part}.{k} differs"
    ref_opt, res_opt = reference.optimizer["state"], resumed.optimizer["state"]
    assert all(torch.allclose(res_opt[i]["exp_avg"], ref_opt[i]["exp_avg"], atol=1e-7) for i in ref_opt)
    assert resumed.scheduler == reference.scheduler
    assert [round(h["train_loss"], 5) for h in resumed.history] == [
        round(h["train_loss"], 5) for h in reference.history
    ]

    # A new phase at a new LR (the seed's second phase): history continues, optimizer is fresh.
    assert (
        continue_training(
            tmp_path / FINAL,
            {"lr": 3e-5, "scheduler": "plateau", "epochs": 1, "limit_steps": 1},
            new_phase=True,
            stop=StopFlag(enabled=False),
        )
        == 0
    )
    phase = load_checkpoint(tmp_path / FINAL).training
    assert [h["phase"] for h in phase.history] == [0, 0, 1]
    assert phase.history[-1]["lr"] == pytest.approx(3e-5) and phase.step == 5
    assert phase.config["scheduler"] == "plateau" and phase.phase["index"] == 1 and phase.config["epochs"] == 1


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "FACEID_WEIGHTS": ""}


@pytest.mark.e2e
def test_sigint_leaves_a_resumable_checkpoint(tiny_data, tmp_path):
    cmd = [
        PY,
        "train_model.py",
        "--data",
        str(tiny_data),
        "--out",
        str(tmp_path),
        "--from-scratch",
        "--epochs",
        "1",
        "--batch-size",
        "2",
        "--workers",
        "1",
        "--min-images",
        "4",
        "--no-bins",
    ]
    proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    for line in proc.stdout:  # the header is printed once the handler is installed
        lines.append(line)
        if line.startswith("select"):
            break
    time.sleep(2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == EXIT_INTERRUPTED, err[-2000:]
    assert "Resume with: python continue_training.py --checkpoint" in out
    ckpt = load_checkpoint(tmp_path / LAST)
    state = ckpt.training
    assert ckpt.kind == "interrupted" and state.step >= 1 and state.epoch == 0
    assert state.step_in_epoch == state.step and state.optimizer["state"]


@pytest.mark.e2e
def test_two_process_gloo_run(tiny_data, tmp_path):
    cmd = [
        PY,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "train_model.py",
        "--data",
        str(tiny_data),
        "--out",
        str(tmp_path),
        "--from-scratch",
        "--epochs",
        "1",
        "--batch-size",
        "2",
        "--limit-steps",
        "1",
        "--workers",
        "0",
        "--min-images",
        "4",
        "--holdout-fraction",
        "0",
        "--no-bins",
        "--device",
        "cpu",
    ]
    res = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (
        res.stdout.count("training summary") == 1 and res.stdout.count("\ndata ") + res.stdout.startswith("data ") == 1
    )
    assert "batch 2 x 2 process(es)" in res.stdout
    state = load_checkpoint(tmp_path / FINAL).training
    assert state.world_size == 2 and len(state.rng) == 2  # both ranks took part
    assert not torch.equal(state.rng[0]["torch"], state.rng[1]["torch"])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [
            BEST,
            SLIM,
            FINAL,
            LAST,
            "label_map.json",
            "history.json",
            "train.log",
            "curves_loss.png",
            "curves_accuracy.png",
            "curves_verification.png",
        ]
    )


def _cli_error(args: list[str]) -> str:
    res = subprocess.run(
        [PY, "train_model.py", *args], cwd=REPO, env=_env(), capture_output=True, text=True, timeout=240
    )
    assert res.returncode == 2, res.stderr[-2000:]
    lines = [ln for ln in res.stderr.splitlines() if ln.strip() and "%|" not in ln]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr[-2000:]
    return lines[0]


@pytest.mark.e2e
def test_bad_data_is_one_sentence(tmp_path, tiny_data):
    assert "Training data not found" in _cli_error(["--data", str(tmp_path / "nowhere")])
    (tmp_path / "broken.rec").write_bytes(b"\0" * 64)
    assert "RecordIO" in _cli_error(["--data", str(tmp_path / "broken.rec")])
    bad = make_folder_tree(tmp_path / "bad", {"a": 5, "b": 5, "c": 5, "d": 5})
    for p in bad.rglob("*.jpg"):
        p.write_bytes(b"garbage, not a JPEG")
    msg = _cli_error(
        [
            "--data",
            str(bad),
            "--out",
            str(tmp_path / "o"),
            "--from-scratch",
            "--batch-size",
            "2",
            "--workers",
            "1",
            "--holdout-fraction",
            "0",
            "--val-fraction",
            "0",
            "--limit-steps",
            "2",
        ]
    )
    assert "Cannot decode" in msg and str(bad) in msg
    assert "contradict" in _cli_error(
        ["--data", str(tiny_data), "--from-scratch", "--weights", "x.pt", "--min-images", "4"]
    )


@pytest.mark.e2e
def test_a_checkpoint_whose_head_does_not_match_its_config_is_one_sentence(full_run, tmp_path):
    ckpt = load_checkpoint(full_run / FINAL)
    head = {k: v[:, :-1] if v.dim() == 2 else v for k, v in ckpt.training.head.items()}  # one column short
    save_checkpoint(
        tmp_path / LAST,
        replace(ckpt, kind="interrupted", training=replace(ckpt.training, head=head, step_in_epoch=1, epoch=1)),
    )
    with pytest.raises(FaceIDError, match="head does not match its own config"):
        continue_training(tmp_path / LAST, stop=StopFlag(enabled=False))


@pytest.mark.e2e
def test_bad_values_and_missing_gpu_are_one_sentence(tiny_data):
    base = ["--data", str(tiny_data), "--from-scratch", "--min-images", "4"]
    assert "workers must be 0 or more, got -1 (--workers)" in _cli_error([*base, "--workers", "-1"])
    assert "lr must be above 0, got -1.0 (--lr)" in _cli_error([*base, "--lr", "-1"])
    if not torch.cuda.is_available():
        assert "The device cuda needs a CUDA GPU" in _cli_error([*base, "--device", "cuda"])


def test_an_exact_resume_keeps_the_settings_that_change_results(full_run):
    for change in ({"decode": "cpu"}, {"limit_steps": 1}, {"deterministic": True}):
        with pytest.raises(FaceIDError, match="can only change in a new phase"):
            continue_training(full_run / LAST, change, stop=StopFlag(enabled=False))


@pytest.mark.e2e
def test_no_tuning_on_benchmark_data_without_the_flag(tiny_data, tmp_path):
    # no held-out people and an lfw.bin beside the data: selection would read the test set -> one sentence
    msg = _cli_error(
        [
            "--data",
            str(tiny_data),
            "--out",
            str(tmp_path / "o"),
            "--from-scratch",
            "--batch-size",
            "2",
            "--workers",
            "0",
            "--min-images",
            "4",
            "--holdout-fraction",
            "0",
            "--limit-steps",
            "1",
        ]
    )
    assert "benchmark lfw" in msg and msg.endswith("(--holdout-fraction, --select-set, --tune-on-benchmark).")
    msg = _cli_error(
        [
            "--data",
            str(tiny_data),
            "--out",
            str(tmp_path / "o"),
            "--from-scratch",
            "--batch-size",
            "2",
            "--workers",
            "0",
            "--min-images",
            "4",
            "--select-set",
            "lfw",
            "--limit-steps",
            "1",
        ]
    )
    assert "the selection set lfw is a benchmark file" in msg
    # with the flag the run goes through, and the checkpoint's table says it came from benchmark data
    assert (
        train(
            tiny_config(tiny_data, tmp_path / "b", holdout_fraction=0, tune_on_benchmark=True, epochs=1, limit_steps=1),
            stop=StopFlag(enabled=False),
        )
        == 0
    )
    table = Calibration.from_dict(load_checkpoint(tmp_path / "b" / BEST).calibration)
    assert table.benchmark_data and "ON BENCHMARK DATA" in table.threshold_for_far(1e-3).text


_RESUME_ON_CUDA = """
import sys
import torch
sys.path.insert(0, sys.argv[3])
from test_training import StopAt, tiny_config
from faceid.train.recipe import StopFlag
from faceid.train.trainer import LAST, continue_training, train
data, out = sys.argv[1], sys.argv[2]
for name, stop in (("reference", StopFlag(enabled=False)), ("resumed", StopAt(3))):
    torch.manual_seed(0)
    code = train(tiny_config(data, f"{out}/{name}", device="cuda", deterministic=True, bins=False), stop=stop)
    if name == "resumed":
        assert code == 130, code
        assert continue_training(f"{out}/{name}/{LAST}", stop=StopFlag(enabled=False)) == 0
"""


@pytest.mark.e2e
@pytest.mark.cuda
def test_exact_resume_on_cuda_is_bitwise(tiny_data, tmp_path):
    """On a GPU an exact resume needs --deterministic: by default cuDNN benchmarks kernels per shape and may pick
    others after the restart, so the CPU test's comparison would fail by rounding. With it (no benchmarking,
    deterministic algorithms, cuBLAS's fixed workspace set before the process's first GEMM: hence fresh
    processes) interrupted + resumed must equal uninterrupted bit for bit, nvJPEG decode and bf16 included."""
    res = subprocess.run(
        [PY, "-c", _RESUME_ON_CUDA, str(tiny_data), str(tmp_path), str(REPO / "tests" / "train")],
        cwd=REPO,
        env={**_env(), "PYTHONPATH": str(REPO / "tests")},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    resumed, reference = load_checkpoint(tmp_path / "resumed" / FINAL), load_checkpoint(tmp_path / "reference" / FINAL)
    assert resumed.training.step == reference.training.step == 4
    assert resumed.training.config["device"] == "cuda" and resumed.training.config["decode"] == "auto"
    for part, res_part, ref_part in (
        ("model", resumed.model, reference.model),
        ("head", resumed.training.head, reference.training.head),
    ):
        for k, v in ref_part.items():
            assert torch.equal(res_part[k], v), f"{part}.{k} differs"


@pytest.mark.e2e
@pytest.mark.cuda
def test_nvjpeg_fallback_is_counted_and_an_explicit_gpu_decode_refuses_it(tmp_path):
    """A PNG in a folder tree: --decode auto decodes it on the CPU and each epoch line counts it; --decode gpu
    stops with one sentence naming it."""
    import cv2
    import numpy as np

    root = make_folder_tree(tmp_path / "faces", {f"person{i}": 8 for i in range(5)})
    jpg = root / "person0" / "001.jpg"
    rgb = cv2.imdecode(np.frombuffer(jpg.read_bytes(), np.uint8), cv2.IMREAD_COLOR)
    (root / "person0" / "001.png").write_bytes(cv2.imencode(".png", rgb)[1].tobytes())
    jpg.unlink()
    base = dict(device="cuda", batch_size=8, limit_steps=None, epochs=1, holdout_fraction=0, val_fraction=0)
    with pytest.raises(FaceIDError, match=r"001\.png: it is not a JPEG, and --decode gpu"):
        train(tiny_config(root, tmp_path / "strict", decode="gpu", **base), stop=StopFlag(enabled=False))
    assert train(tiny_config(root, tmp_path / "auto", **base), stop=StopFlag(enabled=False)) == 0
    history = load_checkpoint(tmp_path / "auto" / FINAL).training.history
    assert history[-1]["cpu_decoded"] >= 1
    assert "images decoded on the CPU" in (tmp_path / "auto" / "train.log").read_text(encoding="utf-8")


@pytest.mark.e2e
def test_validation_every_k_epochs_and_a_time_limit(tiny_data, tmp_path):
    """--val-every 2: epochs 1 and 3 of 3 (the last is always validated) go without; --time-limit stops the
    run at a step boundary, validates that epoch and writes the final checkpoint."""
    cfg = tiny_config(tiny_data, tmp_path / "k", epochs=3, limit_steps=1, val_every=2, bins=False)
    assert train(cfg, stop=StopFlag(enabled=False)) == 0
    history = load_checkpoint(tmp_path / "k" / FINAL).training.history
    assert [("heldout" in h, h["epoch"]) for h in history] == [(False, 1), (True, 2), (True, 3)]
    assert load_checkpoint(tmp_path / "k" / BEST).training.epoch in (2, 3)  # chosen among validated epochs only

    cfg = tiny_config(tiny_data, tmp_path / "t", epochs=50, time_limit=0.001, val_every=10, bins=False)
    assert train(cfg, stop=StopFlag(enabled=False)) == 0
    final = load_checkpoint(tmp_path / "t" / FINAL).training
    assert final.epoch == 1 and final.step == 1 and "heldout" in final.history[-1]
    log = (tmp_path / "t" / "train.log").read_text(encoding="utf-8")
    assert "time limit of 0.001 minutes of training reached in epoch 1 of 50 (step 1)" in log
