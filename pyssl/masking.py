"""Masking as modules for drop-in use in masked-image-modelling models."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pyssl.ops.masking import MaskingResult, random_masking


class RandomMasking(nn.Module):
    """MAE's per-sample random masking as a module (see :func:`pyssl.ops.random_masking`).

    In training mode it removes ``mask_ratio`` of the tokens; in eval mode it keeps all of
    them (``mask_ratio`` 0, with the identity order), unless ``mask_in_eval`` is set.

    Example (inside an MAE encoder)::

        self.masking = RandomMasking(0.75)
        ...
        x = x + self.pos_embed[:, 1:, :]
        x, mask, ids_keep, ids_restore = self.masking(x)
    """

    def __init__(self, mask_ratio: float = 0.75, *, mask_in_eval: bool = False) -> None:
        super().__init__()
        if not 0.0 <= mask_ratio < 1.0:
            raise ValueError(f"mask_ratio: expected a value in [0, 1), got {mask_ratio}")
        self.mask_ratio = mask_ratio
        self.mask_in_eval = mask_in_eval

    def forward(
        self, x: Tensor, *, noise: Tensor | None = None, generator: torch.Generator | None = None
    ) -> MaskingResult:
        if self.training or self.mask_in_eval:
            return random_masking(x, self.mask_ratio, noise=noise, generator=generator)
        b, length, _ = x.shape
        order = torch.arange(length, device=x.device).expand(b, length)
        return random_masking(x, 0.0, noise=order.to(x.dtype))

    def extra_repr(self) -> str:
        return f"mask_ratio={self.mask_ratio}"


def __getattr__(name: str) -> object:
    # The numba samplers load on first use: importing numba costs ~0.3 s.
    if name in _SAMPLERS:
        from pyssl import samplers

        return getattr(samplers, name)
    raise AttributeError(f"module 'pyssl.masking' has no attribute {name!r}")


_SAMPLERS = ("beit_masks", "simmim_masks", "tube_masks", "ijepa_masks", "data2vec_masks")
