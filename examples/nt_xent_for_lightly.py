"""Replacing a lightly-style NT-Xent loss with ``pyssl.ops.nt_xent`` in a SimCLR loop.

``LightlyStyleNTXent`` is the loss as lightly's ``NTXentLoss`` writes it (the 2N x 2N
similarity matrix, the diagonal removed, cross-entropy against the positive). The one-line
change is ``criterion = ops.nt_xent``: the same value and gradients, without the 2N x 2N
matrix (memory O(N * D)). The script checks the two agree, then trains a few steps.

    python examples/nt_xent_for_lightly.py   # about 15 s on 2 CPU cores
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pyssl import ops
from pyssl.augment import SimCLRAugment
from pyssl.data import load_digits


class LightlyStyleNTXent(nn.Module):
    """The loss as written in lightly (``lightly/loss/ntx_ent_loss.py``, single process)."""

    def __init__(self, temperature: float = 0.5):
        super().__init__()
        self.temperature = temperature

    def forward(self, out0: torch.Tensor, out1: torch.Tensor) -> torch.Tensor:
        n = out0.shape[0]
        out0, out1 = F.normalize(out0, dim=1), F.normalize(out1, dim=1)
        out = torch.cat([out0, out1])
        logits = out @ out.T / self.temperature
        logits = logits[~torch.eye(2 * n, dtype=torch.bool)].view(2 * n, 2 * n - 1)
        labels = torch.arange(n)
        labels = torch.cat([labels + n - 1, labels])
        return F.cross_entropy(logits, labels)


def encoder() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 32),
    )  # fmt: skip


def main(steps: int = 30, batch: int = 128) -> tuple[float, float]:
    torch.manual_seed(0)
    images = load_digits("train").images
    aug = SimCLRAugment(32, scale=(0.4, 1.0), hflip_p=0.0, blur_p=0.0)
    g = torch.Generator().manual_seed(0)

    # 1. same value and gradients on one batch
    x1, x2 = aug(images[:batch], generator=g)
    net = encoder()
    z1, z2 = net(x1), net(x2)
    ref = LightlyStyleNTXent(0.5)(z1, z2)
    (g_ref,) = torch.autograd.grad(ref, z1, retain_graph=True)
    new = ops.nt_xent(F.normalize(z1, dim=1), F.normalize(z2, dim=1), temperature=0.5)
    (g_new,) = torch.autograd.grad(new, z1)
    torch.testing.assert_close(new, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g_new, g_ref, rtol=1e-4, atol=1e-6)
    print(f"lightly-style loss {ref.item():.5f}, pyssl.ops.nt_xent {new.item():.5f}: equal")

    # 2. the training loop with the pyssl loss
    def criterion(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # was LightlyStyleNTXent(0.5)
        return ops.nt_xent(F.normalize(a, dim=1), F.normalize(b, dim=1), temperature=0.5)

    opt = torch.optim.AdamW(net.parameters(), lr=2e-3)
    first = last = 0.0
    for step in range(steps):
        rows = torch.randint(0, len(images), (batch,), generator=g)
        x1, x2 = aug(images[rows], generator=g)
        loss = criterion(net(x1), net(x2))
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = loss.item() if step == 0 else first
        last = loss.item()
        if step % 10 == 0 or step == steps - 1:
            print(f"step {step:3d}  nt_xent {loss.item():.4f}")
    return first, last


if __name__ == "__main__":
    main()
