"""Heads: the margin formulas, dtype under autocast, and the backbone wrapper the app's loader relies on."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from faceid.core.errors import FaceIDError
from faceid.model.network import build_backbone
from faceid.train.heads import Normalized, SoftmaxHead, TrainNet, build_head, head_config


def _cos(head, x):
    return F.linear(F.normalize(x), F.normalize(head.weight))


def test_arcface_adds_angular_margin_to_the_true_class_only():
    torch.manual_seed(0)
    head = build_head("arcface", 5, embedding_dim=8, scale=30.0, margin=0.3)
    x, y = torch.randn(4, 8), torch.tensor([0, 1, 2, 3])
    logits, cos = head(x, y), _cos(head, x)
    theta = torch.acos(cos[torch.arange(4), y])
    expected = torch.where(
        cos[torch.arange(4), y] > math.cos(math.pi - 0.3),
        torch.cos(theta + 0.3),
        cos[torch.arange(4), y] - math.sin(math.pi - 0.3) * 0.3,
    )
    assert torch.allclose(logits[torch.arange(4), y], 30 * expected, atol=1e-4)
    other = torch.ones_like(logits, dtype=torch.bool)
    other[torch.arange(4), y] = False
    assert torch.allclose(logits[other], 30 * cos[other], atol=1e-5)
    assert torch.allclose(head(x), 30 * cos, atol=1e-5)  # no labels: no margin (evaluation)


def test_cosface_subtracts_cosine_margin():
    torch.manual_seed(1)
    head = build_head("cosface", 3, embedding_dim=6, scale=10.0, margin=0.2)
    x, y = torch.randn(2, 6), torch.tensor([2, 0])
    cos = _cos(head, x)
    assert torch.allclose(head(x, y)[torch.arange(2), y], 10 * (cos[torch.arange(2), y] - 0.2), atol=1e-5)


def test_margin_heads_stay_float32_under_autocast_and_learn():
    for name in ("arcface", "cosface", "softmax"):
        head = build_head(name, 4, embedding_dim=16)
        x = torch.randn(8, 16, requires_grad=True)
        y = torch.randint(0, 4, (8,))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = head(x.bfloat16(), y)
        if name != "softmax":
            assert logits.dtype == torch.float32
        F.cross_entropy(logits.float(), y).backward()
        assert x.grad is not None and torch.isfinite(x.grad).all()


def test_defaults_and_errors():
    assert head_config("arcface", 10, None, None) == {
        "name": "arcface",
        "num_classes": 10,
        "scale": 64.0,
        "margin": 0.5,
    }
    assert head_config("cosface", 10, None, None)["margin"] == 0.35
    assert isinstance(build_head("softmax", 3), SoftmaxHead)
    with pytest.raises(FaceIDError, match="Unknown head"):
        build_head("triplet", 3)
    with pytest.raises(FaceIDError, match="at least 2"):
        build_head("arcface", 1)


def test_trainnet_keeps_the_apps_backbone_keys_and_outputs():
    torch.manual_seed(0)
    reference = build_backbone().eval()  # what the app builds (classify=False)
    net = TrainNet(build_backbone(), build_head("cosface", 3)).eval()
    assert set(net.backbone.state_dict()) == set(reference.state_dict())  # no logits.* keys
    net.backbone.load_state_dict(reference.state_dict())
    x = torch.randn(2, 3, 160, 160)
    with torch.no_grad():
        logits, features = net(x, torch.tensor([0, 2]))
        assert logits.shape == (2, 3) and features.shape == (2, 512)
        assert torch.allclose(Normalized(net.backbone)(x), reference(x), atol=1e-5)
