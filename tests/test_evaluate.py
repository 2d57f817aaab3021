"""The evaluator end to end on real LFW images with the real pipeline and the stand-in weights (no mocks).

A small LFW-like tree in tmp: 18 real pairs from pairsDevTest plus a face-less uniform gray "person", so the
detector-miss rule runs. The embedding cache's second run must be much faster and give identical embeddings.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from faceid.embed_cache import EmbedCache, file_key
from faceid.errors import FaceIDError
from faceid.evaluate import (central_index, embed_items, evaluate_dataset, load_bin_dataset, load_faceid_backend,
                             load_pairs_dataset)
from faceid.verification import read_pairs

REPO = Path(__file__).resolve().parents[1]
STAND_IN = Path(os.environ.get("FACEID_SHARED_MODELS", REPO.parent / "shared" / "models")) / "pins90_scratch_irv1_fp16.pt"
GRAY = "Gray_Nobody"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"stand-in weights not found at {path}; set FACEID_SHARED_MODELS")
    return path


@pytest.fixture(scope="module")
def small_lfw(tmp_path_factory, shared_data) -> tuple[Path, Path]:
    """(pairs file, image root): 9 + 9 real pairs of pairsDevTest and 1 + 1 pairs with a face-less gray image."""
    lfw = shared_data / "lfw"
    root = tmp_path_factory.mktemp("lfw")
    pairs = read_pairs(lfw / "pairsDevTest.txt")
    same, diff = [p for p in pairs if p.same][:9], [p for p in pairs if not p.same][:9]
    for p in same + diff:
        for src in p.paths(lfw / "images"):
            dst = root / "images" / src.parent.name / src.name
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
    (root / "images" / GRAY).mkdir()
    for n in (1, 2):
        cv2.imwrite(str(root / "images" / GRAY / f"{GRAY}_{n:04d}.jpg"), np.full((250, 250, 3), 128, np.uint8))
    lines = ["10"] + [f"{p.name1}\t{p.num1}\t{p.num2}" for p in same] + [f"{GRAY}\t1\t2"]
    lines += [f"{p.name1}\t{p.num1}\t{p.name2}\t{p.num2}" for p in diff] + [f"{GRAY}\t1\t{same[0].name1}\t{same[0].num1}"]
    (root / "pairs.txt").write_text("\n".join(lines) + "\n")
    return root / "pairs.txt", root / "images"


@pytest.fixture(scope="module")
def backend():
    import torch

    torch.set_num_threads(1)  # faster than 2 on a shared 2-core machine; the result is the same
    return load_faceid_backend(weights=str(_need(STAND_IN)), crop="aligned5", device="cpu", batch_size=32)


def test_central_index_prefers_the_centred_face():
    big_corner = [0, 0, 120, 120]
    small_centre = [100, 100, 150, 150]
    assert central_index([big_corner, small_centre], 250, 250) == 1
    assert central_index([[90, 90, 160, 160], [100, 100, 150, 150]], 250, 250) == 0  # tie: the larger


def test_dataset_folds_and_limit(tmp_path, small_lfw):
    pairs, images = small_lfw
    ds = load_pairs_dataset(pairs, images)
    assert len(ds.labels) == 20 and ds.labels.sum() == 10 and len(ds.items) == len(set(ds.items))
    assert ds.describe["header"].startswith("View 1") and ds.describe["folds"] == 10
    sub = load_pairs_dataset(pairs, images, limit=6)
    assert sub.labels.tolist() == [True] * 3 + [False] * 3
    # a View 2 file keeps its own folds
    lines = pairs.read_text().splitlines()
    (tmp_path / "v2.txt").write_text("\n".join(["2\t5"] + lines[1:6] + lines[11:16] + lines[6:11] + lines[16:21]) + "\n")
    v2 = load_pairs_dataset(tmp_path / "v2.txt", images)
    assert v2.folds.tolist() == [0] * 10 + [1] * 10 and v2.describe["fold_source"] == "the file's own folds"


def test_missing_image_is_one_clear_error_before_any_model_loads(tmp_path, small_lfw):
    pairs, images = small_lfw
    (tmp_path / "pairs.txt").write_text("1\nNo_Such_Person\t1\t2\nNo_Such_Person\t1\tOther_Guy\t1\n")
    with pytest.raises(FaceIDError, match=r"3 of the 3 images .* are missing"):
        load_pairs_dataset(tmp_path / "pairs.txt", images)


def test_end_to_end_report_misses_and_cache(tmp_path, small_lfw, backend):
    pairs, images = small_lfw
    ds = load_pairs_dataset(pairs, images)
    with EmbedCache(tmp_path / "cache.sqlite") as cache:
        t0 = time.perf_counter()
        report, roc = evaluate_dataset(backend, ds, cache, batch_size=32, progress=False)
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        again, _ = evaluate_dataset(backend, ds, cache, batch_size=32, progress=False)
        warm = time.perf_counter() - t0
        cached, infos, stats = embed_items(backend, ds, cache, progress=False)
    fresh, fresh_infos, _ = embed_items(backend, ds, None, progress=False)

    # the face-less gray images were counted, listed and given the centre crop, not dropped
    assert report["detector"]["misses"] == 2
    assert sorted(Path(p).name for p in report["detector"]["missed_images"]) == [f"{GRAY}_0001.jpg", f"{GRAY}_0002.jpg"]
    assert report["dataset"]["pairs"] == 20 and report["metrics"]["pairs"] == 20
    gray = [i for i, p in enumerate(ds.items) if GRAY in p.name]
    assert all(infos[i]["fallback"] == "center_crop" and not infos[i]["detected"] for i in gray)
    # real faces: a weak but real model separates them
    m = report["metrics"]
    assert 0.6 < m["auc"] <= 1 and 0 <= m["eer"] < 0.5 and 0.5 < m["accuracy"] <= 1
    assert {"tar@far=0.001", "tar@far=0.01", "accuracy_std", "eer_threshold"} <= set(m)
    assert report["speed"]["computed"] == len(ds.items) and report["speed"]["images_per_s"] > 0

    # second run: everything from the cache, much faster, identical embeddings and metrics
    assert again["speed"]["from_cache"] == len(ds.items) and again["speed"]["computed"] == 0
    assert warm < cold / 10, (cold, warm)
    assert again["metrics"] == report["metrics"] and again["detector"] == report["detector"]
    np.testing.assert_array_equal(cached, fresh)
    assert [i["detected"] for i in fresh_infos] == [i["detected"] for i in infos]
    assert np.allclose(np.linalg.norm(fresh, axis=1), 1, atol=1e-5)


def test_cache_misses_when_the_image_changes(tmp_path, small_lfw):
    pairs, images = small_lfw
    image = tmp_path / "face.jpg"
    shutil.copyfile(next(images.glob("*/*.jpg")), image)
    with EmbedCache(tmp_path / "c.sqlite") as cache:
        key = file_key(image)
        cache.put_many([(key, np.ones(512, np.float32), {"detected": True})], "m", True)
        assert cache.get_many([key], "m", True)[key][1] == {"detected": True}
        assert cache.get_many([key], "m", False) == {} and cache.get_many([key], "other", True) == {}
        os.utime(image, ns=(1, 1))
        assert cache.get_many([file_key(image)], "m", True) == {}


def test_corrupt_cache_is_one_clear_error(tmp_path):
    (tmp_path / "c.sqlite").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(FaceIDError, match="--no-cache"):
        EmbedCache(tmp_path / "c.sqlite")


def test_bin_is_embedded_without_detection(shared_data, backend):
    ds = load_bin_dataset(shared_data / "recordio/pins90_112x112/lfw_dev.bin", limit=16)
    report, _ = evaluate_dataset(backend, ds, None, progress=False)
    assert report["dataset"]["kind"] == "verification-bin" and report["metrics"]["pairs"] == 16
    assert report["detector"]["misses"] == 0 and "skipped" in report["detector"]["rule"]
    assert report["metrics"]["auc"] > 0.6


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "evaluate_model.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_cli_json_report_and_png(tmp_path, small_lfw):
    pairs, images = small_lfw
    common = ["--weights", str(_need(STAND_IN)), "--crop", "aligned5", "--threads", "1", "--quiet",
              "--cache", str(tmp_path / "cache.sqlite"), "--out-dir", str(tmp_path / "out")]
    done = _cli("--pairs", str(pairs), "--images", str(images), "--limit", "4", "--json", *common, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["metrics"]["pairs"] == 4 and report["model"]["spec"]["crop"] == "aligned5"
    assert json.loads(Path(report["outputs"]["report_json"]).read_text())["metrics"] == report["metrics"]
    assert Path(report["outputs"]["roc_png"]).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("case", ["missing image", "bad pairs file", "no input", "missing bin"])
def test_cli_bad_input_is_one_sentence_and_nonzero(tmp_path, small_lfw, case):
    pairs, images = small_lfw
    (tmp_path / "gone.txt").write_text("1\nNo_Such_Person\t1\t2\nNo_Such_Person\t1\tOther_Guy\t1\n")
    (tmp_path / "bad.txt").write_text("hello\nworld\n")
    args = {"missing image": ["--pairs", str(tmp_path / "gone.txt"), "--images", str(images)],
            "bad pairs file": ["--pairs", str(tmp_path / "bad.txt"), "--images", str(images)],
            "no input": [],
            "missing bin": ["--bin", str(tmp_path / "nope.bin")]}[case]
    done = _cli(*args, "--no-cache", cwd=tmp_path)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in done.stderr, done.stderr


def test_peer_backend_if_installed(small_lfw, shared_data):
    import importlib.util

    if any(importlib.util.find_spec(m) is None for m in ("dlib", "face_recognition_models", "face_recognition")):
        pytest.skip("the optional peer (face_recognition) is not installed")
    from faceid.peer_face_recognition import FaceRecognitionBackend

    pairs, images = small_lfw
    peer = FaceRecognitionBackend()
    ds = load_pairs_dataset(pairs, images, limit=4)
    report, _ = evaluate_dataset(peer, ds, None, progress=False)
    assert report["metrics"]["pairs"] == 4 and report["model"]["embedding_dim"] == 128
    with pytest.raises(FaceIDError, match="cannot embed pre-aligned"):
        bin_ds = load_bin_dataset(shared_data / "recordio/pins90_112x112/lfw_dev.bin", limit=2)
        evaluate_dataset(peer, bin_ds, None, progress=False)
