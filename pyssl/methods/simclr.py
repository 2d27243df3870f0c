"""SimCLR (Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual
Representations").

Anchor: google-research/simclr and lightly's ``SimCLR`` + ``NTXentLoss``: encoder, a projection
MLP ``Linear -> BN -> ReLU -> Linear`` (the paper's 2-layer head), NT-Xent over the 2N views
(:func:`pyssl.ops.nt_xent`, memory-linear).

Defaults, published -> here: projection output 128 -> 128; projection hidden = the encoder width
(as published); temperature 0.1 (ImageNet, batch 4096) / 0.5 (CIFAR-10, appendix B.9) -> 0.5,
the small-data value, which suits batches of a few hundred.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from pyssl.methods.augment import simclr_augment
from pyssl.methods.base import SSLMethod, check_positive, feature_dim, gathering, mlp
from pyssl.ops.contrastive import nt_xent


class SimCLR(SSLMethod):
    """SimCLR: ``loss([x1, x2]) = nt_xent(g(f(x1)), g(f(x2)), temperature)``.

    Args:
        encoder: backbone with ``out_dim``.
        proj_dim: projection output width.
        proj_hidden: projection hidden width (default: ``feature_dim(encoder)``).
        temperature: NT-Xent temperature.
        gather: use every process's views as negatives under torch.distributed.
    """

    name = "simclr"

    def __init__(
        self,
        encoder: nn.Module,
        *,
        proj_dim: int = 128,
        proj_hidden: int | None = None,
        temperature: float = 0.5,
        gather: bool = True,
    ) -> None:
        super().__init__()
        check_positive("proj_dim", proj_dim, integer=True)
        check_positive("temperature", temperature)
        hidden = proj_hidden or feature_dim(encoder)
        check_positive("proj_hidden", hidden, integer=True)
        self.encoder = encoder
        self.projector = mlp([feature_dim(encoder), hidden, proj_dim])
        self.temperature = float(temperature)
        self.gather = gather

    def loss(self, views: list[Tensor]) -> Tensor:
        x1, x2 = self._check_views(views, same_shape=True)
        n = x1.shape[0]
        if n < 2:
            raise ValueError("views: SimCLR needs a batch of at least 2 images (negatives)")
        # both views in one batch: one batch-norm population, as SimCLR's global BN
        z = self.projector(self.encoder(torch.cat([x1, x2])))
        return nt_xent(z[:n], z[n:], temperature=self.temperature, gather=gathering(self.gather))

    def default_augment(self, image_size: int, channels: int) -> Callable[..., list[Tensor]]:
        return simclr_augment(image_size, channels)
