"""The gallery's files on disk: its data directory, the private folders and files in it, the sample crops.

The gallery touches only what it made. ``--data-dir`` must be a new folder, an empty one, or a gallery:
a folder that already holds other files (``--data-dir /tmp``, a home folder) is refused, never chmod-ed.
Inside it, a symlink where a gallery file or folder belongs is refused, files are opened with
``O_NOFOLLOW``, and clean-up deletes only its own names (``samples/<digits>/<digits>.jpg`` and the folder
holding them), never anything else someone put there.

Sample crops are RGB JPEGs (quality 95, ~10 KB); one read back is capped in size and goes through the same
decode gate as any other image (`faceid.core.decode`), since the folder may have been tampered with.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from pathlib import Path

import cv2
import numpy as np

from ..core import report
from ..core.decode import DecodeError, decode_image
from ..core.fileio import describe_kind
from .records import DB_NAME, DIR_MODE, FILE_MODE, INDEX_NAME, SAMPLES_DIR, GalleryError

JPEG_QUALITY = 95
MAX_CROP_BYTES = 4 << 20  # a stored crop is a ~10 KB JPEG of at most a few hundred pixels a side
_SAMPLE_DIR_NAME = re.compile(r"[0-9]+")
_SAMPLE_FILE_NAME = re.compile(r"[0-9]+\.jpg")


# ----------------------------------------------------------------------------------------- the data directory


def make_private(path: Path, mode: int) -> None:
    """Ensure `path` has no group/other permission bits; fix them (and say so) if we can, else refuse."""
    current = path.stat().st_mode & 0o777
    if current & ~mode & 0o777 == 0:
        return
    try:
        os.chmod(path, mode)
    except PermissionError:
        raise GalleryError(
            f"{path} is accessible to other users (mode {current:o}) and cannot be made private; "
            f"run `chmod {mode:o} {path}` as its owner."
        ) from None
    except OSError as err:
        raise storage_error(err, f"make {path} private") from None
    report.warn(f"Made {path} private (mode {current:o} -> {mode:o}): it holds biometric data.")


def private_dir(path: Path, fix: bool = True) -> None:
    """Create `path` (0700) if needed, and every missing folder above it (0700 too, whatever the umask: they are
    ours and lead to biometric data); an existing one that is too open is fixed (callers make sure it is ours),
    unless `fix` is False (read-only storage, where nothing can be changed)."""
    missing = [p for p in (path, *path.parents) if not (p.exists() or p.is_symlink())][::-1]
    try:
        for folder in missing:
            folder.mkdir(mode=DIR_MODE)
            os.chmod(folder, DIR_MODE)  # mkdir's mode passes through the umask
    except FileExistsError:
        pass  # another process made it meanwhile
    except OSError as err:
        raise storage_error(err, f"create the data directory {path}") from None
    if not path.is_dir():
        raise GalleryError(f"{path} exists and is not a directory; choose another data directory.", "data_dir")
    if fix:
        make_private(path, DIR_MODE)


def claim_data_dir(data_dir: Path, fix: bool = True) -> None:
    """Make sure `data_dir` is ours before anything in it is changed: new (created 0700), empty and owned by
    this user, or already a gallery. Anything else - a folder with other files, a shared sticky folder such
    as /tmp - is refused: changing its mode or cleaning it up would damage what others keep there. `fix`: make
    it private (False on read-only storage)."""
    db = data_dir / DB_NAME
    if data_dir.is_dir() and not (db.exists() or db.is_symlink()):
        st = data_dir.stat()
        foreign = next(iter(os.scandir(data_dir)), None) is not None
        shared = st.st_mode & 0o1000 or st.st_uid != os.getuid()
        if foreign or shared:
            why = "already holds other files" if foreign else "is a shared folder (sticky bit, or another owner)"
            raise GalleryError(
                f"{data_dir} {why} and is not a faceid gallery; choose a new or empty folder as the "
                f"data directory, e.g. {data_dir / 'faceid_data'}.",
                "data_dir",
            )
    private_dir(data_dir, fix=fix)
    for name in (DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm", INDEX_NAME, SAMPLES_DIR):
        path = data_dir / name
        if path.is_symlink():
            raise GalleryError(
                f"{path} is a symbolic link; a gallery keeps its own files in its own "
                f"folder - replace the link with the real {'folder' if name == SAMPLES_DIR else 'file'}."
            )
        try:
            mode = path.lstat().st_mode
        except FileNotFoundError:
            continue
        if not (stat.S_ISDIR(mode) if name == SAMPLES_DIR else stat.S_ISREG(mode)):
            # a named pipe here would block the database or the index open forever; a device is not ours
            raise GalleryError(
                f"{path} is {describe_kind(mode)}, not the {'folder' if name == SAMPLES_DIR else 'file'} a gallery "
                f"keeps there; move it out of the gallery."
            )


# ----------------------------------------------------------------------------------------- the storage under it

READ_ONLY = "is on read-only storage"
MIN_FREE_BYTES = 1 << 20  # below this SQLite cannot even open a write-ahead log: the gallery is served read-only


def storage_limit(data_dir: Path) -> str | None:
    """Why nothing can be written in the gallery `data_dir` now, as the end of a sentence naming it ("is on
    read-only storage", "is on a full disk (0 bytes free)"), or None when it can be. Read-only is a read-only
    mount (statvfs ST_RDONLY) or a folder or database this process may not write (chmod, ``chattr +i``: root
    honours the immutable flag, not the mode bits, and os.access says so)."""
    db = data_dir / DB_NAME
    try:
        info = os.statvfs(data_dir)
    except OSError:
        return None  # not there yet: creating it will say what is wrong
    if info.f_flag & os.ST_RDONLY or not os.access(data_dir, os.W_OK) or (db.exists() and not os.access(db, os.W_OK)):
        return READ_ONLY
    free = info.f_bavail * info.f_frsize
    if free < MIN_FREE_BYTES:
        return f"is on a full disk ({free:,} bytes free)"
    return None


def read_only_refusal(data_dir: Path, limit: str) -> GalleryError:
    """The one sentence for a change asked of a gallery that can only be read (`storage_limit` said why)."""
    fix = "free some space on it" if "full" in limit else "copy it to writable storage"
    return GalleryError(
        f"The gallery {data_dir} {limit}: it can be read (list, identify, verify, check) but not changed; {fix} to "
        f"register or delete."
    )


def storage_error(err: OSError, doing: str) -> GalleryError:
    """An OSError from writing the gallery as one sentence that names the cause: read-only storage, a full disk,
    a file-size limit (``ulimit -f``), or the error's own words."""
    cause = {
        errno.EROFS: "the gallery is on read-only storage",
        errno.ENOSPC: "the disk is full",
        errno.EDQUOT: "the disk quota is used up",
        errno.EFBIG: "a file-size limit (ulimit -f) stopped the write",
    }.get(err.errno or 0, err.strerror or str(err))
    return GalleryError(f"Cannot {doing}: {cause}.")


def fsync_dir(path: Path) -> None:
    """Make the entries of folder `path` (files created, renamed into it) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_private_file(path: Path, data: bytes) -> None:
    """Create `path` 0600 (never overwriting, never through a link), write and fsync it: on disk before COMMIT."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------------------- sample folders


def own_sample_dirs(samples_dir: Path) -> list[tuple[int, Path]]:
    """(person id, folder) of each ``samples/<digits>`` entry: the only names in `samples_dir` that are ours."""
    return [(int(e.name), Path(e.path)) for e in os.scandir(samples_dir) if _SAMPLE_DIR_NAME.fullmatch(e.name)]


def private_samples(samples_dir: Path) -> None:
    """Every person's folder 0700 and every crop 0600, as the gallery writes them: a gallery copied or unpacked
    under a loose umask (or opened up with chmod) has them readable by others. Fixed on open, with one warning
    that counts them; only the gallery's own names are touched, and a link is never followed."""
    fixed = 0
    for _, folder in own_sample_dirs(samples_dir):
        if folder.is_symlink() or not folder.is_dir():
            continue
        crops = [Path(e.path) for e in os.scandir(folder) if _own_crop(e)]
        for path, mode in [(folder, DIR_MODE), *((crop, FILE_MODE) for crop in crops)]:
            if path.lstat().st_mode & 0o777 & ~mode:
                try:
                    os.chmod(path, mode)  # never a link: checked above
                except OSError as err:
                    raise storage_error(err, f"make {path} private") from None
                fixed += 1
    if fixed:
        report.warn(
            f"Made {report.count(fixed, 'sample file or folder', 'sample files and folders')} in {samples_dir} "
            f"private (modes 0600 and 0700): they hold biometric data."
        )


def _own_crop(entry: os.DirEntry) -> bool:
    return bool(_SAMPLE_FILE_NAME.fullmatch(entry.name)) and entry.is_file(follow_symlinks=False)


def write_sample_dir(directory: Path, jpegs: list[bytes]) -> None:
    """Create a person's folder ``samples/<id>`` with crops ``<n>.jpg``, every file and both folders fsynced
    (it must be on disk before the rows that point to it are committed)."""
    if directory.exists() or directory.is_symlink():
        remove_sample_dir(directory)  # an orphan from a crashed attempt that got the same id (its rows rolled back)
        if directory.exists():
            raise GalleryError(
                f"{directory} holds files the gallery did not write; move them out of the gallery and try again."
            )
    directory.mkdir(mode=DIR_MODE)
    os.chmod(directory, DIR_MODE)
    for i, data in enumerate(jpegs):
        write_private_file(directory / f"{i}.jpg", data)
    fsync_dir(directory)
    fsync_dir(directory.parent)


def remove_sample_dir(path: Path) -> None:
    """Delete a person's sample folder ``samples/<id>``: only the ``<n>.jpg`` files the gallery wrote, then the
    folder if that emptied it. A link is unlinked, never followed; anything else is left where it is."""
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
        return
    if not path.is_dir():
        return
    for entry in os.scandir(path):
        if _own_crop(entry):
            os.unlink(entry.path)
    try:
        path.rmdir()
    except OSError:
        report.warn(f"Left {path} in place: it holds files the gallery did not write.")


# ----------------------------------------------------------------------------------------- crops


def encode_jpeg(crop: np.ndarray) -> bytes:
    """A uint8 HxWx3 RGB crop -> the JPEG bytes the gallery stores."""
    crop = np.asarray(crop)
    if crop.dtype != np.uint8 or crop.ndim != 3 or crop.shape[2] != 3 or min(crop.shape[:2]) < 1:
        raise GalleryError(f"A sample crop must be a uint8 HxWx3 RGB image, not {crop.dtype} {crop.shape}.")
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(crop, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise GalleryError("Could not encode a sample crop as JPEG.")
    return buf.tobytes()


def decode_jpeg(path: Path) -> np.ndarray:
    """A stored crop -> uint8 RGB; missing, linked, oversized or undecodable: say to re-register the person."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise GalleryError(f"The sample crop {path} is missing; re-register this person.") from None
    except OSError as err:  # ELOOP: a link where our file should be
        raise GalleryError(f"Cannot read the sample crop {path} ({err.strerror}); re-register this person.") from None
    with os.fdopen(fd, "rb") as f:
        data = f.read(MAX_CROP_BYTES + 1)
    if len(data) > MAX_CROP_BYTES:
        raise GalleryError(
            f"The sample crop {path} is larger than any crop the gallery writes; re-register this person."
        )
    try:
        return decode_image(data, f"the stored sample crop {path}")
    except DecodeError as err:
        raise GalleryError(f"{err} Re-register this person.") from None
