"""Where the read-only real data and the stand-in weights live (../shared beside the repo, or the environment's
FACEID_SHARED_DATA / FACEID_SHARED_MODELS). Tests take them through the `shared_data`, `shared_models` and
`stand_in` fixtures (conftest.py), which skip with the reason where they are absent."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
STAND_IN_NAME = "pins90_scratch_irv1_fp16.pt"  # ../shared/models/README.md: weak, real InceptionResnetV1 weights


def _configured(env: str, default: Path) -> Path:
    return Path(os.environ[env]) if os.environ.get(env) else default


SHARED_DATA = _configured("FACEID_SHARED_DATA", REPO_ROOT.parent / "shared" / "data")
SHARED_MODELS = _configured("FACEID_SHARED_MODELS", REPO_ROOT.parent / "shared" / "models")
STAND_IN = SHARED_MODELS / STAND_IN_NAME


def shared_data_dir() -> Path | None:
    """The shared data folder, or None where it is absent."""
    return SHARED_DATA if SHARED_DATA.is_dir() else None
