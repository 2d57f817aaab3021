"""download_dataset: everything runs for real except Kaggle's HTTP side, which a fake API object stands in for.

The fake writes a real zip (a small .rec/.idx made with the RecordIO writer + a .bin) where the real client
would, or raises the exception types the real client raises (requests' HTTPError with a real Response,
ConnectionError).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import requests
from recordio_writer import write_recordio

from faceid.core.errors import FaceIDError
from faceid.data import kaggle as kaggle_fetch
from faceid.data.recordio import Record

REPO = Path(__file__).resolve().parents[2]
SLUG = "someone/casia-webface"


def small_dataset_zip(tmp_path: Path, idx_text: str | None = None, extra: dict[str, bytes] | None = None) -> bytes:
    """Zip bytes laid out like the Kaggle archive: faces_webface_112x112/{train.rec, train.idx, lfw.bin}."""
    src = tmp_path / "zipsrc"
    src.mkdir(exist_ok=True)
    pixels = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    jpeg = cv2.imencode(".jpg", pixels)[1].tobytes()
    header = Record(2, (4.0, 5.0), 0, 0, b"")
    records = [header] + [Record(0, 0.0, k, 0, jpeg) for k in (1, 2, 3)] + [Record(2, (1.0, 4.0), 0, 0, b"")]
    write_recordio(src / "train.rec", src / "train.idx", enumerate(records))
    if idx_text is not None:
        (src / "train.idx").write_text(idx_text)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.write(src / "train.rec", "faces_webface_112x112/train.rec")
        archive.write(src / "train.idx", "faces_webface_112x112/train.idx")
        archive.writestr("faces_webface_112x112/lfw.bin", b"verification pairs")
        for name, data in (extra or {}).items():
            archive.writestr(name, data)
    return buf.getvalue()


class FakeKaggleApi:
    """Stands in for KaggleApi at the HTTP boundary: same method, same file placement, same exceptions."""

    def __init__(self, zip_bytes: bytes | None = None, error: Exception | None = None):
        self.zip_bytes, self.error, self.calls = zip_bytes, error, []

    def dataset_download_files(self, dataset, path=None, force=False, quiet=True, unzip=False, licenses=()):
        self.calls.append(dataset)
        if self.error is not None:
            raise self.error
        Path(path).mkdir(parents=True, exist_ok=True)
        (Path(path) / f"{dataset.split('/')[1]}.zip").write_bytes(self.zip_bytes)


def http_error(status: int) -> requests.exceptions.HTTPError:
    response = requests.models.Response()
    response.status_code = status
    return requests.exceptions.HTTPError(f"{status} Client Error", response=response)


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A clean HOME with env credentials set (tests that check files remove them)."""
    home = tmp_path / "home"
    home.mkdir()
    for name in ("KAGGLE_CONFIG_DIR", "KAGGLE_API_TOKEN", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("KAGGLE_USERNAME", "someone")
    monkeypatch.setenv("KAGGLE_KEY", "0123456789abcdef")
    return home


def use_api(monkeypatch, api: FakeKaggleApi) -> FakeKaggleApi:
    monkeypatch.setattr(kaggle_fetch, "make_api", lambda: api)
    return api


def fetch(out: Path, **kwargs):
    return kaggle_fetch.fetch_dataset(SLUG, out, progress=False, required_bytes=0, **kwargs)


# --- download, extract, verify, skip --------------------------------------------------------------------
def test_download_verify_then_skip(home, tmp_path, monkeypatch):
    api = use_api(monkeypatch, FakeKaggleApi(small_dataset_zip(tmp_path)))
    out = tmp_path / "datasets"
    target, check, downloaded = fetch(out)
    assert downloaded and api.calls == [SLUG]
    assert target == out / "casia-webface"
    assert check.rec == target / "faces_webface_112x112" / "train.rec" and check.records == 5
    assert [b.name for b in check.bins] == ["lfw.bin"]
    marker = json.loads((target / ".complete").read_text())
    assert marker["records"] == 5 and marker["rec"] == "faces_webface_112x112/train.rec"
    assert sorted(p.name for p in out.iterdir()) == ["casia-webface"]  # no zip, no temp folders left
    assert "lfw.bin" in kaggle_fetch.describe(SLUG, target, check, downloaded)

    _, _, downloaded = fetch(out)  # complete: not downloaded again
    assert not downloaded and api.calls == [SLUG]
    _, _, downloaded = fetch(out, force=True)
    assert downloaded and api.calls == [SLUG, SLUG]


def test_half_extracted_is_redone(home, tmp_path, monkeypatch):
    api = use_api(monkeypatch, FakeKaggleApi(small_dataset_zip(tmp_path)))
    out = tmp_path / "datasets"
    (out / "casia-webface" / "faces_webface_112x112").mkdir(parents=True)
    (out / "casia-webface" / "faces_webface_112x112" / "train.rec").write_bytes(b"\x0a\x23\xd7\xce half")
    (out / ".casia-webface.partial-999").mkdir()
    _, check, downloaded = fetch(out)
    assert downloaded and api.calls == [SLUG] and check.records == 5
    assert sorted(p.name for p in out.iterdir()) == ["casia-webface"]


def test_marker_whose_files_changed_is_redone(home, tmp_path, monkeypatch):
    api = use_api(monkeypatch, FakeKaggleApi(small_dataset_zip(tmp_path)))
    out = tmp_path / "datasets"
    target, check, _ = fetch(out)
    with open(check.rec, "ab") as f:
        f.write(b"\0\0\0\0")
    _, _, downloaded = fetch(out)
    assert downloaded and len(api.calls) == 2


def test_damaged_index_is_rejected(home, tmp_path, monkeypatch):
    use_api(monkeypatch, FakeKaggleApi(small_dataset_zip(tmp_path, idx_text="0\t0\n1\t999999\n")))
    out = tmp_path / "datasets"
    with pytest.raises(FaceIDError, match="train.idx does not match"):
        fetch(out)
    assert not (out / "casia-webface").exists()


def test_zip_slip_is_refused(home, tmp_path, monkeypatch):
    use_api(monkeypatch, FakeKaggleApi(small_dataset_zip(tmp_path, extra={"../../evil.txt": b"x"})))
    with pytest.raises(FaceIDError, match="unsafe path"):
        fetch(tmp_path / "datasets")
    assert not list(tmp_path.rglob("evil.txt"))


def test_not_a_zip(home, tmp_path, monkeypatch):
    use_api(monkeypatch, FakeKaggleApi(b"<html>rate limited</html>"))
    with pytest.raises(FaceIDError, match="not a valid zip"):
        fetch(tmp_path / "datasets")


@pytest.mark.parametrize(
    "error, words",
    [
        (http_error(403), "refused access"),
        (http_error(404), "no dataset"),
        (http_error(401), "rejected the credentials"),
        (requests.exceptions.ConnectionError("Failed to resolve 'www.kaggle.com'"), "Could not reach Kaggle"),
    ],
)
def test_kaggle_errors_become_sentences(home, tmp_path, monkeypatch, error, words):
    use_api(monkeypatch, FakeKaggleApi(error=error))
    with pytest.raises(FaceIDError, match=words):
        fetch(tmp_path / "datasets")
    assert not (tmp_path / "datasets" / "casia-webface").exists()


def test_disk_space_is_checked_before_download(home, tmp_path, monkeypatch):
    api = use_api(monkeypatch, FakeKaggleApi(small_dataset_zip(tmp_path)))
    with pytest.raises(FaceIDError, match="GB free"):
        kaggle_fetch.fetch_dataset(SLUG, tmp_path / "datasets", progress=False, required_bytes=1 << 60)
    assert api.calls == []


def test_bad_slug(home, tmp_path):
    with pytest.raises(FaceIDError, match="owner/name"):
        kaggle_fetch.fetch_dataset("no-slash", tmp_path)


# --- credentials ----------------------------------------------------------------------------------------
@pytest.fixture
def no_env_credentials(home, monkeypatch) -> Path:
    monkeypatch.delenv("KAGGLE_USERNAME")
    monkeypatch.delenv("KAGGLE_KEY")
    return home


def write_kaggle_json(folder: Path, text: str, mode: int = 0o600) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "kaggle.json"
    path.write_text(text)
    os.chmod(path, mode)
    return path


def test_credentials_from_env(home):
    assert "KAGGLE_USERNAME" in kaggle_fetch.check_credentials()


def test_credentials_half_env(no_env_credentials, monkeypatch):
    monkeypatch.setenv("KAGGLE_USERNAME", "someone")
    with pytest.raises(FaceIDError, match="KAGGLE_KEY is not"):
        kaggle_fetch.check_credentials()


def test_credentials_missing(no_env_credentials, tmp_path, monkeypatch):
    api = use_api(monkeypatch, FakeKaggleApi(small_dataset_zip(tmp_path)))
    with pytest.raises(FaceIDError, match="No Kaggle credentials"):
        fetch(tmp_path / "datasets")
    assert api.calls == []


def test_credentials_file_ok(no_env_credentials):
    path = write_kaggle_json(no_env_credentials / ".kaggle", '{"username": "a", "key": "b"}')
    assert kaggle_fetch.check_credentials() == str(path)


@pytest.mark.parametrize("mode", [0o644, 0o640])
def test_credentials_file_readable_by_others(no_env_credentials, mode):
    path = write_kaggle_json(no_env_credentials / ".kaggle", '{"username": "a", "key": "b"}', mode)
    with pytest.raises(FaceIDError, match=f"chmod 600 {path}"):
        kaggle_fetch.check_credentials()


@pytest.mark.parametrize(
    "text, words",
    [
        ('{"username": "a", "key": ', "not valid JSON"),
        ('{"username": "a"}', "no 'key'"),
        ('["a", "b"]', "no 'username' and no 'key'"),
    ],
)
def test_credentials_file_malformed(no_env_credentials, text, words):
    write_kaggle_json(no_env_credentials / ".kaggle", text)
    with pytest.raises(FaceIDError, match=words):
        kaggle_fetch.check_credentials()


def test_kaggle_config_dir_is_respected(no_env_credentials, tmp_path, monkeypatch):
    write_kaggle_json(no_env_credentials / ".kaggle", '{"username": "a"}')  # would fail if read
    path = write_kaggle_json(tmp_path / "elsewhere", '{"username": "a", "key": "b"}')
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "elsewhere"))
    assert kaggle_fetch.check_credentials() == str(path)


# --- CLI ------------------------------------------------------------------------------------------------
def test_cli_without_credentials_says_one_sentence(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAGGLE_")}
    env.update(HOME=str(tmp_path), PYTHONPATH=str(REPO))
    result = subprocess.run(
        [sys.executable, str(REPO / "download_dataset.py"), "--output-dir", str(tmp_path / "d")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert "No Kaggle credentials" in result.stderr
