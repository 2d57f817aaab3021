"""A run's checkpoint state: built from the trainer's parts, and restored into them.

The schema is `faceid.model.checkpoint` (`Checkpoint`, `TrainingState`); this module fills it and reads it
back. Restoring comes in the parts each start needs: a next phase takes the weights and the bookkeeping
(`restore_weights`, `bookkeeping_of`) and builds a fresh optimizer; an exact resume also takes the
optimizer, schedule, scaler (`restore_optimization`) and every rank's RNG (`restore_rng`), so that it
repeats an uninterrupted run bit for bit.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from ..core import report
from ..core.errors import FaceIDError
from ..core.report import command
from ..data.datasets import FaceDataset
from ..model.checkpoint import Checkpoint, TrainingState
from ..model.network import load_backbone_weights
from .bookkeeping import Bookkeeping, Phase, fresh_progress
from .config import TrainConfig
from .heads import TrainNet
from .recipe import Dist
from .report import describe_head
from .rng import capture_rng_state, restore_rng_state


def training_state_of(ckpt: Checkpoint) -> TrainingState:
    """The checkpoint's training state; a checkpoint without one (an inference checkpoint, another tool's)
    cannot continue training, which is one clear error."""
    if ckpt.training is None:
        raise FaceIDError(
            f"The checkpoint holds no training state (it was not written by {command('train_model.py')})."
        )
    return ckpt.training


def gather_rng_states(env: Dist) -> list[dict]:
    """Every rank's RNG states, in rank order: an exact resume restores each rank's own. Collective: every rank
    must call it."""
    rng = capture_rng_state()
    if env.world == 1:
        return [rng]
    gathered: list = [None] * env.world  # all_gather_object fills every slot
    dist.all_gather_object(gathered, rng)
    return gathered


def training_checkpoint(
    kind: str,
    *,
    cfg: TrainConfig,
    data: FaceDataset,
    net: TrainNet,
    head_config: dict,
    optimizer: torch.optim.Optimizer,
    scheduler,
    scaler: torch.amp.GradScaler,
    precision: str,
    phase: Phase,
    book: Bookkeeping,
    rng: list[dict],
) -> Checkpoint:
    """The full checkpoint (plain types and tensors on the CPU); `rng`: `gather_rng_states`, one per rank."""
    cal = book.calibration or {}
    training = TrainingState(
        head=_cpu(net.head.state_dict()),
        head_config=head_config,
        optimizer=optimizer.state_dict(),
        scheduler=scheduler.state_dict(),
        scaler=scaler.state_dict(),
        precision=precision,
        epoch=book.epoch,
        step=book.step,
        step_in_epoch=book.step_in_epoch,
        phase=phase.to_dict(),
        world_size=len(rng),
        rng=rng,
        config=cfg.to_dict(),
        metrics=book.metrics,
        history=book.history,
        best=book.best,
        label_map=list(data.identities),
        progress=dict(book.progress),
    )
    return Checkpoint(
        model=_cpu(net.backbone.state_dict()),
        network=cfg.network,
        preprocess=data.spec.to_dict(),
        threshold=cal.get("threshold"),
        threshold_info=cal or None,
        calibration=book.calibration_table,
        validation=book.validation_record,
        kind=kind,
        training=training,
    )


def restore_weights(net: TrainNet, ckpt: Checkpoint, data: FaceDataset, head_config: dict) -> None:
    """The backbone and head weights, once the data is known to have the checkpoint's identities (the head's
    classes are those identities, in that order)."""
    origin = training_state_of(ckpt)
    if list(origin.label_map) != list(data.identities):
        raise FaceIDError(
            "The data's identities differ from the checkpoint's label map; give the same data "
            "and filters the run was started with."
        )
    load_backbone_weights(net.backbone, ckpt.model, "the checkpoint")
    try:
        net.head.load_state_dict(origin.head)
    except (RuntimeError, KeyError, TypeError):
        raise FaceIDError(
            f"The checkpoint's head does not match its own config ({describe_head(head_config)}, "
            f"{data.num_identities} identities): the file was altered; continue from an "
            f"unaltered checkpoint, or start a new run from its weights."
        ) from None


def bookkeeping_of(ckpt: Checkpoint) -> Bookkeeping:
    """Counters, history, best, the latest validation and the epoch's progress so far, as the checkpoint has
    them (copies: the run goes on changing its own)."""
    origin = training_state_of(ckpt)
    return Bookkeeping(
        epoch=int(origin.epoch),
        step=int(origin.step),
        step_in_epoch=int(origin.step_in_epoch),
        history=list(origin.history),
        best=dict(origin.best),
        metrics=dict(origin.metrics),
        calibration=ckpt.threshold_info,
        calibration_table=ckpt.calibration,
        validation_record=ckpt.validation,
        progress=dict(origin.progress or fresh_progress()),
    )


def restore_optimization(
    origin: TrainingState, optimizer: torch.optim.Optimizer, scheduler, scaler: torch.amp.GradScaler
) -> None:
    """An exact resume: the optimizer, schedule and scaler as they were."""
    try:
        optimizer.load_state_dict(origin.optimizer)
        scheduler.load_state_dict(origin.scheduler)
    except (ValueError, KeyError, TypeError, RuntimeError):
        raise FaceIDError(
            "The checkpoint's optimizer or schedule state does not match its network and config: "
            "the file was altered; continue from an unaltered checkpoint, or start a new phase "
            "from it."
        ) from None
    if origin.scaler:
        scaler.load_state_dict(origin.scaler)


def restore_rng(origin: TrainingState, env: Dist) -> None:
    """An exact resume: this rank's RNG as it was. Written by another number of processes, the states do not
    map onto the ranks; the run goes on from its own seeds and says so."""
    rng = origin.rng
    if len(rng) == env.world:
        restore_rng_state(rng[env.rank])
    elif env.main:
        report.note(
            f"note: the checkpoint was written by {len(rng)} processes, this run has {env.world}; "
            f"the data order and RNG differ from an uninterrupted run."
        )


def _cpu(state_dict: dict) -> dict:
    return {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
