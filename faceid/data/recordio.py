"""MXNet RecordIO (.rec/.idx) reader written from the format, without importing MXNet.

CASIA-WebFace and the other insightface training sets ship as MXNet RecordIO files. MXNet itself is not a
dependency: its last release (1.9.1) does not import with numpy >= 1.24, and reading the format takes a
hundred lines. The byte layout, as written by dmlc-core's RecordIOWriter and mxnet.recordio:

    record  := part+                    (one part unless the payload held the magic word, see below)
    part    := magic:u32 lrecord:u32 data[length] zero-pad to a multiple of 4
    lrecord := cflag << 29 | length     cflag 0 whole, 1 first, 2 middle, 3 last part
    data    := IRHeader ("<IfQQ": flag, label, id, id2) [flag float32 labels if flag > 0] payload

The writer splits a record wherever the magic word appears at a 4-byte-aligned offset of the record, drops
those 4 bytes, and the reader puts them back between the parts. The .idx is text, `key<TAB>offset` per line.
"""

from __future__ import annotations

import math
import mmap
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from ..core.errors import FaceIDError

MAGIC = 0xCED7230A
MAGIC_BYTES = struct.pack("<I", MAGIC)
PART = struct.Struct("<II")
IRHEADER = struct.Struct("<IfQQ")
_LENGTH_MASK = (1 << 29) - 1


class RecordIOError(FaceIDError):
    """The .rec file is not RecordIO, or is damaged at a given place (message says where)."""


class RecordIOTruncated(RecordIOError):
    """The file ends inside a record: the download or copy was cut short."""


@dataclass
class Record:
    """One decoded record; `label` is a tuple when the writer stored a label array (flag > 0)."""

    flag: int
    label: float | tuple[float, ...]
    id: int
    id2: int
    payload: bytes


def unpack_header(raw: bytes) -> Record:
    """Split joined record bytes into IRHeader fields and payload, as mxnet.recordio.unpack does."""
    if len(raw) < IRHEADER.size:
        raise RecordIOError(f"record of {len(raw)} bytes is shorter than the 24-byte IRHeader")
    flag, label, id_, id2 = IRHEADER.unpack_from(raw)
    if flag == 0:
        return Record(flag, label, id_, id2, bytes(raw[IRHEADER.size :]))
    end = IRHEADER.size + 4 * flag
    if len(raw) < end:
        raise RecordIOError(f"record header announces {flag} labels but the record has only {len(raw)} bytes")
    labels = struct.unpack_from(f"<{flag}f", raw, IRHEADER.size)
    return Record(flag, tuple(labels), id_, id2, bytes(raw[end:]))


@dataclass
class Layout:
    """How a .rec is organised: which keys are images and which are insightface metadata."""

    kind: str  # "insightface" or "plain"
    image_keys: list[int]
    num_identities: int
    identity_ranges: dict[int, tuple[int, int]] = field(default_factory=dict)  # label -> [first, end) keys
    metadata_keys: list[int] = field(default_factory=list)


class RecordIOReader:
    """Random and sequential access to a .rec file through mmap.

    The file is mapped lazily in whichever process first reads, and re-mapped after a fork, so a reader can be
    handed to DataLoader workers: pickling carries only paths and the offset table, never an open handle.
    The .idx is used when every offset in it points at a record start inside the file; otherwise (missing or
    damaged .idx) the offsets come from one sequential scan and `index_source` says "scan" and why.
    """

    def __init__(self, rec_path: str | os.PathLike, idx_path: str | os.PathLike | None = None):
        self.rec_path = Path(rec_path)
        self.idx_path = Path(idx_path) if idx_path is not None else self.rec_path.with_suffix(".idx")
        if not self.rec_path.is_file():
            raise RecordIOError(f"RecordIO file {self.rec_path} does not exist or is not a file")
        self.size = self.rec_path.stat().st_size
        self._mm: mmap.mmap | None = None
        self._pid = -1
        self._check_magic_at_start()
        self.truncated_tail: tuple[int, int] | None = None  # (key it would have had, offset) from a scan
        self.index_note = ""
        offsets = self._load_idx()
        if offsets is None:
            offsets = self._scan_offsets()
            self.index_source = "scan"
        else:
            self.index_source = "idx"
        self._offsets = offsets
        self._keys = sorted(self._offsets)

    # --- file access, per process -------------------------------------------------------------------
    def _buf(self) -> mmap.mmap:
        """The mapping for this process; opened on first use and again in a forked child."""
        if self._mm is None or self._pid != os.getpid():
            with open(self.rec_path, "rb") as f:
                self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            self._pid = os.getpid()
        return self._mm

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_mm"], state["_pid"] = None, -1
        return state

    def close(self) -> None:
        if self._mm is not None and self._pid == os.getpid():
            self._mm.close()
        self._mm = None

    def __enter__(self) -> "RecordIOReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_magic_at_start(self) -> None:
        if self.size == 0:
            raise RecordIOError(f"{self.rec_path} is empty; download or copy it again")
        with open(self.rec_path, "rb") as f:
            head = f.read(4)
        if head != MAGIC_BYTES:
            raise RecordIOError(f"{self.rec_path} is not an MXNet RecordIO file (no RecordIO magic word at its start)")

    # --- offset table --------------------------------------------------------------------------------
    def _load_idx(self) -> dict[int, int] | None:
        """Parse the .idx; None (with index_note set) when it is missing or points anywhere but a record."""
        if not self.idx_path.is_file():
            self.index_note = f"{self.idx_path.name} not found"
            return None
        offsets: dict[int, int] = {}
        buf = self._buf()
        with open(self.idx_path, "r", encoding="ascii", errors="replace") as f:
            for lineno, line in enumerate(f, 1):
                parts = line.split()
                if not parts:
                    continue
                problem = self._idx_line_problem(parts, buf)
                if problem:
                    self.index_note = f"{self.idx_path.name} line {lineno}: {problem}"
                    return None
                offsets[int(parts[0])] = int(parts[1])
        if not offsets:
            self.index_note = f"{self.idx_path.name} is empty"
            return None
        return offsets

    def _idx_line_problem(self, parts: list[str], buf: mmap.mmap) -> str:
        if len(parts) != 2 or not all(p.lstrip("-").isdigit() and len(p) <= 20 for p in parts):
            return "not 'key<TAB>offset' with keys and offsets of at most 20 digits"
        offset = int(parts[1])
        if not 0 <= offset <= self.size - PART.size:
            return f"offset {offset} lies outside the {self.size}-byte .rec"
        if buf[offset : offset + 4] != MAGIC_BYTES:
            return f"offset {offset} is not the start of a record"
        return ""

    def _scan_offsets(self) -> dict[int, int]:
        return {key: offset for key, (offset, _raw) in enumerate(self._walk(copy=False))}

    def _walk(self, copy: bool = True) -> Iterator[tuple[int, bytes]]:
        """Yield (start, record bytes or b"" when not copying) in file order; stop at a truncated tail, noting it."""
        offset, key = 0, 0
        while offset < self.size:
            try:
                raw, end = self._read_at(offset, copy)
            except RecordIOTruncated as err:
                self.truncated_tail = (key, offset)
                self.index_note = (self.index_note + "; " if self.index_note else "") + str(err)
                return
            yield offset, raw
            offset, key = end, key + 1

    # --- reading -------------------------------------------------------------------------------------
    def _read_at(self, offset: int, copy: bool = True) -> tuple[bytes, int]:
        """Join the parts of the record starting at `offset`; return (record bytes, offset after it).

        With copy=False only the framing is checked and b"" returned (building an offset table by scan)."""
        buf = self._buf()
        chunks: list[bytes] = []
        while True:
            if offset + PART.size > self.size:
                raise RecordIOTruncated(f"{self.rec_path} ends inside a record header at byte {offset}")
            magic, lrecord = PART.unpack_from(buf, offset)
            if magic != MAGIC:
                raise RecordIOError(f"{self.rec_path} has no RecordIO magic word at byte {offset}; the file is damaged")
            cflag, length = lrecord >> 29, lrecord & _LENGTH_MASK
            start = offset + PART.size
            if start + length > self.size:
                raise RecordIOTruncated(
                    f"{self.rec_path} ends inside the record at byte {offset} ({length} bytes announced, "
                    f"{self.size - start} present); the file is truncated"
                )
            if copy:
                chunks.append(buf[start : start + length])
            offset = start + ((length + 3) & ~3)
            if cflag in (0, 3):
                break
            if copy:
                chunks.append(MAGIC_BYTES)
        return (chunks[0] if len(chunks) == 1 else b"".join(chunks)), offset

    def keys(self) -> list[int]:
        return list(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: int) -> bool:
        return key in self._offsets

    def offset(self, key: int) -> int:
        try:
            return self._offsets[key]
        except KeyError:
            raise RecordIOError(f"{self.rec_path} has no record with key {key}") from None

    def read_raw(self, key: int) -> bytes:
        """The record's bytes (IRHeader + payload) with split parts joined."""
        return self._read_at(self.offset(key))[0]

    def read(self, key: int) -> Record:
        return unpack_header(self.read_raw(key))

    def scan(self) -> Iterator[tuple[int, Record]]:
        """Yield (offset, Record) in file order without using the .idx; a truncated tail ends the
        iteration cleanly and is reported in `truncated_tail` / `index_note`."""
        for start, raw in self._walk():
            yield start, unpack_header(raw)


def detect_layout(reader: RecordIOReader) -> Layout:
    """insightface layout when the first record is a header [N+1, N+1+K] whose range records exist; else plain."""
    keys = reader.keys()
    if not keys:
        return Layout("plain", [], 0)
    try:
        first = reader.read(keys[0])
    except RecordIOError:  # a damaged first record is one more corrupt record of a plain file
        return Layout("plain", keys, _count_labels(reader, keys))
    header = _insightface_header(first, keys)
    if header is None:
        return Layout("plain", keys, _count_labels(reader, keys))
    images_end, ranges_end = header
    ranges = {}
    for label, key in enumerate(range(images_end, ranges_end)):
        rec = reader.read(key)
        if not (isinstance(rec.label, tuple) and len(rec.label) == 2 and all(map(math.isfinite, rec.label))):
            raise RecordIOError(f"{reader.rec_path}: insightface identity record {key} has no [first, end) label")
        ranges[label] = (int(rec.label[0]), int(rec.label[1]))
    image_keys = [k for k in keys if 1 <= k < images_end]
    metadata = [keys[0]] + list(range(images_end, ranges_end))
    return Layout("insightface", image_keys, ranges_end - images_end, ranges, metadata)


def _insightface_header(first: Record, keys: list[int]) -> tuple[int, int] | None:
    if keys[0] != 0 or first.flag != 2 or not isinstance(first.label, tuple):
        return None
    if len(first.label) != 2 or not all(math.isfinite(v) for v in first.label):
        return None
    images_end, ranges_end = int(first.label[0]), int(first.label[1])
    if not 1 <= images_end < ranges_end or ranges_end - 1 > keys[-1]:
        return None
    return images_end, ranges_end


def _count_labels(reader: RecordIOReader, keys: list[int]) -> int:
    """Distinct class labels of a plain file, reading headers only; unreadable records are left to the caller."""
    labels = set()
    for key in keys:
        try:
            rec = reader.read(key)
        except RecordIOError:
            continue
        labels.add(rec.label[0] if isinstance(rec.label, tuple) else rec.label)
    return len(labels)


def find_train_rec(root: str | os.PathLike) -> Path | None:
    """The train.rec under `root` (the Kaggle archive may nest it, e.g. faces_webface_112x112/); shallowest wins."""
    root = Path(root)
    found = sorted(root.rglob("train.rec"), key=lambda p: (len(p.parts), str(p)))
    return found[0] if found else None
