"""The training configuration: every setting declared once, with its default, its help and when it may change.

Each `TrainConfig` field carries in its metadata (see `setting`):
- ``help``: what it does, for ``--help``; the default is appended from the field itself, or from
  ``default_text`` where the default is decided at run time (a ``None`` default);
- ``group``: the ``--help`` section it is listed in;
- ``changes``: when a continued run may change it (`Change`): ``RESUME`` = any continuation (it does not
  touch the training math: paths, workers, device ...), ``PHASE`` = only a new phase (optimizer, schedule,
  selection ...), ``NEVER`` = fixed at the start of the run (data filters, head, seed ...);
- ``choices``: the allowed values, where there is a fixed list; ``valid``: (test, what the value must be)
  for numbers with a range (None, a run-time default, always passes).

Everything else derives from these fields: the flags of train_model.py and continue_training.py with their
help text and defaults (`faceid.train.cli`), the ``configs/*.json`` override files (`load_overrides`), the
settings a checkpoint stores (`TrainConfig.to_dict` / `from_dict`) and the continue rules (`refused_changes`).
Adding a setting is adding one field here.
"""

from __future__ import annotations

import enum
import json
import typing
from collections.abc import Callable
from dataclasses import MISSING, Field, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..core.defaults import RUN_DIR
from ..core.errors import FaceIDError
from ..model.network import DEFAULT_NETWORK, NETWORKS
from ..model.preprocessing import CROP_STYLES
from .feed import DECODE_MODES
from .heads import HEADS
from .recipe import OPTIMIZERS, PRECISIONS, SCHEDULERS
from .validation import SELECT_METRICS

DEFAULT_HEAD = "softmax"  # chosen by measurement (weak, CPU-sized): docs/training.md, why softmax is the default


class Change(enum.Enum):
    """When a continued run may change a setting."""

    NEVER = "fixed for the whole run"
    PHASE = "a new phase may change it"
    RESUME = "any continuation may change it"


# The --help sections, in the order they are listed.
GROUPS = (
    "data",
    "model",
    "dataset filters and splits",
    "optimisation",
    "validation and model selection",
    "speed and hardware",
)


def setting(
    default: Any,
    help: str,
    group: str,
    changes: Change = Change.NEVER,
    choices: tuple | None = None,
    valid: tuple[Callable[[Any], bool], str] | None = None,
    default_text: str | None = None,
    continue_text: str | None = None,
) -> Any:
    """A TrainConfig field. `default_text` describes a default decided at run time; `continue_text` says what
    continue_training.py does when the flag is absent, where that is not "as in the checkpoint"."""
    assert group in GROUPS, group
    return field(
        default=default,
        metadata={
            "help": help,
            "group": group,
            "changes": changes,
            "choices": choices,
            "valid": valid,
            "default_text": default_text,
            "continue_text": continue_text,
        },
    )


# Value ranges (`valid`), named by what they say.
AT_LEAST_1 = (lambda v: v >= 1, "at least 1")
ZERO_OR_MORE = (lambda v: v >= 0, "0 or more")
ABOVE_0 = (lambda v: v > 0, "above 0")
FRACTION = (lambda v: 0 <= v < 1, "in [0, 1)")


@dataclass(frozen=True)
class TrainConfig:
    """Every training setting; stored in checkpoints as a plain dict. None = decided at run time (see help)."""

    # data
    data: str = setting(
        "./datasets/casia-webface-images",
        group="data",
        changes=Change.RESUME,
        help="training data: a folder tree <root>/<identity>/<image>.jpg (preprocess_dataset.py's "
        "output, Pins, any folder-per-identity set), a .rec file, or a directory containing "
        "train.rec",
    )
    out: str = setting(
        f"./{RUN_DIR}",
        group="data",
        changes=Change.RESUME,
        help="output directory for checkpoints, label map, history and curves",
        continue_text="the checkpoint's directory",
    )
    # model
    network: str = setting(
        DEFAULT_NETWORK,
        group="model",
        choices=tuple(NETWORKS),
        help="backbone network, from the registry in faceid/model/network.py; recorded in every checkpoint",
    )
    weights: str | None = setting(
        None,
        group="model",
        help="initial backbone weights file",
        default_text="$FACEID_WEIGHTS, else the cached or downloaded VGGFace2 file",
    )
    from_scratch: bool = setting(False, group="model", help="random initial weights instead of VGGFace2")
    head: str = setting(
        DEFAULT_HEAD,
        group="model",
        choices=HEADS,
        help="classification head / loss; docs/training.md shows the measurement behind the default",
    )
    scale: float | None = setting(None, group="model", help="margin heads' scale s", valid=ABOVE_0, default_text="64")
    margin: float | None = setting(
        None, group="model", help="margin m", valid=ZERO_OR_MORE, default_text="arcface 0.5, cosface 0.35"
    )
    epochs: int = setting(
        20,
        group="model",
        changes=Change.PHASE,
        valid=AT_LEAST_1,
        help="epochs in this phase (a new run has one phase; continue_training.py --lr starts the next)",
    )
    batch_size: int | None = setting(
        None,
        group="model",
        valid=(lambda v: v >= 2, "at least 2 (BatchNorm needs two samples)"),
        help="images per step per process; the global batch is this x the number of processes",
        default_text="512 on CUDA, 16 on CPU",
    )
    # dataset filters and splits
    min_images: int = setting(
        5, group="dataset filters and splits", valid=AT_LEAST_1, help="drop identities with fewer images"
    )
    max_images: int = setting(
        100,
        group="dataset filters and splits",
        valid=AT_LEAST_1,
        help="use at most this many images per identity, a deterministic choice",
    )
    val_fraction: float = setting(
        0.2,
        group="dataset filters and splits",
        valid=FRACTION,
        help="share of the training identities' images held back for the seed's closed-set accuracy",
    )
    holdout_fraction: float = setting(
        0.1,
        group="dataset filters and splits",
        valid=FRACTION,
        help="share of identities (at least 2) never trained on, for open-set "
        "verification and the threshold; 0 disables",
    )
    tune_on_benchmark: bool = setting(
        False,
        group="dataset filters and splits",
        help="allow selecting the model on a .bin benchmark and, without held-out "
        "identities, calibrating on it: tuning on test data, stamped in the "
        "checkpoint and shown by the app (off makes that an error)",
    )
    pairs: int = setting(
        3000,
        group="dataset filters and splits",
        valid=AT_LEAST_1,
        help="genuine and impostor pairs each among the held-out identities",
    )
    crop_style: str = setting(
        "aligned5",
        group="dataset filters and splits",
        choices=CROP_STYLES,
        help="how a folder tree's faces were cropped, recorded for the app: aligned5 = "
        "insightface 112x112 five-point alignment (trees unpacked from a .rec), box = "
        "MTCNN box crops such as Pins; a .rec is always aligned5",
    )
    seed: int = setting(42, group="dataset filters and splits", help="seed for splits, pairs and training")
    # optimisation
    lr: float | None = setting(
        None,
        group="optimisation",
        changes=Change.PHASE,
        valid=ABOVE_0,
        help="learning rate; continue_training.py --lr starts a new phase",
        default_text="Adam/AdamW 1e-4 x sqrt(global batch / 16), i.e. the seed's 1e-4 at "
        "batch 16, 5.7e-4 at 512; SGD 0.1 x global batch / 512",
    )
    optimizer: str = setting(
        "adamw", group="optimisation", changes=Change.PHASE, choices=OPTIMIZERS, help="optimizer; fused kernels on CUDA"
    )
    weight_decay: float | None = setting(
        None,
        group="optimisation",
        changes=Change.PHASE,
        valid=ZERO_OR_MORE,
        help="weight decay on weights (not BN/biases)",
        default_text="adamw 0.01, adam 0, sgd 5e-4",
    )
    momentum: float = setting(0.9, group="optimisation", changes=Change.PHASE, valid=FRACTION, help="SGD momentum")
    scheduler: str = setting(
        "cosine",
        group="optimisation",
        changes=Change.PHASE,
        choices=SCHEDULERS,
        help="cosine = linear warmup then cosine to 0, per step; step = StepLR per epoch (the "
        "seed's); plateau = ReduceLROnPlateau on the selection metric; constant",
    )
    warmup_epochs: float = setting(
        1.0,
        group="optimisation",
        changes=Change.PHASE,
        valid=ZERO_OR_MORE,
        help="linear warmup length for cosine/constant",
    )
    step_size: int = setting(
        7, group="optimisation", changes=Change.PHASE, valid=AT_LEAST_1, help="StepLR period in epochs"
    )
    gamma: float = setting(0.1, group="optimisation", changes=Change.PHASE, valid=ABOVE_0, help="StepLR factor")
    plateau_patience: int = setting(
        2, group="optimisation", changes=Change.PHASE, valid=ZERO_OR_MORE, help="ReduceLROnPlateau patience in epochs"
    )
    plateau_factor: float = setting(
        0.1,
        group="optimisation",
        changes=Change.PHASE,
        valid=(lambda v: 0 < v < 1, "in (0, 1)"),
        help="ReduceLROnPlateau factor",
    )
    precision: str = setting(
        "auto",
        group="optimisation",
        changes=Change.PHASE,
        choices=PRECISIONS,
        help="auto = bf16 autocast on compute capability >= 8 (A100/H100/L4), fp16 autocast + "
        "grad scaler below (T4/V100), fp32 on CPU",
    )
    channels_last: bool | None = setting(
        None,
        group="optimisation",
        changes=Change.PHASE,
        help="channels_last memory format",
        default_text="on with CUDA, off on CPU",
    )
    augment_flip: bool = setting(
        True, group="optimisation", changes=Change.PHASE, help="mirror each training image with probability 1/2"
    )
    # validation and model selection
    select_metric: str = setting(
        "tar@far=0.01",
        group="validation and model selection",
        changes=Change.PHASE,
        choices=SELECT_METRICS,
        help="verification metric that picks best_face_model.pth",
    )
    select_set: str = setting(
        "heldout",
        group="validation and model selection",
        changes=Change.PHASE,
        help="pair set it is read from: heldout, or a .bin's name such as lfw, which needs "
        "--tune-on-benchmark; without held-out identities or .bin files: closed-set "
        "accuracy",
    )
    target_far: float = setting(
        1e-3,
        group="validation and model selection",
        changes=Change.PHASE,
        valid=(lambda v: 0 < v < 1, "between 0 and 1"),
        help="false-accept rate whose threshold the summary shows; the checkpoint keeps the "
        "whole score->FAR table of the held-out identities",
    )
    val_images: int | None = setting(
        10000,
        group="validation and model selection",
        changes=Change.RESUME,
        valid=AT_LEAST_1,
        help="closed-set validation uses at most this many of the held-back images each "
        "epoch (a fixed random subset), so validation stays a small part of an "
        "epoch on CASIA-sized data; its cost is printed per epoch",
    )
    val_every: int = setting(
        1,
        group="validation and model selection",
        changes=Change.RESUME,
        valid=AT_LEAST_1,
        help="validate every N epochs, and always after the phase's last one (and a --time-limit run's last); "
        "the epochs in between record their training numbers only and write no checkpoint (Ctrl-C still "
        "saves one): for sets whose epochs take seconds, such as pins90 on a GPU",
    )
    bins: bool = setting(
        True,
        group="validation and model selection",
        changes=Change.RESUME,
        help="evaluate every *.bin verification file (lfw.bin, cfp_fp.bin, agedb_30.bin, ...) "
        "found in the data's directory or its parent each epoch",
    )
    # speed and hardware
    # decode, limit_steps and deterministic change results (nvJPEG and OpenCV decode to slightly different
    # pixels; the epoch length sets the schedule; GPU kernel choice), so only a new phase may change them.
    decode: str = setting(
        "auto",
        group="speed and hardware",
        changes=Change.PHASE,
        choices=DECODE_MODES,
        help="JPEG decoding: gpu = nvJPEG on the whole batch (workers only read bytes), cpu = "
        "OpenCV in the DataLoader workers; auto = gpu on CUDA",
    )
    workers: int | None = setting(
        None,
        group="speed and hardware",
        changes=Change.RESUME,
        valid=ZERO_OR_MORE,
        help="DataLoader worker processes per GPU/process",
        default_text="4 with GPU decode, CPUs-1 up to 16 with CPU decode",
    )
    compile: bool = setting(
        False,
        group="speed and hardware",
        changes=Change.RESUME,
        help="torch.compile the network (mode reduce-overhead = CUDA graphs on a single GPU, "
        "default mode under DDP); the first steps are slow while it compiles",
    )
    device: str = setting("auto", group="speed and hardware", changes=Change.RESUME, help="auto, cuda, cpu or cuda:N")
    eval_batch_size: int | None = setting(
        None,
        group="speed and hardware",
        changes=Change.RESUME,
        valid=AT_LEAST_1,
        help="batch size for validation",
        default_text="min(256, 2 x batch size)",
    )
    limit_steps: int | None = setting(
        None,
        group="speed and hardware",
        changes=Change.PHASE,
        valid=AT_LEAST_1,
        help="stop each epoch after this many steps: for smoke tests",
        default_text="whole epochs",
    )
    time_limit: float | None = setting(
        None,
        group="speed and hardware",
        changes=Change.RESUME,
        valid=ABOVE_0,
        help="stop after this many minutes of training in this process (validation not counted): the epoch "
        "under way ends at the next step, is validated, and the final checkpoint is written; for runs "
        "compared at equal minutes (bench/gpu_check.py)",
        default_text="none (the whole phase)",
    )
    deterministic: bool = setting(
        False,
        group="speed and hardware",
        changes=Change.PHASE,
        help="GPU: cuDNN benchmarking off and deterministic algorithms, so a resumed run "
        "repeats an uninterrupted one exactly (slower; CPU runs are exact either "
        "way). Off: cuDNN picks the fastest kernels and GPU runs differ slightly",
    )

    def __post_init__(self) -> None:
        for f in fields(self):
            _check_value(f, getattr(self, f.name))
            if _base_type(f)[0] is float and isinstance(getattr(self, f.name), int):
                object.__setattr__(self, f.name, float(getattr(self, f.name)))
        if self.weights and self.from_scratch:
            raise FaceIDError(
                "Initial weights and from_scratch contradict each other; give one of them.", "weights", "from_scratch"
            )
        if self.max_images < self.min_images:
            raise FaceIDError(
                f"max_images ({self.max_images}) is below min_images ({self.min_images}).", "max_images", "min_images"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain types only: what a checkpoint stores."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from setting names and values (a checkpoint's config, a JSON file); unknown names are an error."""
        unknown = sorted(set(values) - set(SETTINGS))
        if unknown:
            raise FaceIDError(
                f"Unknown training setting(s) {', '.join(unknown)}; valid names: {', '.join(SETTINGS)}.", *unknown
            )
        return cls(**values)


SETTINGS: dict[str, Field] = {f.name: f for f in fields(TrainConfig)}
_HINTS = typing.get_type_hints(TrainConfig)


def _base_type(f: Field) -> tuple[type, bool]:
    """(int / float / str / bool, whether None is allowed) from the field's annotation."""
    args = typing.get_args(_HINTS[f.name]) or (_HINTS[f.name],)
    base = [a for a in args if a is not type(None)]
    return base[0], len(base) < len(args)


def base_type(name: str) -> tuple[type, bool]:
    return _base_type(SETTINGS[name])


def _check_value(f: Field, value: Any) -> None:
    base, optional = _base_type(f)
    if value is None:
        if not optional:
            raise FaceIDError(f"The setting {f.name} needs a value (it has no run-time default).", f.name)
        return
    ok = isinstance(value, base) and not (base is not bool and isinstance(value, bool))
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    if not ok:
        raise FaceIDError(
            f"The setting {f.name} must be {base.__name__}{' or null' if optional else ''}, got {value!r}.", f.name
        )
    choices = f.metadata["choices"]
    if choices and value not in choices:
        raise FaceIDError(f"Unknown {f.name} {value!r}; choose one of {', '.join(choices)}.", f.name)
    valid = f.metadata["valid"]
    if valid and not valid[0](value):
        raise FaceIDError(f"{f.name} must be {valid[1]}, got {value}.", f.name)


def default_text(name: str) -> str:
    """The default as --help shows it."""
    f = SETTINGS[name]
    if f.metadata["default_text"]:
        return f.metadata["default_text"]
    value = f.default if f.default is not MISSING else None
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    return "none" if value is None else str(value)


def changeable(new_phase: bool) -> tuple[str, ...]:
    """The settings a continuation may change: an exact resume only RESUME ones, a new phase PHASE ones too."""
    allowed = {Change.RESUME, Change.PHASE} if new_phase else {Change.RESUME}
    return tuple(name for name, f in SETTINGS.items() if f.metadata["changes"] in allowed)


def refused_changes(changes: dict[str, Any], new_phase: bool) -> list[str]:
    """Names in `changes` that this kind of continuation may not change (empty = all allowed)."""
    return sorted(set(changes) - set(changeable(new_phase)))


def load_overrides(path: str | Path) -> dict[str, Any]:
    """A configs/*.json file: a JSON object of setting names and values ("_comment"-style keys ignored), each
    checked against its field (name, type, choices). Returns only the values it sets."""
    p = Path(path)
    try:
        values = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise FaceIDError(f"Cannot read the config file {p}: {err}.") from None
    if not isinstance(values, dict):
        raise FaceIDError(f"{p} must hold a JSON object of setting names and values.")
    values = {k: v for k, v in values.items() if not k.startswith("_")}
    try:
        TrainConfig.from_dict(values)
    except FaceIDError as err:
        raise FaceIDError(f"{p}: {err}", *err.settings) from None
    return values
