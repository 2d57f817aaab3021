"""The gallery on hostile storage (issue 19): read-only, full, under a file-size limit, opened up to everyone.

Read-only storage is made for real, the strongest way this machine allows, and the test's docstring says which ran:

1. a tmpfs mounted and remounted read-only (``mount -o remount,ro``) - needs root, or a container allowing mounts;
2. else, as root (who ignores mode bits), ``chattr +i`` on every gallery file and folder - the kernel refuses
   root's writes to an immutable inode;
3. else, as a normal user, ``chmod -R a-w`` - which binds a normal user.

A full disk is a real tmpfs filled to its last byte (skipped where no mount is possible: no other way gives a
real ENOSPC); a file-size limit is a real RLIMIT_FSIZE in a child process (EFBIG). Every case runs the real app
as a process where the exit code and the sentence are the point, and the gallery in-process where a face is
needed (verify and identify use the real search index, built in memory).
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from faceid.gallery.records import GalleryError
from faceid.gallery.store import Gallery

REPO = Path(__file__).resolve().parents[2]
FP = "0123456789abcdef"


def app(*args, preexec=None, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "faceid_app.py"), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=preexec,
        env=env,
    )


def make_gallery(path: Path, people: int = 3) -> np.ndarray:
    """A real gallery of `people` with two crops each; returns their templates' source embeddings (person i's
    first sample), to probe with."""
    rng = np.random.default_rng(0)
    probes = []
    with Gallery.open(path) as g:
        for i in range(people):
            emb = rng.standard_normal((2, 512)).astype(np.float32)
            emb /= np.linalg.norm(emb, axis=1, keepdims=True)
            crops = [rng.integers(0, 256, (112, 112, 3), dtype=np.uint8) for _ in range(2)]
            g.register(f"person {i}", crops, emb, FP)
            probes.append(emb[0])
    return np.stack(probes)


def _mounted_tmpfs(where: Path, size: str) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    return (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True
        ).returncode
        == 0
    )


def _unmount(where: Path) -> None:
    subprocess.run(["umount", str(where)], capture_output=True)


@contextlib.contextmanager
def read_only_copy(gallery: Path, scratch: Path) -> Iterator[tuple[Path, str]]:
    """(a read-only copy of `gallery`, how it was made read-only): see the module docstring for the order."""
    mount = scratch / "ro_mount"
    if _mounted_tmpfs(mount, "8m"):
        try:
            shutil.copytree(gallery, mount / "g", symlinks=True)
            if subprocess.run(["mount", "-o", "remount,ro", str(mount)], capture_output=True).returncode == 0:
                assert os.statvfs(mount).f_flag & os.ST_RDONLY
                yield mount / "g", "a tmpfs remounted read-only"
                return
        finally:
            _unmount(mount)
    copy = scratch / "ro_copy"
    shutil.copytree(gallery, copy, symlinks=True)
    paths = [copy, *copy.rglob("*")]
    if os.geteuid() == 0:
        if subprocess.run(["chattr", "+i", *map(str, paths)], capture_output=True).returncode != 0:
            pytest.skip("root without mount or chattr +i: no way to make storage read-only for root here")
        try:
            yield copy, "chattr +i (root ignores mode bits)"
        finally:
            subprocess.run(["chattr", "-i", *map(str, paths)], capture_output=True)
        return
    for p in paths:
        p.chmod(p.stat().st_mode & ~0o222)
    try:
        yield copy, "chmod a-w (a normal user)"
    finally:
        for p in paths:
            p.chmod(p.stat().st_mode | 0o200)


def test_a_read_only_gallery_serves_every_read_and_refuses_writes(tmp_path):
    """Whatever made it read-only (see the module docstring), the gallery is read, searched and checked with the
    index built in memory, and register/delete are one sentence: nothing there is written, not even SQLite's
    -wal/-shm files or the search index."""
    source = tmp_path / "gallery"
    probes = make_gallery(source)
    (source / "search_index.bin").unlink(missing_ok=True)  # so identify must build the index, in memory
    with read_only_copy(source, tmp_path) as (ro, how):
        before = sorted((str(p), p.stat().st_mtime_ns) for p in [ro, *ro.rglob("*")])
        with Gallery.open(ro) as g:
            assert g.read_only == "is on read-only storage", how
            assert [p.name for p in g.people()] == ["person 0", "person 1", "person 2"]
            assert g.identify(probes[1], FP, k=1)[0].name == "person 1"
            assert g.verify("person 2", probes[2], FP) > 0.6
            assert g.check() == []
            assert len(g.sample_crops("person 0")) == 2
            with pytest.raises(GalleryError, match="is on read-only storage: it can be read .* but not changed"):
                g.delete("person 0")
            with pytest.raises(GalleryError, match="read-only storage"):
                g.register("new", [np.zeros((112, 112, 3), np.uint8)], probes[:1], FP)
        listed = app("--data-dir", ro, "list")
        assert listed.returncode == 0 and "3 registered:" in listed.stdout, (how, listed.stderr)
        checked = app("--data-dir", ro, "check")
        assert checked.returncode == 0 and "is intact (3 templates)" in checked.stdout, (how, checked.stderr)
        for action in (["delete", "--name", "person 0"], ["register", "--name", "x"]):
            out = app("--data-dir", ro, "--source", tmp_path, *action)  # refused before any source or model
            assert out.returncode == 2 and "is on read-only storage" in out.stderr and "Traceback" not in out.stderr
        after = sorted((str(p), p.stat().st_mtime_ns) for p in [ro, *ro.rglob("*")])
        assert after == before, how


def test_a_new_gallery_cannot_be_made_on_read_only_storage(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir(mode=0o700)
    with read_only_copy(empty, tmp_path) as (ro, how):
        with pytest.raises(GalleryError, match="There is no gallery in .* none can be made there: it is on read-only"):
            Gallery.open(ro)


@pytest.fixture
def full_disk(tmp_path) -> Iterator[Path]:
    """A real tmpfs holding a gallery, then filled to its last byte; skipped where no mount is allowed."""
    mount = tmp_path / "full"
    if not _mounted_tmpfs(mount, "4m"):
        pytest.skip("mounting a tmpfs is not allowed here: no other way makes a real full disk")
    try:
        make_gallery(mount / "g")
        fd = os.open(mount / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
        for block in (65536, 4096, 1):  # unbuffered writes until the kernel says ENOSPC
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * block)
        os.close(fd)
        assert shutil.disk_usage(mount).free == 0
        yield mount
    finally:
        _unmount(mount)


def test_reads_still_work_at_0_bytes_free_and_writes_name_the_full_disk(full_disk):
    listed = app("--data-dir", full_disk / "g", "list")
    assert listed.returncode == 0 and "3 registered:" in listed.stdout, listed.stderr
    checked = app("--data-dir", full_disk / "g", "check")
    assert checked.returncode == 0, checked.stderr
    out = app("--data-dir", full_disk / "g", "delete", "--name", "person 1")
    assert out.returncode == 2 and "is on a full disk (0 bytes free)" in out.stderr, out.stderr
    with Gallery.open(full_disk / "g") as g:
        assert len(g.people()) == 3


def test_a_disk_that_fills_during_a_registration_is_named_and_changes_nothing(full_disk):
    """Just over the 1 MiB the gallery needs to open for writing: the crops of a big registration (random
    pixels, ~60 KB each as JPEG q95) run out of space in the middle of the write (a real ENOSPC)."""
    filler = full_disk / "filler"
    os.truncate(filler, filler.stat().st_size - (1 << 20) - (256 << 10))
    rng = np.random.default_rng(1)
    crops = [rng.integers(0, 256, (200, 200, 3), dtype=np.uint8) for _ in range(40)]
    emb = rng.standard_normal((40, 512)).astype(np.float32)
    with Gallery.open(full_disk / "g") as g:
        assert g.read_only is None
        with pytest.raises(GalleryError, match="the disk is full"):
            g.register("big", crops, emb, FP)
        assert [p.name for p in g.people()] == ["person 0", "person 1", "person 2"]
    assert sorted(p.name for p in (full_disk / "g" / "samples").iterdir()) == ["1", "2", "3"]


def test_a_file_size_limit_is_named_as_such(tmp_path):
    """RLIMIT_FSIZE in the child (``ulimit -f``): the database cannot grow past it, the write fails with EFBIG
    (Python ignores SIGXFSZ), and the sentence says it was the file-size limit, not 'disk I/O error'."""
    gallery = tmp_path / "g"
    make_gallery(gallery, people=1)
    size = (gallery / "gallery.sqlite3").stat().st_size

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (size + 1000, size + 1000))

    script = (
        "import sys, numpy as np\n"
        "from faceid.core.errors import run_cli\n"
        "from faceid.gallery.store import Gallery\n"
        "def main():\n"
        "    with Gallery.open(sys.argv[1]) as g:\n"
        "        emb = np.random.default_rng(0).standard_normal((200, 512)).astype(np.float32)\n"
        "        g.add_templates([f'p{i}' for i in range(200)], emb, sys.argv[2])\n"
        "run_cli(main)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(gallery), FP],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=limit,
        cwd=REPO,
    )
    assert out.returncode == 2 and "a file-size limit (ulimit -f" in out.stderr, out.stderr
    assert "disk I/O error" not in out.stderr
    listed = app("--data-dir", gallery, "list", preexec=limit)
    assert listed.returncode == 0 and "1 registered:" in listed.stdout


def test_permissions_opened_up_are_made_exactly_as_promised(tmp_path):
    """README / privacy.md: the folder and every folder in it 0700, every file 0600, fixed on start. Everything is
    opened up (chmod -R 777) and a plain `list` puts every mode back, saying so once per kind."""
    gallery = tmp_path / "g"
    make_gallery(gallery)
    for p in [gallery, *gallery.rglob("*")]:
        p.chmod(0o777)
    out = app("--data-dir", gallery, "list")
    assert out.returncode == 0, out.stderr
    modes = {str(p.relative_to(gallery)): stat.S_IMODE(p.stat().st_mode) for p in gallery.rglob("*")}
    assert stat.S_IMODE(gallery.stat().st_mode) == 0o700
    assert all(mode == (0o700 if (gallery / name).is_dir() else 0o600) for name, mode in modes.items()), modes
    assert "samples/1/0.jpg" in modes and "samples/1" in modes
    assert "Made 9 sample files and folders in" in out.stderr  # 3 people: 3 folders + 6 crops, one line


def test_a_data_dir_made_under_umask_000_is_private_all_the_way_down(tmp_path):
    env = {**os.environ}
    out = subprocess.run(
        ["sh", "-c", f'umask 000 && exec "{sys.executable}" "{REPO / "faceid_app.py"}" --data-dir a/b list'],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    for folder in (tmp_path / "a", tmp_path / "a" / "b", tmp_path / "a" / "b" / "samples"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    assert stat.S_IMODE((tmp_path / "a" / "b" / "gallery.sqlite3").stat().st_mode) == 0o600
