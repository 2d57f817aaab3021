"""Console commands installed by ``pip install .`` (pyproject.toml ``[project.scripts]``).

Each runs exactly what its top-level script runs, under `errors.run_cli` (one sentence and exit 2 on an
error, 130 on Ctrl-C, never a traceback):

    faceid           faceid_app.py           the face-ID app (menu or subcommands)
    faceid-train     train_model.py          a new training run
    faceid-continue  continue_training.py    exact resume or a new phase
    faceid-eval      evaluate_model.py       verification / 1:N evaluation
    faceid-export    export_model.py         ONNX and the slim inference checkpoint
    faceid-download  download_dataset.py     CASIA-WebFace from Kaggle
    faceid-unpack    preprocess_dataset.py   train.rec -> a JPG tree

The scripts whose argument parsing lives in the script itself are installed as top-level modules beside the
package (pyproject.toml ``py-modules``) and imported only when their command runs.
"""

from __future__ import annotations

import importlib

from .errors import run_cli


def _script(module: str) -> None:
    run_cli(importlib.import_module(module).main)


def app() -> None:
    from .app import main

    run_cli(main)


def train() -> None:
    from .training_cli import train_main

    run_cli(train_main)


def continue_training() -> None:
    from .training_cli import continue_main

    run_cli(continue_main)


def evaluate() -> None:
    _script("evaluate_model")


def export() -> None:
    _script("export_model")


def download() -> None:
    _script("download_dataset")


def unpack() -> None:
    _script("preprocess_dataset")
