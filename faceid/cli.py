"""Console commands installed by ``pip install .`` (pyproject.toml ``[project.scripts]``), and what the top-level
scripts run. Each is one stage's command line under `errors.run_cli` (one sentence and exit 2 on an error, 130 on
Ctrl-C, never a traceback); the stage is imported only when its command runs, so ``faceid list`` stays torch-free:

    faceid           faceid_app.py           faceid/app/cli.py     the face-ID app (menu or subcommands)
    faceid-train     train_model.py          faceid/train/cli.py   a new training run
    faceid-continue  continue_training.py    faceid/train/cli.py   exact resume or a new phase
    faceid-eval      evaluate_model.py       faceid/eval/cli.py    verification / 1:N evaluation / calibration
    faceid-export    export_model.py         faceid/model/cli.py   ONNX and the slim inference checkpoint
    faceid-download  download_dataset.py     faceid/data/cli.py    CASIA-WebFace from Kaggle
    faceid-unpack    preprocess_dataset.py   faceid/data/cli.py    train.rec -> a JPG tree
    faceid-train-gan train_gan.py            faceid/synthetic/cli.py  a DCGAN face generator
    faceid-generate  generate_faces.py       faceid/synthetic/cli.py  generated faces from it
    faceid-train-detector train_detector.py  faceid/synthetic/cli.py  the real-vs-synthetic detector
"""

from __future__ import annotations

import importlib
from typing import NoReturn

from .core.errors import run_cli


def _run(module: str, function: str = "main") -> NoReturn:
    """The stage's command line, imported inside `run_cli`: where an import fails (the slim install has no torch
    for `faceid-export`) that too is one sentence and exit 2, not a traceback."""
    run_cli(lambda: getattr(importlib.import_module(module, __package__), function)())


def app() -> NoReturn:
    _run(".app.cli")


def train() -> NoReturn:
    _run(".train.cli", "train_main")


def continue_training() -> NoReturn:
    _run(".train.cli", "continue_main")


def evaluate() -> NoReturn:
    _run(".eval.cli")


def export() -> NoReturn:
    _run(".model.cli")


def download() -> NoReturn:
    _run(".data.cli", "download_main")


def unpack() -> NoReturn:
    _run(".data.cli", "unpack_main")


def train_gan() -> NoReturn:
    _run(".synthetic.cli", "train_gan_main")


def generate_faces() -> NoReturn:
    _run(".synthetic.cli", "generate_main")


def train_detector() -> NoReturn:
    _run(".synthetic.cli", "train_detector_main")
