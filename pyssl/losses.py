"""Losses as modules for drop-in use in training code."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pyssl.ops.masking import masked_patch_loss
from pyssl.ops.text import causal_lm_loss, masked_lm_loss


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


class FeatureQueue(nn.Module):
    """A fixed-size FIFO of detached keys (MoCo v2's negatives queue).

    ``push(keys)`` appends a batch (detached, oldest rows dropped beyond ``size``);
    ``features()`` returns the stored rows, oldest first, as a ``[<= size, dim]`` tensor to pass
    as ``queue`` to :func:`pyssl.ops.moco_loss`. The buffer moves with the module (``.to``) and
    is saved in its state dict.
    """

    buffer: Tensor
    count: Tensor

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        if size < 1 or dim < 1:
            raise ValueError(f"size and dim: expected positive ints, got {size}, {dim}")
        self.size, self.dim = size, dim
        self.register_buffer("buffer", torch.zeros(size, dim))
        self.register_buffer("count", torch.zeros((), dtype=torch.int64))

    @torch.no_grad()
    def push(self, keys: Tensor) -> None:
        if keys.dim() != 2 or keys.shape[1] != self.dim:
            raise ValueError(f"keys: expected width {self.dim}, got shape {tuple(keys.shape)}")
        keys = keys.detach().to(self.buffer.dtype)[-self.size :]
        n = keys.shape[0]
        self.buffer.copy_(torch.cat([self.buffer[n:], keys]))
        self.count.add_(n).clamp_(max=self.size)

    def features(self) -> Tensor:
        return self.buffer[self.size - int(self.count) :]

    def extra_repr(self) -> str:
        return f"size={self.size}, dim={self.dim}"


class MaskedLMLoss(nn.Module):
    """BERT's masked-LM head loss (see :func:`pyssl.ops.masked_lm_loss`): cross-entropy of
    ``hidden @ decoder.weight.T + decoder.bias`` at the labelled positions, without the full
    logits. Pass the decoder's (often tied) weight and bias in the call.

    Example (a BERT MLM head)::

        self.loss = MaskedLMLoss()
        ...
        h = self.transform(encoder_out)                      # [B, T, H]
        loss = self.loss(h, self.embed.weight, labels, bias=self.decoder_bias)
    """

    def __init__(self, *, ignore_index: int = -100, reduction: str = "mean") -> None:
        super().__init__()
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction: expected 'mean', 'sum' or 'none', got {reduction!r}")
        self.ignore_index, self.reduction = ignore_index, reduction

    def forward(
        self, hidden: Tensor, weight: Tensor, labels: Tensor, bias: Tensor | None = None
    ) -> Tensor:
        return masked_lm_loss(
            hidden,
            weight,
            labels,
            bias=bias,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
        )

    def extra_repr(self) -> str:
        return f"ignore_index={self.ignore_index}, reduction={self.reduction!r}"


class CausalLMLoss(MaskedLMLoss):
    """Next-token cross-entropy (see :func:`pyssl.ops.causal_lm_loss`): position ``t`` predicts
    ``labels[..., t + 1]``, as Hugging Face's causal-LM heads shift them."""

    def forward(
        self, hidden: Tensor, weight: Tensor, labels: Tensor, bias: Tensor | None = None
    ) -> Tensor:
        return causal_lm_loss(
            hidden,
            weight,
            labels,
            bias=bias,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
        )
