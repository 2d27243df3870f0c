"""Self-supervised methods: each an :class:`SSLMethod` holding backbone, heads, teacher or
momentum copy where it has one, augmentation recipe and loss.

``build(name, ...)`` makes one with its defaults scaled to small data (each class's docstring
names the published value and the one used here); :data:`METHODS` maps names to classes.
"""

from __future__ import annotations

import inspect

from torch import nn

from pyssl.methods.base import SSLMethod
from pyssl.methods.byol import BYOL, SimSiam
from pyssl.methods.colorization import Colorization
from pyssl.methods.dino import DINO, DINOHead
from pyssl.methods.mae import MAE
from pyssl.methods.mlm import MLM
from pyssl.methods.moco import MoCoV2, MoCoV3
from pyssl.methods.pretext import Jigsaw, RotNet
from pyssl.methods.redundancy import BarlowTwins, VICReg
from pyssl.methods.simclr import SimCLR
from pyssl.methods.ts2vec import TS2Vec

METHODS: dict[str, type[SSLMethod]] = {
    cls.name: cls
    for cls in (
        SimCLR,
        MoCoV2,
        MoCoV3,
        BYOL,
        SimSiam,
        BarlowTwins,
        VICReg,
        DINO,
        MAE,
        MLM,
        RotNet,
        Jigsaw,
        TS2Vec,
        Colorization,
    )
}
#: the options of :class:`~pyssl.models.TextEncoder` that ``build("mlm", ...)`` accepts
TEXT_ENCODER_OPTIONS = ("vocab_size", "max_len", "dim", "depth", "heads", "pad_token_id")


def default_backbone(name: str, image_size: int = 32, in_channels: int = 3) -> nn.Module:
    """The backbone :func:`build` uses when none is given: for images up to 64 pixels
    :func:`~pyssl.models.resnet_digits` (MAE: :func:`~pyssl.models.vit_micro`, patch 4), above
    that :func:`~pyssl.models.resnet18_cifar` (MAE: :func:`~pyssl.models.vit_tiny`, patch 16);
    for TS2Vec (series) :class:`~pyssl.models.tcn.TSEncoder` over ``in_channels``."""
    from pyssl import models

    if name == "ts2vec":
        from pyssl.methods.ts2vec import default_encoder

        return default_encoder(in_channels)
    if name == "mae":
        patch = 4 if image_size <= 64 else 16
        if image_size % patch:
            raise ValueError(f"image_size: MAE's ViT needs a multiple of {patch}, got {image_size}")
        make = models.vit_micro if image_size <= 64 else models.vit_tiny
        return make(image_size, patch, in_channels)
    if image_size <= 64:
        return models.resnet_digits(in_channels)
    return models.resnet18_cifar(in_channels)


def build(
    name: str,
    *,
    backbone: nn.Module | None = None,
    image_size: int = 32,
    in_channels: int = 3,
    **overrides: object,
) -> SSLMethod:
    """Makes method ``name`` (a key of :data:`METHODS`).

    Args:
        backbone: the encoder; by default :func:`default_backbone` for images. For ``"mlm"``
            without a backbone, ``vocab_size`` (and optionally ``max_len``, ``pad_token_id``)
            in ``overrides`` size a :class:`~pyssl.models.TextEncoder` (any of
            :data:`TEXT_ENCODER_OPTIONS`).
        image_size, in_channels: the images the default backbone takes.
        overrides: keyword arguments of the method's class (e.g. ``temperature=0.2``).
    """
    if name not in METHODS:
        raise ValueError(f"name: unknown method {name!r}; expected one of {sorted(METHODS)}")
    cls = METHODS[name]
    if not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size: expected a positive int, got {image_size!r}")
    if not isinstance(in_channels, int) or in_channels < 1:
        raise ValueError(f"in_channels: expected a positive int, got {in_channels!r}")
    if backbone is None and name == "mlm":
        from pyssl.models.text import TextEncoder

        text_opts = {k: overrides.pop(k) for k in TEXT_ENCODER_OPTIONS if k in overrides}
        if "vocab_size" not in text_opts:
            raise TypeError("mlm: without a backbone, give vocab_size (and mask_token_id)")
        backbone = TextEncoder(**text_opts)  # type: ignore[arg-type]
    if backbone is None:
        backbone = default_backbone(name, image_size, in_channels)
    if not isinstance(backbone, nn.Module) or not isinstance(
        getattr(backbone, "out_dim", None), int
    ):
        raise TypeError("backbone: expected an nn.Module with an int out_dim")
    allowed = set(inspect.signature(cls.__init__).parameters) - {"self", "encoder"}
    unknown = sorted(set(overrides) - allowed)
    if unknown:
        raise TypeError(f"{name}: unknown option(s) {unknown}; expected some of {sorted(allowed)}")
    return cls(backbone, **overrides)  # type: ignore[arg-type]


__all__ = [
    "BYOL",
    "DINO",
    "MAE",
    "METHODS",
    "MLM",
    "TEXT_ENCODER_OPTIONS",
    "BarlowTwins",
    "Colorization",
    "DINOHead",
    "Jigsaw",
    "MoCoV2",
    "MoCoV3",
    "RotNet",
    "SSLMethod",
    "SimCLR",
    "SimSiam",
    "TS2Vec",
    "VICReg",
    "build",
    "default_backbone",
]
