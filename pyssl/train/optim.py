"""Optimisers and the learning-rate schedule of the pretraining loop."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor, nn


def cosine_lr(step: int, total: int, base: float, warmup: int, final: float = 0.0) -> float:
    """Linear warm-up from ``base / warmup`` to ``base`` over ``warmup`` steps, then a cosine
    decay to ``final`` at ``total`` (SimCLR's and MAE's schedule). A pure function of ``step``,
    so a resumed run needs nothing but the step to continue the schedule."""
    if step < warmup:
        return base * (step + 1) / warmup
    span = max(1, total - warmup)
    t = min(1.0, (step - warmup) / span)
    return final + (base - final) * 0.5 * (1.0 + math.cos(math.pi * t))


class LARS(torch.optim.Optimizer):
    """LARS (You et al., 2017) as SimCLR and BYOL use it: SGD with momentum whose per-tensor
    step is scaled by ``trust * ||w|| / ||g + wd * w||``; biases and norm parameters (tensors
    with one dimension) get neither weight decay nor adaptation."""

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 1e-6,
        trust: float = 1e-3,
    ):
        if lr <= 0:
            raise ValueError(f"lr: expected > 0, got {lr}")
        super().__init__(
            params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay, "trust": trust}
        )

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[no-untyped-def, override]
        loss = None if closure is None else closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                d = p.grad
                if p.dim() > 1:
                    d = d.add(p, alpha=group["weight_decay"])
                    w, g = torch.linalg.vector_norm(p), torch.linalg.vector_norm(d)
                    ratio = torch.where(
                        (w > 0) & (g > 0), group["trust"] * w / g, torch.ones_like(w)
                    )
                    d = d.mul(ratio)
                buf = self.state[p].get("momentum")
                if buf is None:
                    buf = self.state[p]["momentum"] = d.clone()
                else:
                    buf.mul_(group["momentum"]).add_(d)
                p.add_(buf, alpha=-group["lr"])
        return loss


ADAMW_LR = 2e-3
LARS_LR_PER_256 = 0.3


def default_lr(optimizer: str, batch_size: int) -> float:
    """The peak learning rate used when none is given: AdamW ``2e-3`` (tuned on the digits
    demo, whatever the batch); LARS ``0.3 * batch_size / 256``, SimCLR's linear scaling rule
    (Chen et al., 2020, appendix B.1). LARS's per-tensor trust ratio makes its steps about
    ``lr * 1e-3 * ||w||``, so AdamW's rate would barely move the weights under LARS."""
    if batch_size < 1:
        raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
    if optimizer == "adamw":
        return ADAMW_LR
    if optimizer == "lars":
        return LARS_LR_PER_256 * batch_size / 256
    raise ValueError(f"optimizer: expected 'adamw' or 'lars', got {optimizer!r}")


def make_optimizer(
    model: nn.Module, name: str, lr: float, weight_decay: float
) -> torch.optim.Optimizer:
    """``"adamw"`` or ``"lars"`` over the trainable parameters of ``model``; biases and norm
    parameters get no weight decay."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() <= 1]
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    if name == "lars":
        return LARS(groups, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"optimizer: expected 'adamw' or 'lars', got {name!r}")
