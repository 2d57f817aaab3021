"""Command-line flags of train_model.py and continue_training.py (one definition, two scripts).

Precedence: built-in defaults < ``--config FILE.json`` (keys = TrainConfig field names, e.g.
configs/seed.json) < flags on the command line.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .errors import FaceIDError
from .heads import HEADS
from .recipe import OPTIMIZERS, PRECISIONS, SCHEDULERS
from .training import DEFAULT_HEAD, SELECT_METRICS, TrainConfig, continue_training, train

D = TrainConfig()


def _data_args(p: argparse.ArgumentParser, defaults: bool) -> None:
    d = (lambda v: v) if defaults else (lambda v: None)
    g = p.add_argument_group("data")
    g.add_argument("--data", default=d(D.data),
                   help="training data: a folder tree <root>/<identity>/<image>.jpg (preprocess_dataset.py's output, "
                        "Pins, any folder-per-identity set), a .rec file, or a directory containing train.rec "
                        "(default: %(default)s)")
    g.add_argument("--out", default=d(D.out), help="output directory for checkpoints, label map, history and curves "
                                                    "(default: %(default)s)")


def _runtime_args(p: argparse.ArgumentParser, defaults: bool) -> None:
    d = (lambda v: v) if defaults else (lambda v: None)
    g = p.add_argument_group("speed and hardware")
    g.add_argument("--decode", choices=("auto", "gpu", "cpu"), default=d(D.decode),
                   help="JPEG decoding: gpu = nvJPEG on the whole batch (workers only read bytes), cpu = OpenCV in "
                        "the DataLoader workers; auto = gpu on CUDA (default: %(default)s)")
    g.add_argument("--workers", type=int, default=d(D.workers),
                   help="DataLoader worker processes per GPU/process (default: 4 with GPU decode, CPUs-1 up to 16 "
                        "with CPU decode)")
    g.add_argument("--compile", action=argparse.BooleanOptionalAction, default=d(D.compile),
                   help="torch.compile the network (mode reduce-overhead = CUDA graphs on a single GPU, default mode "
                        "under DDP); the first steps are slow while it compiles (default: off)")
    g.add_argument("--device", default=d(D.device), help="auto, cuda, cpu or cuda:N (default: %(default)s)")
    g.add_argument("--eval-batch-size", type=int, default=d(D.eval_batch_size),
                   help="batch size for validation (default: min(256, 2 x batch size))")
    g.add_argument("--limit-steps", type=int, default=d(D.limit_steps),
                   help="stop each epoch after this many steps: for smoke tests (default: whole epochs)")
    g.add_argument("--val-images", type=int, default=d(D.val_images),
                   help="closed-set validation uses at most this many of the held-back images each epoch (a fixed "
                        "random subset), so validation stays a small part of an epoch on CASIA-sized data; its cost "
                        "is printed per epoch (default: %(default)s)")
    g.add_argument("--bins", action=argparse.BooleanOptionalAction, default=d(D.bins),
                   help="evaluate every *.bin verification file (lfw.bin, cfp_fp.bin, agedb_30.bin, ...) found in "
                        "the data's directory or its parent each epoch (default: on)")


def _recipe_args(p: argparse.ArgumentParser, defaults: bool) -> None:
    d = (lambda v: v) if defaults else (lambda v: None)
    g = p.add_argument_group("optimisation")
    g.add_argument("--lr", type=float, default=d(D.lr),
                   help="learning rate (default: Adam/AdamW 1e-4 x sqrt(global batch / 16), i.e. the seed's 1e-4 at "
                        "batch 16, 5.7e-4 at 512; SGD 0.1 x global batch / 512)")
    g.add_argument("--optimizer", choices=OPTIMIZERS, default=d(D.optimizer),
                   help="optimizer; fused kernels on CUDA (default: %(default)s)")
    g.add_argument("--weight-decay", type=float, default=d(D.weight_decay),
                   help="weight decay on weights (not BN/biases) (default: adamw 0.01, adam 0, sgd 5e-4)")
    g.add_argument("--momentum", type=float, default=d(D.momentum), help="SGD momentum (default: %(default)s)")
    g.add_argument("--scheduler", choices=SCHEDULERS, default=d(D.scheduler),
                   help="cosine = linear warmup then cosine to 0, per step; step = StepLR per epoch (the seed's); "
                        "plateau = ReduceLROnPlateau on the selection metric; constant (default: %(default)s)")
    g.add_argument("--warmup-epochs", type=float, default=d(D.warmup_epochs),
                   help="linear warmup length for cosine/constant (default: %(default)s)")
    g.add_argument("--step-size", type=int, default=d(D.step_size), help="StepLR period in epochs (default: %(default)s)")
    g.add_argument("--gamma", type=float, default=d(D.gamma), help="StepLR factor (default: %(default)s)")
    g.add_argument("--plateau-patience", type=int, default=d(D.plateau_patience),
                   help="ReduceLROnPlateau patience in epochs (default: %(default)s)")
    g.add_argument("--plateau-factor", type=float, default=d(D.plateau_factor),
                   help="ReduceLROnPlateau factor (default: %(default)s)")
    g.add_argument("--precision", choices=PRECISIONS, default=d(D.precision),
                   help="auto = bf16 autocast on compute capability >= 8 (A100/H100/L4), fp16 autocast + grad scaler "
                        "below (T4/V100), fp32 on CPU (default: %(default)s)")
    g.add_argument("--deterministic", action=argparse.BooleanOptionalAction, default=d(D.deterministic),
                   help="GPU: cuDNN benchmarking off and deterministic algorithms, so a resumed run repeats an "
                        "uninterrupted one exactly (slower; CPU runs are exact either way). Off: cuDNN picks the "
                        "fastest kernels and GPU runs differ slightly (default: off)")
    g.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=d(D.channels_last),
                   help="channels_last memory format (default: on with CUDA, off on CPU)")
    g.add_argument("--augment-flip", action=argparse.BooleanOptionalAction, default=d(D.augment_flip),
                   help="mirror each training image with probability 1/2 (default: on)")
    g = p.add_argument_group("validation and model selection")
    g.add_argument("--select-metric", choices=SELECT_METRICS, default=d(D.select_metric),
                   help="verification metric that picks best_face_model.pth (default: %(default)s)")
    g.add_argument("--select-set", default=d(D.select_set),
                   help="pair set it is read from: heldout (default: %(default)s), or a .bin's name such as lfw, "
                        "which needs --tune-on-benchmark; without held-out identities or .bin files: closed-set "
                        "accuracy")
    g.add_argument("--target-far", type=float, default=d(D.target_far),
                   help="false-accept rate whose threshold the summary shows; the checkpoint keeps the whole "
                        "score->FAR table of the held-out identities (default: %(default)g)")


def _new_run_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--weights", default=D.weights,
                   help="initial backbone weights file (default: $FACEID_WEIGHTS, else the cached or downloaded "
                        "VGGFace2 file)")
    g.add_argument("--from-scratch", action="store_true", default=D.from_scratch,
                   help="random initial weights instead of VGGFace2 (default: off)")
    g.add_argument("--head", choices=HEADS, default=DEFAULT_HEAD,
                   help=f"classification head / loss (default: {DEFAULT_HEAD}; see the README for the measurement)")
    g.add_argument("--scale", type=float, default=D.scale, help="margin heads' scale s (default: 64)")
    g.add_argument("--margin", type=float, default=D.margin, help="margin m (default: arcface 0.5, cosface 0.35)")
    g.add_argument("--epochs", type=int, default=D.epochs, help="epochs (default: %(default)s)")
    g.add_argument("--batch-size", type=int, default=D.batch_size,
                   help="images per step per process; the global batch is this x the number of processes "
                        "(default: 512 on CUDA, 16 on CPU)")
    g = p.add_argument_group("dataset filters and splits")
    g.add_argument("--min-images", type=int, default=D.min_images,
                   help="drop identities with fewer images (default: %(default)s)")
    g.add_argument("--max-images", type=int, default=D.max_images,
                   help="use at most this many images per identity, a deterministic choice (default: %(default)s)")
    g.add_argument("--val-fraction", type=float, default=D.val_fraction,
                   help="share of the training identities' images held back for the seed's closed-set accuracy "
                        "(default: %(default)s)")
    g.add_argument("--holdout-fraction", type=float, default=D.holdout_fraction,
                   help="share of identities (at least 2) never trained on, for open-set verification and the "
                        "threshold; 0 disables (default: %(default)s)")
    g.add_argument("--tune-on-benchmark", action="store_true", default=D.tune_on_benchmark,
                   help="allow selecting the model on a .bin benchmark and, without held-out identities, "
                        "calibrating on it: tuning on test data, stamped in the checkpoint and shown by the app "
                        "(default: off, which makes that an error)")
    g.add_argument("--pairs", type=int, default=D.pairs,
                   help="genuine and impostor pairs each among the held-out identities (default: %(default)s)")
    g.add_argument("--crop-style", choices=("aligned5", "box"), default=D.crop_style,
                   help="how a folder tree's faces were cropped, recorded for the app: aligned5 = insightface "
                        "112x112 five-point alignment (trees unpacked from a .rec), box = MTCNN box crops such as "
                        "Pins; a .rec is always aligned5 (default: %(default)s)")
    g.add_argument("--seed", type=int, default=D.seed, help="seed for splits, pairs and training (default: %(default)s)")


def _load_config_file(path: str) -> dict:
    p = Path(path)
    try:
        values = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise FaceIDError(f"Cannot read the config file {p}: {err}.") from None
    if not isinstance(values, dict):
        raise FaceIDError(f"{p} must hold a JSON object of setting names and values.")
    values = {k: v for k, v in values.items() if not k.startswith("_")}  # "_comment" keys
    TrainConfig.from_dict(values)  # rejects unknown names
    return values


def train_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Fine-tune InceptionResnetV1 (VGGFace2 weights) for face verification. Writes "
                    "best_face_model.pth (chosen by a verification metric, with a calibrated cosine threshold), "
                    "final_face_model.pth, last_face_model.pth, label_map.json, history.json and curves_*.png. "
                    "Multi-GPU: torchrun --nproc_per_node N train_model.py ...",
    )
    p.add_argument("--config", help="JSON file of settings (TrainConfig names), e.g. configs/seed.json; flags "
                                    "given on the command line win (default: none)")
    _data_args(p, True)
    _new_run_args(p)
    _recipe_args(p, True)
    _runtime_args(p, True)
    return p


def train_main(argv: list[str] | None = None) -> int:
    parser = train_parser()
    known, _ = parser.parse_known_args(argv)
    if known.config:
        parser.set_defaults(**_load_config_file(known.config))
    args = vars(parser.parse_args(argv))
    args.pop("config")
    return train(TrainConfig.from_dict(args))


def continue_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Resume training exactly from a checkpoint (same epoch/step, optimizer, schedule, RNG), or with "
                    "--lr start a new phase (new optimizer and schedule; the seed's second phase was --lr 3e-5 "
                    "--scheduler plateau). History, best checkpoint and counters continue.")
    p.add_argument("--checkpoint", default=str(Path(D.out) / "last_face_model.pth"),
                   help="checkpoint to continue from: last_face_model.pth (written every epoch and on Ctrl-C), "
                        "best_ or final_face_model.pth (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=None,
                   help="new phase only: how many more epochs (default: 10)")
    _data_args(p, False)
    _recipe_args(p, False)
    _runtime_args(p, False)
    p.set_defaults(out=None)
    for action in p._actions:  # in this script an absent flag means "as in the checkpoint"
        if action.help and action.dest not in ("help", "checkpoint", "epochs"):
            real = getattr(D, action.dest, None)
            action.help = (action.help.replace("%(default)s", str(real)).replace("%(default)g", f"{real:g}"
                                                                                 if isinstance(real, float) else str(real))
                           .replace("(default: ", "(as in the checkpoint; new runs: "))
    p.epilog = ("Flags other than --data/--out and the speed/hardware group, and --decode and --limit-steps, change "
                "the results and so need --lr (a new phase); --out defaults to the checkpoint's directory.")
    return p


def continue_main(argv: list[str] | None = None) -> int:
    args = vars(continue_parser().parse_args(argv))
    checkpoint, epochs, lr = args.pop("checkpoint"), args.pop("epochs"), args.pop("lr")
    if epochs is not None and lr is None:
        raise FaceIDError("--epochs sets the length of a new phase; pass --lr too (an exact resume keeps its schedule).")
    return continue_training(checkpoint, overrides=args, new_lr=lr, epochs=epochs)


