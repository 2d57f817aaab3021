"""The recipe's moving parts: process group, precision, optimizer, LR schedule, workers, Ctrl-C handling.

Choices made here (each overridable by a flag):
- precision: bf16 autocast on compute capability >= 8 (A100, H100, L4: bf16 has fp32's range, no scaler);
  fp16 autocast + GradScaler below (T4, V100: no fast bf16); fp32 on the CPU.
- learning rate scaled with the global batch: Adam(W) by sqrt(batch / 16) from the seed's 1e-4 at 16
  (adaptive optimizers tolerate far less than linear scaling); SGD linearly, 0.1 per 512 (Goyal et al.).
- fused optimizer kernels on CUDA; weight decay only on weight matrices and kernels, not BN or biases.
"""

from __future__ import annotations

import math
import os
import signal
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from ..core import report
from ..core.device import resolve_device
from ..core.errors import FaceIDError

OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULERS = ("cosine", "step", "plateau", "constant")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")


@dataclass
class Dist:
    rank: int
    world: int
    local_rank: int
    device: torch.device
    control: dist.ProcessGroup | None = (
        None  # process group for small CPU messages (the stop flag); None = the default group
    )

    @property
    def main(self) -> bool:
        return self.rank == 0


def set_determinism(device: torch.device, deterministic: bool) -> None:
    """Off (default): cuDNN benchmarks kernels per shape (fastest; GPU results vary run to run). On: no
    benchmarking and deterministic algorithms, so a resumed GPU run can repeat an uninterrupted one exactly
    (slower; an op with no deterministic version warns). CPU runs are deterministic either way."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not deterministic
        torch.backends.cudnn.deterministic = deterministic
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS's condition for repeatable GEMMs
        torch.use_deterministic_algorithms(True, warn_only=True)


def setup_distributed(device_name: str, deterministic: bool = False) -> Dist:
    """Read torchrun's environment; init the process group (NCCL on CUDA, gloo on CPU) when WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    set_determinism(device, deterministic)
    control: dist.ProcessGroup | None = None
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timedelta(minutes=60))
        # The stop flag is agreed on every step; over NCCL that would wait for the GPU each step, so CUDA
        # runs agree on it through a gloo group of CPU tensors instead. (Every rank is in the group, so
        # new_group returns a ProcessGroup, never the NON_GROUP_MEMBER marker its stub also allows.)
        control = dist.new_group(backend="gloo") if device.type == "cuda" else None  # type: ignore[assignment]
    return Dist(rank, world, local_rank, device, control)


def broadcast_from_main(env: Dist, obj):
    """Rank 0's `obj` on every rank (what rank 0 alone computes, such as the validation, that all ranks record
    alike); `obj` itself in a single process."""
    if env.world == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def resolve_precision(choice: str, device: torch.device) -> str:
    """auto: bf16 on compute capability >= 8 (A100, H100, L4...), fp16 + GradScaler below (T4, V100), fp32 on CPU."""
    if choice not in PRECISIONS:
        raise FaceIDError(f"Unknown precision {choice!r}; choose one of {', '.join(PRECISIONS)}.", "precision")
    if choice == "auto":
        if device.type != "cuda":
            return "fp32"
        major, _ = torch.cuda.get_device_capability(device)
        return "bf16" if major >= 8 and torch.cuda.is_bf16_supported() else "fp16"
    if choice == "fp16" and device.type != "cuda":
        raise FaceIDError("fp16 precision needs a CUDA GPU; use bf16 or fp32 on the CPU.", "precision")
    return choice


def autocast_context(precision: str, device: torch.device):
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def default_batch_size(device: torch.device) -> int:
    return 512 if device.type == "cuda" else 16


def scaled_lr(optimizer: str, global_batch: int) -> float:
    """Adam(W): the seed's 1e-4 at batch 16, scaled by sqrt(batch / 16); SGD: 0.1 per 512, linear."""
    if optimizer == "sgd":
        return 0.1 * global_batch / 512
    return 1e-4 * math.sqrt(global_batch / 16)


def default_weight_decay(optimizer: str) -> float:
    return {"adamw": 0.01, "adam": 0.0, "sgd": 5e-4}[optimizer]


def build_optimizer(cfg, net: torch.nn.Module, lr: float, device: torch.device) -> torch.optim.Optimizer:
    """Weight decay on weight matrices/kernels only (not BN or biases); fused kernels on CUDA."""
    wd = default_weight_decay(cfg.optimizer) if cfg.weight_decay is None else cfg.weight_decay
    params = [p for p in net.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim > 1], "weight_decay": wd},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
    ]
    fused = True if device.type == "cuda" else None  # None: torch's own default elsewhere
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, fused=fused)
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return cls(groups, lr=lr, fused=fused)


def build_scheduler(cfg, optimizer, steps_per_epoch: int, phase_epochs: int, lower_is_better: bool = False):
    """(scheduler, per_step). cosine: linear warmup then cosine to 0 over the phase, stepped per batch;
    step: StepLR per epoch; plateau: ReduceLROnPlateau on the selection metric per epoch (`lower_is_better`
    says which way it improves); constant."""
    if cfg.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, cfg.step_size, cfg.gamma), False
    if cfg.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer,
            mode="min" if lower_is_better else "max",
            factor=cfg.plateau_factor,
            patience=cfg.plateau_patience,
        ), False
    total = max(1, phase_epochs * steps_per_epoch)
    warmup = min(int(cfg.warmup_epochs * steps_per_epoch), total - 1)
    cosine = cfg.scheduler == "cosine"

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if not cosine:
            return 1.0
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor), True


def default_workers(decode: str, world: int) -> int:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    per_rank = max(1, cpus // world)
    return min(4, per_rank) if decode == "gpu" else max(1, min(16, per_rank - 1))


class StopFlag:
    """SIGINT/SIGTERM -> `requested` (checked at step boundaries); a second Ctrl-C aborts at once.

    `exit_code` is the shell's convention for the first signal: 130 for SIGINT, 143 for SIGTERM (what
    SLURM's scancel, preemption, `kill` and torchrun send). `announce`: print what happens (rank 0 only)."""

    def __init__(self, enabled: bool = True, announce: bool = True):
        self.requested = False
        self.signum = signal.SIGINT
        self.announce = announce
        self._previous = {}
        if enabled:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)

    @property
    def exit_code(self) -> int:
        return 128 + int(self.signum)

    def _handle(self, signum, _frame) -> None:
        if self.requested:
            if signum == signal.SIGINT and self.signum == signal.SIGINT:
                raise KeyboardInterrupt
            return  # the same stop again (a launcher forwarding what the job already got)
        self.requested, self.signum = True, signal.Signals(signum)
        if self.announce:
            report.warn(
                f"\n{self.signum.name}: saving a resumable checkpoint at the next step "
                f"(Ctrl-C again to abort without saving)"
            )

    def poll(self, step: int) -> bool:
        """Called after every optimizer step with the global step count; True = stop here."""
        return self.requested

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def stop_agreed(env: Dist, stop: StopFlag, step: int) -> bool:
    """Whether to stop after this step (`step`: the global step count). All ranks stop at the same step
    boundary, the first after any rank got the signal: the flag is OR-reduced every step, as a CPU tensor
    over gloo (no wait for the GPU; ~0.1 ms on one machine). The signal's exit code travels with it (the
    largest wins: SIGTERM over SIGINT)."""
    if env.world == 1:
        return stop.poll(step)
    flag = torch.tensor([stop.exit_code if stop.poll(step) else 0], dtype=torch.int32)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=env.control)
    if int(flag) and not stop.requested:
        stop.requested, stop.signum = True, signal.Signals(int(flag) - 128)
    return bool(int(flag))


COMPILE_BACKEND_ENV = "FACEID_COMPILE_BACKEND"


def wrap_model(net: torch.nn.Module, env: Dist, compile_: bool) -> torch.nn.Module:
    """The module the training step calls: DDP when distributed, torch.compile'd when asked.

    reduce-overhead = CUDA graphs: the fastest single-GPU mode; under DDP the gradient all-reduce cannot be
    captured in a graph, so multi-process runs use the default mode. $FACEID_COMPILE_BACKEND (default inductor):
    the GPU check's CPU dry run takes "eager", which traces the same graphs in seconds where inductor's CPU code
    generation takes minutes (bench/gpu_check.py)."""
    model: torch.nn.Module = net
    if env.world > 1:
        ids = [env.device.index] if env.device.type == "cuda" else None
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    if compile_:
        single_gpu = env.device.type == "cuda" and env.world == 1
        backend = os.environ.get(COMPILE_BACKEND_ENV, "").strip() or "inductor"
        mode = ("reduce-overhead" if single_gpu else "default") if backend == "inductor" else None
        # torch.compile returns an OptimizedModule for a Module; its stub says Callable
        model = torch.compile(model, mode=mode, backend=backend)  # type: ignore[assignment]
    return model


def any_rank(env: Dist, flag: bool) -> bool:
    """Whether `flag` holds on any rank (all ranks call it at the same step; a CPU tensor over the control group,
    like `stop_agreed`); `flag` itself in a single process."""
    if env.world == 1:
        return flag
    box = torch.tensor([int(flag)], dtype=torch.int32)
    dist.all_reduce(box, op=dist.ReduceOp.MAX, group=env.control)
    return bool(int(box))
