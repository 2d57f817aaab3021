"""Shared fixtures: the read-only real data (../shared/data), the stand-in weights (../shared/models), a per-module
scratch folder, and the test tiers.

Tests that need the data or the weights take `shared_data`, `shared_models` or `stand_in`, which skip with a clear
reason where they are absent (`FACEID_SHARED_DATA` / `FACEID_SHARED_MODELS` point elsewhere, e.g. a CI cache).

Tiers: a test marked ``e2e`` runs a whole program or a real model over real media (seconds each); the rest are
unit tests. ``pytest -m "not e2e"`` is the fast tier (about a minute); plain ``pytest`` runs both. A test marked
``cuda`` needs a GPU and skips without one; ``pytest -m cuda`` selects exactly those (the GPU check's step 2).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from shared_paths import SHARED_DATA, SHARED_MODELS, STAND_IN, shared_data_dir


def pytest_collection_modifyitems(config, items) -> None:
    """Tests marked ``cuda`` skip, with the reason, where PyTorch finds no usable GPU (torch is imported only
    when such a test was collected)."""
    needs_gpu = [item for item in items if item.get_closest_marker("cuda")]
    if not needs_gpu:
        return
    import torch

    from faceid.core.device import cuda_problem

    if torch.cuda.is_available() and cuda_problem(torch.device("cuda:0")) is None:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (pytest -m cuda runs these on one: bench/gpu_check.sh)")
    for item in needs_gpu:
        item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if path is None:
        pytest.skip(f"shared data not found at {SHARED_DATA}; set FACEID_SHARED_DATA")
    return path


@pytest.fixture(scope="session")
def shared_models() -> Path:
    if not SHARED_MODELS.is_dir():
        pytest.skip(f"shared models not found at {SHARED_MODELS}; set FACEID_SHARED_MODELS")
    return SHARED_MODELS


@pytest.fixture(scope="session")
def stand_in(shared_models) -> Path:
    """The stand-in InceptionResnetV1 weights (weak but real: ../shared/models/README.md)."""
    if not STAND_IN.is_file():
        pytest.skip(f"stand-in weights not found at {STAND_IN}; set FACEID_SHARED_MODELS")
    return STAND_IN


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
