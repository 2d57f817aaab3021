"""Every random number generator a training process draws from, captured and restored.

An exact resume repeats an uninterrupted run bit for bit only when the data order, the augmentation flips
and the dropout masks continue from the same states; each rank's states travel in the checkpoint
(`TrainingState.rng`, one entry per rank) as tensors and plain types, so ``torch.load(weights_only=True)``
opens the file. Only training needs them: the app and the evaluator never draw random numbers that matter.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def capture_rng_state() -> dict[str, Any]:
    """This process's torch / CUDA / numpy / python RNG states as tensors and plain types (weights_only-safe)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else [],
        "numpy": {
            "name": str(name),
            "keys": [int(k) for k in keys],
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {"version": int(version), "internal": [int(v) for v in internal], "gauss": gauss},
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of capture_rng_state (CUDA states only restored when the device count matches)."""
    torch.set_rng_state(state["torch"].cpu())
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])
    npst = state["numpy"]
    np.random.set_state(
        (
            npst["name"],
            np.asarray(npst["keys"], dtype=np.uint32),
            npst["pos"],
            npst["has_gauss"],
            npst["cached_gaussian"],
        )
    )
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss"]))
