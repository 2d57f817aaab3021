"""Unpack a RecordIO training set into `out/<label>/<key>.jpg`, in parallel, resumably, losslessly.

JPEG payloads are copied byte for byte: decoding and re-encoding would cost most of the time and lose quality.
Other image payloads (PNG, ...) are decoded and stored as JPEG (quality 95). Payloads that are not images and
records cut off by a truncated file are listed in `<out>/unpack_report.json` and skipped; the run goes on.

Every image is written to a hidden temp file in its folder and renamed into place, so a partial file never
has a final name. Images are not fsynced one by one (that would dominate the run time); instead one
`os.sync()` runs before the report is written, so the report (the completion marker) is only on disk once
everything it describes is. After a crash before that point, a resumed run re-checks every file: a JPEG whose
size differs from its payload (e.g. left empty by the crash) is written again.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from ..core import report
from ..core.decode import DecodeError, decode_image, image_size, max_pixels
from ..core.errors import FaceIDError
from ..core.fileio import atomic_write_json
from .recordio import RecordIOError, RecordIOReader, RecordIOTruncated, detect_layout, unpack_header

REPORT_NAME = "unpack_report.json"
IDENTITIES_NAME = "identities.json"
JPEG_QUALITY = 95
_SOI, _EOI = b"\xff\xd8", b"\xff\xd9"
_TMP_SUFFIX = ".tmp"


@dataclass
class ChunkResult:
    """What one worker did with one chunk of keys (merged by the parent)."""

    written: int = 0
    skipped_existing: int = 0
    per_label: Counter = field(default_factory=Counter)
    corrupt: list[dict] = field(default_factory=list)
    truncated: list[dict] = field(default_factory=list)

    def merge(self, other: "ChunkResult") -> None:
        self.written += other.written
        self.skipped_existing += other.skipped_existing
        self.per_label.update(other.per_label)
        self.corrupt += other.corrupt
        self.truncated += other.truncated


@dataclass
class UnpackSummary:
    """The outcome of unpack_recordio; also what unpack_report.json holds."""

    rec_path: str
    out_dir: str
    layout: str
    images: int  # image files present for the keys processed (written + already there)
    written: int
    skipped_existing: int
    identities: int
    metadata_records: int
    corrupt: list[dict]
    truncated: list[dict]
    seconds: float
    sync_seconds: float
    index_source: str
    index_note: str
    limit: int | None

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict:
        data = dict(self.__dict__)
        data.update(images_per_s=round(self.images_per_s, 1), seconds=round(self.seconds, 3), complete=True)
        return data

    def describe(self) -> str:
        return (
            f"{self.images:,} images of {self.identities:,} identities in {self.out_dir} "
            f"({self.written:,} written, {self.skipped_existing:,} already present; "
            f"{self.metadata_records:,} metadata records, {len(self.corrupt):,} corrupt, "
            f"{len(self.truncated):,} truncated) in {self.seconds:.1f} s = {self.images_per_s:,.0f} images/s"
        )


# --- worker side --------------------------------------------------------------------------------------
_worker: dict = {}


def _init_worker(reader: RecordIOReader, out_dir: str) -> None:
    """Give this process its own reader (the mmap reopens here) and output root."""
    _worker.update(reader=reader, out=out_dir, dirs={}, pid=os.getpid(), limit=max_pixels())


MAX_LABEL = 1 << 31


def _label_of(label: float | tuple[float, ...]) -> int | None:
    """The record's class as a folder name; None for a label no writer produces (NaN, infinite, negative,
    fractional, huge or an empty label array), which marks the record corrupt."""
    value = (label[0] if label else None) if isinstance(label, tuple) else label
    if value is None or not math.isfinite(value) or value != int(value) or not 0 <= value < MAX_LABEL:
        return None
    return int(value)


def _to_jpeg(payload: bytes, what: str) -> bytes:
    """Decode a non-JPEG image payload through the decode gate and re-encode it as JPEG (DecodeError if not
    an image, or over the pixel limit)."""
    import cv2

    image = decode_image(payload, what)
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise DecodeError("Cannot decode", what, "it could not be re-encoded as JPEG.")
    return encoded.tobytes()


def _write_atomic(folder: str, name: str, data: bytes) -> None:
    """Write to `.name.<pid>.tmp` beside the target and rename it over; no fsync (see module docstring)."""
    tmp = f"{folder}/.{name}.{_worker['pid']}{_TMP_SUFFIX}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    os.replace(tmp, f"{folder}/{name}")


def _unpack_key(key: int, result: ChunkResult) -> None:
    reader: RecordIOReader = _worker["reader"]
    try:
        record = unpack_header(reader.read_raw(key))
    except RecordIOTruncated as err:
        result.truncated.append({"key": key, "offset": reader.offset(key), "reason": str(err)})
        return
    except RecordIOError as err:
        result.corrupt.append({"key": key, "reason": str(err)})
        return
    payload, label = record.payload, _label_of(record.label)
    if label is None:
        result.corrupt.append({"key": key, "reason": f"label {record.label!r} is not a class number"})
        return
    folder, name = f"{_worker['out']}/{label}", f"{key}.jpg"
    is_jpeg = payload[:2] == _SOI
    try:
        image_size(
            payload, f"record {key}", _worker["limit"]
        )  # the decode gate's header check: a JPEG is copied, never decoded
    except DecodeError as err:
        result.corrupt.append({"key": key, "reason": err.reason})
        return
    if is_jpeg and payload.rfind(_EOI, max(0, len(payload) - 64)) < 0:
        result.corrupt.append({"key": key, "reason": "JPEG payload has no end marker (cut short)"})
        return
    if not _folder_is_new(folder) and _already_done(f"{folder}/{name}", len(payload) if is_jpeg else None):
        result.skipped_existing += 1
        result.per_label[label] += 1
        return
    try:
        data = payload if is_jpeg else _to_jpeg(payload, f"record {key}")
    except DecodeError as err:
        result.corrupt.append({"key": key, "reason": err.reason})
        return
    _write_atomic(folder, name, data)
    result.written += 1
    result.per_label[label] += 1


def _folder_is_new(folder: str) -> bool:
    """Create the label folder once per worker; True if this worker created it, so no file in it can be
    from an earlier run and the per-file existence check can be skipped (keys are unique)."""
    new = _worker["dirs"].get(folder)
    if new is None:
        try:
            os.mkdir(folder)
            new = True
        except FileExistsError:
            new = False
        _worker["dirs"][folder] = new
    return new


def _already_done(path: str, expected_size: int | None) -> bool:
    """A file under its final name was renamed there complete; a size check also catches crash-emptied files."""
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        return False
    return size == expected_size if expected_size is not None else size > 0


def _unpack_chunk(keys: list[int]) -> ChunkResult:
    result = ChunkResult()
    for key in keys:
        _unpack_key(key, result)
    return result


# --- parent side --------------------------------------------------------------------------------------
def remove_stale_temps(out_dir: Path) -> int:
    """Delete temp files an interrupted run left in the label folders (they never became images)."""
    removed = 0
    for folder in os.scandir(out_dir):
        if not folder.is_dir(follow_symlinks=False):
            continue
        for entry in os.scandir(folder.path):
            if entry.name.startswith(".") and entry.name.endswith(_TMP_SUFFIX):
                os.unlink(entry.path)
                removed += 1
    return removed


def _chunks(keys: list[int], workers: int) -> list[list[int]]:
    size = max(64, min(2048, len(keys) // (workers * 8) or 1))
    return [keys[i : i + size] for i in range(0, len(keys), size)]


def _run_chunks(reader: RecordIOReader, out_dir: Path, keys: list[int], workers: int, progress: bool) -> ChunkResult:
    """Process the key chunks in this process (workers=1) or a pool started before the progress bar
    (tqdm's monitor thread would otherwise rule out fork)."""
    chunks = _chunks(keys, workers)
    if workers <= 1:
        _init_worker(reader, str(out_dir))
        return _consume(map(_unpack_chunk, chunks), chunks, progress)
    with _pool_context().Pool(workers, initializer=_init_worker, initargs=(reader, str(out_dir))) as pool:
        return _consume(pool.imap(_unpack_chunk, chunks), chunks, progress)


def _consume(results: Iterator[ChunkResult], chunks: list[list[int]], progress: bool) -> ChunkResult:
    total = ChunkResult()
    with report.progress(
        total=sum(map(len, chunks)), unit="img", desc="unpack", enabled=progress, smoothing=0.1
    ) as bar:
        for chunk, result in zip(chunks, results):
            total.merge(result)
            bar.update(len(chunk))
    return total


def _pool_context() -> multiprocessing.context.BaseContext:
    """fork when this process runs no other Python thread (starts in ms, and is safe then); else spawn
    (~0.3 s per start, but never copies another thread's held locks into the workers)."""
    if "fork" in multiprocessing.get_all_start_methods() and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def unpack_recordio(
    rec_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    workers: int | None = None,
    limit: int | None = None,
    progress: bool = True,
    idx_path: str | os.PathLike | None = None,
) -> UnpackSummary:
    """Unpack the image records of `rec_path` into `out_dir/<label>/<key>.jpg` and write the two JSON reports.

    Safe to re-run: images already present are kept (not rewritten), temp files from an interrupted run are
    removed. `limit` takes only the first N image records, for a quick look.
    """
    start = time.perf_counter()
    out_dir = Path(out_dir)
    workers = max(1, workers or os.cpu_count() or 1)
    with RecordIOReader(rec_path, idx_path) as reader:
        layout = detect_layout(reader)
        keys = layout.image_keys[:limit] if limit is not None else layout.image_keys
        _prepare_out_dir(out_dir)
        try:
            total = _run_chunks(reader, out_dir, keys, min(workers, max(1, len(keys) // 64)), progress)
        except OSError as err:
            raise FaceIDError(f"Writing images under {out_dir} failed: {err.strerror or err}") from err
        if reader.truncated_tail is not None:
            key, offset = reader.truncated_tail
            total.truncated.append({"key": key, "offset": offset, "reason": reader.index_note})
        index_source, index_note = reader.index_source, reader.index_note
    sync_start = time.perf_counter()
    os.sync()
    sync_seconds = time.perf_counter() - sync_start
    summary = UnpackSummary(
        rec_path=str(rec_path),
        out_dir=str(out_dir),
        layout=layout.kind,
        images=total.written + total.skipped_existing,
        written=total.written,
        skipped_existing=total.skipped_existing,
        identities=len(total.per_label),
        metadata_records=len(layout.metadata_keys),
        corrupt=sorted(total.corrupt, key=lambda c: c["key"]),
        truncated=sorted(total.truncated, key=lambda t: t["key"]),
        seconds=time.perf_counter() - start,
        sync_seconds=sync_seconds,
        index_source=index_source,
        index_note=index_note,
        limit=limit,
    )
    atomic_write_json(out_dir / IDENTITIES_NAME, {str(k): v for k, v in sorted(total.per_label.items())})
    atomic_write_json(out_dir / REPORT_NAME, summary.to_json())
    return summary


def _prepare_out_dir(out_dir: Path) -> None:
    """Create the output folder, drop the previous completion marker (this run must earn it) and stale temps."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / REPORT_NAME).unlink(missing_ok=True)
        remove_stale_temps(out_dir)
    except OSError as err:
        raise FaceIDError(f"Cannot prepare output folder {out_dir}: {err.strerror or err}") from err


def resolve_rec(rec: str | os.PathLike | None, input_dir: str | os.PathLike) -> Path:
    """The .rec to unpack: --rec if given, else the train.rec that download_dataset.py put under input_dir."""
    from .recordio import find_train_rec

    if rec is not None:
        rec = Path(rec)
        if not rec.is_file():
            raise FaceIDError(f"RecordIO file {rec} does not exist; check its path.", "rec")
        return rec
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise FaceIDError(
            f"Input folder {input_dir} does not exist; run {report.command('download_dataset.py')} first, or give the "
            f"folder or the .rec file.",
            "input_dir",
            "rec",
        )
    found = find_train_rec(input_dir)
    if found is None:
        raise FaceIDError(f"No train.rec under {input_dir}; give the RecordIO file's path.", "rec")
    return found


def preprocess(
    rec: str | os.PathLike | None,
    input_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    workers: int | None = None,
    limit: int | None = None,
) -> UnpackSummary:
    """preprocess_dataset.py: find the .rec and unpack it (no record readable is one sentence)."""
    rec_path = resolve_rec(rec, input_dir)
    summary = unpack_recordio(rec_path, output_dir, workers=workers, limit=limit)
    report = Path(output_dir) / REPORT_NAME
    if summary.images == 0 and (summary.corrupt or summary.truncated):
        raise FaceIDError(
            f"No record of {rec_path} was readable ({len(summary.corrupt):,} corrupt, "
            f"{len(summary.truncated):,} truncated; each is listed in {report})."
        )
    return summary
