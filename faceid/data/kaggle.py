"""Download CASIA-WebFace (insightface RecordIO) from Kaggle, unzip it safely, verify it, mark it complete.

Everything that can go wrong before or during a 3 GB download (no credentials, a kaggle.json others can read,
no network, a 403/404, too little disk) ends in one sentence that says what to do. The archive is extracted
into a hidden temp folder and renamed into place only after verification, with a `.complete` marker, so a
half-extracted dataset is never taken for a finished one; a finished one is not downloaded again.

The Kaggle client is imported lazily (it reads credentials and prints on import) and only reached through
`make_api()`, the single boundary tests replace.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Mapping

from ..core import report
from ..core.errors import FaceIDError
from ..core.fileio import atomic_write_json
from .recordio import RecordIOError, RecordIOReader, find_train_rec

DEFAULT_DATASET = "debarghamitraroy/casia-webface"
DEFAULT_OUTPUT_DIR = "./datasets"
ARCHIVE_BYTES = 3 * 1024**3  # the Kaggle zip is about 3 GB ...
SPACE_FACTOR = 2.2  # ... and the unpacked files a bit more: zip + files must fit at once
MARKER = ".complete"
_SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
_NO_CREDENTIALS = (
    "No Kaggle credentials found: set KAGGLE_USERNAME and KAGGLE_KEY, or save the kaggle.json from "
    "https://www.kaggle.com/settings (API, Create New Token) as {path} and run `chmod 600 {path}`"
)


@dataclass
class DatasetCheck:
    """What verification found in an extracted dataset."""

    rec: Path
    idx: Path
    records: int
    bins: list[Path]


# --- credentials --------------------------------------------------------------------------------------
def kaggle_config_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where the kaggle client looks for kaggle.json: $KAGGLE_CONFIG_DIR, ~/.kaggle, else the XDG folder."""
    env = os.environ if environ is None else environ
    if env.get("KAGGLE_CONFIG_DIR"):
        return Path(env["KAGGLE_CONFIG_DIR"])
    home = Path(env.get("HOME") or Path.home())
    legacy = home / ".kaggle"
    if legacy.exists():
        return legacy
    return Path(env.get("XDG_CONFIG_HOME") or home / ".config") / "kaggle"


def check_credentials(environ: Mapping[str, str] | None = None) -> str:
    """Say where the credentials come from, or raise the sentence that fixes them (before any network use)."""
    env = os.environ if environ is None else environ
    user, key = env.get("KAGGLE_USERNAME", "").strip(), env.get("KAGGLE_KEY", "").strip()
    if user and key:
        return "KAGGLE_USERNAME/KAGGLE_KEY environment variables"
    if user or key:
        have, lack = ("KAGGLE_USERNAME", "KAGGLE_KEY") if user else ("KAGGLE_KEY", "KAGGLE_USERNAME")
        raise FaceIDError(f"{have} is set but {lack} is not; set both (or neither, to use kaggle.json)")
    if env.get("KAGGLE_API_TOKEN", "").strip():
        return "KAGGLE_API_TOKEN environment variable"
    path = kaggle_config_dir(env) / "kaggle.json"
    if not path.is_file():
        token = path.with_name("access_token")
        if token.is_file() and token.stat().st_size > 0:
            return str(token)
        raise FaceIDError(_NO_CREDENTIALS.format(path=path))
    _check_kaggle_json(path)
    return str(path)


def _check_kaggle_json(path: Path) -> None:
    if os.name != "nt" and path.stat().st_mode & 0o077:
        raise FaceIDError(
            f"{path} can be read by other users, and it holds your Kaggle key; run `chmod 600 {path}` and try again"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise FaceIDError(
            f"{path} is not valid JSON ({err}); download a new token from "
            "https://www.kaggle.com/settings and save it there"
        ) from err
    except OSError as err:
        raise FaceIDError(f"Cannot read {path}: {err.strerror or err}") from err
    missing = [
        f
        for f in ("username", "key")
        if not isinstance(data, dict) or not isinstance(data.get(f), str) or not data[f].strip()
    ]
    if missing:
        raise FaceIDError(
            f"{path} has no {' and no '.join(repr(m) for m in missing)} field; it should look like "
            '{"username": "...", "key": "..."} as downloaded from https://www.kaggle.com/settings'
        )


def make_api() -> Any:
    """Import the official client quietly and authenticate; the one Kaggle boundary (tests replace it)."""
    quiet = io.StringIO()
    try:
        with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
            from kaggle.api.kaggle_api_extended import KaggleApi
    except ImportError as err:
        raise FaceIDError(
            f"The kaggle client cannot be imported ({err}); install it with "
            f"`pip install kaggle {err.name or ''}`".rstrip()
        ) from err
    api = KaggleApi()
    try:
        with contextlib.redirect_stdout(quiet):
            api.authenticate()
    except SystemExit as err:
        raise FaceIDError(
            "The kaggle client found no usable credentials; set KAGGLE_USERNAME and KAGGLE_KEY "
            "or save kaggle.json from https://www.kaggle.com/settings"
        ) from err
    return api


# --- disk, download, extraction -------------------------------------------------------------------------
def _existing_ancestor(path: Path) -> Path:
    path = path.absolute()
    while not path.exists():
        path = path.parent
    return path


def check_free_space(path: Path, required_bytes: int) -> None:
    free = shutil.disk_usage(_existing_ancestor(path)).free
    if free < required_bytes:
        raise FaceIDError(
            f"Only {free / 1e9:.1f} GB free at {_existing_ancestor(path)} but the dataset needs about "
            f"{required_bytes / 1e9:.1f} GB (archive plus unpacked files); free some space or "
            "choose an output folder on a larger disk",
            "output_dir",
        )


def _http_message(err: Exception, slug: str) -> str:
    status = getattr(getattr(err, "response", None), "status_code", None)
    url = f"https://www.kaggle.com/datasets/{slug}"
    if status == 401:
        return "Kaggle rejected the credentials (HTTP 401); create a new API token at https://www.kaggle.com/settings"
    if status == 403:
        return (
            f"Kaggle refused access to {slug} (HTTP 403); open {url} while logged in, accept any terms, "
            "and check that your API token is current"
        )
    if status == 404:
        return f"Kaggle has no dataset {slug} (HTTP 404); check the --dataset slug (owner/name) at {url}"
    return f"Kaggle answered HTTP {status} for {slug} ({err}); try again later"


def download_zip(api: Any, slug: str, download_dir: Path) -> Path:
    """Have the client fetch the dataset zip into download_dir; map its exceptions to sentences."""
    import requests
    import urllib3

    try:
        api.dataset_download_files(slug, path=str(download_dir), unzip=False, quiet=False)
    except requests.exceptions.HTTPError as err:
        raise FaceIDError(_http_message(err, slug)) from err
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout, urllib3.exceptions.HTTPError) as err:
        raise FaceIDError(
            f"Could not reach Kaggle to download {slug} ({type(err).__name__}); "
            "check the network connection or proxy and try again"
        ) from err
    except requests.exceptions.RequestException as err:
        raise FaceIDError(f"The download of {slug} from Kaggle failed ({err}); try again") from err
    except ValueError as err:
        raise FaceIDError(f"The kaggle client could not download {slug}: {err}") from err
    except OSError as err:
        raise FaceIDError(f"Saving the download in {download_dir} failed: {err.strerror or err}") from err
    expected = download_dir / f"{slug.split('/')[1]}.zip"
    zips = [expected] if expected.is_file() else sorted(download_dir.glob("*.zip"))
    if not zips:
        raise FaceIDError(f"The kaggle client finished but left no zip in {download_dir}; download it again.", "force")
    return zips[0]


def _member_target(dest: Path, name: str) -> Path:
    """The path a zip member extracts to; refuses absolute paths and `..` (zip-slip)."""
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if not parts or name.startswith(("/", "\\")) or ".." in parts or ":" in parts[0]:
        raise FaceIDError(
            f"The archive holds an unsafe path {name!r} (absolute or leaving its folder); refusing to extract it"
        )
    return dest.joinpath(*parts)


def extract_zip(zip_path: Path, dest: Path, progress: bool = True) -> None:
    """Extract every member into dest (which the caller renames into place later), with a byte progress bar."""
    try:
        with zipfile.ZipFile(zip_path) as archive:
            members = archive.infolist()
            targets = [_member_target(dest, m.filename) for m in members]  # vet every name before writing any
            total = sum(m.file_size for m in members)
            check_free_space(dest, total)
            with report.progress(
                total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="unzip", enabled=progress
            ) as bar:
                for member, target in zip(members, targets):
                    _extract_member(archive, member, target, bar)
    except zipfile.BadZipFile as err:
        raise FaceIDError(
            f"{zip_path} is not a valid zip archive ({err}); the download is damaged, download it again.", "force"
        ) from err
    except OSError as err:
        raise FaceIDError(f"Extracting {zip_path} into {dest} failed: {err.strerror or err}") from err


def _extract_member(archive: zipfile.ZipFile, member: zipfile.ZipInfo, target: Path, bar: Any) -> None:
    if member.is_dir():
        target.mkdir(parents=True, exist_ok=True)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    with archive.open(member) as src, open(target, "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
            bar.update(len(chunk))


# --- verification and the marker ----------------------------------------------------------------------
def verify_dataset(root: Path) -> DatasetCheck:
    """train.rec + train.idx present (any depth), every .idx offset a record start inside the .rec, the first
    record readable; lists the *.bin verification files beside them."""
    rec = find_train_rec(root)
    if rec is None:
        raise FaceIDError(f"No train.rec found under {root}; the archive is not the expected RecordIO dataset")
    idx = rec.with_suffix(".idx")
    if not idx.is_file():
        raise FaceIDError(f"{rec} has no train.idx beside it; the archive is incomplete, download it again.", "force")
    try:
        with RecordIOReader(rec, idx) as reader:
            if reader.index_source != "idx":
                raise FaceIDError(f"{idx} does not match {rec} ({reader.index_note}); download it again.", "force")
            reader.read(reader.keys()[0])
            records = len(reader)
    except RecordIOError as err:
        raise FaceIDError(f"{rec} failed verification: {err}") from err
    return DatasetCheck(rec, idx, records, sorted(rec.parent.glob("*.bin")))


def write_marker(dataset_dir: Path, slug: str, check: DatasetCheck) -> None:
    atomic_write_json(
        dataset_dir / MARKER,
        {
            "dataset": slug,
            "rec": str(check.rec.relative_to(dataset_dir)),
            "rec_bytes": check.rec.stat().st_size,
            "idx": str(check.idx.relative_to(dataset_dir)),
            "idx_bytes": check.idx.stat().st_size,
            "records": check.records,
            "bins": [str(b.relative_to(dataset_dir)) for b in check.bins],
            "verified_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    )


def complete_dataset(dataset_dir: Path) -> DatasetCheck | None:
    """The dataset's check if its marker is there and still true (files, sizes, index, first record); else None."""
    try:
        marker = json.loads((dataset_dir / MARKER).read_text(encoding="utf-8"))
        rec, idx = dataset_dir / marker["rec"], dataset_dir / marker["idx"]
        if rec.stat().st_size != marker["rec_bytes"] or idx.stat().st_size != marker["idx_bytes"]:
            return None
        check = verify_dataset(dataset_dir)
    except (OSError, ValueError, KeyError, TypeError, FaceIDError):
        return None
    return check if check.rec == rec and check.records == marker["records"] else None


# --- the whole fetch ----------------------------------------------------------------------------------
def fetch_dataset(
    dataset: str = DEFAULT_DATASET,
    output_dir: str | os.PathLike = DEFAULT_OUTPUT_DIR,
    force: bool = False,
    keep_zip: bool = False,
    required_bytes: int | None = None,
    progress: bool = True,
) -> tuple[Path, DatasetCheck, bool]:
    """Make `<output_dir>/<name>` a verified copy of the Kaggle dataset; return (folder, check, downloaded)."""
    if not _SLUG.match(dataset):
        raise FaceIDError(f"The dataset {dataset!r} is not a Kaggle slug of the form owner/name.", "dataset")
    output_dir = Path(output_dir)
    target = output_dir / dataset.split("/")[1]
    if not force and (check := complete_dataset(target)) is not None:
        return target, check, False
    check_credentials()
    check_free_space(output_dir, int(SPACE_FACTOR * ARCHIVE_BYTES) if required_bytes is None else required_bytes)
    _make_dir(output_dir)
    _remove_leftovers(output_dir, target.name)
    zip_path = download_zip(make_api(), dataset, output_dir / f".{target.name}.download")
    staging = output_dir / f".{target.name}.partial-{os.getpid()}"
    extract_zip(zip_path, staging, progress)
    check = verify_dataset(staging)
    os.sync()  # the marker must not reach the disk before the files it vouches for
    write_marker(staging, dataset, check)
    _swap_into_place(staging, target)
    if not keep_zip:
        shutil.rmtree(zip_path.parent)
    return target, _relocate(check, staging, target), True


def _make_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise FaceIDError(f"Cannot create {path}: {err.strerror or err}") from err


def _remove_leftovers(output_dir: Path, name: str) -> None:
    """Half-extracted folders from an interrupted run are never resumed: they are deleted and redone."""
    for stale in list(output_dir.glob(f".{name}.partial-*")) + list(output_dir.glob(f".{name}.stale-*")):
        shutil.rmtree(stale)


def _swap_into_place(staging: Path, target: Path) -> None:
    """Rename the verified folder to its final name; an older incomplete folder there is moved aside first."""
    if target.exists():
        aside = target.with_name(f".{target.name}.stale-{os.getpid()}")
        os.replace(target, aside)
        os.replace(staging, target)
        shutil.rmtree(aside)
    else:
        os.replace(staging, target)


def _relocate(check: DatasetCheck, staging: Path, target: Path) -> DatasetCheck:
    move = lambda p: target / p.relative_to(staging)  # noqa: E731
    return DatasetCheck(move(check.rec), move(check.idx), check.records, [move(b) for b in check.bins])


def describe(dataset: str, target: Path, check: DatasetCheck, downloaded: bool) -> str:
    """The summary download_dataset.py prints."""
    status = "downloaded and verified" if downloaded else "already complete (verified; --force to download again)"
    bins = ", ".join(b.name for b in check.bins) or "none"
    return (
        f"dataset  {dataset}: {status}\n"
        f"folder   {target}\n"
        f"records  {check.rec} ({check.rec.stat().st_size / 1e9:.2f} GB, {check.records:,} records; "
        f"index verified)\n"
        f"bins     {bins}\n"
        f"next     {report.invocation('preprocess_dataset.py')} --input-dir {target}"
    )
