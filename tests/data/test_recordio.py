"""RecordIO reader: the real MXNet-written files in shared data, and small files these tests write themselves."""

from __future__ import annotations

import json
import multiprocessing
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest
from recordio_writer import encode_record, pack_header, write_recordio

from faceid.core.errors import FaceIDError
from faceid.data.recordio import (
    MAGIC_BYTES,
    Record,
    RecordIOError,
    RecordIOReader,
    RecordIOTruncated,
    detect_layout,
    find_train_rec,
    unpack_header,
)


def jpeg_bytes(seed: int, size: int = 24) -> bytes:
    """A real JPEG (random noise, so every image differs)."""
    image = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    ok, encoded = cv2.imencode(".jpg", image)
    assert ok
    return encoded.tobytes()


def recordio_dir(shared_data: Path, name: str) -> Path:
    return shared_data / "recordio" / name


def manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


# --- the real files ------------------------------------------------------------------------------------
def test_plain_matches_manifest(shared_data):
    folder = recordio_dir(shared_data, "plain")
    expected = manifest(folder)
    with RecordIOReader(folder / "train.rec") as reader:
        assert reader.index_source == "idx"
        assert reader.keys() == list(range(expected["num_images"]))
        records = [reader.read(k) for k in reader.keys()]
        layout = detect_layout(reader)
    assert [r.label for r in records] == [float(x) for x in expected["labels"]]
    assert [r.id for r in records] == list(range(expected["num_images"]))
    assert all(r.payload[:2] == b"\xff\xd8" for r in records)
    assert (layout.kind, len(layout.image_keys), layout.num_identities) == ("plain", 20, 4)
    assert layout.metadata_keys == []


def test_split_record_is_joined_with_magic(shared_data):
    folder = recordio_dir(shared_data, "split")
    with RecordIOReader(folder / "train.rec") as reader:
        for entry in manifest(folder)["records"]:
            record = reader.read(entry["id"])
            assert (record.id, record.label) == (entry["id"], float(entry["label"]))
            assert len(record.payload) == entry["payload_len"]
            assert (MAGIC_BYTES in record.payload) == entry["has_magic"]
            assert cv2.imdecode(np.frombuffer(record.payload, np.uint8), cv2.IMREAD_COLOR) is not None


def test_corrupt_file(shared_data):
    folder = recordio_dir(shared_data, "corrupt")
    expected = manifest(folder)
    with RecordIOReader(folder / "train.rec") as reader:
        assert len(reader) == expected["records_in_idx"]
        for key in expected["good_ids"]:
            assert reader.read(key).payload[:2] == b"\xff\xd8"
        for key in expected["bad_payload_ids"]:
            assert reader.read(key).payload[:2] != b"\xff\xd8"
        for key in expected["truncated_ids"]:
            with pytest.raises(RecordIOTruncated, match="truncated"):
                reader.read(key)
        scanned = [rec.id for _, rec in reader.scan()]
        assert scanned == sorted(expected["good_ids"] + expected["bad_payload_ids"])
        assert reader.truncated_tail == (expected["truncated_ids"][0], reader.offset(expected["truncated_ids"][0]))


@pytest.mark.parametrize("name", ["video_faces", "pins90_112x112"])
def test_insightface_files_match_manifest(shared_data, name):
    folder = recordio_dir(shared_data, name)
    expected = manifest(folder)
    with RecordIOReader(folder / "train.rec") as reader:
        layout = detect_layout(reader)
        assert layout.kind == "insightface"
        assert len(layout.image_keys) == expected["num_images"]
        assert layout.num_identities == expected["num_identities"]
        assert len(layout.metadata_keys) == expected["header_records"]
        for image in expected["images"]:
            record = reader.read(image["id"])
            assert (record.flag, record.label, record.id) == (0, float(image["label"]), image["id"])
            assert len(record.payload) == image["bytes"]
    assert layout.image_keys == [image["id"] for image in expected["images"]]
    for label, (first, end) in layout.identity_ranges.items():
        assert {e["label"] for e in expected["images"][first - 1 : end - 1]} == {label}


@pytest.mark.parametrize("name", ["plain", "split", "video_faces"])
def test_writer_is_byte_identical_to_mxnet(shared_data, tmp_path, name):
    folder = recordio_dir(shared_data, name)
    with RecordIOReader(folder / "train.rec") as reader:
        write_recordio(tmp_path / "t.rec", tmp_path / "t.idx", [(k, reader.read(k)) for k in reader.keys()])
    assert (tmp_path / "t.rec").read_bytes() == (folder / "train.rec").read_bytes()
    assert (tmp_path / "t.idx").read_bytes() == (folder / "train.idx").read_bytes()


# --- files the tests write ------------------------------------------------------------------------------
def write_plain(tmp_path: Path, n: int = 6, idx: bool = True) -> tuple[Path, list[Record]]:
    records = [Record(0, float(i // 2), i, 0, jpeg_bytes(i)) for i in range(n)]
    rec = tmp_path / "train.rec"
    write_recordio(rec, tmp_path / "train.idx" if idx else None, enumerate(records))
    return rec, records


def parts(encoded: bytes) -> list[tuple[int, int]]:
    """(cflag, length) of each part of one encoded record."""
    out, offset = [], 0
    while offset < len(encoded):
        magic, lrecord = struct.unpack_from("<II", encoded, offset)
        assert magic.to_bytes(4, "little") == MAGIC_BYTES
        out.append((lrecord >> 29, lrecord & ((1 << 29) - 1)))
        offset += 8 + (-(-out[-1][1] // 4) * 4)
    return out


def test_split_records_round_trip(tmp_path):
    m = MAGIC_BYTES
    payloads = [
        m + b"abcd" + m + m + b"xy",  # magic at aligned offsets 24, 32, 36 of the record -> 4 parts
        b"a" + m + b"bcdefg",  # unaligned: not split
        b"abcd" * 3 + m,
    ]  # magic as the last aligned word: last part is empty
    records = [Record(0, 1.0, i, 0, p) for i, p in enumerate(payloads)]
    write_recordio(tmp_path / "t.rec", tmp_path / "t.idx", enumerate(records))
    assert parts(encode_record(pack_header(records[0]))) == [(1, 24), (2, 4), (2, 0), (3, 2)]
    assert parts(encode_record(pack_header(records[1]))) == [(0, 24 + len(payloads[1]))]
    assert parts(encode_record(pack_header(records[2]))) == [(1, 36), (3, 0)]
    with RecordIOReader(tmp_path / "t.rec") as reader:
        assert [reader.read(k).payload for k in reader.keys()] == payloads
        assert [rec.payload for _, rec in reader.scan()] == payloads


def test_label_arrays_and_insightface_layout(tmp_path):
    images = [Record(0, float(label), 0, 0, jpeg_bytes(k)) for k, label in enumerate([0, 0, 0, 1, 1])]
    header = Record(2, (6.0, 8.0), 0, 0, b"")  # images 1..5, ranges at keys 6, 7
    ranges = [Record(2, (1.0, 4.0), 0, 0, b""), Record(2, (4.0, 6.0), 0, 0, b"")]
    write_recordio(tmp_path / "t.rec", tmp_path / "t.idx", enumerate([header, *images, *ranges]))
    with RecordIOReader(tmp_path / "t.rec") as reader:
        assert reader.read(0).label == (6.0, 8.0)
        layout = detect_layout(reader)
    assert layout.kind == "insightface"
    assert layout.image_keys == [1, 2, 3, 4, 5]
    assert layout.identity_ranges == {0: (1, 4), 1: (4, 6)}
    assert layout.metadata_keys == [0, 6, 7]
    assert layout.num_identities == 2


def test_unpack_header_matches_mxnet_pack_layout():
    raw = struct.pack("<IfQQ", 3, 0.0, 7, 9) + struct.pack("<3f", 1.0, 2.0, 3.5) + b"payload"
    assert unpack_header(raw) == Record(3, (1.0, 2.0, 3.5), 7, 9, b"payload")
    assert pack_header(unpack_header(raw)) == raw
    with pytest.raises(RecordIOError):
        unpack_header(b"short")
    with pytest.raises(RecordIOError):
        unpack_header(struct.pack("<IfQQ", 5, 0.0, 0, 0) + b"\0" * 8)


def test_missing_idx_falls_back_to_scan(tmp_path):
    rec, records = write_plain(tmp_path, idx=False)
    with RecordIOReader(rec) as reader:
        assert reader.index_source == "scan"
        assert "not found" in reader.index_note
        assert [reader.read(k).payload for k in reader.keys()] == [r.payload for r in records]


@pytest.mark.parametrize("bad_idx", ["0\t0\n1\t99999999\n", "0\t0\n1\t8\n", "0 zero\n", ""])
def test_damaged_idx_falls_back_to_scan(tmp_path, bad_idx):
    rec, records = write_plain(tmp_path)
    (tmp_path / "train.idx").write_text(bad_idx)
    with RecordIOReader(rec) as reader:
        assert reader.index_source == "scan"
        assert reader.index_note
        assert reader.keys() == list(range(len(records)))
        assert reader.read(5).payload == records[5].payload


def test_truncated_file(tmp_path):
    rec, records = write_plain(tmp_path)
    offsets = [int(line.split()[1]) for line in (tmp_path / "train.idx").read_text().splitlines()]
    rec.write_bytes(rec.read_bytes()[: offsets[-1] + 100])  # cut inside the last record
    with RecordIOReader(rec) as reader:
        assert reader.read(4).payload == records[4].payload
        with pytest.raises(RecordIOTruncated):
            reader.read(5)
        assert len(list(reader.scan())) == 5
        assert reader.truncated_tail == (5, offsets[-1])
    (tmp_path / "train.idx").unlink()
    with RecordIOReader(rec) as reader:  # scan-built index stops before the tail
        assert reader.keys() == [0, 1, 2, 3, 4]
        assert reader.truncated_tail == (5, offsets[-1])


def test_bad_magic_in_the_middle_is_an_error(tmp_path):
    rec, _ = write_plain(tmp_path)
    offsets = [int(line.split()[1]) for line in (tmp_path / "train.idx").read_text().splitlines()]
    data = bytearray(rec.read_bytes())
    data[offsets[3]] ^= 0xFF
    rec.write_bytes(bytes(data))
    (tmp_path / "train.idx").unlink()
    with pytest.raises(RecordIOError, match="magic"):
        RecordIOReader(rec)


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 a zip, not RecordIO"])
def test_not_recordio_files(tmp_path, content):
    path = tmp_path / "x.rec"
    path.write_bytes(content)
    with pytest.raises(FaceIDError):
        RecordIOReader(path)
    with pytest.raises(RecordIOError, match="does not exist"):
        RecordIOReader(tmp_path / "missing.rec")


def _payload_len(reader: RecordIOReader, key: int) -> int:
    return len(reader.read(key).payload)


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_reader_works_in_worker_processes(tmp_path, method):
    if method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"{method} not available here")
    rec, records = write_plain(tmp_path)
    with RecordIOReader(rec) as reader:
        reader.read(0)  # map the file in the parent first
        with multiprocessing.get_context(method).Pool(2) as pool:
            lengths = pool.starmap(_payload_len, [(reader, k) for k in reader.keys()])
    assert lengths == [len(r.payload) for r in records]


def test_find_train_rec_searches_subfolders(tmp_path):
    nested = tmp_path / "faces_webface_112x112"
    nested.mkdir()
    write_plain(nested)
    assert find_train_rec(tmp_path) == nested / "train.rec"
    assert find_train_rec(tmp_path / "faces_webface_112x112" / "..") is not None
    assert find_train_rec(tmp_path / "nothing") is None
