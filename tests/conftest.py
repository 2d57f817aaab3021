"""Shared test helpers: where the read-only real data (../shared/data) lives.

Tests that need it take the `shared_data` fixture, which skips with a clear reason where it is absent.
`FACEID_SHARED_DATA` points elsewhere (e.g. a CI cache).
"""

from __future__ import annotations

import os
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
