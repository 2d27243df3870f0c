"""BYOL (Grill et al. 2020, "Bootstrap Your Own Latent") and SimSiam (Chen & He 2021,
"Exploring Simple Siamese Representation Learning"): a predictor on the online branch, no
negatives; BYOL's target follows by EMA, SimSiam's is the same network behind a stop-gradient.

Anchors: deepmind-research ``byol/byol_experiment.py`` / ``utils/helpers.py`` and
facebookresearch/simsiam ``simsiam/builder.py``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pyssl.methods.augment import byol_augment, simclr_augment
from pyssl.methods.base import (
    SSLMethod,
    check_positive,
    check_unit,
    cosine_momentum,
    ema_update,
    feature_dim,
    frozen_copy,
    mlp,
)


def regression_loss(p: Tensor, z: Tensor) -> Tensor:
    """BYOL's ``2 - 2 * cos(p, z)`` per row, averaged over the batch (z is the target), in
    float32 at least."""
    return (2 - 2 * cosine(p, z.detach())).mean()


def cosine(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise cosine similarity in float32 (float64 for float64): low-precision inputs
    under autocast are upcast first."""
    if a.dtype != torch.float64:
        a, b = a.float(), b.float()
    return F.cosine_similarity(a, b, dim=-1)


class BYOL(SSLMethod):
    """BYOL: online ``predictor(projector(encoder(x)))`` regresses the target network's
    ``projector(encoder(x'))`` of the other view; symmetric (the sum over both orders, as the
    paper's ``L + L~``).

    ``on_step_end(k, K)`` sets ``tau = 1 - (1 - base) * (cos(pi k / K) + 1) / 2`` and moves the
    target: ``target = tau * target + (1 - tau) * online``.

    Defaults, published -> here: MLP hidden 4096 -> 512, output 256 -> 128, base momentum
    0.996 -> 0.99 (runs of a few thousand steps rather than 300 epochs of ImageNet; the
    schedule still ends at 1).
    """

    name = "byol"

    def __init__(
        self,
        encoder: nn.Module,
        *,
        proj_dim: int = 128,
        hidden: int = 512,
        momentum: float = 0.99,
    ) -> None:
        super().__init__()
        check_positive("proj_dim", proj_dim, integer=True)
        check_positive("hidden", hidden, integer=True)
        check_unit("momentum", momentum, closed=True)
        self.encoder = encoder
        self.projector = mlp([feature_dim(encoder), hidden, proj_dim])
        self.predictor = mlp([proj_dim, hidden, proj_dim])
        self.target_encoder = frozen_copy(encoder)
        self.target_projector = frozen_copy(self.projector)
        self.base_momentum = float(momentum)
        self.momentum = float(momentum)

    def loss(self, views: list[Tensor]) -> Tensor:
        x1, x2 = self._check_views(views)
        # each view through the networks alone (its own batch-norm statistics), as the reference
        p1, p2 = (self.predictor(self.projector(self.encoder(x))) for x in (x1, x2))
        with torch.no_grad():
            z1, z2 = (self.target_projector(self.target_encoder(x)) for x in (x1, x2))
        return regression_loss(p1, z2) + regression_loss(p2, z1)

    def on_step_end(self, step: int, total_steps: int) -> None:
        self.momentum = cosine_momentum(self.base_momentum, step, total_steps)
        ema_update(self.target_encoder, self.encoder, self.momentum)
        ema_update(self.target_projector, self.projector, self.momentum)

    def default_augment(self, image_size: int, channels: int) -> Callable[..., list[Tensor]]:
        return byol_augment(image_size, channels)


class SimSiam(SSLMethod):
    """SimSiam: ``D(p1, stopgrad(z2)) / 2 + D(p2, stopgrad(z1)) / 2`` with
    ``D(p, z) = -cos(p, z)``.

    Projector: three linear layers with batch norm, the last norm without affine parameters;
    predictor: a bottleneck ``proj_dim -> pred_hidden -> proj_dim``.

    Defaults, published -> here: projector width 2048 -> 512, predictor hidden 512 -> 128 (the
    published 4:1 bottleneck kept).
    """

    name = "simsiam"

    def __init__(self, encoder: nn.Module, *, proj_dim: int = 512, pred_hidden: int = 128) -> None:
        super().__init__()
        check_positive("proj_dim", proj_dim, integer=True)
        check_positive("pred_hidden", pred_hidden, integer=True)
        self.encoder = encoder
        dims = [feature_dim(encoder), proj_dim, proj_dim, proj_dim]
        self.projector = mlp(dims, last_batch_norm=True, last_affine=False, bias=False)
        self.predictor = mlp([proj_dim, pred_hidden, proj_dim])

    def loss(self, views: list[Tensor]) -> Tensor:
        x1, x2 = self._check_views(views)
        z1, z2 = (self.projector(self.encoder(x)) for x in (x1, x2))
        p1, p2 = self.predictor(z1), self.predictor(z2)
        return -(cosine(p1, z2.detach()).mean() + cosine(p2, z1.detach()).mean()) / 2

    def default_augment(self, image_size: int, channels: int) -> Callable[..., list[Tensor]]:
        return simclr_augment(image_size, channels, moco=True)
