"""The label-efficiency study: how test accuracy grows with the labels used, for a
self-supervised encoder and three baselines."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from pyssl.data import ImageData
from pyssl.train.evaluate import (
    features,
    knn_accuracy,
    label_subset,
    logistic_regression,
    train_classifier,
)

FRACTIONS = (0.01, 0.05, 0.1, 0.2, 1.0)


def label_efficiency(
    ssl_encoder: nn.Module,
    make_encoder: Callable[[], nn.Module],
    train: ImageData,
    test: ImageData,
    *,
    ssl_name: str,
    fractions: tuple[float, ...] = FRACTIONS,
    seed: int = 0,
    supervised_augment: Callable | None = None,
    supervised_steps: int = 300,
    mean: Any = 0.5,
    std: Any = 0.5,
    l2: float = 1e-2,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Records ``{"model", "protocol", "label_fraction", "seed", "test_accuracy"}`` for, at each
    label fraction (a stratified subset of ``train`` drawn with ``seed``):

    * ``ssl_name`` / ``linear``: logistic regression on the frozen SSL encoder's features;
    * ``ssl_name`` / ``knn``: weighted kNN (cosine, k=20) on the same features;
    * ``random-init`` / ``linear``: the same architecture with random weights, probed the same way;
    * ``supervised`` / ``from-scratch``: the same architecture trained with labels only
      (``supervised_steps`` steps, the ``supervised_augment`` views);
    * ``raw-pixels`` / ``linear``: logistic regression on the grey pixels.

    ``make_encoder()`` returns a freshly initialised encoder of the SSL encoder's architecture
    (called under ``torch.manual_seed(seed)``)."""
    if train.labels is None or test.labels is None:
        raise ValueError("the label-efficiency study needs labeled train and test images")
    k = len(train.classes)
    torch.manual_seed(seed)
    random_encoder = make_encoder()
    out_dim = int(random_encoder.out_dim)  # type: ignore[arg-type]
    f_ssl_tr = features(ssl_encoder, train.images, mean=mean, std=std)
    f_ssl_te = features(ssl_encoder, test.images, mean=mean, std=std)
    f_rnd_tr = features(random_encoder, train.images, mean=mean, std=std)
    f_rnd_te = features(random_encoder, test.images, mean=mean, std=std)
    px_tr = train.images.float().mean(1).flatten(1)
    px_te = test.images.float().mean(1).flatten(1)
    records = []

    def rec(model: str, protocol: str, frac: float, acc: float) -> None:
        records.append(
            {
                "model": model,
                "protocol": protocol,
                "label_fraction": frac,
                "seed": seed,
                "test_accuracy": acc,
            }
        )
        log(f"  {model:>12} {protocol:<13} {100 * frac:5g}% labels: {100 * acc:.1f}%")

    y_tr, y_te = train.labels, test.labels
    for frac in fractions:
        idx = label_subset(y_tr, frac, seed)

        def lr(a: torch.Tensor, b: torch.Tensor, idx: torch.Tensor = idx) -> float:
            return logistic_regression(a[idx], y_tr[idx], b, y_te, l2=l2, num_classes=k)

        rec(ssl_name, "linear", frac, lr(f_ssl_tr, f_ssl_te))
        rec(
            ssl_name,
            "knn",
            frac,
            knn_accuracy(f_ssl_tr[idx], y_tr[idx], f_ssl_te, y_te, k=20, num_classes=k),
        )
        rec("random-init", "linear", frac, lr(f_rnd_tr, f_rnd_te))
        rec("raw-pixels", "linear", frac, lr(px_tr, px_te))
        torch.manual_seed(seed)
        scratch = make_encoder()
        acc = train_classifier(
            scratch,
            out_dim,
            train.subset(idx),
            test,
            augment=supervised_augment,
            mean=mean,
            std=std,
            steps=supervised_steps,
            seed=seed,
        )
        rec("supervised", "from-scratch", frac, acc)
    return records
