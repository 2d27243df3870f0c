"""TS2Vec's hierarchical contrastive loss, plain eager PyTorch: the ground truth of
:func:`pyssl.methods.ts2vec.hierarchical_loss`.

Transcribed from github.com/zhihanyue/ts2vec ``models/losses.py`` (Yue et al. 2022): raw dot
products (no normalisation, no temperature), each view's similarity with itself removed by the
``tril``/``triu`` shift, ``-log_softmax`` at the positive.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def instance_contrastive_loss(z1: Tensor, z2: Tensor) -> Tensor:
    """``z1``, ``z2`` ``[B, T, D]``: at each timestamp a 2B-way softmax over the batch's views
    (self excluded), positive the other view of the same series; mean over T and the 2B rows."""
    b = z1.size(0)
    if b == 1:
        return z1.new_tensor(0.0)
    z = torch.cat([z1, z2], dim=0).transpose(0, 1)  # T x 2B x D
    sim = torch.matmul(z, z.transpose(1, 2))  # T x 2B x 2B
    logits = torch.tril(sim, diagonal=-1)[:, :, :-1]
    logits = logits + torch.triu(sim, diagonal=1)[:, :, 1:]
    logits = -F.log_softmax(logits, dim=-1)
    i = torch.arange(b, device=z1.device)
    return (logits[:, i, b + i - 1].mean() + logits[:, b + i, i].mean()) / 2


def temporal_contrastive_loss(z1: Tensor, z2: Tensor) -> Tensor:
    """``z1``, ``z2`` ``[B, T, D]``: per series a 2T-way softmax over the two views'
    timestamps (self excluded), positive the same timestamp of the other view; mean over B and
    the 2T rows."""
    t_len = z1.size(1)
    if t_len == 1:
        return z1.new_tensor(0.0)
    z = torch.cat([z1, z2], dim=1)  # B x 2T x D
    sim = torch.matmul(z, z.transpose(1, 2))  # B x 2T x 2T
    logits = torch.tril(sim, diagonal=-1)[:, :, :-1]
    logits = logits + torch.triu(sim, diagonal=1)[:, :, 1:]
    logits = -F.log_softmax(logits, dim=-1)
    t = torch.arange(t_len, device=z1.device)
    return (logits[:, t, t_len + t - 1].mean() + logits[:, t_len + t, t].mean()) / 2


def hierarchical_contrastive_loss(
    z1: Tensor, z2: Tensor, alpha: float = 0.5, temporal_unit: int = 0
) -> Tensor:
    """Sum over the max-pool scales (kernel 2 over time until one step is left) of
    ``alpha * instance + (1 - alpha) * temporal`` (temporal from scale ``temporal_unit`` on, none
    at length 1), divided by the number of scales."""
    loss = torch.tensor(0.0, device=z1.device, dtype=z1.dtype)
    d = 0
    while z1.size(1) > 1:
        if alpha != 0:
            loss = loss + alpha * instance_contrastive_loss(z1, z2)
        if d >= temporal_unit and 1 - alpha != 0:
            loss = loss + (1 - alpha) * temporal_contrastive_loss(z1, z2)
        d += 1
        z1 = F.max_pool1d(z1.transpose(1, 2), kernel_size=2).transpose(1, 2)
        z2 = F.max_pool1d(z2.transpose(1, 2), kernel_size=2).transpose(1, 2)
    if z1.size(1) == 1:
        if alpha != 0:
            loss = loss + alpha * instance_contrastive_loss(z1, z2)
        d += 1
    return loss / d
