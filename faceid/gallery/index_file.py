"""The search index's file, ``search_index.bin``: a copy of the database's templates that checks itself, grows by
appending and forgets by tombstones, so a write to a big gallery does not cost a rebuild.

Why a file at all: a one-shot ``identify`` would otherwise read every template from SQLite and sketch it (about a
minute at 1M templates). Why it checks itself: it is a cache, and a cache that is believed when damaged decides who
a face is (a flipped byte gave a "cosine" of 49, a permuted id column named the wrong person). The database stays the
truth: `faceid.gallery.index_cache` re-scores every answer from it; this module only makes damage detectable.

Layout (format 2, little-endian). A 4 KiB header block: magic ``FACEIDX2``, uint32 JSON length, uint32 CRC32 of the
JSON, the JSON. Then four columns, each at a 64-byte-aligned offset and sized for ``capacity`` rows (rows past
``count`` are unused and left as holes in the file):

    ids       int64 per row: the person id; TOMBSTONE (-1) for a row whose person was deleted
    checks    float32 (capacity, 2): each row's dot products with two fixed random vectors (`row_checks`)
    matrix    float32 (capacity, dim): the templates, L2-normalised
    sketches  uint8 (capacity, sketch_bits / 8): SimHash sketches (`search_index.sketch`), only above EXACT_MAX

The JSON holds format, count, capacity, dim, sketch_bits, sketch_seed, tombstones, ``crc`` (CRC32 of the first
``count`` rows of each column) and the caller's ``extra`` (the database version it matches).

Opening checks the header and the CRC32s of ids, checks and sketches (at 1M: 80 MB read, ~0.1 s). The 2 GB matrix is
memory-mapped: `verify_all` checks its CRC32 (the full check, and small indexes, whose every search reads it all);
a search over sketches reads only its 4,096 candidate rows and checks those by their `checks` (one 4,096 x 512 x 2
product: a CRC32 of each row cost 5x the search itself). A damaged row moves its projections on two random
directions unless the damage is orthogonal to both (chance nil for damage large enough to change a score).

Writes: a full write (`write_index`) is atomic (temp file + rename). `update_in_place` appends rows and marks
tombstones in the existing file: rows first, fsync, then the header, fsync; a crash in between leaves the old header,
whose count and checksums still describe the old rows (the new ones are ignored). It runs under the database's write
lock, so two updates never interleave. When tombstones pass COMPACT_AT of the rows, or the capacity is used up, the
file is rewritten from its own live rows (no database read, no re-sketching): the compaction.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.fileio import atomic_write
from .search_index import EXACT_MAX, SKETCH_BITS, SKETCH_SEED, dot_rows, load_faiss, sketch

INDEX_MAGIC = b"FACEIDX2"
INDEX_FORMAT = 2
HEADER_BLOCK = 4096  # the header is rewritten in place: a fixed block, so the columns never move
TOMBSTONE = -1
COMPACT_AT = 0.25  # rewrite the file once more than this share of its rows are tombstones
MIN_SLACK = 1024  # rows of room for appends in every file (plus one eighth of its rows)
CHECK_SEED = 20261203  # the two random directions of `row_checks`, the same in every process
CHECK_TOLERANCE = 1e-5  # a faithful row gives its stored checks to float32 rounding
_ALIGN = 64
_PREFIX = struct.Struct("<8sII")  # magic, JSON length, JSON CRC32


class IndexDamaged(Exception):
    """The file is not a faithful index: `str(err)` says what was wrong, as a phrase ("the id column does not
    match its checksum"), for the note that names the file."""


def capacity_for(count: int) -> int:
    """Rows a file holding `count` is sized for: room for MIN_SLACK + count / 8 appends before a rewrite."""
    return count + max(MIN_SLACK, count // 8)


_directions: dict[int, np.ndarray] = {}


def row_checks(matrix: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """(n, dim) -> (n, 2) float32: each row's dot products with two fixed random unit vectors (CHECK_SEED)."""
    dim = matrix.shape[1]
    if dim not in _directions:
        r = np.random.default_rng(CHECK_SEED).standard_normal((dim, 2))
        _directions[dim] = np.ascontiguousarray((r / np.linalg.norm(r, axis=0)).T, dtype=np.float32).T
    out = np.empty((len(matrix), 2), "<f4")
    for start in range(0, len(matrix), chunk):
        block = matrix[start : start + chunk]
        for j in range(2):  # two single-threaded matrix-vector products: 100x faster than einsum's "ij,jk->ik"
            out[start : start + chunk, j] = dot_rows(block, _directions[dim][:, j])
    return out


def _crc(array: np.ndarray, start: int = 0) -> int:
    return zlib.crc32(np.ascontiguousarray(array).data, start)


def _aligned(n: int) -> int:
    return -(-n // _ALIGN) * _ALIGN


def _layout(capacity: int, dim: int, sketch_bits: int) -> tuple[int, int, int, int, int]:
    """Offsets of ids, checks, matrix and sketches for `capacity` rows, and the file's size."""
    ids_at = HEADER_BLOCK
    checks_at = _aligned(ids_at + 8 * capacity)
    matrix_at = _aligned(checks_at + 8 * capacity)
    sketch_at = _aligned(matrix_at + 4 * capacity * dim)
    return ids_at, checks_at, matrix_at, sketch_at, sketch_at + capacity * sketch_bits // 8


def _header_block(header: dict) -> bytes:
    blob = json.dumps(header, sort_keys=True).encode()
    block = _PREFIX.pack(INDEX_MAGIC, len(blob), zlib.crc32(blob)) + blob
    if len(block) > HEADER_BLOCK:
        raise ValueError("index header too long")  # the caller's `extra` is a few short fields
    return block + b"\0" * (HEADER_BLOCK - len(block))


def _read_header(f) -> dict:
    block = f.read(HEADER_BLOCK)
    if len(block) < _PREFIX.size:
        raise IndexDamaged("the file is shorter than its header")
    magic, length, crc = _PREFIX.unpack_from(block)
    if magic != INDEX_MAGIC:
        raise IndexDamaged("it is not an index file of this format")
    blob = block[_PREFIX.size : _PREFIX.size + length]
    if length > HEADER_BLOCK - _PREFIX.size or len(blob) != length or zlib.crc32(blob) != crc:
        raise IndexDamaged("its header does not match its checksum")
    try:
        header = json.loads(blob)
    except (ValueError, UnicodeDecodeError):
        raise IndexDamaged("its header is not readable") from None
    if not isinstance(header, dict):
        raise IndexDamaged("its header is not readable")
    return header


def _int_field(header: dict, key: str, low: int, high: int) -> int:
    value = header.get(key)
    if type(value) is not int or not low <= value <= high:
        raise IndexDamaged(f"its header's {key} is not a number from {low} to {high}")
    return value


@dataclass
class IndexFile:
    """An opened, checked index file: its header fields and its columns (memory-mapped, read-only)."""

    path: Path
    header: dict
    ids: np.ndarray  # (count,) int64, TOMBSTONE for deleted rows
    checks: np.ndarray  # (count, 2) float32
    matrix: np.ndarray  # (count, dim) float32
    sketches: np.ndarray | None  # (count, bits / 8) uint8, or None below EXACT_MAX

    @property
    def count(self) -> int:
        return len(self.ids)

    @property
    def extra(self) -> dict:
        return self.header["extra"]

    @classmethod
    def open(cls, path: str | os.PathLike) -> "IndexFile":
        """Read and check the header and the id, check and sketch columns. Raises FileNotFoundError when
        there is no file, IndexDamaged (saying what is wrong) when it is not a faithful index, OSError otherwise."""
        path = Path(path)
        with open(path, "rb") as f:
            header = _read_header(f)
            size = os.fstat(f.fileno()).st_size
        if header.get("format") != INDEX_FORMAT or header.get("sketch_seed") != SKETCH_SEED:
            raise IndexDamaged("its header names another format")
        dim = _int_field(header, "dim", 1, 1 << 16)
        capacity = _int_field(header, "capacity", 0, size)
        count = _int_field(header, "count", 0, capacity)
        bits = _int_field(header, "sketch_bits", 0, SKETCH_BITS)
        tombstones = _int_field(header, "tombstones", 0, count)
        crc, extra = header.get("crc"), header.get("extra")
        if (
            bits not in (0, SKETCH_BITS)
            or not isinstance(extra, dict)
            or not isinstance(crc, dict)
            or type(crc.get("matrix")) is not int
        ):
            raise IndexDamaged("its header is not readable")
        ids_at, checks_at, matrix_at, sketch_at, end = _layout(capacity, dim, bits)
        if size != end:
            raise IndexDamaged(f"it is {size} bytes long, its header says {end}")

        def column(dtype, offset: int, shape: tuple[int, ...]) -> np.ndarray:
            if count == 0:
                return np.zeros(shape, dtype)
            return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)

        ids = column("<i8", ids_at, (count,))
        checks = column("<f4", checks_at, (count, 2))
        matrix = column("<f4", matrix_at, (count, dim))
        sketches = column(np.uint8, sketch_at, (count, bits // 8)) if bits else None
        index = cls(path, header, ids, checks, matrix, sketches)
        for name, array in (("ids", ids), ("checks", checks), ("sketches", sketches)):
            if array is not None and crc.get(name) != _crc(array):
                raise IndexDamaged(f"its {_COLUMN_NAMES[name]} does not match its checksum")
        if np.count_nonzero(ids < 1) != tombstones or np.count_nonzero(ids == TOMBSTONE) != tombstones:
            raise IndexDamaged("its id column holds ids no gallery writes")
        return index

    def verify_rows(self, rows: np.ndarray, block: np.ndarray | None = None) -> None:
        """Raise IndexDamaged when any of `rows` of the matrix does not give its stored checks (what a search
        reads); `block`: those rows already read (`matrix[rows]`), so they are not read twice."""
        rows = np.asarray(rows, np.int64)
        block = self.matrix[rows] if block is None else block
        if len(rows) and not np.all(np.abs(row_checks(block) - self.checks[rows]) <= CHECK_TOLERANCE):
            raise IndexDamaged(MATRIX_DAMAGED)

    def verify_all(self) -> None:
        """Check the whole matrix against its CRC32, and its checks against it (the full check, the compaction,
        and small indexes, whose every search reads every row)."""
        if self.header["crc"].get("matrix") != _crc(self.matrix):
            raise IndexDamaged(MATRIX_DAMAGED)
        if not np.all(np.abs(row_checks(self.matrix) - self.checks) <= CHECK_TOLERANCE):
            raise IndexDamaged("its check column does not match its template matrix")


MATRIX_DAMAGED = "its template matrix does not match its checksums"


_COLUMN_NAMES = {"ids": "id column", "checks": "check column", "sketches": "sketch column"}


def write_index(
    path: Path, matrix: np.ndarray, ids: np.ndarray, sketches: np.ndarray | None, extra: dict, mode: int
) -> None:
    """Write a whole index file atomically, sized for `capacity_for(len(ids))` rows; `sketches`: the matrix's
    SimHash sketches or None (the exact backend)."""
    matrix = np.ascontiguousarray(matrix, dtype="<f4")
    ids = np.ascontiguousarray(ids, dtype="<i8")
    count, dim = matrix.shape
    if ids.shape != (count,) or (sketches is not None and sketches.shape != (count, SKETCH_BITS // 8)):
        raise ValueError("one id and one sketch per row")
    bits = SKETCH_BITS if sketches is not None else 0
    checks = row_checks(matrix)
    capacity = capacity_for(count)
    header = {
        "format": INDEX_FORMAT,
        "count": count,
        "capacity": capacity,
        "dim": dim,
        "sketch_bits": bits,
        "sketch_seed": SKETCH_SEED,
        "tombstones": int(np.count_nonzero(ids == TOMBSTONE)),
        "crc": {"ids": _crc(ids), "checks": _crc(checks), "matrix": _crc(matrix)}
        | ({"sketches": _crc(sketches)} if sketches is not None else {}),
        "extra": extra,
    }
    offsets = _layout(capacity, dim, bits)

    def write(f) -> None:
        f.write(_header_block(header))
        for offset, array in zip(offsets[:4], (ids, checks, matrix, sketches)):
            if array is not None and array.size:
                f.seek(offset)
                np.ascontiguousarray(array).tofile(f)
        f.truncate(offsets[4])  # the unused capacity stays a hole

    atomic_write(path, write, mode)


def wants_sketches(count: int) -> bool:
    """Whether an index of `count` rows is searched through sketches (and so stores them)."""
    return count > EXACT_MAX and load_faiss() is not None


def update_in_place(
    index: IndexFile, extra: dict, add_ids: np.ndarray, add_matrix: np.ndarray, remove_ids: list[int], mode: int
) -> str:
    """Bring the opened, checked file `index` to the state `extra` describes: mark the rows of `remove_ids` as
    tombstones and append `add_matrix` with `add_ids`. Returns "updated" (in place: rows, fsync, header, fsync) or
    "compacted" (rewritten from its live rows: tombstones over COMPACT_AT, capacity used up, or the sketch backend
    now needed or no longer). Raises IndexDamaged (rows it would carry over are damaged) or OSError."""
    path = index.path
    header = dict(index.header)
    count, capacity, dim = index.count, header["capacity"], header["dim"]
    add_matrix = np.ascontiguousarray(add_matrix, dtype="<f4").reshape(-1, dim)
    add_ids = np.ascontiguousarray(add_ids, dtype="<i8")
    dead = np.flatnonzero(np.isin(index.ids, np.asarray(remove_ids, np.int64))) if remove_ids else np.zeros(0, int)
    tombstones = header["tombstones"] + len(dead)
    new_count = count + len(add_ids)
    has_sketches = index.sketches is not None
    if new_count > capacity or tombstones > COMPACT_AT * new_count or has_sketches != wants_sketches(new_count):
        _compact(index, dead, add_ids, add_matrix, extra, mode)
        return "compacted"
    ids_at, checks_at, matrix_at, sketch_at, _ = _layout(capacity, dim, header["sketch_bits"])
    checks = row_checks(add_matrix)
    new_sketches = sketch(add_matrix) if has_sketches else None
    with open(path, "r+b") as f:
        fd = f.fileno()
        for row in dead:
            os.pwrite(fd, struct.pack("<q", TOMBSTONE), ids_at + 8 * int(row))
        if len(add_ids):
            os.pwrite(fd, add_ids.tobytes(), ids_at + 8 * count)
            os.pwrite(fd, checks.tobytes(), checks_at + 8 * count)
            os.pwrite(fd, add_matrix.tobytes(), matrix_at + 4 * dim * count)
            if new_sketches is not None:
                os.pwrite(fd, new_sketches.tobytes(), sketch_at + SKETCH_BITS // 8 * count)
        os.fsync(fd)
        ids = np.fromfile(path, "<i8", count=new_count, offset=ids_at)
        old = header["crc"]
        header["crc"] = {
            "ids": _crc(ids),
            "checks": _crc(checks, old["checks"]),
            "matrix": _crc(add_matrix, old["matrix"]),
        } | ({"sketches": _crc(new_sketches, old["sketches"])} if new_sketches is not None else {})
        header.update(count=new_count, tombstones=tombstones, extra=extra)
        os.pwrite(fd, _header_block(header), 0)
        os.fsync(fd)
    return "updated"


def _compact(
    index: IndexFile, dead: np.ndarray, add_ids: np.ndarray, add_matrix: np.ndarray, extra: dict, mode: int
) -> None:
    """Rewrite the file from its live rows plus the added ones: no tombstones, fresh capacity."""
    live = index.ids != TOMBSTONE
    live[dead] = False
    rows = np.flatnonzero(live)
    index.verify_all()  # never carry damaged rows into a file with fresh checksums
    matrix = np.concatenate([index.matrix[rows], add_matrix])
    ids = np.concatenate([index.ids[rows], add_ids])
    sketches = None
    if wants_sketches(len(ids)):
        old = index.sketches[rows] if index.sketches is not None else sketch(index.matrix[rows])
        sketches = np.concatenate([old, sketch(add_matrix)])
    write_index(index.path, matrix, ids, sketches, extra, mode)
