"""Evaluation protocols on a frozen or trainable encoder: linear probe, weighted kNN, full
fine-tuning, each on a stratified label fraction chosen by a seed."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pyssl.data import ImageData, to_float


def label_subset(labels: Tensor, fraction: float, seed: int) -> Tensor:
    """Indices (sorted, int64) of a stratified ``fraction`` of ``labels``: per class, a seeded
    permutation's first ``max(1, round(fraction * n_class))`` rows, so every class keeps at
    least one label. ``fraction`` 1 returns every index."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"label_fraction: expected in (0, 1], got {fraction}")
    if fraction == 1.0:
        return torch.arange(len(labels))
    g = torch.Generator().manual_seed(seed)
    picked = []
    for c in torch.unique(labels):
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        picked.append(idx[: max(1, round(fraction * len(idx)))])
    return torch.sort(torch.cat(picked)).values


@torch.no_grad()
def features(
    encoder: nn.Module, images: Tensor, *, mean=0.5, std=0.5, batch_size: int = 512
) -> Tensor:
    """``encoder`` outputs ``float32 [N, D]`` for uint8 images ``[N, C, H, W]`` normalised as
    the training views were (``mean``, ``std``), in eval mode (restored afterwards)."""
    was = encoder.training
    encoder.eval()
    try:
        out = [
            encoder(to_float(images[i : i + batch_size], mean, std)).float()
            for i in range(0, len(images), batch_size)
        ]
    finally:
        encoder.train(was)
    return torch.cat(out)


def logistic_regression(
    x_train: Tensor,
    y_train: Tensor,
    x_test: Tensor,
    y_test: Tensor,
    *,
    l2: float = 1e-3,
    num_classes: int | None = None,
    max_iter: int = 200,
) -> float:
    """Test accuracy of multinomial logistic regression (features standardised with the
    training statistics, L2 penalty ``l2`` times the mean squared weight... per sample), fitted
    to convergence by full-batch L-BFGS in float64: deterministic, no learning rate to tune."""
    k = int(num_classes if num_classes is not None else int(max(y_train.max(), y_test.max())) + 1)
    x_train, x_test = x_train.double().flatten(1), x_test.double().flatten(1)
    mu, sd = x_train.mean(0), x_train.std(0, unbiased=False).clamp_min(1e-6)
    a, b = (x_train - mu) / sd, (x_test - mu) / sd
    w = torch.zeros(a.shape[1], k, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(k, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [w, bias],
        lr=1,
        max_iter=max_iter,
        tolerance_grad=1e-9,
        tolerance_change=1e-12,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(a @ w + bias, y_train) + 0.5 * l2 * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return float(((b @ w + bias).argmax(1) == y_test).double().mean())


def knn_accuracy(
    x_train: Tensor,
    y_train: Tensor,
    x_test: Tensor,
    y_test: Tensor,
    *,
    k: int = 20,
    temperature: float = 0.07,
    num_classes: int | None = None,
) -> float:
    """Weighted kNN (InstDisc/DINO protocol): cosine similarity to the training features, the
    ``k`` nearest vote with weight ``exp(sim / temperature)``; test accuracy."""
    c = int(num_classes if num_classes is not None else int(max(y_train.max(), y_test.max())) + 1)
    a = F.normalize(x_train.float().flatten(1), dim=1)
    b = F.normalize(x_test.float().flatten(1), dim=1)
    sim = b @ a.T
    top, idx = sim.topk(min(k, a.shape[0]), dim=1)
    votes = torch.zeros(b.shape[0], c).scatter_add_(1, y_train[idx], (top / temperature).exp())
    return float((votes.argmax(1) == y_test).float().mean())


class Classifier(nn.Module):
    """An encoder (``[B, ...] -> [B, out_dim]``) and a linear head."""

    def __init__(self, encoder: nn.Module, out_dim: int, num_classes: int):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(out_dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.encoder(x))


def train_classifier(
    encoder: nn.Module,
    out_dim: int,
    train: ImageData,
    test: ImageData,
    *,
    augment: Callable | None,
    mean=0.5,
    std=0.5,
    steps: int = 300,
    batch_size: int = 64,
    lr: float = 2e-3,
    weight_decay: float = 5e-4,
    seed: int = 0,
) -> float:
    """Full fine-tuning (or supervised training from scratch, given a fresh encoder): a copy of
    ``encoder`` plus a linear head trained with cross-entropy for ``steps`` AdamW steps
    (cosine schedule) on ``train``'s labeled images, each batch through ``augment`` (a
    ``pyssl.augment`` recipe returning one view; ``None``: no augmentation). Returns test
    accuracy. Batches and augmentation draw from generators seeded by ``seed``."""
    if train.labels is None or test.labels is None:
        raise ValueError("train_classifier: both splits need labels")
    torch.manual_seed(seed)
    k = len(train.classes)
    model = Classifier(copy.deepcopy(encoder), out_dim, k)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    g = torch.Generator().manual_seed(seed)
    n = len(train)
    bs = min(batch_size, n)
    model.train()
    order = torch.randperm(n, generator=g)
    pos = 0
    for step in range(steps):
        if pos + bs > n:
            order, pos = torch.randperm(n, generator=g), 0
        rows = order[pos : pos + bs]
        pos += bs
        if augment is None:
            x = to_float(train.images[rows], mean, std)
        else:
            x = augment(train.images[rows], generator=g)[0]
        for group in opt.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        loss = F.cross_entropy(model(x), train.labels[rows])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    logits = features(model, test.images, mean=mean, std=std)
    return float((logits.argmax(1) == test.labels).float().mean())
