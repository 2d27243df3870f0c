"""A small SSL method with the SSLMethod interface (SimCLR on a tiny CNN, dropout in the head
so that a step draws from the global torch RNG), so the loop's mechanics are tested on their
own and fast: seeds, checkpoints, resume, DDP."""

from __future__ import annotations

import time

import torch.nn.functional as F
from torch import Tensor, nn

from pyssl import ops
from pyssl.augment import SimCLRAugment


class TinyEncoder(nn.Module):
    def __init__(self, channels: int = 3, width: int = 8, batch_norm: bool = True):
        super().__init__()
        self.out_dim = 2 * width
        norm = nn.BatchNorm2d(width) if batch_norm else nn.Identity()
        self.net = nn.Sequential(
            nn.Conv2d(channels, width, 3, stride=2, padding=1),
            norm,
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class TinySimCLR(nn.Module):
    name = "tinysimclr"
    modality = "image"

    def __init__(
        self,
        width: int = 8,
        batch_norm: bool = True,
        gather: bool = False,
        delay: float = 0.0,
        dropout: float = 0.2,
    ):
        super().__init__()
        self.encoder = TinyEncoder(3, width, batch_norm)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.encoder.out_dim, 16))
        self.gather = gather
        self.delay = delay  # seconds per step: lets a test kill a run mid-way
        self.steps_seen = 0

    def loss(self, views: list[Tensor]) -> Tensor:
        z = [F.normalize(self.head(self.encoder(v)), dim=1) for v in views]
        return ops.nt_xent(z[0], z[1], temperature=0.5, gather=self.gather)

    def on_step_end(self, step: int, total_steps: int) -> None:
        self.steps_seen = step + 1
        if self.delay:
            time.sleep(self.delay)

    def default_augment(self, image_size: int, channels: int) -> SimCLRAugment:
        return SimCLRAugment(image_size, scale=(0.3, 1.0), blur_p=0.0)
