"""What a training run tells people, kept beside its checkpoints: a plain-text log and TensorBoard scalars.

- ``<out>/train.log``: every line the run prints to stdout (header, one line per epoch, the summary, an
  interruption), appended, so a resumed run and its next phases continue the same file;
- ``<out>/tensorboard/``: per-epoch scalars (loss, learning rate, images/s, closed-set accuracy, each pair
  set's AUC / EER / TAR@FAR) when the optional ``tensorboard`` package is installed
  (``pip install .[tensorboard]``); without it nothing is written and nothing fails.

Only rank 0 writes (other ranks get a `RunLog` that does nothing).
"""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

LOG_NAME, TENSORBOARD_DIR = "train.log", "tensorboard"


def tensorboard_available() -> bool:
    return importlib.util.find_spec("tensorboard") is not None


class RunLog:
    """Print a line and append it to train.log; record an epoch's scalars for TensorBoard."""

    def __init__(self, out: Path, enabled: bool = True):
        self.out, self.enabled = Path(out), enabled
        self._writer: Any = None

    def line(self, text: str) -> None:
        """Print (through tqdm, so progress bars stay intact) and append with a timestamp."""
        if not self.enabled:
            return
        tqdm.write(text, file=sys.stdout)
        sys.stdout.flush()
        self.out.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        with open(self.out / LOG_NAME, "a", encoding="utf-8") as f:
            f.writelines(f"{stamp}  {part}\n" for part in text.splitlines())

    def scalars(self, record: dict[str, Any]) -> None:
        """One epoch's history record -> TensorBoard scalars at step = epoch (no-op without tensorboard)."""
        if not self.enabled or not tensorboard_available():
            return
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.out / TENSORBOARD_DIR))
        epoch = int(record["epoch"])
        for key in ("train_loss", "lr", "images_per_s"):
            if key in record:
                self._writer.add_scalar(f"train/{key}", float(record[key]), epoch)
        for name, rep in record.items():
            if not isinstance(rep, dict):
                continue
            for metric in ("accuracy", "auc", "eer", "tar@far=0.001", "tar@far=0.01"):
                value = rep.get(metric)
                if isinstance(value, (int, float)):
                    self._writer.add_scalar(f"{name}/{metric}", float(value), epoch)
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
