"""Losses as modules for drop-in use in training code."""

from __future__ import annotations

from torch import Tensor, nn

from pyssl.ops.masking import masked_patch_loss


class MaskedPatchLoss(nn.Module):
    """MAE's reconstruction loss (see :func:`pyssl.ops.masked_patch_loss`): per-patch MSE
    against the (normalised) pixels of ``imgs``, averaged over the removed patches, without
    materialising the patchified target.

    Example (replacing MAE's ``forward_loss``)::

        self.loss = MaskedPatchLoss(patch_size=16, norm_pix=True)
        ...
        loss = self.loss(pred, imgs, mask)
    """

    def __init__(self, patch_size: int, *, norm_pix: bool = True, eps: float = 1e-6) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.norm_pix = norm_pix
        self.eps = eps

    def forward(self, pred: Tensor, imgs: Tensor, mask: Tensor) -> Tensor:
        return masked_patch_loss(
            pred, imgs, mask, self.patch_size, norm_pix=self.norm_pix, eps=self.eps
        )

    def extra_repr(self) -> str:
        return f"patch_size={self.patch_size}, norm_pix={self.norm_pix}, eps={self.eps}"
