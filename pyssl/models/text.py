"""A small Transformer encoder for token ids (BERT-style), with a language-model head tied to
the token embedding.

Anchor: Hugging Face's ``BertModel`` + ``BertLMPredictionHead`` in their essentials — learned
token and position embeddings, Transformer blocks, and an LM head ``LayerNorm(GELU(Linear(h)))``
whose output projection is the token-embedding matrix (weight tying) plus a bias. Deliberate
differences: pre-norm blocks (as GPT-2 and ViT; they train without warm-up tricks at small
scale) and no token-type embeddings.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pyssl.models.vit import Block, init_transformer


class TextEncoder(nn.Module):
    """Maps token ids ``[B, T]`` (int64) to features ``[B, out_dim]``.

    Args:
        vocab_size: number of token ids.
        max_len: longest sequence (learned position embeddings).
        dim, depth, heads, mlp_ratio: width, blocks, attention heads, MLP expansion.
        pad_token_id: when given, positions holding it take no attention and are left out of the
            mean pooling.

    ``forward`` mean-pools the final tokens over the non-padding positions;
    :meth:`forward_tokens` returns the tokens ``[B, T, dim]``; :meth:`lm_hidden` applies the LM
    head's transform, whose output is scored against :attr:`lm_weight` (the tied token
    embedding ``[vocab_size, dim]``) plus :attr:`lm_bias` — the form
    :func:`pyssl.ops.masked_lm_loss` takes; :meth:`lm_logits` gives the full logits.
    """

    def __init__(
        self,
        vocab_size: int,
        max_len: int = 128,
        dim: int = 128,
        depth: int = 4,
        heads: int = 4,
        mlp_ratio: float = 4.0,
        pad_token_id: int | None = None,
    ) -> None:
        super().__init__()
        for name, v in (
            ("vocab_size", vocab_size),
            ("max_len", max_len),
            ("dim", dim),
            ("depth", depth),
            ("heads", heads),
        ):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name}: expected a positive int, got {v!r}")
        if pad_token_id is not None and not 0 <= pad_token_id < vocab_size:
            raise ValueError(f"pad_token_id: {pad_token_id} is outside [0, {vocab_size})")
        self.vocab_size, self.max_len, self.pad_token_id = vocab_size, max_len, pad_token_id
        self.out_dim = dim
        self.tok_embed = nn.Embedding(vocab_size, dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, max_len, dim))
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.lm_transform = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.LayerNorm(dim))
        self.lm_bias = nn.Parameter(torch.zeros(vocab_size))
        init_transformer(self)
        # BERT's initialisation of the embeddings: normal, std 0.02
        nn.init.normal_(self.tok_embed.weight, std=0.02)
        nn.init.normal_(self.pos_embed, std=0.02)

    @property
    def lm_weight(self) -> Tensor:
        """The LM head's output projection ``[vocab_size, dim]``: the token embedding (tied)."""
        return self.tok_embed.weight

    def padding(self, ids: Tensor) -> Tensor | None:
        """``[B, T]`` bool, True at padding positions (None without a ``pad_token_id``)."""
        return None if self.pad_token_id is None else ids == self.pad_token_id

    def forward_tokens(self, ids: Tensor) -> Tensor:
        """Final normalised tokens ``[B, T, dim]``."""
        if not isinstance(ids, Tensor) or ids.dim() != 2:
            shape = tuple(ids.shape) if isinstance(ids, Tensor) else type(ids).__name__
            raise ValueError(f"ids: expected [B, T] token ids, got {shape}")
        if ids.dtype != torch.int64:
            raise TypeError(f"ids: expected int64 token ids, got {ids.dtype}")
        if ids.shape[1] > self.max_len:
            raise ValueError(f"ids: length {ids.shape[1]} exceeds max_len {self.max_len}")
        x = self.tok_embed(ids) + self.pos_embed[:, : ids.shape[1]]
        pad = self.padding(ids)
        for blk in self.blocks:
            x = blk(x, pad)
        return self.norm(x)

    def forward(self, ids: Tensor) -> Tensor:
        """Mean of the final tokens over the non-padding positions: ``[B, out_dim]``."""
        x = self.forward_tokens(ids)
        pad = self.padding(ids)
        if pad is None:
            return x.mean(1)
        keep = (~pad).unsqueeze(-1).to(x.dtype)
        return (x * keep).sum(1) / keep.sum(1).clamp_min(1.0)

    def lm_hidden(self, tokens: Tensor) -> Tensor:
        """The LM head's transform of tokens ``[..., dim]`` (before the tied projection)."""
        return self.lm_transform(tokens)

    def lm_logits(self, tokens: Tensor) -> Tensor:
        """Full vocabulary logits ``[..., vocab_size]`` of tokens ``[..., dim]``."""
        return self.lm_hidden(tokens) @ self.lm_weight.T + self.lm_bias


def text_encoder_small(vocab_size: int, max_len: int = 128, **kw: object) -> TextEncoder:
    """Width 128, 4 blocks, 4 heads: about 0.8 M parameters plus ``128 * vocab_size`` for the
    (tied) embedding."""
    return TextEncoder(vocab_size, max_len, **kw)  # type: ignore[arg-type]
