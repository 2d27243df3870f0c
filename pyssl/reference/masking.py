"""Masked-patch ops as MAE writes them (facebookresearch/mae, ``models_mae.py``).

Each function follows MAE's code line for line, with two deliberate changes: ``argsort`` is
stable (MAE's is not, so ties in ``noise`` are broken by index here), and the image size and
channel count are not fixed to square RGB.
"""

from __future__ import annotations

import torch


def patchify(imgs: torch.Tensor, patch_size: int) -> torch.Tensor:
    """[B, C, H, W] -> [B, L, p*p*C], MAE's (p, q, c) order inside a patch."""
    b, c, h, w = imgs.shape
    p = patch_size
    x = imgs.reshape(b, c, h // p, p, w // p, p)
    x = torch.einsum("nchpwq->nhwpqc", x)
    return x.reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(
    x: torch.Tensor, patch_size: int, channels: int, grid: tuple[int, int] | None = None
) -> torch.Tensor:
    """[B, L, p*p*C] -> [B, C, H, W]; ``grid`` (rows, cols) defaults to a square grid."""
    b, n, _ = x.shape
    p = patch_size
    gh, gw = grid if grid is not None else (int(round(n**0.5)),) * 2
    x = x.reshape(b, gh, gw, p, p, channels)
    x = torch.einsum("nhwpqc->nchpwq", x)
    return x.reshape(b, channels, gh * p, gw * p)


def random_masking(
    x: torch.Tensor, mask_ratio: float, noise: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """MAE's per-sample random masking by argsort of noise; returns
    (visible, mask, ids_keep, ids_restore). ``mask`` is 1 where a patch is removed."""
    n, length, d = x.shape
    len_keep = int(length * (1 - mask_ratio))
    ids_shuffle = torch.argsort(noise, dim=1, stable=True)
    ids_restore = torch.argsort(ids_shuffle, dim=1, stable=True)
    ids_keep = ids_shuffle[:, :len_keep]
    x_masked = torch.gather(x, dim=1, index=ids_keep.unsqueeze(-1).repeat(1, 1, d))
    mask = torch.ones([n, length], device=x.device, dtype=x.dtype)
    mask[:, :len_keep] = 0
    mask = torch.gather(mask, dim=1, index=ids_restore)
    return x_masked, mask, ids_keep, ids_restore


def restore_masked(
    visible: torch.Tensor, mask_token: torch.Tensor, ids_restore: torch.Tensor
) -> torch.Tensor:
    """MAE decoder: append mask tokens to the visible tokens, then unshuffle."""
    b, k, d = visible.shape
    length = ids_restore.shape[1]
    mask_tokens = mask_token.reshape(1, 1, d).expand(b, length - k, d)
    x_ = torch.cat([visible, mask_tokens], dim=1)
    return torch.gather(x_, dim=1, index=ids_restore.unsqueeze(-1).repeat(1, 1, d))


def gather_patches(imgs: torch.Tensor, ids_keep: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Patchify, then keep the patches ``ids_keep`` names: [B, K, p*p*C]."""
    x = patchify(imgs, patch_size)
    return torch.gather(x, dim=1, index=ids_keep.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def masked_patch_loss(
    pred: torch.Tensor,
    imgs: torch.Tensor,
    mask: torch.Tensor,
    patch_size: int,
    norm_pix: bool = True,
    eps: float = 1e-6,
) -> torch.Tensor:
    """MAE's ``forward_loss``: MSE per patch against the (normalised) patch pixels, averaged
    over removed patches (``mask`` weights)."""
    target = patchify(imgs, patch_size)
    if norm_pix:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + eps) ** 0.5
    loss = (pred - target) ** 2
    loss = loss.mean(dim=-1)
    return (loss * mask).sum() / mask.sum()
