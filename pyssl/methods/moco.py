"""Momentum contrast: MoCo v2 (Chen et al. 2020, "Improved Baselines with Momentum Contrastive
Learning") and MoCo v3 (Chen, Xie, He 2021, "An Empirical Study of Training Self-Supervised
Vision Transformers").

Anchors: facebookresearch/moco ``moco/builder.py`` and facebookresearch/moco-v3
``moco/builder.py``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pyssl import distributed
from pyssl.losses import FeatureQueue
from pyssl.methods.augment import byol_augment, simclr_augment
from pyssl.methods.base import (
    SSLMethod,
    check_positive,
    check_unit,
    cosine_momentum,
    ema_update,
    feature_dim,
    frozen_copy,
    gathering,
    mlp,
)
from pyssl.ops.contrastive import info_nce, moco_loss


class MoCoV2(SSLMethod):
    """MoCo v2: a query encoder trained by gradient, a key encoder that follows it by EMA, and a
    FIFO queue of past keys as negatives.

    ``loss([x_q, x_k])`` is :func:`pyssl.ops.moco_loss` of the normalised query and key
    projections against the queue; ``on_step_end`` moves the key encoder
    (``k = m * k + (1 - m) * q``, MoCo's ``_momentum_update_key_encoder``) and pushes this
    step's keys (gathered over processes) into the queue, oldest out
    (``_dequeue_and_enqueue``). The queue starts filled with random unit vectors, as MoCo's.

    Defaults, published -> here: queue 65536 -> 1024 (about two thirds of the digits training
    set; 65536 is 5% of ImageNet), momentum 0.999 -> 0.99 (runs of a few thousand steps, the
    value MoCo's CIFAR demo uses), temperature 0.2 (kept), MLP head 2048-128 -> the encoder
    width-128. Deliberate difference: no shuffled batch norm (one process computes the keys'
    batch statistics over the key batch alone).
    """

    name = "mocov2"

    def __init__(
        self,
        encoder: nn.Module,
        *,
        proj_dim: int = 128,
        proj_hidden: int | None = None,
        queue_size: int = 1024,
        temperature: float = 0.2,
        momentum: float = 0.99,
    ) -> None:
        super().__init__()
        hidden = proj_hidden or feature_dim(encoder)
        for n, v in (("proj_dim", proj_dim), ("proj_hidden", hidden), ("queue_size", queue_size)):
            check_positive(n, v, integer=True)
        check_positive("temperature", temperature)
        check_unit("momentum", momentum, closed=True)
        self.encoder = encoder
        # MoCo v2's head: Linear -> ReLU -> Linear, no batch norm
        self.projector = mlp([feature_dim(encoder), hidden, proj_dim], batch_norm=False)
        self.key_encoder = frozen_copy(encoder)
        self.key_projector = frozen_copy(self.projector)
        self.queue = FeatureQueue(queue_size, proj_dim)
        self.queue.push(F.normalize(torch.randn(queue_size, proj_dim), dim=1))
        self.temperature = float(temperature)
        self.momentum = float(momentum)
        self._keys: Tensor | None = None

    def keys(self, x: Tensor) -> Tensor:
        """Normalised key projections ``[B, proj_dim]`` from the momentum encoder (no grad)."""
        with torch.no_grad():
            return F.normalize(self.key_projector(self.key_encoder(x)), dim=1)

    def loss(self, views: list[Tensor]) -> Tensor:
        x_q, x_k = self._check_views(views)
        q = F.normalize(self.projector(self.encoder(x_q)), dim=1)
        k = self.keys(x_k)
        negatives = self.queue.features().to(q.dtype)
        # the queue must not change before backward; on_step_end pushes these keys (those of
        # every loss since the last step, when gradients are accumulated)
        k_all = distributed.all_gather(k) if distributed.is_active() else k
        self._keys = k_all if self._keys is None else torch.cat([self._keys, k_all])
        return moco_loss(q, k.to(q.dtype), negatives, temperature=self.temperature)

    def on_step_end(self, step: int, total_steps: int) -> None:
        ema_update(self.key_encoder, self.encoder, self.momentum)
        ema_update(self.key_projector, self.projector, self.momentum)
        if self._keys is not None:
            self.queue.push(self._keys)
            self._keys = None

    def default_augment(self, image_size: int, channels: int) -> Callable[..., list[Tensor]]:
        return simclr_augment(image_size, channels, moco=True)


class MoCoV3(SSLMethod):
    """MoCo v3: a momentum encoder and a predictor, no queue; the symmetric InfoNCE of each
    view's query against the other view's keys in the batch
    (:func:`pyssl.ops.info_nce`, scaled by ``2 * temperature`` as the reference code does).

    The momentum follows BYOL's cosine rise from ``momentum`` to 1 over the run
    (``on_step_end``). Projector: ``proj_layers`` linear layers with batch norm, the last one
    without affine parameters; predictor: two layers. Keys are gathered over processes.

    Defaults, published -> here: hidden width 4096 -> 512, output 256 -> 128, temperature
    1.0 (ResNet-50) / 0.2 (ViT) -> 0.2 for both (small batches), momentum 0.99 (kept),
    projector layers 2 (ResNet) / 3 (ViT) (kept: chosen by the backbone).
    """

    name = "mocov3"

    def __init__(
        self,
        encoder: nn.Module,
        *,
        proj_dim: int = 128,
        hidden: int = 512,
        proj_layers: int | None = None,
        temperature: float = 0.2,
        momentum: float = 0.99,
    ) -> None:
        super().__init__()
        from pyssl.models.vit import ViT

        layers = proj_layers or (3 if isinstance(encoder, ViT) else 2)
        for n, v in (("proj_dim", proj_dim), ("hidden", hidden), ("proj_layers", layers)):
            check_positive(n, v, integer=True)
        check_positive("temperature", temperature)
        check_unit("momentum", momentum, closed=True)
        self.encoder = encoder
        dims = [feature_dim(encoder)] + [hidden] * (layers - 1) + [proj_dim]
        self.projector = mlp(dims, last_batch_norm=True, last_affine=False, bias=False)
        self.predictor = mlp([proj_dim, hidden, proj_dim], bias=False)
        self.momentum_encoder = frozen_copy(encoder)
        self.momentum_projector = frozen_copy(self.projector)
        self.base_momentum = float(momentum)
        self.momentum = float(momentum)
        self.temperature = float(temperature)

    def contrast(self, q: Tensor, k: Tensor) -> Tensor:
        """MoCo v3's ``contrastive_loss``: InfoNCE of normalised q against the (gathered)
        normalised keys, times ``2 * temperature``."""
        loss = info_nce(q, k, temperature=self.temperature, normalize=True, gather=gathering(True))
        return loss * (2 * self.temperature)

    def loss(self, views: list[Tensor]) -> Tensor:
        x1, x2 = self._check_views(views)
        # each view through the networks alone (its own batch-norm statistics), as the reference
        q1, q2 = (self.predictor(self.projector(self.encoder(x))) for x in (x1, x2))
        with torch.no_grad():
            k1, k2 = (self.momentum_projector(self.momentum_encoder(x)) for x in (x1, x2))
        return self.contrast(q1, k2) + self.contrast(q2, k1)

    def on_step_end(self, step: int, total_steps: int) -> None:
        self.momentum = cosine_momentum(self.base_momentum, step, total_steps)
        ema_update(self.momentum_encoder, self.encoder, self.momentum)
        ema_update(self.momentum_projector, self.projector, self.momentum)

    def default_augment(self, image_size: int, channels: int) -> Callable[..., list[Tensor]]:
        return byol_augment(image_size, channels)
