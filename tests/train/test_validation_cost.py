"""Per-epoch validation at training speed: the training precision, a cap on the closed-set images, its cost.

CPU bf16 autocast stands in for the GPU's (same `autocast_context`); real JPEG faces, random weights.
"""

from __future__ import annotations

import numpy as np
import torch
from builders import make_folder_tree

from faceid.data.datasets import open_dataset
from faceid.model.network import build_backbone
from faceid.train.feed import BatchFeed
from faceid.train.heads import TrainNet, build_head
from faceid.train.recipe import autocast_context
from faceid.train.report import epoch_line
from faceid.train.validation import Validator, heldout_pairs


def test_validation_in_the_training_precision_with_a_capped_closed_set(tmp_path):
    ds = open_dataset(make_folder_tree(tmp_path / "t", {"a": 3, "b": 3}), min_images=3)
    torch.manual_seed(0)
    net = TrainNet(build_backbone(), build_head("softmax", ds.num_identities)).eval()
    feed = BatchFeed(ds.spec, torch.device("cpu"), "cpu", channels_last=False)
    pairs = [heldout_pairs(ds, 3, 42)]

    def validator(precision: str, val=(), cap=None) -> Validator:
        return Validator(
            ds,
            np.asarray(val, dtype=np.int64),
            pairs,
            feed,
            6,
            0,
            1e-2,
            amp=lambda: autocast_context(precision, feed.device),
            closed_set_images=cap,
            seed=42,
        )

    validator("fp32").run(net)
    scores32 = pairs[0].scores
    validator("bf16").run(net)
    scores16 = pairs[0].scores
    assert scores16.dtype == np.float64 and not np.array_equal(scores16, scores32)  # bf16 really ran
    assert np.abs(scores16 - scores32).max() < 0.05

    pairs.clear()
    capped = validator("bf16", val=range(6), cap=2)
    assert len(capped.val_indices) == 2 and capped.describe()[0].startswith("closed set: 2 images of the 6 held back")
    assert np.array_equal(capped.val_indices, validator("bf16", val=range(6), cap=2).val_indices)  # same every epoch
    assert capped.run(net)["closed_set"]["images"] == 2


def test_epoch_line_prints_the_validation_cost():
    record = {"epoch": 3, "train_loss": 1.5, "images_per_s": 100.0, "train_seconds": 90.0, "validation_seconds": 10.0}
    assert "validation 0m10s (10% of the epoch)" in epoch_line(record, ("heldout", "auc"), False)
