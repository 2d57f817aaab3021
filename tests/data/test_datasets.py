"""FaceDataset over folder trees and .rec files: filters, determinism, splits, reading, feeding.

Builds its own small data (real JPEGs of synthetic faces, tiny .rec files); the real shared files are only
used by the one test that asks for the `shared_data` fixture, which skips where they are absent.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from builders import face_jpeg, make_folder_tree, make_rec

from faceid.core.errors import FaceIDError
from faceid.data.datasets import find_verification_bins, open_dataset, split_identities, split_images
from faceid.model.preprocessing import ALIGNED_SPEC
from faceid.train.feed import BatchFeed, EpochSampler, FaceSamples, decode_face, make_loader


def test_folder_filters_and_deterministic_cap(tmp_path):
    root = make_folder_tree(tmp_path / "tree", {"alice": 8, "bob": 3, "carol": 5, "dave": 6})
    ds = open_dataset(root, min_images=5, max_images=6, seed=42)
    assert ds.identities == ["alice", "carol", "dave"]  # bob (3 images) dropped
    assert np.bincount(ds.labels).tolist() == [6, 5, 6]  # alice capped at 6
    assert ds.report["dropped_identities"] == 1 and ds.report["capped_identities"] == 1
    again = open_dataset(root, min_images=5, max_images=6, seed=42)
    assert again.items == ds.items  # same choice on every run
    other = open_dataset(root, min_images=5, max_images=6, seed=7)
    assert [i for i in other.items if i.startswith("alice")] != [i for i in ds.items if i.startswith("alice")]
    assert ds.read_bytes(0) == (root / ds.items[0]).read_bytes()
    assert ds.spec.crop == "aligned5"
    assert open_dataset(root, crop_style="box").spec.crop == "box"
    json.dumps(ds.label_map())  # JSON-ready


def test_bad_paths_are_one_sentence(tmp_path):
    with pytest.raises(FaceIDError, match="not found"):
        open_dataset(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FaceIDError, match="No images found"):
        open_dataset(tmp_path / "empty")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(FaceIDError, match="not a .rec"):
        open_dataset(tmp_path / "notes.txt")
    (tmp_path / "bad.rec").write_bytes(b"this is not recordio at all")
    with pytest.raises(FaceIDError, match="RecordIO"):
        open_dataset(tmp_path / "bad.rec")
    root = make_folder_tree(tmp_path / "few", {"a": 5, "b": 2})
    with pytest.raises(FaceIDError, match="needs 2 or more"):
        open_dataset(root)


# ----------------------------------------------------------------------------- .rec


@pytest.mark.parametrize("insightface", [True, False])
def test_rec_same_filters(tmp_path, insightface):
    rec = make_rec(tmp_path / "data" / "train.rec", [7, 3, 5], insightface)
    ds = open_dataset(tmp_path / "data", min_images=5, max_images=6)  # a directory holding train.rec
    assert ds.kind == "rec" and ds.spec == ALIGNED_SPEC
    assert ds.identities == ["0", "2"] and np.bincount(ds.labels).tolist() == [6, 5]
    assert ds.report["layout"] == ("insightface" if insightface else "plain")
    assert decode_face(ds.read_bytes(0), 112).shape == (112, 112, 3)
    assert open_dataset(rec, min_images=5, max_images=6).items == ds.items


def test_truncated_rec_is_one_sentence(tmp_path):
    rec = make_rec(tmp_path / "train.rec", [5, 5])
    data = rec.read_bytes()
    rec.write_bytes(data[: len(data) - 1500])
    rec.with_suffix(".idx").unlink()  # force a scan, which finds the cut
    with pytest.raises(FaceIDError, match="truncated"):
        open_dataset(rec)


# ----------------------------------------------------------------------------- splits


def test_identity_split_is_disjoint_and_deterministic(tmp_path):
    root = make_folder_tree(tmp_path / "t", {f"p{i}": 5 for i in range(10)})
    ds = open_dataset(root)
    train, held = split_identities(ds, 0.2, seed=42)
    assert len(held.identities) == 2 and len(train.identities) == 8
    assert not set(train.identities) & set(held.identities)
    assert set(train.labels.tolist()) == set(range(8)) and set(held.labels.tolist()) == {0, 1}
    assert split_identities(ds, 0.2, seed=42)[1].identities == held.identities
    assert split_identities(ds, 0.0)[1] is None
    assert len(split_identities(ds, 0.01)[1].identities) == 2  # at least two people for impostor pairs


@pytest.mark.parametrize("n", [10, 37, 38, 101])
def test_image_split_matches_random_split(n):
    train, val = split_images(n, 0.2, 42)
    ref = torch.utils.data.random_split(range(n), [0.8, 0.2], generator=torch.Generator().manual_seed(42))
    assert sorted(ref[0].indices) == train.tolist() and sorted(ref[1].indices) == val.tolist()
    assert not set(train) & set(val) and len(train) + len(val) == n


def test_find_verification_bins(tmp_path):
    (tmp_path / "faces").mkdir()
    rec = make_rec(tmp_path / "faces" / "train.rec", [5, 5])
    for name in ("agedb_30.bin", "lfw.bin"):
        (tmp_path / "faces" / name).write_bytes(b"x")
    (tmp_path / "cfp_fp.bin").write_bytes(b"x")  # in the parent
    assert [p.name for p in find_verification_bins(rec)] == ["lfw.bin", "cfp_fp.bin", "agedb_30.bin"]
    tree = make_folder_tree(tmp_path / "out" / "images", {"0": 5, "1": 5})  # unpacked elsewhere
    (tree / "unpack_report.json").write_text(json.dumps({"rec_path": str(rec)}))
    assert [p.name for p in find_verification_bins(tree)] == ["lfw.bin", "cfp_fp.bin", "agedb_30.bin"]


def test_download_folder_with_the_rec_one_level_down(tmp_path):
    """download_dataset.py's folder may hold the archive's own subfolder: training finds train.rec and
    the .bin files beside it from the folder the user names."""
    rec = make_rec(tmp_path / "casia-webface" / "faces_webface_112x112" / "train.rec", [5, 6])
    (rec.parent / "lfw.bin").write_bytes(b"x")
    ds = open_dataset(tmp_path / "casia-webface")
    assert ds.kind == "rec" and ds.root == rec and len(ds.labels) == 11
    assert [p.name for p in find_verification_bins(ds.root)] == ["lfw.bin"]


# ----------------------------------------------------------------------------- feeding


def test_decode_errors_name_the_file():
    with pytest.raises(FaceIDError, match="Cannot decode x.jpg"):
        decode_face(b"not a jpeg", 112, "x.jpg")
    big = cv2.imencode(".png", np.zeros((200, 150, 3), np.uint8))[1].tobytes()
    assert decode_face(big, 160).shape == (160, 160, 3)  # other sizes are area-resized to the crop size


def test_samples_loader_and_feed(tmp_path):
    ds = open_dataset(make_folder_tree(tmp_path / "t", {"a": 5, "b": 5}))
    decoded = FaceSamples(ds, [0, 6], decode_on_cpu=True)
    img, label, idx = decoded[1]
    assert img.shape == (3, 112, 112) and img.dtype == torch.uint8 and label == 1 and idx == 6
    encoded = FaceSamples(ds, [0, 6], decode_on_cpu=False)
    assert encoded[0][0] == ds.read_bytes(0)
    batch = next(iter(make_loader(decoded, 2, workers=0)))
    x, y = BatchFeed(ds.spec, torch.device("cpu"), "cpu", channels_last=True)(batch, augment=True)
    assert x.shape == (2, 3, 160, 160) and x.dtype == torch.float32 and y.tolist() == [0, 1]
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert -1.0 <= float(x.min()) and float(x.max()) <= 1.0


def test_epoch_sampler_shards_and_resumes():
    a = EpochSampler(23, batch_size=3, world_size=2, rank=0, seed=1)
    b = EpochSampler(23, batch_size=3, world_size=2, rank=1, seed=1)
    for s in (a, b):
        s.set_epoch(4)
    ia, ib = list(a), list(b)
    assert len(ia) == len(ib) == 9 == len(a) and not set(ia) & set(ib)  # 3 whole global batches each
    a.set_epoch(4, start_batch=2)
    assert list(a) == ia[6:]
    a.set_epoch(5)
    assert list(a) != ia


@pytest.mark.parametrize(
    "device",
    [
        "cpu",
        pytest.param("cuda", marks=pytest.mark.cuda),
    ],
)
def test_batch_decode_matches_worker_decode(device):
    """The GPU feed's batched decode (run through torchvision's CPU decoder where there is no GPU)."""
    from faceid.train.feed import PackedImages, gpu_decode

    data = [face_jpeg(0, i) for i in range(3)] + [
        cv2.imencode(".png", np.full((112, 112, 3), 7, np.uint8))[1].tobytes()
    ]
    out, on_cpu = gpu_decode(PackedImages.pack(data), 112, torch.device(device))
    ref = torch.stack([torch.from_numpy(decode_face(d, 112)).permute(2, 0, 1) for d in data])
    assert out.shape == (4, 3, 112, 112) and out.dtype == torch.uint8 and out.device.type == device
    assert (out.cpu().int() - ref.int()).abs().float().mean() < 2.0
    assert on_cpu == [3]  # the PNG: nvJPEG reads JPEGs only
    bad = PackedImages.pack(data[:2] + [b"\xff\xd8 broken"])
    with pytest.raises(FaceIDError, match="Cannot decode item 2"):
        gpu_decode(bad, 112, torch.device(device), name_of=lambda i: f"item {i}")


def test_real_rec_opens_without_unpacking(request):
    try:
        shared = request.getfixturevalue("shared_data")
    except pytest.FixtureLookupError:
        pytest.skip("tests/conftest.py's shared_data fixture is not available")
    ds = open_dataset(Path(shared) / "recordio" / "pins90_112x112", max_images=100)
    assert ds.kind == "rec" and ds.num_identities == 90 and ds.report["source_images"] == 14882
    assert np.bincount(ds.labels).max() == 100
    assert decode_face(ds.read_bytes(len(ds) - 1), 112).shape == (112, 112, 3)
    assert [p.name for p in find_verification_bins(ds.root)] == ["lfw_dev.bin"]
