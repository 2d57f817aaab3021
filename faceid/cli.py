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
"""

from __future__ import annotations

from typing import NoReturn

from .core.errors import run_cli


def app() -> NoReturn:
    from .app.cli import main

    run_cli(main)


def train() -> NoReturn:
    from .train.cli import train_main

    run_cli(train_main)


def continue_training() -> NoReturn:
    from .train.cli import continue_main

    run_cli(continue_main)


def evaluate() -> NoReturn:
    from .eval.cli import main

    run_cli(main)


def export() -> NoReturn:
    from .model.cli import main

    run_cli(main)


def download() -> NoReturn:
    from .data.cli import download_main

    run_cli(download_main)


def unpack() -> NoReturn:
    from .data.cli import unpack_main

    run_cli(unpack_main)


def train_gan() -> NoReturn:
    from .synthetic.cli import train_gan_main

    run_cli(train_gan_main)


def generate_faces() -> NoReturn:
    from .synthetic.cli import generate_main

    run_cli(generate_main)
