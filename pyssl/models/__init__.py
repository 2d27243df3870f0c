"""Compact backbones: each maps its input to features ``[B, out_dim]`` (``.out_dim``).

- :class:`ResNet` (CIFAR stem): :func:`resnet18_cifar`, :func:`resnet_digits`;
- :class:`ViT` with MAE's masked-encoder path on :mod:`pyssl.ops`: :func:`vit_tiny`,
  :func:`vit_small`, :func:`vit_micro` (32×32, patch 4);
- :class:`TextEncoder`: a Transformer over token ids with a tied LM head.
"""

from pyssl.models.resnet import BasicBlock, ResNet, resnet18_cifar, resnet_digits
from pyssl.models.text import TextEncoder, text_encoder_small
from pyssl.models.vit import Attention, Block, ViT, sincos_pos_embed, vit_micro, vit_small, vit_tiny

__all__ = [
    "Attention",
    "BasicBlock",
    "Block",
    "ResNet",
    "TextEncoder",
    "ViT",
    "resnet18_cifar",
    "resnet_digits",
    "sincos_pos_embed",
    "text_encoder_small",
    "vit_micro",
    "vit_small",
    "vit_tiny",
]
