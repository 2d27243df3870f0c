"""Barlow Twins (Zbontar et al. 2021) and VICReg (Bardes, Ponce, LeCun 2022): losses on the
statistics of the two views' embeddings over the batch, no negatives, no teacher.

Anchors: facebookresearch/barlowtwins ``main.py`` (``BarlowTwins.forward``) and
facebookresearch/vicreg ``main_vicreg.py`` (``VICReg.forward``). Under torch.distributed the
embeddings of every process are gathered first (:func:`pyssl.distributed.all_gather`), so the
statistics are over the global batch, as the references' synchronised batch norm / all-reduce
and ``FullGatherLayer`` make them. The statistics are computed in float32 (float64 for float64
inputs) with autocast off.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from pyssl import distributed
from pyssl.methods.augment import byol_augment
from pyssl.methods.base import SSLMethod, check_positive, feature_dim, mlp


def off_diagonal(c: Tensor) -> Tensor:
    """The off-diagonal elements of a square matrix, flattened (the references' helper)."""
    n = c.shape[0]
    return c.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()


def _fp32_pair(z1: Tensor, z2: Tensor) -> tuple[Tensor, Tensor]:
    if z1.dtype in (torch.float16, torch.bfloat16):
        z1, z2 = z1.float(), z2.float()
    if distributed.is_active():
        z1, z2 = distributed.all_gather(z1), distributed.all_gather(z2)
    return z1, z2


def barlow_twins_loss(z1: Tensor, z2: Tensor, lambd: float, eps: float = 1e-5) -> Tensor:
    """``sum_i (1 - C_ii)^2 + lambd * sum_{i != j} C_ij^2`` with ``C = bn(z1).T @ bn(z2) / N``,
    ``bn`` the affine-free batch norm in training mode (biased variance, ``eps`` 1e-5)."""
    n = z1.shape[0]

    def bn(z: Tensor) -> Tensor:
        return (z - z.mean(0)) / torch.sqrt(z.var(0, unbiased=False) + eps)

    c = bn(z1).T @ bn(z2) / n
    on_diag = (torch.diagonal(c) - 1).pow(2).sum()
    return on_diag + lambd * off_diagonal(c).pow(2).sum()


class BarlowTwins(SSLMethod):
    """Barlow Twins: drive the cross-correlation of the two views' embeddings to the identity.

    Projector: three linear layers (batch norm and ReLU between). Loss: :func:`barlow_twins_loss`.

    Defaults, published -> here: projector width 8192 -> 1024 (the ablation in the paper's
    figure 4 shows small widths still train; a 1024-wide correlation matrix suits batches of a
    few hundred), ``lambd`` 0.0051 (kept; close to the ``1/D`` rule for D = 1024).
    """

    name = "barlow"

    def __init__(self, encoder: nn.Module, *, proj_dim: int = 1024, lambd: float = 0.0051) -> None:
        super().__init__()
        check_positive("proj_dim", proj_dim, integer=True)
        check_positive("lambd", lambd)
        self.encoder = encoder
        self.projector = mlp([feature_dim(encoder), proj_dim, proj_dim, proj_dim], bias=False)
        self.lambd = float(lambd)

    def loss(self, views: list[Tensor]) -> Tensor:
        x1, x2 = self._check_views(views)
        if x1.shape[0] < 2:
            raise ValueError("views: Barlow Twins needs a batch of at least 2 (batch statistics)")
        z1, z2 = (self.projector(self.encoder(x)) for x in (x1, x2))
        with torch.autocast(z1.device.type, enabled=False):
            return barlow_twins_loss(*_fp32_pair(z1, z2), self.lambd)

    def default_augment(self, image_size: int, channels: int) -> Callable[..., list[Tensor]]:
        return byol_augment(image_size, channels)


def vicreg_loss(
    x: Tensor,
    y: Tensor,
    sim_coeff: float = 25.0,
    std_coeff: float = 25.0,
    cov_coeff: float = 1.0,
    eps: float = 1e-4,
) -> Tensor:
    """VICReg: ``sim_coeff * mse(x, y) + std_coeff * variance + cov_coeff * covariance`` with the
    variance term the mean hinge ``relu(1 - sqrt(var + eps))`` per dimension (averaged over the
    two branches) and the covariance term the squared off-diagonal covariances over ``D``
    (summed over the branches)."""
    n, d = x.shape
    repr_loss = torch.nn.functional.mse_loss(x, y)
    x = x - x.mean(0)
    y = y - y.mean(0)
    std_x = torch.sqrt(x.var(0) + eps)
    std_y = torch.sqrt(y.var(0) + eps)
    std_loss = torch.relu(1 - std_x).mean() / 2 + torch.relu(1 - std_y).mean() / 2
    cov_x = x.T @ x / (n - 1)
    cov_y = y.T @ y / (n - 1)
    cov_loss = off_diagonal(cov_x).pow(2).sum() / d + off_diagonal(cov_y).pow(2).sum() / d
    return sim_coeff * repr_loss + std_coeff * std_loss + cov_coeff * cov_loss


class VICReg(SSLMethod):
    """VICReg: invariance (MSE between the views), variance (a hinge keeping each dimension's
    standard deviation at 1) and covariance (decorrelating dimensions) on the expander's output.

    Expander: three linear layers (batch norm and ReLU between). Loss: :func:`vicreg_loss`.

    Defaults, published -> here: expander width 8192 -> 1024, coefficients 25 / 25 / 1 and
    ``eps`` 1e-4 (kept).
    """

    name = "vicreg"

    def __init__(
        self,
        encoder: nn.Module,
        *,
        proj_dim: int = 1024,
        sim_coeff: float = 25.0,
        std_coeff: float = 25.0,
        cov_coeff: float = 1.0,
    ) -> None:
        super().__init__()
        check_positive("proj_dim", proj_dim, integer=True)
        for n, v in (("sim_coeff", sim_coeff), ("std_coeff", std_coeff), ("cov_coeff", cov_coeff)):
            check_positive(n, v)
        self.encoder = encoder
        self.projector = mlp([feature_dim(encoder), proj_dim, proj_dim, proj_dim])
        self.coeffs = (float(sim_coeff), float(std_coeff), float(cov_coeff))

    def loss(self, views: list[Tensor]) -> Tensor:
        x1, x2 = self._check_views(views)
        if x1.shape[0] < 2:
            raise ValueError("views: VICReg needs a batch of at least 2 (batch statistics)")
        z1, z2 = (self.projector(self.encoder(x)) for x in (x1, x2))
        with torch.autocast(z1.device.type, enabled=False):
            return vicreg_loss(*_fp32_pair(z1, z2), *self.coeffs)

    def default_augment(self, image_size: int, channels: int) -> Callable[..., list[Tensor]]:
        return byol_augment(image_size, channels)
