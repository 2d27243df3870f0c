"""Vision Transformers (Dosovitskiy et al. 2021) with MAE's masked-encoder path.

Anchor: facebookresearch/mae ``models_mae.py`` / timm's ``VisionTransformer``: pre-norm blocks,
a class token, fixed 2-D sine-cosine position embeddings, MAE's ``forward_encoder`` (embed, add
positions, random masking, prepend the class token). The patch embedding is
:func:`pyssl.ops.patchify` (or, when masking, the fused :func:`pyssl.ops.gather_patches`, which
reads only the kept pixels) followed by a linear layer — the same map as timm's stride-``p``
convolution with the weight laid out in MAE's (row, column, channel) patch order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pyssl.ops.masking import MaskingResult, gather_patches, patchify, random_masking


def sincos_pos_embed(
    dim: int, rows: int, cols: int, scale: tuple[float, float] = (1.0, 1.0)
) -> Tensor:
    """MAE's ``get_2d_sincos_pos_embed`` without the class token: ``[rows * cols, dim]``.

    The first half of the channels encodes the column, the second the row (MAE's order), with
    frequencies ``1 / 10000**(k / (dim/4))``. ``scale`` multiplies the row and column positions:
    a grid of a different size than the one trained on can be given positions spanning the same
    range, as DINO's interpolation of the position embedding does for small crops.
    """
    if dim % 4:
        raise ValueError(f"dim: the 2-D sine-cosine embedding needs a multiple of 4, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))
    r = torch.arange(rows, dtype=torch.float64) * scale[0]
    c = torch.arange(cols, dtype=torch.float64) * scale[1]
    gr, gc = torch.meshgrid(r, c, indexing="ij")

    def one(pos: Tensor) -> Tensor:
        out = pos.reshape(-1, 1) * omega
        return torch.cat([out.sin(), out.cos()], 1)

    return torch.cat([one(gc), one(gr)], 1).float()


class Attention(nn.Module):
    """Multi-head self-attention through ``F.scaled_dot_product_attention``."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"heads: {heads} does not divide the width {dim}")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, key_padding: Tensor | None = None) -> Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        # key_padding: [B, N] True where a token is padding; it takes no attention (a sequence
        # that is all padding attends everywhere instead of producing NaN)
        mask = None
        if key_padding is not None:
            key_padding = key_padding & ~key_padding.all(1, keepdim=True)
            mask = ~key_padding[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """Pre-norm Transformer block: ``x + attn(ln(x))``, then ``x + mlp(ln(x))``."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: Tensor, key_padding: Tensor | None = None) -> Tensor:
        x = x + self.attn(self.norm1(x), key_padding)
        return x + self.mlp(self.norm2(x))


def init_transformer(module: nn.Module) -> None:
    """MAE's initialisation: Xavier-uniform linear weights, zero biases, unit LayerNorms."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class ViT(nn.Module):
    """A Vision Transformer mapping ``[B, C, H, W]`` images to ``[B, out_dim]`` features.

    Args:
        image_size: side of the square images the position grid is laid out for.
        patch_size: side ``p`` of the patches; ``image_size`` must be divisible by it.
        in_channels: image channels ``C``.
        dim, depth, heads, mlp_ratio: width, number of blocks, attention heads, MLP expansion.
        pool: ``"cls"`` (the class token's output, as DINO and MoCo v3) or ``"mean"`` (mean of
            the patch tokens, as MAE's fine-tuning).

    Images of another size (DINO's local crops) work: their grid gets position embeddings
    spanning the same range as the trained grid (see :func:`sincos_pos_embed`).
    """

    def __init__(
        self,
        image_size: int = 224,
        patch_size: int = 16,
        in_channels: int = 3,
        dim: int = 192,
        depth: int = 12,
        heads: int = 3,
        mlp_ratio: float = 4.0,
        pool: str = "cls",
    ) -> None:
        super().__init__()
        for name, v in (
            ("image_size", image_size),
            ("patch_size", patch_size),
            ("in_channels", in_channels),
            ("dim", dim),
            ("depth", depth),
            ("heads", heads),
        ):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name}: expected a positive int, got {v!r}")
        if image_size % patch_size:
            raise ValueError(
                f"image_size: {image_size} is not divisible by patch_size {patch_size}"
            )
        if pool not in ("cls", "mean"):
            raise ValueError(f"pool: expected 'cls' or 'mean', got {pool!r}")
        self.image_size, self.patch_size, self.in_channels = image_size, patch_size, in_channels
        self.grid = image_size // patch_size
        self.num_patches = self.grid * self.grid
        self.out_dim = dim
        self.pool = pool
        self.patch_embed = nn.Linear(patch_size * patch_size * in_channels, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.register_buffer(
            "pos_embed", sincos_pos_embed(dim, self.grid, self.grid), persistent=False
        )
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        init_transformer(self)
        # MAE initialises the patch projection as the flattened convolution it replaces
        w = self.patch_embed.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.normal_(self.cls_token, std=0.02)

    pos_embed: Tensor

    def _positions(self, rows: int, cols: int, like: Tensor) -> Tensor:
        if (rows, cols) == (self.grid, self.grid):
            pos = self.pos_embed
        else:
            scale = ((self.grid - 1) / max(rows - 1, 1), (self.grid - 1) / max(cols - 1, 1))
            pos = sincos_pos_embed(self.out_dim, rows, cols, scale).to(like.device)
        return pos.to(like.dtype)

    def _check(self, x: Tensor) -> tuple[int, int]:
        if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[1] != self.in_channels:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x: expected [B, {self.in_channels}, H, W] images, got {shape}")
        h, w = x.shape[2], x.shape[3]
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(f"x: {h}x{w} is not divisible by patch_size {self.patch_size}")
        return h // self.patch_size, w // self.patch_size

    def forward_tokens(
        self,
        x: Tensor,
        mask_ratio: float = 0.0,
        *,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, MaskingResult | None]:
        """MAE's ``forward_encoder``: the normalised tokens ``[B, 1 + K, dim]`` (class token
        first) and, when ``mask_ratio > 0``, the :class:`~pyssl.ops.MaskingResult` of the
        masking (``mask``, ``ids_keep``, ``ids_restore`` for the decoder; ``K = int(L * (1 -
        mask_ratio))``, else ``K = L``).

        The mask is drawn by :func:`pyssl.ops.random_masking` (MAE's law; ``noise`` or
        ``generator`` fix it) over the position embeddings, and only the kept patches are cut
        out and embedded (:func:`pyssl.ops.gather_patches`): the tokens equal MAE's embed,
        add positions, then mask, without embedding the removed patches.
        """
        rows, cols = self._check(x)
        pos = self._positions(rows, cols, x)
        b = x.shape[0]
        masking = None
        if mask_ratio > 0:
            masking = random_masking(
                pos.expand(b, -1, -1), mask_ratio, noise=noise, generator=generator
            )
            tokens = self.patch_embed(gather_patches(x, masking.ids_keep, self.patch_size))
            tokens = tokens + masking.visible
        else:
            tokens = self.patch_embed(patchify(x, self.patch_size)) + pos
        tokens = torch.cat([self.cls_token.expand(b, -1, -1).to(tokens.dtype), tokens], 1)
        for blk in self.blocks:
            tokens = blk(tokens)
        return self.norm(tokens), masking

    def forward(self, x: Tensor) -> Tensor:
        """Pooled features ``[B, out_dim]``: the class token or the mean patch token."""
        tokens, _ = self.forward_tokens(x)
        return tokens[:, 0] if self.pool == "cls" else tokens[:, 1:].mean(1)


def vit_tiny(
    image_size: int = 224, patch_size: int = 16, in_channels: int = 3, **kw: object
) -> ViT:
    """ViT-Ti/16 (DeiT): width 192, 12 blocks, 3 heads; 5.5 M parameters at 224×224."""
    return ViT(image_size, patch_size, in_channels, 192, 12, 3, **kw)  # type: ignore[arg-type]


def vit_small(
    image_size: int = 224, patch_size: int = 16, in_channels: int = 3, **kw: object
) -> ViT:
    """ViT-S/16 (DeiT, DINO): width 384, 12 blocks, 6 heads; 21.7 M parameters at 224×224."""
    return ViT(image_size, patch_size, in_channels, 384, 12, 6, **kw)  # type: ignore[arg-type]


def vit_micro(image_size: int = 32, patch_size: int = 4, in_channels: int = 3, **kw: object) -> ViT:
    """A ViT for 32×32 digit images: patch 4 (an 8×8 grid), width 128, 6 blocks, 4 heads;
    1.2 M parameters."""
    return ViT(image_size, patch_size, in_channels, 128, 6, 4, **kw)  # type: ignore[arg-type]
