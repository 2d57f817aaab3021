"""The DCGAN (Radford et al. 2016): a generator of transposed convolutions and a discriminator of strided ones.

Both follow the paper's recipe: BatchNorm everywhere but the generator's output and the discriminator's input,
ReLU in the generator, LeakyReLU(0.2) in the discriminator, tanh output, weights drawn from N(0, 0.02). Sides of
64 (the paper's) and 112 (the recogniser's aligned crop) share one layout: four doublings from a start of
side/16 (4 or 7 pixels). The discriminator returns a logit (its sigmoid is folded into the loss,
``binary_cross_entropy_with_logits``, which autocast keeps in fp32; the same BCE as the paper's).

Images are network input as the recogniser sees it (`faceid.model.preprocessing`: ``(x - 127.5) / 128``, about
[-1, 1]), so the generator's tanh output is that range, and `to_uint8` maps it back to pixels.
"""

from __future__ import annotations

import torch
from torch import nn

from ..core.errors import FaceIDError

GAN_SIDES = (64, 112)  # 64: the DCGAN paper's; 112: the aligned crop the recogniser trains on


def start_side(side: int) -> int:
    """The generator's first feature map side (four doublings to `side`)."""
    if side not in GAN_SIDES:
        raise FaceIDError(f"The GAN image side must be one of {', '.join(map(str, GAN_SIDES))}, got {side}.", "side")
    return side // 16


class Generator(nn.Module):
    """z (N, nz) -> images (N, 3, side, side) in [-1, 1]."""

    def __init__(self, side: int = 64, nz: int = 100, width: int = 64):
        super().__init__()
        self.nz = nz
        s, w = start_side(side), width

        def up(cin: int, cout: int) -> list[nn.Module]:
            return [nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True)]

        self.main = nn.Sequential(
            nn.ConvTranspose2d(nz, w * 8, s, 1, 0, bias=False),
            nn.BatchNorm2d(w * 8),
            nn.ReLU(True),
            *up(w * 8, w * 4),
            *up(w * 4, w * 2),
            *up(w * 2, w),
            nn.ConvTranspose2d(w, 3, 4, 2, 1, bias=False),
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z.reshape(z.shape[0], self.nz, 1, 1))


class Discriminator(nn.Module):
    """images (N, 3, side, side) -> logits (N,): high for real."""

    def __init__(self, side: int = 64, width: int = 64):
        super().__init__()
        s, w = start_side(side), width

        def down(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2, True)]

        self.main = nn.Sequential(
            nn.Conv2d(3, w, 4, 2, 1, bias=False),
            nn.LeakyReLU(0.2, True),
            *down(w, w * 2),
            *down(w * 2, w * 4),
            *down(w * 4, w * 8),
            nn.Conv2d(w * 8, 1, s, 1, 0, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x).reshape(-1)


def init_dcgan_weights(module: nn.Module) -> None:
    """The paper's initialisation: convolutions N(0, 0.02), BatchNorm scale N(1, 0.02) and bias 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def fixed_noise(count: int, nz: int, seed: int) -> torch.Tensor:
    """The noise behind the per-epoch sample grid: the same images-to-be every epoch, and after a resume."""
    return torch.randn(count, nz, generator=torch.Generator().manual_seed(seed))


def seeded_noise(seeds: list[int], nz: int) -> torch.Tensor:
    """One noise vector per seed, each from its own generator: image k of seed s is the same in any batch."""
    return torch.stack([torch.randn(nz, generator=torch.Generator().manual_seed(int(s))) for s in seeds])
