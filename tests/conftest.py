"""Shared test helpers: where the read-only real data (../shared/data) lives, and a per-module scratch folder.

Tests that need the data take the `shared_data` fixture, which skips with a clear reason where it is absent.
`FACEID_SHARED_DATA` points elsewhere (e.g. a CI cache).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path | None:
    """The shared data folder ($FACEID_SHARED_DATA, else ../shared/data beside the repo), or None if absent."""
    configured = os.environ.get("FACEID_SHARED_DATA")
    path = Path(configured) if configured else REPO_ROOT.parent / "shared" / "data"
    return path if path.is_dir() else None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if path is None:
        where = os.environ.get("FACEID_SHARED_DATA") or REPO_ROOT.parent / "shared" / "data"
        pytest.skip(f"shared data not found at {where}; set FACEID_SHARED_DATA")
    return path


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory, request) -> Iterator[Path]:
    """A scratch folder for one test module's shared fixtures, deleted when the module ends.

    A training run writes ~0.9 GB of checkpoints; kept until the session ends (as `tmp_path_factory` folders
    are), the suite once held 11 GB and filled a CI machine's disk. Per-test `tmp_path` folders are deleted
    when their test passes (`tmp_path_retention_policy = failed` in pytest.ini).
    """
    path = tmp_path_factory.mktemp(request.module.__name__.rpartition(".")[2])
    yield path
    shutil.rmtree(path, ignore_errors=True)  # best effort: a folder a test made read-only stays for the basetemp sweep
