"""TS2Vec's encoder: an input projection and a stack of dilated convolution blocks.

Anchor: TS2Vec (Yue et al. 2022, "TS2Vec: Towards Universal Representation of Time Series",
AAAI), github.com/zhihanyue/ts2vec ``models/encoder.py`` ``TSEncoder`` and
``models/dilated_conv.py`` (``SamePadConv``, ``ConvBlock``, ``DilatedConvEncoder``): a per-timestamp
``Linear(C, hidden)``, then ``depth`` blocks of width ``hidden`` and one final block to
``out_dim``, block ``i`` with dilation ``2**i``, each ``GELU -> conv(k=3) -> GELU -> conv(k=3)``
plus a residual (a 1x1 conv where the width changes and on the final block), then dropout 0.1
on the representations. The timestamp mask is applied to the input projection's output.

Defaults, published -> here: hidden 64 -> 64; depth 10 -> 6 (blocks with dilation 1..64: the
receptive field, 509 steps, already spans MNIST-1D's 40 points many times, and the 2-core budget
goes further); output 320 -> 320. Deliberate differences: input ``[B, C, T]`` (torch's conv
layout; TS2Vec takes ``[B, T, C]``), no NaN handling (TS2Vec zeroes NaN timestamps; here a
NaN input is the caller's to clean), and the mask is an argument (a bool tensor) rather than
drawn inside, so the method draws it from its own generator.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class SamePadConv(nn.Module):
    """``Conv1d`` padded so that the output keeps the input's length (TS2Vec's
    ``SamePadConv``: pad ``receptive_field // 2``, drop one trailing step when it is even)."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, dilation: int = 1) -> None:
        super().__init__()
        field = (kernel_size - 1) * dilation + 1
        self.conv = nn.Conv1d(in_ch, out_ch, kernel_size, padding=field // 2, dilation=dilation)
        self.remove = 1 if field % 2 == 0 else 0

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv(x)
        return out[:, :, : -self.remove] if self.remove else out


class ConvBlock(nn.Module):
    """``conv2(gelu(conv1(gelu(x)))) + residual(x)`` (TS2Vec's ``ConvBlock``)."""

    def __init__(
        self, in_ch: int, out_ch: int, kernel_size: int, dilation: int, final: bool = False
    ) -> None:
        super().__init__()
        self.conv1 = SamePadConv(in_ch, out_ch, kernel_size, dilation)
        self.conv2 = SamePadConv(out_ch, out_ch, kernel_size, dilation)
        self.projector = nn.Conv1d(in_ch, out_ch, 1) if in_ch != out_ch or final else None

    def forward(self, x: Tensor) -> Tensor:
        residual = x if self.projector is None else self.projector(x)
        return self.conv2(F.gelu(self.conv1(F.gelu(x)))) + residual


class TSEncoder(nn.Module):
    """TS2Vec's ``TSEncoder``.

    ``series(x, mask)``: ``x`` float ``[B, C, T]`` -> per-timestamp representations
    ``[B, T, out_dim]``; ``mask`` an optional bool ``[B, T]`` (False: that timestamp's input
    projection is zeroed, TS2Vec's timestamp masking). ``forward(x)``: the instance-level
    features ``[B, out_dim]``, the max over time of ``series(x)`` (TS2Vec's
    ``encode(..., encoding_window='full_series')``): what a linear probe reads.

    Args:
        in_channels: ``C``. out_dim: representation width (published 320).
        hidden: block width (published 64). depth: blocks before the final one (published 10).
        kernel_size: 3 as published. dropout: on the representations, 0.1 as published.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_dim: int = 320,
        *,
        hidden: int = 64,
        depth: int = 6,
        kernel_size: int = 3,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        for name, v in (
            ("in_channels", in_channels),
            ("out_dim", out_dim),
            ("hidden", hidden),
            ("kernel_size", kernel_size),
        ):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: expected a positive int, got {v!r}")
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
            raise ValueError(f"depth: expected an int >= 0, got {depth!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout: expected a value in [0, 1), got {dropout!r}")
        self.in_channels = in_channels
        self.out_dim = out_dim
        self.input_fc = nn.Linear(in_channels, hidden)
        widths = [hidden] * depth + [out_dim]
        self.blocks = nn.Sequential(
            *[
                ConvBlock(
                    widths[i - 1] if i > 0 else hidden,
                    widths[i],
                    kernel_size,
                    dilation=2**i,
                    final=i == len(widths) - 1,
                )
                for i in range(len(widths))
            ]
        )
        self.repr_dropout = nn.Dropout(dropout)

    def _check(self, x: object) -> Tensor:
        if not isinstance(x, Tensor):
            raise TypeError(f"x: expected a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 3 or x.shape[1] != self.in_channels or not x.is_floating_point():
            raise ValueError(
                f"x: expected a float [B, {self.in_channels}, T] series batch, got {x.dtype} "
                f"of shape {tuple(x.shape)}"
            )
        return x

    def series(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Per-timestamp representations ``[B, T, out_dim]`` of ``x`` ``[B, C, T]``."""
        x = self._check(x)
        h = self.input_fc(x.transpose(1, 2))  # B x T x hidden
        if mask is not None:
            if mask.dtype != torch.bool or mask.shape != h.shape[:2]:
                raise ValueError(
                    f"mask: expected a bool [{h.shape[0]}, {h.shape[1]}] tensor, got "
                    f"{mask.dtype} of shape {tuple(mask.shape)}"
                )
            h = h * mask.unsqueeze(-1).to(h.dtype)
        h = self.blocks(h.transpose(1, 2))  # B x out x T
        return self.repr_dropout(h).transpose(1, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.series(x).amax(dim=1)
