"""A RecordIO writer for tests: byte-identical to MXNet's MXIndexedRecordIO, so tests build real .rec files.

The product only reads RecordIO (faceid/data/recordio.py); writing is for tests and fixtures, so it lives here.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable

from faceid.core.fileio import atomic_write_bytes
from faceid.data.recordio import IRHEADER, MAGIC, MAGIC_BYTES, PART, Record


def pack_header(record: Record) -> bytes:
    """Inverse of unpack_header, byte-identical to mxnet.recordio.pack (array label -> flag = len, label 0)."""
    if isinstance(record.label, tuple):
        labels = struct.pack(f"<{len(record.label)}f", *record.label)
        return IRHEADER.pack(len(record.label), 0.0, record.id, record.id2) + labels + record.payload
    return IRHEADER.pack(record.flag, record.label, record.id, record.id2) + record.payload


def encode_record(raw: bytes) -> bytes:
    """One record's bytes on disk, split at aligned magic words exactly like dmlc RecordIOWriter::WriteRecord."""
    out, start = [], 0
    for i in range(0, len(raw) - len(raw) % 4, 4):
        if raw[i : i + 4] == MAGIC_BYTES:
            out.append(PART.pack(MAGIC, (1 if start == 0 else 2) << 29 | (i - start)) + raw[start:i])
            start = i + 4
    tail = len(raw) - start
    out.append(PART.pack(MAGIC, (3 if start else 0) << 29 | tail) + raw[start:] + b"\0" * (-tail % 4))
    return b"".join(out)


def write_recordio(
    rec_path: str | os.PathLike, idx_path: str | os.PathLike | None, records: Iterable[tuple[int, Record | bytes]]
) -> None:
    """Write (key, Record or raw record bytes) pairs as MXNet's MXIndexedRecordIO would; for tests and fixtures."""
    body, idx = bytearray(), []
    for key, rec in records:
        idx.append(f"{key}\t{len(body)}\n")
        body += encode_record(pack_header(rec) if isinstance(rec, Record) else rec)
    atomic_write_bytes(rec_path, bytes(body))
    if idx_path is not None:
        atomic_write_bytes(idx_path, "".join(idx).encode("ascii"))
