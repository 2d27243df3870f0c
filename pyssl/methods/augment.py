"""Each method's :mod:`pyssl.augment` recipe with the published parameters scaled to the image
size.

Images of 64 pixels or less (CIFAR, the embedded digits) get the small-image variants the
papers' CIFAR experiments use: no Gaussian blur (SimCLR appendix B.9: at 32 pixels a 3-pixel
kernel only smears the image) and crops of at least 20% of the image (a crop of 8% of a 32×32
digit holds too little of it). One-channel images are read as gray, put through the RGB recipe
with a gray normalisation (whose three channels then stay equal: jitter of saturation and hue
and grayscale conversion leave gray pixels unchanged) and returned with one channel.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from pyssl import augment as recipes

Augment = Callable[..., list[Tensor]]

SMALL = 64  # images up to this side get the small-image variants
#: the gray normalisation: the mean of ImageNet's per-channel statistics
GRAY_MEAN = (0.449,) * 3
GRAY_STD = (0.226,) * 3


class GrayViews:
    """Adapts an RGB recipe to one-channel images: uint8 ``[B, H, W]``, ``[B, H, W, 1]`` or
    ``[B, 1, H, W]`` in, one-channel views ``[B, 1, S, S]`` out (RGB input is passed through)."""

    def __init__(self, recipe: recipes.Augment) -> None:
        self.recipe = recipe

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> list[Tensor]:
        if isinstance(images, Tensor):
            if images.dim() == 3:
                images = images.unsqueeze(1)
            if images.dim() == 4 and images.shape[1] == 1:
                images = images.expand(-1, 3, -1, -1)
            elif images.dim() == 4 and images.shape[-1] == 1:
                images = images.expand(-1, -1, -1, 3)
        return [v[:, :1] for v in self.recipe(images, generator=generator)]

    def __repr__(self) -> str:
        return f"GrayViews({self.recipe!r})"


def _finish(recipe: recipes.Augment, channels: int) -> Augment:
    return GrayViews(recipe) if channels == 1 else recipe


def _norm(channels: int) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    return (GRAY_MEAN, GRAY_STD) if channels == 1 else (recipes.IMAGENET_MEAN, recipes.IMAGENET_STD)


def _check(image_size: int, channels: int) -> None:
    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 1:
        raise ValueError(f"image_size: expected a positive int, got {image_size!r}")
    if channels not in (1, 3):
        raise ValueError(f"channels: the recipes make 1- or 3-channel views, got {channels!r}")


def simclr_augment(image_size: int, channels: int, *, moco: bool = False) -> Augment:
    """SimCLR's views (:class:`~pyssl.augment.SimCLRAugment`), or with ``moco`` MoCo v2's
    (the same steps with jitter 0.4/0.4/0.4/0.1 and crop scale (0.2, 1)); SimSiam uses MoCo
    v2's. Small images: jitter strength 0.5 (0.4/0.4/0.4/0.1, SimCLR's CIFAR value), crop scale
    (0.2, 1), no blur."""
    _check(image_size, channels)
    small = image_size <= SMALL
    s = 0.5 if small or moco else 1.0
    return _finish(
        recipes.SimCLRAugment(
            image_size,
            scale=(0.2, 1.0) if small or moco else (0.08, 1.0),
            brightness=0.8 * s,
            contrast=0.8 * s,
            saturation=0.8 * s,
            hue=0.2 * s,
            blur_p=0.0 if small else 0.5,
            mean=_norm(channels)[0],
            std=_norm(channels)[1],
        ),
        channels,
    )


def byol_augment(image_size: int, channels: int) -> Augment:
    """BYOL's two asymmetric views (:class:`~pyssl.augment.BYOLAugment`; also MoCo v3's,
    Barlow Twins' and VICReg's recipe). Small images: crop scale (0.2, 1), no blur (solarize
    on the second view kept)."""
    _check(image_size, channels)
    small = image_size <= SMALL
    return _finish(
        recipes.BYOLAugment(
            image_size,
            scale=(0.2, 1.0) if small else (0.08, 1.0),
            blur_p=(0.0, 0.0) if small else (1.0, 0.1),
            mean=_norm(channels)[0],
            std=_norm(channels)[1],
        ),
        channels,
    )


def dino_local_size(image_size: int) -> int:
    """DINO's local crop side, 96/224 of the global one, rounded to a multiple of 8 (so ViT
    patches of 4 and 8 tile it; 96 at 224, 16 at 32)."""
    return max(8, round(image_size * 96 / 224 / 8) * 8)


def dino_augment(image_size: int, channels: int) -> Augment:
    """DINO's multi-crop (:class:`~pyssl.augment.DINOAugment`): 2 global crops at
    ``image_size`` (scale (0.4, 1)) and local crops at :func:`dino_local_size` (scale
    (0.05, 0.4)). Published: 8 local crops (10 in the paper's best runs); small images: 6
    local crops, no blur."""
    _check(image_size, channels)
    small = image_size <= SMALL
    return _finish(
        recipes.DINOAugment(
            image_size,
            dino_local_size(image_size),
            local_crops_number=6 if small else 8,
            global_blur_p=(0.0, 0.0) if small else (1.0, 0.1),
            local_blur_p=0.0 if small else 0.5,
            mean=_norm(channels)[0],
            std=_norm(channels)[1],
        ),
        channels,
    )


def mae_augment(image_size: int, channels: int) -> Augment:
    """MAE's one view (:class:`~pyssl.augment.MAEAugment`): crop scale (0.2, 1), flip; no
    change for small images."""
    _check(image_size, channels)
    mean, std = _norm(channels)
    return _finish(recipes.MAEAugment(image_size, mean=mean, std=std), channels)
