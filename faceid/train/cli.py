"""Command lines of train_model.py and continue_training.py: flags derived from `faceid.train.config.TrainConfig`.

Every setting's flag, type, choices, help and shown default come from its field; nothing is written twice.
Precedence for a new run: the field's default < ``--config FILE.json`` (keys = field names, e.g.
configs/seed.json) < flags on the command line. continue_training.py offers only the settings a continuation
may change (`faceid.train.config.Change`); a flag left out keeps the checkpoint's value, and ``--lr`` starts a new
phase. An error names its settings (`FaceIDError.settings`) and `errors.run_cli` adds their flags, not the library.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..core.errors import ArgumentParser, flag
from .config import GROUPS, SETTINGS, Change, TrainConfig, base_type, changeable, default_text, load_overrides
from .trainer import LAST, continue_training, train


def add_setting_flags(parser: argparse.ArgumentParser, continuing: bool) -> None:
    """One flag per setting (continuing: only those a continuation may change), grouped as in GROUPS. Absent
    flags stay out of the parsed namespace (default SUPPRESS), so the caller knows what was given."""
    groups = {name: parser.add_argument_group(name) for name in GROUPS}
    for name, f in SETTINGS.items():
        if continuing and f.metadata["changes"] is Change.NEVER:
            continue
        base, _ = base_type(name)
        shown = default_text(name)
        if continuing:
            shown = f"{f.metadata['continue_text'] or 'as in the checkpoint'}; new runs: {shown}"
        kwargs: dict = {
            "dest": name,
            "default": argparse.SUPPRESS,
            "help": f"{f.metadata['help']} (default: {shown})".replace("%", "%%"),
        }
        if base is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = base
            if f.metadata["choices"]:
                kwargs["choices"] = f.metadata["choices"]
        groups[f.metadata["group"]].add_argument(flag(name), **kwargs)


def train_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        description="Fine-tune InceptionResnetV1 (VGGFace2 weights) for face verification. Writes "
        "best_face_model.pth (chosen by a verification metric, with a calibrated cosine threshold), "
        "final_face_model.pth, last_face_model.pth, label_map.json, history.json and curves_*.png. "
        "Multi-GPU: torchrun --nproc_per_node N train_model.py ...",
    )
    p.add_argument(
        "--config",
        help="JSON file of settings (the flags' names with _ for -), e.g. configs/seed.json; "
        "flags given on the command line win (default: none)",
    )
    add_setting_flags(p, continuing=False)
    return p


def train_config(argv: list[str] | None = None) -> TrainConfig:
    """The settings of a new run: defaults < --config file < flags."""
    given = vars(train_parser().parse_args(argv))
    path = given.pop("config", None)
    return TrainConfig.from_dict({**(load_overrides(path) if path else {}), **given})


def train_main(argv: list[str] | None = None) -> int:
    return train(train_config(argv))


def continue_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        description="Resume training exactly from a checkpoint (same epoch/step, optimizer, schedule, RNG), or with "
        "--lr start a new phase (new optimizer and schedule; the seed's second phase was --lr 3e-5 "
        "--scheduler plateau). History, best checkpoint and counters continue.",
        epilog=f"An exact resume may change only {', '.join(flag(n) for n in changeable(new_phase=False))}; the "
        f"other flags change the recipe and so need --lr (a new phase).",
    )
    p.add_argument(
        "--checkpoint",
        default=str(Path(TrainConfig().out) / LAST),
        help="checkpoint to continue from: last_face_model.pth (written every epoch and on Ctrl-C), "
        "best_ or final_face_model.pth (default: %(default)s)",
    )
    add_setting_flags(p, continuing=True)
    return p


def continue_main(argv: list[str] | None = None) -> int:
    given = vars(continue_parser().parse_args(argv))
    checkpoint = given.pop("checkpoint")
    return continue_training(checkpoint, given, new_phase="lr" in given)
