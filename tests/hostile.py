"""A hostile-input corpus, built by the tests themselves (a few KB each; nothing large is committed).

Each file is what an attacker or a careless user could hand the tool: a 631-byte JPEG whose header claims
65000x65000 pixels, a PNG claiming 20000x20000 (a real one would be a 1.2 MB file that decodes to 1.2 GB),
an empty file, text named .jpg, a JPEG cut in half, and RecordIO records with every kind of damage.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np


def small_jpeg(size: int = 8, value: int = 128) -> bytes:
    ok, buf = cv2.imencode(".jpg", np.full((size, size, 3), value, np.uint8))
    assert ok
    return buf.tobytes()


def bomb_jpeg(width: int = 65000, height: int = 65000) -> bytes:
    """A valid small JPEG whose start-of-frame header is rewritten to claim width x height."""
    data = bytearray(small_jpeg())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def bomb_png(width: int = 20000, height: int = 20000) -> bytes:
    """A PNG whose IHDR claims width x height (CRC fixed, so every decoder believes it)."""
    ok, buf = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))
    data = bytearray(buf.tobytes())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def truncated_jpeg() -> bytes:
    ok, buf = cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    return buf.tobytes()[:300]


# name -> bytes: every one of them must be refused with one sentence, never a traceback
BAD_IMAGES = {
    "bomb.jpg": bomb_jpeg,
    "bomb.png": bomb_png,
    "empty.jpg": lambda: b"",
    "text.jpg": lambda: b"this is not an image\n" * 20,
    "truncated.jpg": truncated_jpeg,
    "zero.png": lambda: bomb_png(0, 0),
}


def write_bad_images(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, make in BAD_IMAGES.items():
        (folder / name).write_bytes(make())
        paths.append(folder / name)
    return paths


def bad_records() -> dict[str, bytes]:
    """Raw RecordIO record bodies (IRHeader + payload) with each kind of damage seen in the wild or by an attacker."""
    from recordio_writer import pack_header

    from faceid.data.recordio import Record

    good = small_jpeg(16)
    return {
        "flag announces more labels than the record holds": struct.pack("<IfQQ", 1 << 20, 0.0, 0, 0) + good[:8],
        "NaN label": pack_header(Record(0, float("nan"), 0, 0, good)),
        "infinite label": pack_header(Record(0, float("inf"), 0, 0, good)),
        "negative label": pack_header(Record(0, -3.0, 0, 0, good)),
        "empty payload": pack_header(Record(0, 1.0, 0, 0, b"")),
        "header claims 65000x65000": pack_header(Record(0, 1.0, 0, 0, bomb_jpeg())),
        "PNG claims 20000x20000": pack_header(Record(0, 1.0, 0, 0, bomb_png())),
        "not an image": pack_header(Record(0, 1.0, 0, 0, b"garbage" * 10)),
        "shorter than the IRHeader": b"\x00" * 10,
    }
