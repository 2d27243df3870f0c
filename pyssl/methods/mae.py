"""MAE (He et al. 2022, "Masked Autoencoders Are Scalable Vision Learners").

Anchor: facebookresearch/mae ``models_mae.py`` (``MaskedAutoencoderViT``): the encoder sees the
kept patches only; a light decoder appends mask tokens, unshuffles, and predicts the pixels of
every patch; the loss is the per-patch MSE on the removed patches against normalised pixels.
Here the masking is :func:`pyssl.ops.random_masking` + :func:`pyssl.ops.gather_patches` (inside
:meth:`pyssl.models.ViT.forward_tokens`), the unshuffle :func:`pyssl.ops.restore_masked`, the
loss :class:`pyssl.losses.MaskedPatchLoss`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from pyssl.losses import MaskedPatchLoss
from pyssl.methods.augment import mae_augment
from pyssl.methods.base import SSLMethod, check_positive, check_unit
from pyssl.models.vit import Block, ViT, init_transformer, sincos_pos_embed
from pyssl.ops.masking import restore_masked


class MAE(SSLMethod):
    """MAE over a :class:`~pyssl.models.ViT` encoder; ``loss([x])`` takes one view.

    Defaults, published -> here: mask ratio 0.75 (kept), ``norm_pix_loss`` True (kept),
    decoder width 512 -> 128, depth 8 -> 2, heads 16 -> 4 (the paper's table 1 shows a
    1-block decoder already works; the encoder here is 128 wide).

    ``generator`` (optional) draws the masks, for reproducible runs.
    """

    name = "mae"
    num_views = 1
    encoder: ViT

    def __init__(
        self,
        encoder: nn.Module,
        *,
        mask_ratio: float = 0.75,
        decoder_dim: int = 128,
        decoder_depth: int = 2,
        decoder_heads: int = 4,
        norm_pix_loss: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(encoder, ViT):
            kind = type(encoder).__name__
            raise TypeError(f"encoder: MAE needs a pyssl.models.ViT (patch tokens), got {kind}")
        check_unit("mask_ratio", mask_ratio)
        for n, v in (
            ("decoder_dim", decoder_dim),
            ("decoder_depth", decoder_depth),
            ("decoder_heads", decoder_heads),
        ):
            check_positive(n, v, integer=True)
        self.encoder = encoder
        self.mask_ratio = float(mask_ratio)
        p, c = encoder.patch_size, encoder.in_channels
        self.decoder_embed = nn.Linear(encoder.out_dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(decoder_dim))
        self.register_buffer(
            "decoder_pos",
            sincos_pos_embed(decoder_dim, encoder.grid, encoder.grid),
            persistent=False,
        )
        self.decoder_blocks = nn.ModuleList(
            Block(decoder_dim, decoder_heads) for _ in range(decoder_depth)
        )
        self.decoder_norm = nn.LayerNorm(decoder_dim, eps=1e-6)
        self.decoder_pred = nn.Linear(decoder_dim, p * p * c)
        init_transformer(self.decoder_blocks)
        for m in (self.decoder_embed, self.decoder_pred):
            init_transformer(m)
        nn.init.normal_(self.mask_token, std=0.02)
        self.criterion = MaskedPatchLoss(p, norm_pix=norm_pix_loss)
        self.generator: torch.Generator | None = None

    decoder_pos: Tensor

    def reconstruct(self, x: Tensor, *, noise: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """MAE's forward without the loss: predicted patches ``[B, L, p*p*C]`` and the mask
        ``[B, L]`` (1 = removed). ``noise`` ``[B, L]`` fixes the mask."""
        if tuple(x.shape[2:]) != (self.encoder.image_size,) * 2:
            raise ValueError(
                f"views[0]: MAE takes {self.encoder.image_size}x{self.encoder.image_size} images, "
                f"got {tuple(x.shape[2:])}"
            )
        tokens, masking = self.encoder.forward_tokens(
            x, self.mask_ratio, noise=noise, generator=self.generator
        )
        y = self.decoder_embed(tokens)
        if masking is None:  # mask_ratio 0: every patch is kept, in order
            full = y[:, 1:]
        else:
            full = restore_masked(y[:, 1:], self.mask_token, masking.ids_restore)
        full = torch.cat([y[:, :1], full + self.decoder_pos.to(full.dtype)], 1)
        for blk in self.decoder_blocks:
            full = blk(full)
        pred = self.decoder_pred(self.decoder_norm(full))[:, 1:]
        mask = masking.mask if masking is not None else pred.new_ones(pred.shape[:2])
        return pred, mask

    def loss(self, views: list[Tensor]) -> Tensor:
        (x,) = self._check_views(views)
        pred, mask = self.reconstruct(x)
        return self.criterion(pred, x.to(pred.dtype), mask.to(pred.dtype))

    def default_augment(self, image_size: int, channels: int) -> Callable[..., list[Tensor]]:
        return mae_augment(image_size, channels)
