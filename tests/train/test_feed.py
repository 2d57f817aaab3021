"""The training feed across the process boundary: packed batches, file descriptors, decoding one batch ahead.

The CUDA side stream of `DecodeAhead` needs a GPU (its test skips with the reason on CPU); the same thread,
queue and hand-over run without streams on the CPU, and every training test goes through that path too.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from builders import make_folder_tree

from faceid.core.errors import FaceIDError
from faceid.data.datasets import open_dataset
from faceid.train.feed import BatchFeed, DecodeAhead, EpochSampler, FaceSamples, PackedImages, make_loader

REPO = Path(__file__).resolve().parents[2]


def test_packed_batch_is_one_buffer_with_offsets(tmp_path):
    ds = open_dataset(make_folder_tree(tmp_path / "t", {"a": 5, "b": 5}))
    samples = FaceSamples(ds, range(10), decode_on_cpu=False)
    packed, labels, idx = next(iter(make_loader(samples, 7, workers=1, persistent=False)))
    assert isinstance(packed, PackedImages) and packed.data.dtype == torch.uint8 and packed.data.dim() == 1
    assert packed.offsets.tolist()[0] == 0 and len(packed.offsets) == 8
    assert [bytes(t.numpy()) for t in packed.unpack()] == [ds.read_bytes(i) for i in idx.tolist()]
    assert labels.tolist() == ds.labels[idx.numpy()].tolist()
    x, y = BatchFeed(ds.spec, torch.device("cpu"), "gpu", channels_last=False)((packed, labels, idx))
    assert x.shape == (7, 3, 160, 160) and torch.equal(y, labels)  # the GPU path's decode, run on the CPU


_FD_PROBE = textwrap.dedent("""
    import json, os, resource, sys
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    from faceid.data.datasets import open_dataset
    from faceid.train.feed import EpochSampler, FaceSamples, make_loader
    ds = open_dataset(sys.argv[1])
    out = {}
    for batch in (32, 512):
        samples = FaceSamples(ds, None, decode_on_cpu=False)
        sampler = EpochSampler(len(samples), batch)
        loader = make_loader(samples, batch, workers=2, sampler=sampler)
        kept, before = [], len(os.listdir("/proc/self/fd"))
        for i, b in enumerate(loader):      # 2 workers x prefetch 4 batches in flight, 6 held here
            kept = (kept + [b])[-6:]
            if i == 11:
                break
        out[batch] = {"fds": len(os.listdir("/proc/self/fd")) - before, "images": sum(len(k[1]) for k in kept)}
        del loader
    print(json.dumps(out))
""")


@pytest.mark.e2e
def test_no_file_descriptor_growth_with_batch_size(shared_data):
    """Under `ulimit -n 256`, batches of 512 (~6,000 images in flight) go through like batches of 32.

    One tensor per image needed a descriptor per image in flight: a worker died with "Too many open files"
    and the trainer hung."""
    rec = shared_data / "recordio" / "pins90_112x112" / "train.rec"
    if not rec.is_file():
        pytest.skip(f"{rec} is absent")
    res = subprocess.run(
        [sys.executable, "-c", _FD_PROBE, str(rec)], cwd=REPO, capture_output=True, text=True, timeout=180
    )
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["512"]["images"] == 6 * 512 and out["32"]["images"] == 6 * 32
    assert out["512"]["fds"] <= out["32"]["fds"] + 2, out


def _feed_batches(tmp_path, workers: int):
    ds = open_dataset(make_folder_tree(tmp_path / "t", {"a": 6, "b": 6}))
    samples = FaceSamples(ds, None, decode_on_cpu=True)
    loader = make_loader(samples, 3, workers, EpochSampler(len(samples), 3, seed=3), persistent=False)
    return ds, loader, BatchFeed(ds.spec, torch.device("cpu"), "cpu", channels_last=False)


@pytest.mark.parametrize("workers", [0, 1])
def test_decode_ahead_gives_the_loader_batches_in_order(tmp_path, workers):
    ds, loader, feed = _feed_batches(tmp_path, workers)
    expected = [feed.crops(b) for b in loader]
    with DecodeAhead(loader, feed, ds) as ahead:
        got = list(ahead)
    assert len(got) == len(expected) == 4
    for (c, y), (ce, ye) in zip(got, expected):
        assert torch.equal(c, ce) and torch.equal(y, ye)
    assert next(ahead, None) is None


def test_decode_ahead_stops_early_and_passes_errors_on(tmp_path):
    ds, loader, feed = _feed_batches(tmp_path, 0)
    ahead = DecodeAhead(loader, feed, ds)
    next(ahead)
    ahead.close()  # a stop mid-epoch: the thread ends without draining the loader
    assert not ahead._thread.is_alive() and next(ahead, None) is None
    for p in sorted((tmp_path / "t").rglob("*.jpg"))[3:]:
        p.write_bytes(b"not a jpeg")
    with DecodeAhead(loader, feed, ds) as ahead, pytest.raises(FaceIDError, match="Cannot decode"):
        list(ahead)


@pytest.mark.cuda  # the side-stream decode needs a GPU; its CPU mirror runs in the tests above
def test_decode_ahead_on_a_cuda_side_stream(tmp_path):
    ds = open_dataset(make_folder_tree(tmp_path / "t", {"a": 6, "b": 6}))
    samples = FaceSamples(ds, None, decode_on_cpu=False)
    loader = make_loader(samples, 4, 1, EpochSampler(len(samples), 4), pin_memory=True, persistent=False)
    device = torch.device("cuda")
    feed = BatchFeed(ds.spec, device, "gpu", channels_last=True)
    expected = [feed.crops(b, ds) for b in loader]
    with DecodeAhead(loader, feed, ds) as ahead:
        assert ahead._stream is not None and ahead._stream != torch.cuda.current_stream()
        got = [(c.clone(), y.clone()) for c, y in ahead]  # used on the training stream
    torch.cuda.synchronize()
    assert len(got) == len(expected) == 3
    for (c, y), (ce, ye) in zip(got, expected):
        assert c.is_cuda and torch.equal(c, ce) and torch.equal(y, ye)


_FORK_AFTER_OPENCV = textwrap.dedent("""
    import sys
    import cv2, numpy as np
    sys.path.insert(0, sys.argv[2])
    from builders import make_folder_tree
    from faceid.data.datasets import open_dataset
    from faceid.train.feed import FaceSamples, make_loader
    cv2.setNumThreads(2)                      # what the app and the evaluator leave behind
    big = np.zeros((2000, 2000, 3), np.uint8)
    for _ in range(10):
        cv2.GaussianBlur(big, (31, 31), 0)    # OpenCV's thread pool has run in this process
    ds = open_dataset(make_folder_tree(__import__("pathlib").Path(sys.argv[1]), {"a": 5, "b": 5}))
    batch = next(iter(make_loader(FaceSamples(ds, range(8), decode_on_cpu=True), 4, workers=1, persistent=False)))
    print(len(batch[1]))
""")


@pytest.mark.e2e
def test_workers_start_after_opencv_threads_have_run(tmp_path):
    """A worker forked after OpenCV's thread pool ran used to hang forever in cv2.setNumThreads."""
    result = subprocess.run(
        [sys.executable, "-c", _FORK_AFTER_OPENCV, str(tmp_path / "t"), str(REPO / "tests")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "4"


def _tree_with_a_png(tmp_path) -> Path:
    """2 people x 4 faces; one face of each is a PNG (a folder tree may mix formats; nvJPEG reads JPEGs only)."""
    import cv2

    root = make_folder_tree(tmp_path / "t", {"a": 4, "b": 4})
    for person in ("a", "b"):
        jpg = root / person / "001.jpg"
        rgb = cv2.imdecode(np.frombuffer(jpg.read_bytes(), np.uint8), cv2.IMREAD_COLOR)
        (root / person / "001.png").write_bytes(cv2.imencode(".png", rgb)[1].tobytes())
        jpg.unlink()
    return root


def test_gpu_decode_hands_what_nvjpeg_cannot_take_to_the_cpu_with_one_warning_and_a_count(tmp_path, capsys):
    ds = open_dataset(_tree_with_a_png(tmp_path), min_images=4)
    loader = make_loader(FaceSamples(ds, None, decode_on_cpu=False), 4, 0, EpochSampler(len(ds), 4, shuffle=False))
    feed = BatchFeed(ds.spec, torch.device("cpu"), "gpu", channels_last=False)  # the GPU path, run on the CPU
    for batch in loader:
        crops, _ = feed.crops(batch, ds)
        assert crops.shape == (4, 3, 112, 112)
    assert feed.cpu_decoded == 2
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(warnings) == 1 and "001.png" in warnings[0] and "each epoch line counts them" in warnings[0]

    strict = BatchFeed(ds.spec, torch.device("cpu"), "gpu", channels_last=False, strict=True)  # --decode gpu
    with pytest.raises(FaceIDError, match=r"Cannot decode .*001\.png: it is not a JPEG, and --decode gpu"):
        for batch in loader:
            strict.crops(batch, ds)
    assert strict.cpu_decoded == 0


def test_the_epoch_line_counts_the_images_decoded_on_the_cpu():
    from faceid.train.report import epoch_line

    record = {"epoch": 1, "train_loss": 1.0, "images_per_s": 9.0, "train_seconds": 1.0, "cpu_decoded": 0}
    assert "CPU" not in epoch_line(record, ("heldout", "auc"), False)
    assert "12 images decoded on the CPU" in epoch_line({**record, "cpu_decoded": 12}, ("heldout", "auc"), False)
