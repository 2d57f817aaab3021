"""The one decode gate: every encoded image that enters the system passes through here.

Files and folders given to the app, the evaluator's image files and ``.bin`` entries, ``.rec`` payloads
(unpacking and training) and the gallery's stored crops are all hostile until measured. A 631-byte JPEG can
claim 65000x65000 pixels and a 1.2 MB PNG can expand to 1.2 GB, so the gate works in this order:

1. size of the encoded data (a file is `stat`-ed before it is read): over `max_bytes(limit)` is refused;
2. the dimensions from the image header only (Pillow's lazy ``Image.open`` parses the header, no pixels):
   an unrecognised format, a zero side or more than the pixel limit is refused - in microseconds;
3. the decode itself (OpenCV, which also applies EXIF orientation and handles CMYK, 16-bit, alpha, gray).

A photo the app looks for faces in is decoded to at most `WORKING_MAX_PIXELS` (`fit`): a JPEG by libjpeg's
own 1/2, 1/4, 1/8 scaling (the full image never exists in memory), anything else decoded once and shrunk at once,
so a 10900x10900 PNG costs one full-size decode, not several copies of it.

Each refusal is a `DecodeError`: one sentence naming the image and what to do. The pixel limit comes from
``--max-pixels`` on every command line, carried in the ``FACEID_MAX_PIXELS`` environment variable so
worker processes inherit it; the default (`DEFAULT_MAX_PIXELS`, 120 MP) fits every camera and phone photo
in common use (a 108 MP phone sensor, a 100 MP medium-format camera) and refuses 20000x20000.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import stat
import threading
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import FaceIDError, positive_int
from .fileio import describe_kind

# The file names read as images wherever a folder is scanned (app sources, training trees, liveness stills):
# the formats this gate reads.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
DEFAULT_MAX_PIXELS = 120_000_000
# The most pixels of a photo or frame the app works on (`fit`). The detector looks at frames shrunk to 320 px
# (faceid.model.face) and finds faces of at least 1/8 of the long side, so above 12 MP (4000x3000) a face it can
# find is over 400 px wide: shrinking loses nothing, and it bounds memory (a 120 MP photo would be 360 MB, plus
# copies).
WORKING_MAX_PIXELS = 12_000_000
MAX_PIXELS_ENV = "FACEID_MAX_PIXELS"
# Pillow's own bomb check warns (or raises with its own wording) above ~89 MP; the limit is ours, enforced
# below, so Pillow's is switched off - but only Pillow's *header* parsing is ever used, never its decoder.
Image.MAX_IMAGE_PIXELS = None


_SOI = b"\xff\xd8"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_KNOWN_MAGIC = (b"BM", b"RIFF", b"II*\x00", b"MM\x00*", b"GIF8")
# Start-of-frame markers (baseline, progressive, lossless, arithmetic): the segment that holds the size.
_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


class DecodeError(FaceIDError):
    """An image was refused or could not be decoded; the message is the one sentence the user sees:
    "<verb> <what>: <reason>". `reason` alone serves lists that already name the file (skipped folder files,
    corrupt .rec records)."""

    def __init__(self, verb: str, what: str, reason: str, *settings: str):
        super().__init__(f"{verb} {what}: {reason}", *settings)
        self.verb, self.what, self.reason = verb, what, reason

    def __reduce__(self):  # survives pickling (worker processes send it to their parent)
        return type(self), (self.verb, self.what, self.reason, *self.settings)


def max_pixels() -> int:
    """The pixel limit in force: $FACEID_MAX_PIXELS (set by --max-pixels), else DEFAULT_MAX_PIXELS."""
    text = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(float(text))
    except ValueError:
        raise FaceIDError(f"{MAX_PIXELS_ENV}={text!r} is not a number of pixels (e.g. 120000000).") from None
    if value < 1:
        raise FaceIDError(f"{MAX_PIXELS_ENV} must be at least 1, not {value}.")
    return value


def max_bytes(limit: int) -> int:
    """Largest encoded size accepted for a `limit`-pixel image: uncompressed 16-bit RGBA (8 bytes a pixel)
    plus room for metadata. Anything bigger cannot be a legitimate image of an allowed size."""
    return 8 * limit + (16 << 20)


def add_max_pixels_argument(parser: argparse._ActionsContainer, default=None) -> None:
    """The --max-pixels flag, identical on every command line (subparsers pass argparse.SUPPRESS). `parser`: a
    parser or an argument group."""
    parser.add_argument(
        "--max-pixels",
        type=positive_int,
        default=max_pixels() if default is None else default,
        metavar="N",
        help=f"refuse any image whose header claims more than N pixels, before "
        f"decoding it (default: ${MAX_PIXELS_ENV} or {DEFAULT_MAX_PIXELS:,} = "
        f"{DEFAULT_MAX_PIXELS / 1e6:.0f} MP, enough for any camera or phone photo)",
    )


def apply_max_pixels(value: int | None) -> None:
    """Make a --max-pixels value the limit for this process and every worker it starts."""
    if value is not None:
        os.environ[MAX_PIXELS_ENV] = str(int(value))


def _as_bytes(data) -> bytes | memoryview:
    if isinstance(data, np.ndarray):
        return np.ascontiguousarray(data, dtype=np.uint8).reshape(-1).data
    return data


def image_size(data, what: str = "the image", limit: int | None = None) -> tuple[int, int]:
    """(width, height) read from the header only; refuses empty, oversized, unrecognised or over-limit images."""
    limit = max_pixels() if limit is None else limit
    buf = _as_bytes(data)
    n = len(buf) if buf is not None else 0
    if n == 0:
        raise DecodeError("Cannot decode", what, "it is empty (0 bytes).")
    if n > max_bytes(limit):
        raise DecodeError(
            "Refused",
            what,
            f"{n / 1e6:,.0f} MB is more than any image within the {limit / 1e6:g} MP limit can be.",
            "max_pixels",
        )
    try:
        if bytes(buf[:2]) == _SOI:
            width, height = _jpeg_size(buf)
        elif bytes(buf[:8]) == _PNG_SIGNATURE:
            width, height = _png_size(buf)
        else:
            with Image.open(io.BytesIO(buf)) as im:
                width, height = im.size
    except UnidentifiedImageError:
        if bytes(buf[:4]).startswith(_KNOWN_MAGIC):
            raise DecodeError("Cannot decode", what, "its image header is damaged.") from None
        raise DecodeError(
            "Cannot decode", what, "it is not an image in a known format (JPEG, PNG, BMP, WebP, TIFF)."
        ) from None
    except Exception as err:  # a damaged header raises many types (SyntaxError, struct.error, OSError, ...)
        raise DecodeError("Cannot decode", what, f"its image header is damaged ({type(err).__name__}).") from None
    if width < 1 or height < 1:
        raise DecodeError("Cannot decode", what, f"its header claims {width}x{height} pixels.")
    if width * height > limit:
        raise DecodeError(
            "Refused",
            what,
            f"its header claims {width}x{height} pixels ({width * height / 1e6:,.0f} "
            f"MP), over the {limit / 1e6:g} MP limit; downscale it, or raise the limit if it is "
            f"a real photo.",
            "max_pixels",
        )
    return width, height


def _jpeg_size(buf) -> tuple[int, int]:
    """(width, height) from a JPEG's start-of-frame segment, walking the marker segments from the start.

    Pillow's JPEG open reads the same numbers but also parses every APP segment (~100 us); this walk costs
    a few microseconds, which matters when unpacking millions of small .rec JPEGs that are never decoded."""
    pos, n = 2, len(buf)
    while pos + 4 <= n:
        if buf[pos] != 0xFF:
            raise ValueError("marker expected")
        marker = buf[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker in (0x01, 0xD0, 0xD1, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7):  # markers without a length
            pos += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            break
        length = (buf[pos + 2] << 8) | buf[pos + 3]
        if marker in _SOF_MARKERS and pos + 9 <= n and length >= 7:
            height = (buf[pos + 5] << 8) | buf[pos + 6]
            width = (buf[pos + 7] << 8) | buf[pos + 8]
            return width, height
        if length < 2:
            raise ValueError("bad segment length")
        pos += 2 + length
    raise ValueError("no frame header")


# Markers `_jpeg_size` steps over without a length, or stops at: the vectorised walk leaves them to it.
_NO_LENGTH_OR_END = np.array([0xFF, 0x01, 0xD0, 0xD1, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8, 0xD9, 0xDA], np.uint8)
_SOF_ARRAY = np.array(sorted(_SOF_MARKERS), np.uint8)
_MAX_SEGMENTS = 32  # segments walked in lockstep before the frame header; a JFIF or EXIF JPEG has 3 to 8


def check_packed_headers(data: np.ndarray, offsets: np.ndarray, name_of, limit: int | None = None) -> np.ndarray:
    """The gate's header check (`image_size`) for a batch packed in one buffer (image i is
    data[offsets[i]:offsets[i + 1]]), in one vectorised pass: returns which images are JPEGs.

    The JPEG marker walk of `_jpeg_size` runs for every image at once, one numpy step per segment, and the size
    and pixel limits are compared as arrays; only an image the walk cannot settle (a PNG, fill bytes, a damaged
    or over-limit header) goes through `image_size` on its own, and only then is its name built (`name_of(i)`),
    so the refusals and their sentences are exactly `image_size`'s. About 1 us per image instead of ~40."""
    limit = max_pixels() if limit is None else limit
    data = np.asarray(data, np.uint8).reshape(-1)
    starts, ends = np.asarray(offsets[:-1], np.int64), np.asarray(offsets[1:], np.int64)
    count, last = len(starts), max(len(data) - 1, 0)
    lengths = ends - starts

    def byte(at: np.ndarray) -> np.ndarray:
        return data[np.minimum(at, last)].astype(np.int64) if len(data) else np.zeros(len(at), np.int64)

    is_jpeg = (lengths > 2) & (byte(starts) == 0xFF) & (byte(starts + 1) == 0xD8)
    width, height = np.zeros(count, np.int64), np.zeros(count, np.int64)
    settled = np.zeros(count, bool)
    pos = starts + 2
    walking = np.nonzero(is_jpeg & (lengths <= max_bytes(limit)))[0]
    for _ in range(_MAX_SEGMENTS):
        if not len(walking):
            break
        p, end = pos[walking], ends[walking]
        marker, size = byte(p + 1), (byte(p + 2) << 8) | byte(p + 3)
        plain = (p + 4 <= end) & (byte(p) == 0xFF) & ~np.isin(marker, _NO_LENGTH_OR_END) & (size >= 2)
        frame = plain & np.isin(marker, _SOF_ARRAY) & (p + 9 <= end) & (size >= 7)
        found = walking[frame]
        height[found] = (byte(p[frame] + 5) << 8) | byte(p[frame] + 6)
        width[found] = (byte(p[frame] + 7) << 8) | byte(p[frame] + 8)
        settled[found] = True
        onward = plain & ~frame  # anything else (not plain) is left to image_size
        pos[walking[onward]] = p[onward] + 2 + size[onward]
        walking = walking[onward]
    passed = settled & (width >= 1) & (height >= 1) & (width * height <= limit)
    for i in np.nonzero(~passed)[0]:
        image_size(data[starts[i] : ends[i]], name_of(int(i)), limit)  # raises, or accepts a PNG, BMP ...
    return is_jpeg


def _png_size(buf) -> tuple[int, int]:
    """(width, height) from the IHDR chunk, which the PNG standard puts first, right after the signature."""
    if len(buf) < 24 or bytes(buf[12:16]) != b"IHDR":
        raise ValueError("no IHDR chunk")
    return int.from_bytes(buf[16:20], "big"), int.from_bytes(buf[20:24], "big")


def decode_image(data, what: str = "the image", limit: int | None = None, fit: int | None = None) -> np.ndarray:
    """Encoded bytes (bytes, memoryview or 1-D uint8 array) -> RGB uint8 (H, W, 3), through the gate; `fit`:
    shrink an image of more pixels to at most that many (a JPEG while it is decoded, see the module docstring).

    Raises DecodeError (one sentence naming `what`) for anything that is not a decodable image within the limit.
    """
    width, height = image_size(data, what, limit)
    buf = data if isinstance(data, np.ndarray) else np.frombuffer(data, np.uint8)
    flags = cv2.IMREAD_COLOR
    if fit is not None and width * height > fit and bytes(buf[:2]) == _SOI:
        flags = _REDUCED[max(k for k in _REDUCED if k == 1 or width * height / (k * k) >= fit)]
    try:
        with _native_warnings_silenced():
            bgr = cv2.imdecode(buf, flags)
    except cv2.error:
        bgr = None
    if bgr is None or bgr.size == 0:
        raise DecodeError("Cannot decode", what, "its image data is damaged or truncated.")
    if fit is not None:
        bgr = fit_pixels(bgr, fit)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


# libjpeg's scaled decodes: 1/k of each side, the DCT itself shrunk, so the full image is never allocated
_REDUCED = {
    1: cv2.IMREAD_COLOR,
    2: cv2.IMREAD_REDUCED_COLOR_2,
    4: cv2.IMREAD_REDUCED_COLOR_4,
    8: cv2.IMREAD_REDUCED_COLOR_8,
}


def fit_pixels(image: np.ndarray, limit: int = WORKING_MAX_PIXELS) -> np.ndarray:
    """`image` itself when it has at most `limit` pixels, else shrunk (area averaging) to at most that many."""
    h, w = image.shape[:2]
    if h * w <= limit:
        return image
    scale = (limit / (h * w)) ** 0.5
    size = (max(1, int(w * scale)), max(1, int(h * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


@contextlib.contextmanager
def _native_warnings_silenced():
    """libpng and libjpeg write warnings about damaged files ("libpng warning: iCCP: ...", "Corrupt JPEG data:
    2 extraneous bytes") straight to file descriptor 2, past Python; the gate's own sentence is what the user
    should read. So fd 2 points at /dev/null during the decode - only in a single-threaded process (the app,
    a DataLoader worker), where no other thread can be writing to stderr meanwhile; FACEID_DEBUG=1 keeps them."""
    if (
        threading.active_count() > 1
        or threading.current_thread() is not threading.main_thread()
        or os.environ.get("FACEID_DEBUG", "").strip() not in ("", "0")
    ):
        yield
        return
    global _DEVNULL
    if _DEVNULL is None:
        _DEVNULL = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
    saved = os.dup(2)  # (Python's own buffered stderr text is written later, after fd 2 is back)
    try:
        os.dup2(_DEVNULL, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


_DEVNULL: int | None = None


def read_image_file(path: str | os.PathLike, limit: int | None = None, fit: int | None = None) -> np.ndarray:
    """An image file -> RGB uint8, its size checked before a byte of it is read (a FIFO or device is refused);
    `fit`: as `decode_image`'s."""
    limit = max_pixels() if limit is None else limit
    return decode_image(_read_bytes(Path(path), limit), str(path), limit, fit)


def check_image_file(path: str | os.PathLike, limit: int | None = None) -> tuple[int, int]:
    """(width, height) of an image file from its header, with every check of `read_image_file` but the decode:
    a cheap pass over many files (the evaluator's) that refuses a bad one before minutes of other work."""
    limit = max_pixels() if limit is None else limit
    return image_size(_read_bytes(Path(path), limit), str(path), limit)


def _read_bytes(path: Path, limit: int) -> np.ndarray:
    """A regular file's bytes, its size checked against `max_bytes(limit)` before reading."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise DecodeError("Cannot read", str(path), "it does not exist.") from None
    except OSError as err:
        raise DecodeError("Cannot read", str(path), f"{err.strerror}.") from None
    if not stat.S_ISREG(st.st_mode):
        raise DecodeError("Cannot read", str(path), f"it is {describe_kind(st.st_mode)}, not a regular file.")
    if st.st_size > max_bytes(limit):
        raise DecodeError(
            "Refused",
            str(path),
            f"{st.st_size / 1e6:,.0f} MB is more than any image within the {limit / 1e6:g} MP limit can be.",
            "max_pixels",
        )
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as err:
        raise DecodeError("Cannot read", str(path), f"{err.strerror or err}.") from None
    return data
