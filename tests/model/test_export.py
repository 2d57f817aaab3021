"""Export: the slim inference checkpoint, the ONNX file, and the app's onnxruntime embedder.

The ONNX check runs on real aligned faces (pins90 train.rec) through the stand-in weights: onnxruntime's
embedding of every crop must match torch's at cosine >= 0.9999.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from shared_paths import STAND_IN

from faceid.core.decode import DecodeError, decode_image
from faceid.core.errors import FaceIDError
from faceid.model.checkpoint import (
    INFERENCE_KEYS,
    INFERENCE_KIND,
    Checkpoint,
    TrainingState,
    load_checkpoint,
    read_state_dict,
    save_checkpoint,
    save_inference_checkpoint,
)
from faceid.model.embedder import load_embedder
from faceid.model.network import build_backbone
from faceid.model.preprocessing import ALIGNED_SPEC, crops_to_tensor, to_network_input

REPO = Path(__file__).resolve().parents[2]
N_CROPS = 24


def _full_checkpoint(weights: Path) -> Checkpoint:
    """A training checkpoint as the trainer writes one: backbone, head, optimizer state, calibration."""
    model = build_backbone()
    model.load_state_dict(read_state_dict(weights))
    head = torch.nn.Linear(512, 90)
    opt = torch.optim.AdamW(list(model.parameters()) + list(head.parameters()))
    model(torch.zeros(2, 3, 160, 160)).sum().backward()
    opt.step()
    training = TrainingState(
        head=head.state_dict(),
        head_config={"name": "softmax"},
        optimizer=opt.state_dict(),
        scheduler={},
        scaler={},
        precision="fp32",
        epoch=3,
        step=30,
        step_in_epoch=0,
        phase={"index": 0, "start_epoch": 0, "end_epoch": 3, "lr": 1e-4},
        world_size=1,
        rng=[],
        config={},
        metrics={},
        history=[{"epoch": 1}],
        best={},
        label_map=[f"id{i}" for i in range(90)],
        progress={},
    )
    return Checkpoint(
        model=model.state_dict(),
        preprocess=ALIGNED_SPEC.to_dict(),
        threshold=0.3125,
        threshold_info={"threshold": 0.3125, "target_far": 1e-3, "source": "heldout"},
        kind="best",
        training=training,
    )


@pytest.mark.e2e
def test_inference_checkpoint_is_slim_and_loads_like_the_full_one(tmp_path, stand_in):
    full = _full_checkpoint(stand_in)
    save_checkpoint(tmp_path / "full.pth", full)
    save_inference_checkpoint(tmp_path / "slim.pth", full)
    slim = load_checkpoint(tmp_path / "slim.pth")
    assert slim.kind == INFERENCE_KIND and slim.training is None
    raw = torch.load(tmp_path / "slim.pth", weights_only=True)
    assert set(raw) == {"format", "version", "kind", "network", "model", "preprocess", "threshold", "threshold_info"}
    assert raw["network"] == "inception_resnet_v1"  # which registered network the weights are for
    assert set(raw) <= {"format", "version", "kind", *INFERENCE_KEYS}
    assert (tmp_path / "slim.pth").stat().st_size < 0.4 * (tmp_path / "full.pth").stat().st_size
    a, b = (load_embedder(model_path=tmp_path / n, device="cpu") for n in ("full.pth", "slim.pth"))
    assert a.fingerprint == b.fingerprint, "templates registered with the full checkpoint must stay valid"
    assert (a.threshold, a.spec) == (b.threshold, b.spec) == (0.3125, ALIGNED_SPEC) and b.threshold_calibrated
    x = to_network_input(torch.randint(0, 256, (2, 112, 112, 3), dtype=torch.uint8), ALIGNED_SPEC)
    assert torch.equal(a.embed_batch(x), b.embed_batch(x))
    with pytest.raises(FaceIDError, match="field 'preprocess' is missing"):
        Checkpoint.from_dict({"format": "faceid-checkpoint", "model": full.model})


def _real_crops(shared: Path, n: int) -> list[np.ndarray]:
    from faceid.data.recordio import RecordIOReader

    rec = shared / "recordio" / "pins90_112x112" / "train.rec"
    with RecordIOReader(rec) as reader:
        keys = reader.keys()[1:]
        step = max(1, len(keys) // (n + 10))
        crops = []
        for key in keys[::step]:
            payload = reader.read(key).payload
            try:
                crops.append(decode_image(payload, f"record {key}"))
            except DecodeError:
                continue
            if len(crops) == n:
                return crops
    raise AssertionError("too few decodable images in pins90 train.rec")


@pytest.mark.e2e
def test_onnx_embeddings_match_torch_on_real_crops(exported, shared_data):
    from faceid.model.export import MATCH_COSINE
    from faceid.model.onnx_model import load_onnx_embedder

    out, report = exported
    assert report["onnx"]["min_cosine_vs_torch"] >= MATCH_COSINE
    torch_embedder = load_embedder(weights=STAND_IN, crop="aligned5", device="cpu", download=False)
    onnx_embedder = load_onnx_embedder(out / "m.onnx")
    assert onnx_embedder.runtime == "onnx" and onnx_embedder.model is None
    # its own fingerprint, computed from its graph and weights (BatchNorm folded into them), as the export reports
    assert onnx_embedder.fingerprint == report["onnx"]["fingerprint"] != torch_embedder.fingerprint
    assert onnx_embedder.spec == torch_embedder.spec and not onnx_embedder.threshold_calibrated
    x = to_network_input(crops_to_tensor(_real_crops(shared_data, N_CROPS)), ALIGNED_SPEC)
    ref = torch_embedder.embed_batch(x).numpy()
    for batch in (x, x[:1]):  # the batch dimension is dynamic
        got = onnx_embedder.embed_batch(batch).numpy()
        assert got.shape == (len(batch), 512)
        cos = (got * ref[: len(batch)]).sum(axis=1)
        assert cos.min() >= MATCH_COSINE, f"crop {int(cos.argmin())}: cosine {cos.min():.6f}"
    # the test can fail: a different network's embeddings do not match
    other = load_onnx_embedder(out / "m.onnx").embed_batch(x.flip(dims=[3]) * 0.5).numpy()
    assert ((other * ref).sum(axis=1) < MATCH_COSINE).all()
    slim = load_embedder(model_path=out / "m.pth", device="cpu")
    assert slim.fingerprint == torch_embedder.fingerprint


def test_onnx_file_metadata_and_hostile_files(exported, tmp_path):
    import onnxruntime as ort

    from faceid.model.onnx_model import load_onnx_embedder

    out, _ = exported
    session = ort.InferenceSession(str(out / "m.onnx"), providers=["CPUExecutionProvider"])
    (inp,), outputs = session.get_inputs(), session.get_outputs()
    assert inp.name == "input" and inp.type == "tensor(float)" and inp.shape[1:] == [3, 160, 160]
    assert isinstance(inp.shape[0], str), "batch dimension must be dynamic"
    assert [o.name for o in outputs] == ["embedding"] and outputs[0].shape[1:] == [512]
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["faceid.preprocess"]) == ALIGNED_SPEC.to_dict()
    assert json.loads(meta["faceid.threshold"]) is None
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x08\x07not an onnx model" * 10)
    with pytest.raises(FaceIDError, match="not a usable ONNX model"):
        load_onnx_embedder(junk)
    with pytest.raises(FaceIDError, match="The ONNX model .*missing.onnx does not exist"):
        load_onnx_embedder(tmp_path / "missing.onnx")


def _app_json(*argv) -> tuple[int, dict]:
    """The app in a subprocess, as a user runs it: (exit code, its one JSON line)."""
    result = subprocess.run(
        [sys.executable, str(REPO / "faceid_app.py"), *map(str, argv), "--json"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr[-2000:]
    return result.returncode, json.loads(lines[0])


@pytest.mark.e2e
def test_app_runs_on_onnx_with_a_gallery_reenrolled_from_torch(exported, shared_data, tmp_path):
    out, _ = exported
    clip = shared_data / "videos" / "d18.mp4"
    common = ["--data-dir", tmp_path / "gallery", "--no-preview", "--offline", "--sample-gap", "8", "--source", clip]
    code, reg = _app_json(
        *common,
        "--weights",
        STAND_IN,
        "--crop",
        "aligned5",
        "--runtime",
        "torch",
        "--samples",
        "3",
        "--max-frames",
        108,
        "register",
        "--name",
        "d18",
    )
    assert code == 0 and reg["model"]["runtime"] == "torch", reg
    probe = ["--start-frame", 108, "--probe-samples", "1", "--threshold", "0.5"]
    code, on_torch = _app_json(*common, *probe, "--weights", STAND_IN, "--crop", "aligned5", "verify", "--name", "d18")
    # the ONNX file's fingerprint is its own (computed from its graph and weights, never read from its metadata):
    # templates of the torch network are refused until reenroll recomputes them from the stored crops
    code_onnx, refused = _app_json(*common, *probe, "--model", out / "m.onnx", "verify", "--name", "d18")
    assert code == 0 and code_onnx == 2 and "was registered with another model" in refused["error"], refused
    code_re, moved = _app_json("--data-dir", tmp_path / "gallery", "--offline", "--model", out / "m.onnx", "reenroll")
    assert code_re == 0, moved
    code_onnx, on_onnx = _app_json(*common, *probe, "--model", out / "m.onnx", "verify", "--name", "d18")
    assert code_onnx == 0 and on_onnx["model"]["runtime"] == "onnx", on_onnx
    assert on_onnx["model"]["fingerprint"] != reg["model"]["fingerprint"]
    # reenroll embeds the stored crops (JPEG), not the frames register saw: the score moves by that (0.008 here)
    assert abs(on_onnx["score"] - on_torch["score"]) < 0.03, (on_onnx["score"], on_torch["score"])
    # the slim checkpoint finds its export beside it: auto picks onnxruntime, --runtime torch keeps torch
    code, auto = _app_json(*common, *probe, "--model", out / "m.pth", "verify", "--name", "d18")
    assert code == 0 and auto["model"]["runtime"] == "onnx" and abs(auto["score"] - on_onnx["score"]) < 1e-4
    code, err = _app_json(*common, *probe, "--model", out / "m.onnx", "--runtime", "torch", "verify", "--name", "d18")
    assert code == 2 and "runs on the onnx runtime" in err["error"] and "(--runtime, --model)" in err["error"]


@pytest.mark.e2e
def test_runtime_choice_without_an_export(tmp_path, stand_in):
    from faceid.model.runtime import choose_runtime

    full = tmp_path / "best.pth"
    save_checkpoint(full, _full_checkpoint(stand_in))
    embedder, note = choose_runtime(full, None, None, "cpu", download=False)
    assert embedder.runtime == "torch" and "no ONNX export beside" in note
    with pytest.raises(FaceIDError, match="No ONNX export beside .*export_model.py --model"):
        choose_runtime(full, None, None, "cpu", download=False, runtime="onnx")
    with pytest.raises(FaceIDError, match="needs an exported model"):
        choose_runtime(None, stand_in, "aligned5", "cpu", download=False, runtime="onnx")
