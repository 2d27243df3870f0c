"""Each method's :mod:`pyssl.augment` recipe with the published parameters scaled to the image
size.

The recipes take uint8 batches and return normalised float views; the choices that depend on
the image size are made here and named in each function's docstring.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

Augment = Callable[..., list[Tensor]]


def _recipes():  # type: ignore[no-untyped-def]
    try:
        from pyssl import augment
    except ImportError as e:  # the augmentation family is built with the core
        raise ImportError(f"the method's default augmentation needs pyssl.augment: {e}") from e
    return augment


def simclr_augment(image_size: int, channels: int) -> Augment:
    """SimCLR's two views: random resized crop, flip, colour jitter (strength 1.0 on ImageNet,
    0.5 on CIFAR), grayscale 0.2, blur (ImageNet only). Images of 64 pixels or less get the
    CIFAR variant (appendix B.9: jitter strength 0.5, no blur) with crop scale (0.2, 1) instead
    of (0.08, 1): a crop of 8% of a 32×32 digit holds too little of it."""
    aug = _recipes()
    small = image_size <= 64
    s = 0.5 if small else 1.0
    return aug.SimCLRAugment(
        size=image_size,
        scale=(0.2, 1.0) if small else (0.08, 1.0),
        brightness=0.8 * s,
        contrast=0.8 * s,
        saturation=0.8 * s,
        hue=0.2 * s,
        blur_prob=0.0 if small else 0.5,
    )
