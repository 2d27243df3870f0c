"""Shared pieces of the method tests: tiny backbones, a synthetic view problem, training steps."""

from __future__ import annotations

import torch
from torch import nn

from pyssl import models
from pyssl.methods import SSLMethod


def tiny_resnet(in_channels: int = 3) -> models.ResNet:
    return models.ResNet((1,), width=8, in_channels=in_channels)


def tiny_vit(image_size: int = 8) -> models.ViT:
    return models.ViT(image_size=image_size, patch_size=2, in_channels=3, dim=16, depth=1, heads=2)


def synthetic_views(
    n: int = 16, count: int = 2, size: int = 8, seed: int = 0, noise: float = 0.3
) -> list[torch.Tensor]:
    """``count`` noisy views of ``n`` random images: the positives share the image."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, 3, size, size, generator=g)
    return [base + noise * torch.randn(n, 3, size, size, generator=g) for _ in range(count)]


def train(
    method: SSLMethod, views_fn, steps: int = 8, lr: float = 3e-3, total: int | None = None
) -> list[float]:
    """A few AdamW steps with ``on_step_end``; the loss of every step."""
    params = [p for p in method.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    losses = []
    for step in range(steps):
        loss = method.loss(views_fn(step))
        opt.zero_grad()
        loss.backward()
        opt.step()
        method.on_step_end(step, total or steps)
        losses.append(loss.item())
    return losses


def encoder_grads(method: SSLMethod) -> float:
    """Sum of absolute gradients on the encoder's parameters."""
    return sum(p.grad.abs().sum().item() for p in method.encoder.parameters() if p.grad is not None)


def zero_grads(module: nn.Module) -> None:
    for p in module.parameters():
        p.grad = None
