"""The training settings are declared once (faceid.train.config): flags, help, JSON files and continue rules follow."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from faceid.core.errors import FaceIDError, flag
from faceid.train.cli import continue_parser, train_config, train_parser
from faceid.train.config import SETTINGS, Change, TrainConfig, changeable, default_text, load_overrides

REPO = Path(__file__).resolve().parents[2]


def _flags(parser) -> set[str]:
    """Every long option the parser's usage line offers (what a user can type)."""
    return set(re.findall(r"(--[a-z0-9-]+)", parser.format_usage()))


def _expected(names) -> set[str]:
    out = set()
    for name in names:
        out.add(flag(name))
        if isinstance(SETTINGS[name].default, bool) or name == "channels_last":
            out.add("--no-" + flag(name)[2:])
    return out


def test_every_setting_has_a_flag_and_every_flag_a_setting():
    assert _flags(train_parser()) == _expected(SETTINGS) | {"--config"}
    assert _flags(continue_parser()) == _expected(changeable(new_phase=True)) | {"--checkpoint"}


def test_help_shows_each_default_from_its_field():
    def squash(text: str) -> str:  # argparse wraps lines, also at hyphens: compare without whitespace
        return "".join(text.split())

    text, cont = squash(train_parser().format_help()), squash(continue_parser().format_help())
    for name, f in SETTINGS.items():
        shown = squash(default_text(name))
        assert f"(default:{shown})" in text, name
        if f.metadata["changes"] is not Change.NEVER:
            assert f"newruns:{shown})" in cont, name
    assert squash("(default: as in the checkpoint; new runs: adamw)") in cont
    assert squash("(default: the checkpoint's directory; new runs: ./checkpoints)") in cont


def test_flags_and_defaults_reach_the_config():
    assert train_config([]) == TrainConfig()
    cfg = train_config(["--batch-size", "8", "--no-bins", "--head", "arcface", "--lr", "1e-3", "--channels-last"])
    assert (cfg.batch_size, cfg.bins, cfg.head, cfg.lr, cfg.channels_last) == (8, False, "arcface", 1e-3, True)


def test_config_files_override_defaults_and_flags_override_files():
    for path in (REPO / "configs").glob("*.json"):
        values = load_overrides(path)
        assert values and set(values) <= set(SETTINGS), path
        assert TrainConfig.from_dict(values) != TrainConfig(), f"{path} changes nothing"
    cfg = train_config(["--config", str(REPO / "configs" / "seed.json"), "--epochs", "3"])
    assert (cfg.head, cfg.batch_size, cfg.optimizer, cfg.precision, cfg.epochs) == ("softmax", 16, "adam", "fp32", 3)
    assert cfg.warmup_epochs == 0.0 and isinstance(cfg.warmup_epochs, float) and cfg.augment_flip is False


@pytest.mark.parametrize(
    "content, says",
    [
        ({"batchsize": 16}, "Unknown training setting(s) batchsize"),
        ({"batch_size": "16"}, "batch_size must be int or null, got '16'"),
        ({"bins": 1}, "bins must be bool"),
        ({"optimizer": "lamb"}, "Unknown optimizer 'lamb'; choose one of adamw, adam, sgd"),
        ({"target_far": 2.0}, "target_far must be between 0 and 1"),
        ([1, 2], "must hold a JSON object"),
    ],
)
def test_a_bad_config_file_is_one_sentence(tmp_path, content, says):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(content))
    with pytest.raises(FaceIDError) as err:
        train_config(["--config", str(path)])
    assert says in str(err.value) and "\n" not in str(err.value)
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(FaceIDError, match="Cannot read the config file"):
        load_overrides(tmp_path / "broken.json")


def test_library_errors_name_settings_and_the_cli_adds_flags():
    with pytest.raises(FaceIDError) as err:
        TrainConfig(weights="x.pt", from_scratch=True)
    assert "--" not in str(err.value) and err.value.settings == ("weights", "from_scratch")
    with pytest.raises(FaceIDError) as err:
        train_config(["--weights", "x.pt", "--from-scratch"])
    flags = {flag(name) for name in SETTINGS}  # what run_cli adds for train_model.py (see test_training)
    assert err.value.with_flags(flags).endswith("give one of them (--weights, --from-scratch).")
    assert err.value.with_flags({"--weights"}).endswith("give one of them (--weights).")
    assert err.value.with_flags(set()) == str(err.value)


def test_continue_rules_follow_the_fields():
    resume, phase = set(changeable(new_phase=False)), set(changeable(new_phase=True))
    assert resume < phase and "lr" in phase - resume and "epochs" in phase - resume
    assert {"data", "out", "workers", "device", "bins"} <= resume
    assert not {"head", "seed", "min_images", "holdout_fraction", "crop_style"} & phase
