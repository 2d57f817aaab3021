"""The DCGAN on real pins90 faces (../shared/data/recordio/pins90_112x112), on CPU at a tiny width: a run writes
a valid sample grid, curves, history and checkpoints; a resumed run ends bit for bit where an uninterrupted
one does; generate_faces.py writes the same PNGs for the same seeds and a manifest that names them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from faceid.core.decode import read_image_file
from faceid.core.errors import FaceIDError
from faceid.synthetic.frechet import frechet_distance
from faceid.synthetic.gan import Discriminator, Generator
from faceid.synthetic.gan_checkpoint import GAN_FINAL, GAN_LAST, load_gan_checkpoint
from faceid.synthetic.gan_config import GanConfig
from faceid.synthetic.gan_train import GanRun
from faceid.synthetic.generate import generate_faces

REPO = Path(__file__).resolve().parents[2]
TINY = dict(batch_size=8, width=8, max_images=2, limit_steps=3, grid=16, quality_samples=0, workers=0)


@pytest.fixture(scope="module")
def pins90(shared_data) -> Path:
    return shared_data / "recordio" / "pins90_112x112"


def tiny_config(pins90: Path, out: Path, **kw) -> GanConfig:
    return GanConfig(data=str(pins90), out=str(out), **{**TINY, **kw})


@pytest.mark.parametrize("side", [64, 112])
def test_networks_map_noise_to_images_and_images_to_one_logit(side):
    g, d = Generator(side, nz=16, width=8), Discriminator(side, width=8)
    x = g(torch.randn(3, 16))
    assert x.shape == (3, 3, side, side) and x.abs().max() <= 1
    assert d(x).shape == (3,)


def test_frechet_distance_is_zero_for_one_sample_and_grows_with_a_shift():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 8))
    assert abs(frechet_distance(a, a)) < 1e-9
    assert frechet_distance(a, a + 1.0) == pytest.approx(8.0, rel=1e-6)  # the means differ by 1 in 8 dimensions


@pytest.mark.e2e
def test_a_run_writes_a_grid_curves_history_and_checkpoints(pins90, tmp_path):
    assert GanRun(tiny_config(pins90, tmp_path, epochs=2)).run() == 0
    grid = read_image_file(tmp_path / "samples_epoch_002.png")
    assert grid.shape == (4 * 66 + 2, 4 * 66 + 2, 3)  # 16 tiles of 64 px, 2 px apart
    assert grid[2:66, 2:66].std() > 0  # a generated face, not blank
    assert (tmp_path / "curves_gan.png").stat().st_size > 1000
    history = json.loads((tmp_path / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2] and all(np.isfinite(h["loss_d"]) for h in history)
    final = load_gan_checkpoint(tmp_path / GAN_FINAL)
    assert final.epoch == 2 and final.step == 6 and final.kind == "final"


@pytest.mark.e2e
def test_a_resumed_run_ends_bit_for_bit_where_an_uninterrupted_one_does(pins90, tmp_path):
    GanRun(tiny_config(pins90, tmp_path / "whole", epochs=2)).run()
    GanRun(tiny_config(pins90, tmp_path / "parts", epochs=1)).run()
    GanRun.resume(tmp_path / "parts" / GAN_LAST, epochs=2).run()
    whole, parts = (load_gan_checkpoint(tmp_path / p / GAN_FINAL) for p in ("whole", "parts"))
    for name in ("generator", "discriminator"):
        a, b = getattr(whole, name), getattr(parts, name)
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert whole.history[-1]["loss_g"] == parts.history[-1]["loss_g"]


@pytest.mark.e2e
def test_the_quality_is_measured_with_the_recogniser(pins90, stand_in, tmp_path):
    cfg = tiny_config(pins90, tmp_path, epochs=1, quality_samples=24, quality_weights=str(stand_in))
    GanRun(cfg).run()
    record = json.loads((tmp_path / "history.json").read_text())[0]
    assert record["frechet"] > 0
    assert record["real_face_share"] >= 0.9  # MTCNN finds the real aligned faces at the generator's side
    assert 0 <= record["face_share"] <= 1


@pytest.mark.e2e
def test_generate_faces_is_reproducible_and_writes_a_manifest(pins90, tmp_path):
    GanRun(tiny_config(pins90, tmp_path / "run", epochs=1)).run()
    ckpt = tmp_path / "run" / GAN_FINAL
    first = generate_faces(ckpt, 5, tmp_path / "a", seed=10, device="cpu")
    generate_faces(ckpt, 3, tmp_path / "b", seed=12, device="cpu")  # seeds 12..14 again, another batch
    assert [f["seed"] for f in first["faces"]] == [10, 11, 12, 13, 14]
    for s in (12, 13, 14):
        name = f"face_{s:06d}.png"
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert read_image_file(tmp_path / "a" / "face_000010.png").shape == (64, 64, 3)
    assert read_image_file(tmp_path / "a" / "grid.png").shape[2] == 3
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["epoch"] == 1 and len(manifest["faces"]) == 5
    # a folder the program did not write is left alone
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "note.txt").write_text("keep me")
    with pytest.raises(FaceIDError, match="did not write"):
        generate_faces(ckpt, 2, tmp_path / "mine", device="cpu")
    assert (tmp_path / "mine" / "note.txt").read_text() == "keep me"


def test_a_damaged_checkpoint_is_one_sentence(tmp_path):
    bad = tmp_path / "gan.pth"
    bad.write_bytes(b"not a checkpoint")
    result = subprocess.run(
        [sys.executable, str(REPO / "generate_faces.py"), str(bad), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 2
    assert "corrupt or not a GAN checkpoint" in result.stderr and "Traceback" not in result.stderr
    torch.save({"format": "faceid-gan", "version": 1, "config": {"side": 63}}, bad)
    with pytest.raises(FaceIDError, match="side"):
        load_gan_checkpoint(bad)
