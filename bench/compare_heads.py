"""Which head should training default to? A CPU-sized measurement (no GPU was available).

The stand-in backbone (trained from scratch on pins90 with ArcFace) is frozen; its 1792-d pooled features are
computed once for up to --per-identity images of each pins90 identity and for LFW View-1 DevTest
(lfw_dev.bin, people never trained on), with and without mirroring. Then the embedding layer
(last_linear + last_bn, random init, dropout 0.6) is retrained on 80 identities with each head
(faceid.train.heads: softmax, ArcFace, CosFace) over several seeds, and scored on LFW the way the app scores
faces (flip-summed, L2-normalised cosine; 10-fold accuracy, AUC, EER, TAR@FAR=1e-2).

Weak by construction (only the top layer, 80 classes, features shaped by ArcFace training): it answers "which
head, all else equal, on this data", not "which head on CASIA". The first row reproduces the stand-in's own
embedding layer as a check that the features are right (its README: AUC 0.908).

    python bench/compare_heads.py [--data ../shared/data/recordio/pins90_112x112] [--seeds 3] [--epochs 40]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from faceid.core.decode import decode_image  # noqa: E402
from faceid.core.errors import FaceIDError, run_cli  # noqa: E402
from faceid.data.recordio import RecordIOReader, detect_layout  # noqa: E402
from faceid.eval.pairs import load_verification_bin  # noqa: E402
from faceid.eval.verification_metrics import verification_report  # noqa: E402
from faceid.model.checkpoint import read_state_dict  # noqa: E402
from faceid.model.network import build_backbone, load_backbone_weights  # noqa: E402
from faceid.model.preprocessing import ALIGNED_SPEC, to_network_input  # noqa: E402
from faceid.train.heads import build_head  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared"
BACKBONE_TRUNK = (
    "conv2d_1a",
    "conv2d_2a",
    "conv2d_2b",
    "maxpool_3a",
    "conv2d_3b",
    "conv2d_4a",
    "conv2d_4b",
    "repeat_1",
    "mixed_6a",
    "repeat_2",
    "mixed_7a",
    "repeat_3",
    "block8",
    "avgpool_1a",
)
HEADS = (
    ("softmax", None, None),
    ("arcface", None, None),
    ("cosface", None, None),
    ("arcface", 32.0, 0.4),
    ("cosface", 32.0, 0.35),
)


@torch.no_grad()
def pooled_features(model: nn.Module, jpegs: list[bytes], flip: bool = False, batch: int = 32) -> torch.Tensor:
    """JPEG bytes of aligned 112x112 faces -> (N, 1792) features before the embedding layer."""
    out = []
    for i in range(0, len(jpegs), batch):
        rgb = [decode_image(b, "a face in the .rec") for b in jpegs[i : i + batch]]
        x = to_network_input(torch.from_numpy(np.stack(rgb)), ALIGNED_SPEC)
        if flip:
            x = torch.flip(x, dims=[3])
        for name in BACKBONE_TRUNK:
            x = getattr(model, name)(x)
        out.append(x.flatten(1))
    return torch.cat(out)


def extract(data: Path, weights: Path, per_identity: int) -> dict:
    model = build_backbone()
    load_backbone_weights(model, read_state_dict(weights), str(weights))
    model.eval()
    reader = RecordIOReader(data / "train.rec")
    rng = np.random.default_rng(0)
    keys, labels = [], []
    for label, (first, end) in sorted(detect_layout(reader).identity_ranges.items()):
        chosen = rng.choice(np.arange(first, end), size=min(per_identity, end - first), replace=False)
        keys += sorted(chosen.tolist())
        labels += [label] * len(chosen)
    t0 = time.perf_counter()
    train = pooled_features(model, [reader.read(k).payload for k in keys])
    images, issame = load_verification_bin(data / "lfw_dev.bin")
    lfw, lfw_flip = pooled_features(model, images), pooled_features(model, images, flip=True)
    print(
        f"features: {len(keys)} training faces, {len(images)} LFW faces in {time.perf_counter() - t0:.0f} s", flush=True
    )
    return {
        "x": train,
        "y": torch.tensor(labels),
        "lfw": lfw,
        "lfw_flip": lfw_flip,
        "issame": issame,
        "state": read_state_dict(weights),
    }


def score_lfw(layer: nn.Module, feats: dict) -> dict:
    layer.eval()
    with torch.no_grad():
        e = F.normalize(F.normalize(layer(feats["lfw"])) + F.normalize(layer(feats["lfw_flip"])))
        report = verification_report((e[0::2] * e[1::2]).sum(1).numpy(), feats["issame"], 10, fars=(1e-2,))
    return {"acc": report["accuracy"], "auc": report["auc"], "eer": report["eer"], "tar@1e-2": report["tar@far=0.01"]}


def embedding_layer() -> nn.Sequential:
    return nn.Sequential(nn.Linear(1792, 512, bias=False), nn.BatchNorm1d(512, eps=1e-3))


def train_layer(
    feats: dict, head_name: str, scale, margin, seed: int, epochs: int, lr: float = 1e-3, batch: int = 128
) -> dict:
    held = torch.randperm(90, generator=torch.Generator().manual_seed(42))[:10]
    keep = ~torch.isin(feats["y"], held)
    x, y = feats["x"][keep], torch.unique(feats["y"][keep], return_inverse=True)[1]
    torch.manual_seed(seed)
    layer = embedding_layer()
    head = build_head(head_name, int(y.max()) + 1, scale=scale, margin=margin)
    dropout = nn.Dropout(0.6)
    opt = torch.optim.AdamW(list(layer.parameters()) + list(head.parameters()), lr=lr, weight_decay=0.01)
    for _ in range(epochs):
        layer.train()
        perm = torch.randperm(len(x))
        for i in range(0, len(x) - batch + 1, batch):
            b = perm[i : i + batch]
            loss = F.cross_entropy(head(layer(dropout(x[b])), y[b]), y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return score_lfw(layer, feats)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--data",
        type=Path,
        default=SHARED / "data" / "recordio" / "pins90_112x112",
        help="folder with train.rec and lfw_dev.bin (default: %(default)s)",
    )
    p.add_argument(
        "--weights",
        type=Path,
        default=SHARED / "models" / "pins90_scratch_irv1_fp16.pt",
        help="frozen backbone weights (default: %(default)s)",
    )
    p.add_argument("--per-identity", type=int, default=40, help="training faces per identity (default: 40)")
    p.add_argument("--seeds", type=int, default=3, help="runs per head (default: 3)")
    p.add_argument("--epochs", type=int, default=40, help="epochs per run (default: 40)")
    args = p.parse_args()
    if not (args.data / "train.rec").is_file() or not (args.data / "lfw_dev.bin").is_file():
        raise FaceIDError(f"{args.data} needs train.rec and lfw_dev.bin (the shared pins90 folder).")
    torch.set_num_threads(1)
    feats = extract(args.data, args.weights, args.per_identity)

    reference = embedding_layer()
    reference[0].weight.data = feats["state"]["last_linear.weight"]
    for k in ("weight", "bias", "running_mean", "running_var"):
        getattr(reference[1], k).data = feats["state"][f"last_bn.{k}"]
    rows = [("stand-in as shipped (ArcFace s32 m0.4)", {k: (v, 0.0) for k, v in score_lfw(reference, feats).items()})]
    for name, scale, margin in HEADS:
        runs = [train_layer(feats, name, scale, margin, seed, args.epochs) for seed in range(args.seeds)]
        label = name if scale is None else f"{name} s={scale:g} m={margin:g}"
        rows.append(
            (label, {k: (float(np.mean([r[k] for r in runs])), float(np.std([r[k] for r in runs]))) for k in runs[0]})
        )
        print(f"  {label} done", flush=True)
    print(f"\nLFW View-1 DevTest (lfw_dev.bin), embedding layer retrained per head, {args.seeds} seeds:")
    print(f"{'head':<40} {'accuracy':>15} {'AUC':>15} {'EER':>15} {'TAR@FAR1e-2':>15}")
    for label, r in rows:
        print(f"{label:<40} " + " ".join(f"{r[k][0]:>8.4f}±{r[k][1]:.3f}" for k in ("acc", "auc", "eer", "tar@1e-2")))
    best = max(rows[1:], key=lambda row: row[1]["auc"][0])
    print(f"best head by LFW AUC: {best[0]}")
    return 0


if __name__ == "__main__":
    run_cli(main)
