"""Gallery store and identification: real SQLite, real files, real subprocess crashes (no mocks)."""

from __future__ import annotations

import os
import pickle
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import pytest

from faceid.gallery.index_file import IndexFile
from faceid.gallery.names import display_name, validate_name
from faceid.gallery.records import DB_NAME, INDEX_NAME, GalleryError, Match, ModelMismatchError, Person
from faceid.gallery.search_index import EXACT_MAX, TemplateIndex, load_faiss
from faceid.gallery.seed import load_seed_pickle
from faceid.gallery.store import Gallery

REPO = Path(__file__).resolve().parents[2]
FP_A, FP_B = "aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb"


# ------------------------------------------------------------------------------------------ helpers


def smooth_crops(seed: int, n: int = 3, size: int = 64) -> list[np.ndarray]:
    """One "person" = a random low-frequency image; its samples = small variations of it.

    Low frequency so that the crops survive JPEG nearly unchanged and re-embedding them is meaningful.
    """
    rng = np.random.default_rng(seed)
    base = rng.uniform(30, 225, (4, 4, 3))
    samples = [np.clip(base + rng.normal(0, 10, base.shape), 0, 255).astype(np.uint8) for _ in range(n)]
    return [cv2.resize(s, (size, size), interpolation=cv2.INTER_CUBIC) for s in samples]


def make_embedder(seed: int):
    """A stand-in model: a fixed random projection of the downsampled crop, L2-normalised."""
    proj = np.random.default_rng(1000 + seed).standard_normal((8 * 8 * 3, 512)).astype(np.float32)

    def embed(crops: list[np.ndarray]) -> np.ndarray:
        x = np.stack([cv2.resize(c, (8, 8), interpolation=cv2.INTER_AREA) for c in crops]).astype(np.float32)
        e = (x.reshape(len(crops), -1) / 255.0 - 0.5) @ proj
        return (e / np.linalg.norm(e, axis=1, keepdims=True)).astype(np.float32)

    return embed


embed_a, embed_b = make_embedder(0), make_embedder(1)


def register(g: Gallery, name: str, seed: int, embed=embed_a, fp=FP_A, **kw) -> Person:
    crops = smooth_crops(seed)
    return g.register(name, crops, embed(crops), fp, **kw)


def interrupt() -> None:
    raise KeyboardInterrupt


class GalleryStoppingBeforeCommit(Gallery):
    """A Gallery whose next `register` stops at the worst moment: every sample file and row written, COMMIT not
    yet run. It stops by calling `stop` (set it on the open gallery; SIGKILL in a subprocess, Ctrl-C here)."""

    stop: Callable[[], None] | None = None

    def _write_person(self, db: sqlite3.Connection, pid: int, jpegs: list[bytes], *rest) -> None:
        super()._write_person(db, pid, jpegs, *rest)
        if self.stop is None:
            return
        stop, self.stop = self.stop, None
        rows = db.execute("SELECT COUNT(*) FROM samples WHERE person_id = ?", (pid,)).fetchone()[0]
        written = sorted(p.name for p in self._person_dir(pid).iterdir())
        assert db.in_transaction and rows == len(jpegs) and written == [f"{i}.jpg" for i in range(len(jpegs))]
        assert db.execute("SELECT COUNT(*) FROM templates WHERE person_id = ?", (pid,)).fetchone()[0] == 1
        stop()


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def sample_files(data: Path) -> set[str]:
    return {str(p.relative_to(data / "samples")) for p in (data / "samples").rglob("*")}


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return tmp_path / "faceid_data"


# ------------------------------------------------------------------------------------------ round trip


def test_register_list_verify_identify_delete(data: Path):
    with Gallery.open(data) as g:
        alice = register(g, "Alice", 1)
        register(g, "Bob", 2)
        assert (alice.name, alice.n_samples, alice.fingerprint) == ("Alice", 3, FP_A)
        assert [p.name for p in g.people()] == ["Alice", "Bob"]
        probe = embed_a(smooth_crops(1)[:1])[0]
        assert g.verify("Alice", probe, FP_A) > 0.9 > g.verify("Bob", probe, FP_A)
        top = g.identify(probe, FP_A, k=5)
        assert [m.name for m in top] == ["Alice", "Bob"] and top[0].score > top[1].score
        assert isinstance(top[0], Match) and isinstance(top[0].score, float)
        assert g.best_other_match(probe, FP_A, exclude_name="Alice").name == "Bob"
        crops = g.sample_crops("Alice")
        assert len(crops) == 3 and crops[0].dtype == np.uint8
        assert np.abs(crops[0].astype(int) - smooth_crops(1)[0]).mean() < 3  # JPEG q95 round trip
        assert g.delete("Alice") and not g.delete("Alice")
        assert [p.name for p in g.people()] == ["Bob"]
        assert sample_files(data) == {"2", "2/0.jpg", "2/1.jpg", "2/2.jpg"}
        with pytest.raises(GalleryError, match="No one named 'Alice'"):
            g.verify("Alice", probe, FP_A)
    with Gallery.open(data) as g:  # persisted
        assert [p.name for p in g.people()] == ["Bob"]


def test_template_is_normalised_mean(data: Path):
    with Gallery.open(data) as g:
        crops = smooth_crops(3)
        emb = embed_a(crops)
        register(g, "Cy", 3)
        mean = emb.mean(0) / np.linalg.norm(emb.mean(0))
        assert g.verify("Cy", mean, FP_A) == pytest.approx(1.0, abs=1e-5)


def test_duplicate_refused_and_replace(data: Path):
    with Gallery.open(data) as g:
        first = register(g, "Alice", 1)
        with pytest.raises(GalleryError, match="already registered; replace it only if you mean to"):
            register(g, "Alice", 2)
        with pytest.raises(GalleryError, match="already registered"):
            register(g, " Alice ", 2)  # same name after strip
        second = register(g, "Alice", 2, replace=True)
        assert len(g.people()) == 1 and second.id != first.id
        assert sample_files(data) == {str(second.id)} | {f"{second.id}/{i}.jpg" for i in range(3)}
        assert g.identify(embed_a(smooth_crops(2)[:1])[0], FP_A)[0].score > 0.9


def test_identify_topk_and_empty(data: Path):
    with Gallery.open(data) as g:
        assert g.identify(np.ones(512, np.float32), FP_A) == []
        for i in range(7):
            register(g, f"p{i}", 10 + i)
        top = g.identify(embed_a(smooth_crops(13)[:1])[0], FP_A, k=3)
        assert len(top) == 3 and top[0].name == "p3"
        assert [m.score for m in top] == sorted((m.score for m in top), reverse=True)
        with pytest.raises(GalleryError, match="k must be"):
            g.identify(np.ones(512, np.float32), FP_A, k=0)
        with pytest.raises(GalleryError, match="zero or not finite"):
            g.identify(np.zeros(512, np.float32), FP_A)


def test_change_by_another_process_is_seen(data: Path):
    with Gallery.open(data) as reader, Gallery.open(data) as writer:
        register(writer, "Alice", 1)
        assert [m.name for m in reader.identify(np.ones(512, np.float32), FP_A)] == ["Alice"]
        register(writer, "Bob", 2)  # reader's cached index must be rebuilt (index_version)
        assert len(reader.identify(np.ones(512, np.float32), FP_A)) == 2


def test_bad_inputs_rejected(data: Path):
    with Gallery.open(data) as g:
        crops = smooth_crops(1)
        with pytest.raises(GalleryError, match="pair up"):
            g.register("A", crops, embed_a(crops)[:2], FP_A)
        with pytest.raises(GalleryError, match="shape"):
            g.register("A", crops, np.ones((3, 128), np.float32), FP_A)
        with pytest.raises(GalleryError, match="uint8 HxWx3"):
            g.register("A", [c.astype(np.float32) for c in crops], embed_a(crops), FP_A)
        assert g.people() == [] and sample_files(data) == set()


# ------------------------------------------------------------------------------------------ names


@pytest.mark.parametrize(
    "name",
    [
        "Zoë 山田",
        "👩‍💻 Ada",
        "محمد علي",
        "שלום",
        "Ωμέγα",
        "میر\u200cعلی",
        "🏳\ufe0f\u200d🌈",
        "../../etc/passwd",
        "a/b",
        "..",
        ".",
        "~root",
        "C:\\Windows",
        "name; DROP TABLE people;--",
        "x" * 100,
    ],
)
def test_any_unicode_or_hostile_name_is_stored_safely(tmp_path: Path, name: str):
    data = tmp_path / "d"
    with Gallery.open(data) as g:
        person = register(g, name, 1)
        assert g.get(name).name == name == person.name
        assert g.verify(name, embed_a(smooth_crops(1)[:1])[0], FP_A) > 0.9
        assert len(g.sample_crops(name)) == 3
    # nothing outside data_dir; inside it only the database and samples/<integer id>/<n>.jpg
    assert tree(tmp_path) - {"d"} == {"d/" + p for p in tree(data)}
    for rel in tree(data):
        assert (
            rel.startswith(DB_NAME)
            or rel.split("/")[0] == "samples"
            and all(part.replace(".jpg", "").isdigit() for part in rel.split("/")[1:])
        ), rel


def test_unicode_normalisation_finds_same_person(data: Path):
    with Gallery.open(data) as g:
        register(g, "Zo\u00eb", 1)  # NFC
        assert g.get("Zoe\u0308") is not None  # NFD spelling of the same name
        with pytest.raises(GalleryError, match="already registered"):
            register(g, "Zoe\u0308", 2)


@pytest.mark.parametrize(
    "name, message",
    [
        ("", "empty"),
        ("   ", "empty"),
        ("a\x00b", "control character"),
        ("evil\x1b[31m", "control character"),
        ("two\nlines", "control"),
        ("x" * 101, "at most 100"),
    ],
)
def test_invalid_names_rejected_with_clear_message(data: Path, name: str, message: str):
    with Gallery.open(data) as g:
        with pytest.raises(GalleryError, match=message):
            register(g, name, 1)
        assert g.people() == [] and sample_files(data) == set()
    with pytest.raises(GalleryError):
        validate_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "Ali\u200bce",
        "Alice\u200d",
        "\u202eecilA",
        "Alice\u200f",
        "Alice\u00a0Smith",
        "Alice\ufeff",
        "\u2066Alice\u2069",
        "Al\u00adice",
        "Alice\u3164",
        "Alic\u034fe",
    ],
)
def test_invisible_and_direction_characters_refused_for_new_names(data: Path, name: str):
    """Two people must never look the same in `list` (issue 8): "Ali\u200bce" would print as "Alice"."""
    with Gallery.open(data) as g:
        register(g, "Alice", 1)
        with pytest.raises(GalleryError, match="invisible or text-direction character .U\\+[0-9A-F]{4}"):
            register(g, name, 2)
        assert [p.name for p in g.people()] == ["Alice"]
    assert validate_name(name, new=False)  # an old entry can still be looked up
    assert display_name(name) != "Alice" and "\\u" in display_name(name)


# ------------------------------------------------------------------------------------------ permissions


def modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode) for p in [root, *root.rglob("*")]}


def test_everything_private(data: Path):
    with Gallery.open(data) as g:
        register(g, "Alice", 1)
        found = modes(data)
    assert any(k.endswith("-wal") for k in found)  # WAL files are covered too
    for rel, mode in found.items():
        assert mode == (0o700 if (data / rel).is_dir() else 0o600), (rel, oct(mode))


def test_too_open_existing_dir_is_fixed(data: Path, capsys):
    with Gallery.open(data) as g:
        register(g, "Alice", 1)
    os.chmod(data, 0o755)
    os.chmod(data / DB_NAME, 0o644)
    os.chmod(data / "samples", 0o777)
    capsys.readouterr()
    with Gallery.open(data) as g:
        assert [p.name for p in g.people()] == ["Alice"]
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert stat.S_IMODE((data / DB_NAME).stat().st_mode) == 0o600
    assert stat.S_IMODE((data / "samples").stat().st_mode) == 0o700
    warned = capsys.readouterr().err  # on stderr, as the user sees it, even with --quiet
    assert warned.count("private") == 3 and f"Made {data} private (mode 755 -> 700)" in warned


def snapshot(root: Path) -> dict[str, tuple[int, bytes | None]]:
    """Every path under root (root included) -> (mode, file contents), links not followed."""
    out = {}
    for p in [root, *root.rglob("*")]:
        st = p.lstat()
        out[str(p.relative_to(root))] = (st.st_mode, None if not stat.S_ISREG(st.st_mode) else p.read_bytes())
    return out


@pytest.mark.parametrize("mode", [0o1777, 0o755])
def test_foreign_folder_is_refused_and_left_untouched(tmp_path: Path, mode: int):
    """--data-dir /tmp used to chmod /tmp to 0700: a folder with other files in it is not ours to change."""
    shared = tmp_path / "shared"
    (shared / "photos").mkdir(parents=True)
    (shared / "thesis.txt").write_text("years of work")
    (shared / "photos" / "a.jpg").write_bytes(b"jpeg")
    os.chmod(shared, mode)
    before = snapshot(shared)
    with pytest.raises(GalleryError, match="already holds other files and is not a faceid gallery"):
        Gallery.open(shared)
    assert snapshot(shared) == before
    with Gallery.open(shared / "faceid_data") as g:  # its own subfolder is fine
        register(g, "Alice", 1)
    assert stat.S_IMODE(shared.stat().st_mode) == mode


def test_empty_folder_of_this_user_is_adopted(tmp_path: Path):
    (tmp_path / "new").mkdir(mode=0o755)
    with Gallery.open(tmp_path / "new") as g:
        register(g, "Alice", 1)
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o700


def test_symlinked_samples_refused_and_target_untouched(data: Path, tmp_path: Path):
    """A `samples` link used to make a plain `list` delete every non-numeric entry of the link's target."""
    with Gallery.open(data) as g:
        register(g, "Alice", 1)
    target = tmp_path / "precious"
    (target / "photos").mkdir(parents=True)
    (target / "thesis.txt").write_text("keep me")
    (target / "7").mkdir()
    real = data / "samples"
    real.rename(tmp_path / "moved-samples")
    real.symlink_to(target)
    before = snapshot(target)
    with pytest.raises(GalleryError, match="is a symbolic link"):
        Gallery.open(data)
    assert snapshot(target) == before
    real.unlink()
    (data / DB_NAME).rename(tmp_path / "db")
    (data / DB_NAME).symlink_to(tmp_path / "db")
    with pytest.raises(GalleryError, match="is a symbolic link"):
        Gallery.open(data)


def test_cleanup_deletes_only_its_own_names(data: Path):
    with Gallery.open(data) as g:
        register(g, "Alice", 1)
    samples = data / "samples"
    (samples / "thesis.txt").write_text("not ours")
    (samples / "photos").mkdir()
    (samples / "photos" / "1.jpg").write_bytes(b"not ours either")
    (samples / "999").mkdir()  # an orphan by our own pattern ...
    (samples / "999" / "0.jpg").write_bytes(b"crop")
    (samples / "998").mkdir()  # ... and one holding a file we never write
    (samples / "998" / "0.jpg").write_bytes(b"crop")
    (samples / "998" / "notes.txt").write_text("someone's")
    with Gallery.open(data) as g:
        assert [p.name for p in g.people()] == ["Alice"]
    names = {p.name for p in samples.iterdir()}
    assert {"thesis.txt", "photos", "998"} <= names and "999" not in names
    assert (samples / "photos" / "1.jpg").exists() and (samples / "998" / "notes.txt").exists()
    assert not (samples / "998" / "0.jpg").exists()


def test_sample_crop_link_is_not_followed(data: Path, tmp_path: Path):
    with Gallery.open(data) as g:
        person = register(g, "Alice", 1)
    crop = data / "samples" / str(person.id) / "0.jpg"
    crop.unlink()
    crop.symlink_to(tmp_path / "elsewhere.jpg")
    (tmp_path / "elsewhere.jpg").write_bytes(b"")
    with Gallery.open(data) as g, pytest.raises(GalleryError, match="Cannot read the sample crop"):
        g.sample_crops("Alice")


def test_data_dir_that_is_a_file(tmp_path: Path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(GalleryError):
        Gallery.open(tmp_path / "f")


# ------------------------------------------------------------------------------------------ models


def test_model_mismatch_refused_with_clear_message(data: Path):
    with Gallery.open(data) as g:
        register(g, "Alice", 1)
        probe = embed_b(smooth_crops(1)[:1])[0]
        for call in (
            lambda: g.identify(probe, FP_B),
            lambda: g.verify("Alice", probe, FP_B),
            lambda: register(g, "Bob", 2, embed=embed_b, fp=FP_B),
        ):
            with pytest.raises(ModelMismatchError, match="different model.*faceid_app.py reenroll"):
                call()
        assert [p.name for p in g.people()] == ["Alice"]


def test_reenroll_recomputes_with_new_model(data: Path):
    with Gallery.open(data) as g:
        register(g, "Alice", 1)
        register(g, "Bob", 2)
        assert g.fingerprints() == {FP_A: 2}
        assert g.reenroll(embed_b, FP_B, progress=False) == 2
        assert g.fingerprints() == {FP_B: 2}
        assert {p.fingerprint for p in g.people()} == {FP_B}
        with pytest.raises(ModelMismatchError):
            g.identify(embed_a(smooth_crops(1)[:1])[0], FP_A)
        top = g.identify(embed_b(smooth_crops(2)[:1])[0], FP_B)
        assert top[0].name == "Bob" and top[0].score > 0.9  # computed from the stored (JPEG) crops
        register(g, "Cy", 3, embed=embed_b, fp=FP_B)  # new registrations with the new model work


def test_reenroll_interrupted_keeps_old_templates(data: Path):
    with Gallery.open(data) as g:
        register(g, "Alice", 1)
        register(g, "Bob", 2)
        calls = []

        def flaky(crops):
            calls.append(1)
            if len(calls) == 2:
                raise KeyboardInterrupt
            return embed_b(crops)

        with pytest.raises(KeyboardInterrupt):
            g.reenroll(flaky, FP_B, progress=False)
        assert {p.fingerprint for p in g.people()} == {FP_A}
        assert g.identify(embed_a(smooth_crops(1)[:1])[0], FP_A)[0].name == "Alice"


# ------------------------------------------------------------------------------------------ atomicity

CRASH_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {repo!r})
    from tests.gallery.test_gallery import GalleryStoppingBeforeCommit, register
    with GalleryStoppingBeforeCommit.open({data!r}) as g:
        g.stop = lambda: os.kill(os.getpid(), signal.SIGKILL)
        register(g, {name!r}, 99, replace=True)
""")


@pytest.mark.parametrize("name", ["Newcomer", "Alice"])  # a new person, and --replace of an existing one
def test_sigkill_before_commit_leaves_gallery_unchanged(data: Path, name: str):
    with Gallery.open(data) as g:
        register(g, "Alice", 1)
        before_people = g.people()
        before_crops = g.sample_crops("Alice")
    before_files = sample_files(data)
    script = CRASH_SCRIPT.format(repo=str(REPO), data=str(data), name=name)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert sample_files(data) - before_files, "the crash point must come after the sample files were written"
    with Gallery.open(data) as g:  # reopening removes the orphan
        assert g.people() == before_people
        assert all(np.array_equal(a, b) for a, b in zip(g.sample_crops("Alice"), before_crops))
    assert sample_files(data) == before_files


def test_ctrl_c_before_commit_cleans_up_at_once(data: Path):
    with GalleryStoppingBeforeCommit.open(data) as g:
        register(g, "Alice", 1)
        g.stop = interrupt
        with pytest.raises(KeyboardInterrupt):
            register(g, "Alice", 2, replace=True)
        assert [p.id for p in g.people()] == [1]
        assert sample_files(data) == {"1", "1/0.jpg", "1/1.jpg", "1/2.jpg"}
        register(g, "Bob", 2)  # the gallery is still usable afterwards
        assert len(g.people()) == 2


# ------------------------------------------------------------------------------------------ corruption


def expect_corrupt(data: Path):
    with pytest.raises(GalleryError, match=r"is not a valid gallery database \(corrupt\?\); move it away") as info:
        Gallery.open(data)
    assert "\n" not in str(info.value)


def test_random_bytes_db(data: Path):
    data.mkdir(mode=0o700)
    (data / DB_NAME).write_bytes(os.urandom(8192))
    expect_corrupt(data)


def test_empty_db_file(data: Path):
    data.mkdir(mode=0o700)
    (data / DB_NAME).write_bytes(b"")
    expect_corrupt(data)


def test_truncated_db(data: Path):
    with Gallery.open(data) as g:
        rng = np.random.default_rng(0)
        for i in range(40):  # enough rows for a multi-page file
            e = rng.standard_normal((5, 512)).astype(np.float32)
            g.register(f"p{i}", smooth_crops(i, 5, 16), e / np.linalg.norm(e, axis=1, keepdims=True), FP_A)
    db = data / DB_NAME
    assert not Path(f"{db}-wal").exists()  # checkpointed on close: the main file holds everything
    size = db.stat().st_size
    with open(db, "r+b") as f:
        f.truncate(size // 3)
    expect_corrupt(data)


def test_scribbled_pages(data: Path):
    with Gallery.open(data) as g:
        for i in range(20):
            register(g, f"p{i}", i)
    db = data / DB_NAME
    raw = bytearray(db.read_bytes())
    raw[4096:8192] = os.urandom(4096)  # page 2 onwards: schema pages/B-trees
    db.write_bytes(bytes(raw))
    expect_corrupt(data)


def test_foreign_sqlite_db(data: Path):
    data.mkdir(mode=0o700)
    with sqlite3.connect(data / DB_NAME) as conn:
        conn.execute("CREATE TABLE other (x)")
    conn.close()
    expect_corrupt(data)


# ------------------------------------------------------------------------------------------ seed pickle


def test_seed_pickle_import(data: Path, tmp_path: Path):
    rng = np.random.default_rng(5)
    seed = {"Alice": rng.standard_normal(512), "Zoë": rng.standard_normal(512).astype(np.float32)}
    path = tmp_path / "face_embeddings.pkl"
    path.write_bytes(pickle.dumps(seed))
    with Gallery.open(data) as g:
        assert g.import_seed_pickle(path, FP_A) == 2
        people = {p.name: p for p in g.people()}
        assert people["Alice"].n_samples == 0 and people["Zoë"].fingerprint == FP_A
        top = g.identify(seed["Zoë"].astype(np.float32), FP_A)[0]
        assert top.name == "Zoë" and top.score == pytest.approx(1.0, abs=1e-5)
        with pytest.raises(GalleryError, match="already registered"):
            g.import_seed_pickle(path, FP_A)
        with pytest.raises(GalleryError, match="no stored sample crops"):  # cannot be recomputed
            g.reenroll(embed_b, FP_B, progress=False)
        assert g.import_seed_pickle(path, FP_A, replace=True) == 2
        assert len(g.people()) == 2


def test_seed_pickle_from_numpy_1(tmp_path: Path):
    """Pickles written by numpy 1.x name numpy.core.multiarray (numpy 2 renamed it numpy._core);
    protocol 2 (Python 2 era) spells bytes as _codecs.encode."""
    vec = np.arange(512, dtype=np.float32) + 1
    raw = pickle.dumps({"Old": vec}, protocol=2)
    assert b"numpy._core.multiarray" in raw
    path = tmp_path / "old.pkl"
    path.write_bytes(raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    loaded = load_seed_pickle(path)
    assert np.allclose(loaded["Old"], vec / np.linalg.norm(vec))


class _Evil:
    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_hostile_pickle_refused_without_executing(data: Path, tmp_path: Path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"Alice": _Evil(f"touch {marker}")}))
    with Gallery.open(data) as g:
        with pytest.raises(GalleryError, match=r"refers to (posix|os|nt)\.system\); refusing"):
            g.import_seed_pickle(path, FP_A)
        assert g.people() == []
    assert not marker.exists()
    path.write_bytes(b"\x80\x04garbage")
    with pytest.raises(GalleryError, match="Cannot read the seed pickle"):
        load_seed_pickle(path)


# ------------------------------------------------------------------------------------------ index


def test_index_exact_backend_matches_bruteforce():
    rng = np.random.default_rng(0)
    m = rng.standard_normal((500, 512)).astype(np.float32)
    m /= np.linalg.norm(m, axis=1, keepdims=True)
    index = TemplateIndex(m)
    assert index.backend == "numpy-exact"
    q = m[42]
    scores, rows = index.search(q, 5)
    expected = np.argsort(-(m @ q))[:5]
    assert list(rows) == list(expected) and scores[0] == pytest.approx(1.0, abs=1e-5)
    assert len(index.search(q, 10_000)[1]) == 500


@pytest.mark.skipif(load_faiss() is None, reason="faiss-cpu not installed")
def test_index_sketch_backend_finds_genuine_matches():
    rng = np.random.default_rng(1)
    n = EXACT_MAX + 5000
    m = rng.standard_normal((n, 512)).astype(np.float32)
    m /= np.linalg.norm(m, axis=1, keepdims=True)
    index = TemplateIndex(m)
    assert index.backend == "faiss-sketch+rerank"
    targets = rng.integers(0, n, 50)
    noise = rng.standard_normal((50, 512)).astype(np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    probes = 0.5 * m[targets] + np.sqrt(1 - 0.25) * noise  # cosine ~0.5 to the true template
    probes /= np.linalg.norm(probes, axis=1, keepdims=True)
    for t, q in zip(targets, probes):
        scores, rows = index.search(q, 3)
        assert rows[0] == t
        assert scores[0] == pytest.approx(float(m[t] @ q), abs=1e-5)  # exact cosine after re-ranking


def test_without_faiss_falls_back_to_exact_and_says_so_once():
    """A real interpreter where `import faiss` fails (sys.modules entry None), not a mock of the index."""
    script = textwrap.dedent(f"""
        import sys
        sys.modules["faiss"] = None
        sys.path.insert(0, {str(REPO)!r})
        import numpy as np
        from faceid.gallery.search_index import EXACT_MAX, TemplateIndex
        m = np.random.default_rng(0).standard_normal((EXACT_MAX + 1, 512)).astype(np.float32)
        m /= np.linalg.norm(m, axis=1, keepdims=True)
        for _ in range(2):
            index = TemplateIndex(m)
            assert index.backend == "numpy-exact" and index.search(m[7], 1)[1][0] == 7
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("faiss is not installed") == 1 and "pip install faiss-cpu" in proc.stderr


# ------------------------------------------------------------------------------------------ persistent index


def _index_version(data: Path) -> str:
    with sqlite3.connect(data / DB_NAME) as conn:
        return conn.execute("SELECT value FROM meta WHERE key = 'index_version'").fetchone()[0]


def test_index_is_saved_and_reused_by_the_next_process(data: Path):
    with Gallery.open(data) as g:
        for i in range(3):
            register(g, f"p{i}", i)
        probe = embed_a(smooth_crops(1)[:1])[0]
        first = g.identify(probe, FP_A)
    index = data / INDEX_NAME
    assert stat.S_IMODE(index.stat().st_mode) == 0o600
    built = index.stat().st_mtime_ns, index.stat().st_ino
    loaded = IndexFile.open(index)
    assert loaded.extra["index_version"] == _index_version(data) and loaded.count == 3
    with Gallery.open(data) as g:  # a new command: the file is current, so it is used as it is
        assert g.identify(probe, FP_A) == first and first[0].name == "p1"
        assert g.fingerprints() == {FP_A: 3}
    assert (index.stat().st_mtime_ns, index.stat().st_ino) == built, "a current index must not be rebuilt"


def test_every_write_changes_the_version_in_its_transaction(data: Path):
    with GalleryStoppingBeforeCommit.open(data) as g:
        versions = [_index_version(data)]
        register(g, "Alice", 1)
        versions.append(_index_version(data))
        g.add_templates(["Bob", "Carol"], embed_a(smooth_crops(2)[:1] + smooth_crops(3)[:1]), FP_A)
        versions.append(_index_version(data))
        g.delete("Bob")
        versions.append(_index_version(data))
        g.reenroll(embed_a, FP_A, progress=False)
        versions.append(_index_version(data))
        g.stop = interrupt
        with pytest.raises(KeyboardInterrupt):  # rolled back: no write, no new version
            register(g, "Dave", 4)
    assert _index_version(data) == versions[-1]
    assert len(set(versions)) == len(versions) and [int(v.split(":")[0]) for v in versions] == list(range(1, 6))


def test_stale_missing_or_garbage_index_is_rebuilt_never_trusted(data: Path):
    probe_bob = embed_a(smooth_crops(2)[:1])[0]
    with Gallery.open(data) as g:
        register(g, "Alice", 1)
        g.identify(probe_bob, FP_A)
    old_index = (data / INDEX_NAME).read_bytes()  # built when only Alice was there
    with Gallery.open(data) as g:
        register(g, "Bob", 2)
    (data / INDEX_NAME).write_bytes(old_index)  # stale: another version
    with Gallery.open(data) as g:
        assert g.identify(probe_bob, FP_A)[0].name == "Bob"
    for garbage in (b"", os.urandom(5000), (data / INDEX_NAME).read_bytes()[:-100]):
        (data / INDEX_NAME).write_bytes(garbage)
        with Gallery.open(data) as g:
            assert [m.name for m in g.identify(probe_bob, FP_A)] == ["Bob", "Alice"]
    (data / INDEX_NAME).unlink()
    with Gallery.open(data) as g:
        assert g.identify(probe_bob, FP_A)[0].name == "Bob"
    assert IndexFile.open(data / INDEX_NAME).count


def test_restored_backup_never_matches_an_index_from_another_history(data: Path, tmp_path: Path):
    with Gallery.open(data) as g:
        register(g, "Alice", 1)
    backup = tmp_path / "backup.sqlite3"
    backup.write_bytes((data / DB_NAME).read_bytes())
    with Gallery.open(data) as g:
        register(g, "Bob", 2)
        g.identify(np.ones(512, np.float32), FP_A)  # index of {Alice, Bob}
    (data / DB_NAME).write_bytes(backup.read_bytes())  # the user restores the backup ...
    with Gallery.open(data) as g:
        register(g, "Carol", 3)  # ... and writes: the same counter as the index
        assert [m.name for m in g.identify(embed_a(smooth_crops(3)[:1])[0], FP_A)][0] == "Carol"
        assert {m.name for m in g.identify(np.ones(512, np.float32), FP_A)} == {"Alice", "Carol"}


def test_crash_mid_write_triggers_the_integrity_check_on_next_open(data: Path):
    with Gallery.open(data) as g:
        register(g, "Alice", 1)
        g.identify(np.ones(512, np.float32), FP_A)
        assert g.check() == []
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    marker = data / f".writing-{int(dead.stdout)}"
    marker.touch()
    (data / INDEX_NAME).write_bytes(b"half-written")
    with Gallery.open(data) as g:  # the dead writer's marker: checked, index rebuilt, marker gone
        assert not marker.exists()
        assert IndexFile.open(data / INDEX_NAME).count
        assert g.identify(np.ones(512, np.float32), FP_A)[0].name == "Alice"
    (data / "samples" / "1" / "0.jpg").unlink()
    with Gallery.open(data) as g:
        problems = g.check()
    assert len(problems) == 1 and "0.jpg is missing" in problems[0]


def test_schema_1_gallery_is_upgraded_on_open(data: Path):
    with Gallery.open(data) as g:
        register(g, "Alice", 1)
    with sqlite3.connect(data / DB_NAME) as conn:  # what the previous release wrote
        conn.execute("DELETE FROM meta WHERE key = 'index_version'")
        conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
        conn.execute("DROP INDEX templates_fingerprint")
    conn.close()
    with Gallery.open(data) as g:
        assert g.identify(np.ones(512, np.float32), FP_A)[0].name == "Alice"
    with sqlite3.connect(data / DB_NAME) as conn:
        meta = dict(conn.execute("SELECT key, value FROM meta"))
        assert meta["schema_version"] == "2" and meta["index_version"].startswith("1:")
        assert conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'templates_fingerprint'").fetchone()
    conn.close()
