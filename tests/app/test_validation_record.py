"""Thresholds a model's own numbers contradict are refused (issue 23, case 3), through the app as a user runs it.

A real checkpoint of the stand-in weights carrying its validation record (single-image pairs of 24 pins90 people
scored with it, as training stores them), a gallery holding one person (so the gallery's own pairs cannot object),
and a hand-made ``--calibration`` table tied to the checkpoint's printed fingerprint whose impostor scores sit just
above 0. Before the record, the stranger was a MATCH "calibrated on hand-made table"; a table of impostors at -0.99
inside the checkpoint was a MATCH too.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from faceid.model.calibration import Calibration, write_calibration_file
from faceid.model.checkpoint import Checkpoint, save_checkpoint
from faceid.model.preprocessing import ALIGNED_SPEC
from faceid.model.validation_record import validation_record

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
RNG = np.random.default_rng(11)


def pins90_record(shared_data: Path, stand_in: Path) -> dict:
    """Single-image pairs of 24 pins90 people (3 images each) scored with the stand-in: the validation record."""
    from faceid.core.decode import decode_image
    from faceid.data.recordio import RecordIOReader
    from faceid.model.embedder import load_embedder
    from faceid.model.preprocessing import crops_to_tensor, to_network_input

    crops, labels = [], []
    with RecordIOReader(shared_data / "recordio" / "pins90_112x112" / "train.rec") as reader:
        for key in reader.keys()[1:]:
            record = reader.read(key)
            label = int(np.asarray(record.label).reshape(-1)[0])
            if labels.count(label) < 3 and len(set(labels) | {label}) <= 24:
                crops.append(decode_image(record.payload, f"record {key}"))
                labels.append(label)
            if len(labels) == 72:
                break
    embedder = load_embedder(weights=stand_in, crop="aligned5", device="cpu", download=False)
    emb = embedder.embed_batch(to_network_input(crops_to_tensor(crops), ALIGNED_SPEC)).numpy()
    i, j = np.triu_indices(len(emb), k=1)
    same = np.asarray(labels)[i] == np.asarray(labels)[j]
    record = validation_record((emb[i] * emb[j]).sum(1), same, "held-out people's")
    assert record is not None and record.impostors > 2000
    return record.to_dict()


@pytest.fixture(scope="module")
def models(module_tmp, shared_data, stand_in) -> dict[str, Path]:
    weights = {k: v.float() for k, v in torch.load(stand_in, weights_only=True).items()}
    record = pins90_record(shared_data, stand_in)
    forged = Calibration.from_scores(RNG.uniform(0.5, 1, 200), RNG.uniform(-1, -0.98, 20_000), 5, 3, "hand-made")
    out = {}
    for name, fields in {
        "plain": {},
        "recorded": {"validation": record},
        "lying": {"validation": record, "calibration": forged.to_dict()},
    }.items():
        out[name] = module_tmp / f"{name}.pth"
        save_checkpoint(
            out[name], Checkpoint(model=weights, preprocess=ALIGNED_SPEC.to_dict(), threshold=0.5, **fields)
        )
    return out


def app(*argv) -> tuple[int, dict]:
    res = subprocess.run(
        [sys.executable, str(REPO / "faceid_app.py"), *map(str, argv), "--json"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    lines = [line for line in res.stdout.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr[-2000:]
    return res.returncode, json.loads(lines[0])


def test_a_table_the_models_validation_record_contradicts_is_refused(module_tmp, shared_data, models):
    photos = shared_data / "photos" / "face_recognition"
    data = module_tmp / "gallery"
    common = ["--data-dir", data, "--no-preview", "--offline", "--samples", "1", "--probe-samples", "1"]
    code, reg = app(
        *common, "--model", models["plain"], "--source", photos / "obama.jpg", "register", "--name", "obama"
    )
    assert code == 0, reg
    fingerprint = reg["model"]["fingerprint"]
    forged = Calibration.from_scores(RNG.uniform(0.5, 1, 200), RNG.uniform(0.0, 0.05, 20_000), 5, 3, "hand-made table")
    table = module_tmp / "forged.cal.json"
    write_calibration_file(table, forged, fingerprint)  # needs only the fingerprint, which the app prints
    stranger = ["--source", photos / "biden.jpg", "--calibration", table, "verify", "--name", "obama"]
    # without a record (what every checkpoint was before): the stranger is a MATCH, "calibrated on hand-made table"
    code, before = app(*common, "--model", models["plain"], *stranger)
    assert code == 0 and before["match"] and "calibrated on hand-made table" in before["threshold_text"], before
    # the same weights with their validation record: refused, one sentence, exit 2
    code, after = app(*common, "--model", models["recorded"], *stranger)
    assert code == 2 and after["ok"] is False, after
    assert "contradicted by the model's own validation record" in after["error"], after
    assert "held-out people's pairs scored in training" in after["error"] and after["error"].count(". ") == 0
    # a real table for the same model passes: the record refuses only what contradicts it
    honest = module_tmp / "honest.cal.json"
    write_calibration_file(honest, Calibration.from_dict(json.loads(json.dumps(_record(models)))), fingerprint)
    code, fine = app(*common, "--model", models["recorded"], *stranger[:2], "--calibration", honest, *stranger[4:])
    assert code in (0, 1) and fine["threshold_source"] in ("table", "gallery"), fine
    # impostors at -0.99 inside the checkpoint itself: the table contradicts itself at load
    code, lying = app(
        *common, "--model", models["lying"], "--source", photos / "biden.jpg", "verify", "--name", "obama"
    )
    assert code == 2 and "contradicts itself: the highest of its 20,000 impostor scores is -0.98" in lying["error"]


def _record(models: dict[str, Path]) -> dict:
    return torch.load(models["recorded"], weights_only=True)["validation"]
