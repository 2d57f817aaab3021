"""Unpacking .rec files into <label>/<key>.jpg: real shared files, self-built files, resume, and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
from recordio_writer import write_recordio

from faceid.data.recordio import Record, RecordIOReader
from faceid.data.unpack import IDENTITIES_NAME, REPORT_NAME, unpack_recordio

REPO = Path(__file__).resolve().parents[2]


def image(seed: int, ext: str = ".jpg", size: int = 24) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    ok, encoded = cv2.imencode(ext, pixels)
    assert ok
    return encoded.tobytes()


def report(out: Path) -> dict:
    return json.loads((out / REPORT_NAME).read_text())


def image_files(out: Path) -> list[Path]:
    return sorted(out.glob("*/*.jpg"))


# --- real files -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.e2e
def test_unpack_pins90_counts_match_manifest(shared_data, tmp_path, workers):
    folder = shared_data / "recordio" / "pins90_112x112"
    manifest = json.loads((folder / "manifest.json").read_text())
    summary = unpack_recordio(folder / "train.rec", tmp_path, workers=workers, progress=False)
    expected = Counter(str(img["label"]) for img in manifest["images"])
    assert json.loads((tmp_path / IDENTITIES_NAME).read_text()) == dict(
        sorted(expected.items(), key=lambda kv: int(kv[0]))
    )
    assert Counter(p.parent.name for p in image_files(tmp_path)) == expected
    assert (summary.images, summary.identities, summary.metadata_records) == (14882, 90, 91)
    assert summary.corrupt == [] and summary.truncated == []
    first = manifest["images"][0]
    with RecordIOReader(folder / "train.rec") as reader:
        payload = reader.read(first["id"]).payload
    assert (tmp_path / str(first["label"]) / f"{first['id']}.jpg").read_bytes() == payload
    assert report(tmp_path)["complete"] is True


def test_unpack_corrupt_file_reports_and_goes_on(shared_data, tmp_path):
    folder = shared_data / "recordio" / "corrupt"
    manifest = json.loads((folder / "manifest.json").read_text())
    unpack_recordio(folder / "train.rec", tmp_path, workers=1, progress=False)
    data = report(tmp_path)
    assert [c["key"] for c in data["corrupt"]] == manifest["bad_payload_ids"]
    assert [t["key"] for t in data["truncated"]] == manifest["truncated_ids"]
    assert sorted(int(p.stem) for p in image_files(tmp_path)) == manifest["good_ids"]


def test_unpack_split_record_is_whole(shared_data, tmp_path):
    folder = shared_data / "recordio" / "split"
    unpack_recordio(folder / "train.rec", tmp_path, workers=1, progress=False)
    split = next(r for r in json.loads((folder / "manifest.json").read_text())["records"] if r["has_magic"])
    assert (tmp_path / "0" / f"{split['id']}.jpg").stat().st_size == split["payload_len"]


# --- self-built files ---------------------------------------------------------------------------------
def build_insightface(tmp_path: Path, per_label: list[int], extra: dict[int, bytes] | None = None) -> Path:
    """An insightface-layout .rec: header, images (label i repeated per_label[i] times), identity ranges."""
    payloads, labels = [], []
    for label, count in enumerate(per_label):
        payloads += [image(len(payloads) + i) for i in range(count)]
        labels += [label] * count
    for index, payload in (extra or {}).items():
        payloads[index] = payload
    n, k = len(payloads), len(per_label)
    records = [Record(2, (float(n + 1), float(n + 1 + k)), 0, 0, b"")]
    records += [Record(0, float(label), i + 1, 0, p) for i, (label, p) in enumerate(zip(labels, payloads))]
    first = 1
    for count in per_label:
        records.append(Record(2, (float(first), float(first + count)), 0, 0, b""))
        first += count
    rec = tmp_path / "in" / "train.rec"
    write_recordio(rec, rec.with_suffix(".idx"), enumerate(records))
    return rec


def test_png_is_converted_and_garbage_reported(tmp_path):
    png = image(99, ".png")
    rec = build_insightface(tmp_path, [3, 2], extra={1: png, 3: b"\x89PNG but not really", 4: image(5)[:-40]})
    out = tmp_path / "out"
    summary = unpack_recordio(rec, out, workers=1, progress=False)
    assert summary.metadata_records == 3 and summary.images == 3
    assert {c["key"] for c in summary.corrupt} == {4, 5}  # keys are 1-based after the header
    converted = (out / "0" / "2.jpg").read_bytes()
    assert converted[:2] == b"\xff\xd8"
    decoded = cv2.imdecode(np.frombuffer(converted, np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == (24, 24, 3)


def test_limit_and_plain_layout(tmp_path):
    rec = tmp_path / "train.rec"
    write_recordio(rec, tmp_path / "train.idx", [(k, Record(0, float(k % 3), k, 0, image(k))) for k in range(9)])
    summary = unpack_recordio(rec, tmp_path / "out", workers=2, limit=4, progress=False)
    assert (summary.layout, summary.images, summary.identities, summary.metadata_records) == ("plain", 4, 3, 0)
    assert json.loads((tmp_path / "out" / IDENTITIES_NAME).read_text()) == {"0": 2, "1": 1, "2": 1}


def test_resume_keeps_finished_files_and_clears_temps(tmp_path):
    rec = build_insightface(tmp_path, [4, 4, 4])
    out = tmp_path / "out"
    unpack_recordio(rec, out, workers=1, limit=5, progress=False)  # an "interrupted" first run
    (out / REPORT_NAME).unlink()
    kept = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in image_files(out)}
    stale = out / "1" / ".7.jpg.12345.tmp"
    stale.write_bytes(b"half a jpeg")
    emptied = out / "1" / "5.jpg"  # as a crash before writeback leaves it
    emptied.write_bytes(b"")
    summary = unpack_recordio(rec, out, workers=2, progress=False)
    assert not stale.exists()
    assert summary.images == 12 and summary.skipped_existing == 4 and summary.written == 8
    assert len(image_files(out)) == 12
    for path, (inode, mtime) in kept.items():
        if path != emptied:
            assert (path.stat().st_ino, path.stat().st_mtime_ns) == (inode, mtime)
    with RecordIOReader(rec) as reader:
        assert emptied.read_bytes() == reader.read(5).payload
    assert not list(out.rglob("*.tmp")) and report(out)["complete"] is True


# --- CLI ------------------------------------------------------------------------------------------------
def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "preprocess_dataset.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


@pytest.mark.parametrize("args", [["--rec", "missing.rec"], ["--rec", "notrec.rec"], ["--input-dir", "nowhere"], []])
def test_cli_bad_input_one_sentence(tmp_path, args):
    (tmp_path / "notrec.rec").write_bytes(b"hello, not a recordio file")
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr


def test_cli_unpacks(tmp_path):
    rec = build_insightface(tmp_path, [2, 3])
    result = run_cli("--input-dir", str(rec.parent), "--output-dir", "imgs", "--workers", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "5 images of 2 identities" in result.stdout
    assert len(image_files(tmp_path / "imgs")) == 5


# --- hostile records ----------------------------------------------------------------------------------
def test_every_corrupt_record_kind_is_skipped_counted_and_listed(tmp_path):
    """Each damaged record (see tests/hostile.py) is listed with its key and reason; the good ones unpack; exit 0."""
    from hostile import bad_records

    bad = bad_records()
    good = [(k, Record(0, float(k % 2), k, 0, image(k))) for k in range(3)]
    records = good + [(100 + i, raw) for i, raw in enumerate(bad.values())]
    rec = tmp_path / "train.rec"
    write_recordio(rec, tmp_path / "train.idx", records)
    with open(tmp_path / "train.idx", "a") as f:  # a 5000-digit key: the index is refused, the file scanned
        f.write("9" * 5000 + "\t0\n")
    start = __import__("time").perf_counter()
    result = run_cli("--rec", str(rec), "--output-dir", "out", "--workers", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert __import__("time").perf_counter() - start < 60
    data = report(tmp_path / "out")
    assert data["images"] == 3 and data["index_source"] == "scan" and "20 digits" in data["index_note"]
    assert len(data["corrupt"]) == len(bad), data["corrupt"]
    reasons = " | ".join(c["reason"] for c in data["corrupt"])
    for expected in (
        "labels",
        "not a class number",
        "empty",
        "65000x65000",
        "20000x20000",
        "not an image",
        "shorter than the 24-byte IRHeader",
    ):
        assert expected in reasons, (expected, reasons)
    assert f"{len(bad)} corrupt" in result.stdout and "skipped records are listed" in result.stdout


def test_nothing_readable_is_exit_2_with_the_counts(tmp_path):
    from hostile import bad_records

    rec = tmp_path / "train.rec"
    write_recordio(rec, tmp_path / "train.idx", list(enumerate(bad_records().values())))
    result = run_cli("--rec", str(rec), "--output-dir", "out", "--workers", "1", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: No record of") and errors[0].endswith(".")
    assert report(tmp_path / "out")["corrupt"]
