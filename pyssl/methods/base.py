"""The interface every self-supervised method implements, and the heads and schedules they share.

A method is a module that holds its backbone (``encoder``), its heads, its teacher or momentum
copy where it has one, and its loss. The training loop only needs :class:`SSLMethod`'s members:

- ``loss(views)`` — the scalar loss of one batch;
- ``on_step_end(step, total_steps)`` — after each optimiser step: momentum (EMA) updates,
  queue pushes, centring, temperature schedules;
- ``default_augment(image_size, channels)`` — the method's :mod:`pyssl.augment` recipe, scaled
  to the images, which turns a uint8 batch into the list of views ``loss`` takes.

``forward`` is ``loss`` so that a ``DistributedDataParallel`` wrapper can drive the method.
Parameters a method never trains by gradient (teachers, momentum encoders) have
``requires_grad=False``: build the optimiser over ``[p for p in m.parameters() if
p.requires_grad]``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn


class SSLMethod(nn.Module):
    """Base class of the methods in :mod:`pyssl.methods`.

    Attributes:
        name: the method's name in :data:`pyssl.methods.METHODS` (``"simclr"``, ...).
        encoder: the backbone, input -> features ``[B, encoder.out_dim]``: what evaluation
            probes and fine-tunes.
        modality: ``"image"`` or ``"text"``.
    """

    name: str = ""
    modality: str = "image"
    encoder: nn.Module

    #: number of views ``loss`` takes for image methods (DINO: at least 2)
    num_views: int = 2

    def loss(self, views: list[Tensor]) -> Tensor:
        """The scalar loss of one batch.

        Args:
            views: image methods: a list of augmented float views ``[B, C, H, W]`` of the same
                ``B`` images (two for most methods; DINO: 2 global crops then the local ones;
                MAE: one view). Text methods: ``[input_ids [B, T]]`` (masked inside).
        """
        raise NotImplementedError

    def forward(self, views: list[Tensor]) -> Tensor:
        return self.loss(views)

    def on_step_end(self, step: int, total_steps: int) -> None:
        """Called after optimiser step ``step`` (0-based) of ``total_steps``: momentum updates,
        queue pushes, centring and temperature schedules. The base method does nothing."""

    def default_augment(self, image_size: int, channels: int) -> Callable[..., list[Tensor]]:
        """The method's augmentation recipe (see :mod:`pyssl.augment`), scaled to
        ``image_size``: ``aug(images_uint8, generator=g) -> list[Tensor]`` of views for
        :meth:`loss`, each ``[B, channels, image_size, image_size]`` (DINO's local crops
        smaller)."""
        raise NotImplementedError(
            f"{self.name}: a {self.modality} method has no image augmentation"
        )

    # ------------------------------------------------------------------------------ helpers

    def _check_views(
        self, views: Sequence[Tensor], *, at_least: bool = False, same_shape: bool = False
    ) -> list[Tensor]:
        if isinstance(views, Tensor) or not isinstance(views, (list, tuple)):
            raise TypeError(f"views: expected a list of tensors, got {type(views).__name__}")
        want = self.num_views
        if len(views) < want if at_least else len(views) != want:
            more = "at least " if at_least else ""
            raise ValueError(f"views: {self.name} takes {more}{want} views, got {len(views)}")
        for i, v in enumerate(views):
            if not isinstance(v, Tensor):
                raise TypeError(f"views[{i}]: expected a tensor, got {type(v).__name__}")
            if self.modality == "image" and (v.dim() != 4 or not v.is_floating_point()):
                raise ValueError(
                    f"views[{i}]: expected a float [B, C, H, W] image batch, got "
                    f"{v.dtype} of shape {tuple(v.shape)}"
                )
            if v.shape[0] != views[0].shape[0]:
                raise ValueError(f"views[{i}]: batch {v.shape[0]} differs from views[0]'s")
            if same_shape and v.shape != views[0].shape:
                raise ValueError(
                    f"views[{i}]: shape {tuple(v.shape)} differs from views[0]'s "
                    f"{tuple(views[0].shape)}"
                )
        return list(views)


def mlp(
    dims: Sequence[int],
    *,
    batch_norm: bool = True,
    last_batch_norm: bool = False,
    last_affine: bool = True,
    bias: bool = True,
) -> nn.Sequential:
    """Linear layers through ``dims`` (``[in, hidden..., out]``), each hidden layer followed by
    batch norm (when ``batch_norm``) and ReLU; the last layer optionally by a batch norm
    (``last_affine=False`` gives SimSiam's and MoCo v3's parameter-free output norm)."""
    layers: list[nn.Module] = []
    for i in range(len(dims) - 1):
        last = i == len(dims) - 2
        layers.append(nn.Linear(dims[i], dims[i + 1], bias=bias and not (batch_norm and not last)))
        if not last:
            if batch_norm:
                layers.append(nn.BatchNorm1d(dims[i + 1]))
            layers.append(nn.ReLU(inplace=True))
        elif last_batch_norm:
            layers.append(nn.BatchNorm1d(dims[i + 1], affine=last_affine))
    return nn.Sequential(*layers)


def frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy with ``requires_grad=False`` everywhere (a teacher or momentum encoder)."""
    twin = copy.deepcopy(module)
    for p in twin.parameters():
        p.requires_grad_(False)
    return twin


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """``target = momentum * target + (1 - momentum) * online`` over the parameters, as MoCo's
    ``_momentum_update_key_encoder``; buffers (batch-norm statistics) are left to the target's
    own forward passes, as there."""
    t_params: list[Tensor] = list(target.parameters())
    o_params: list[Tensor] = [p.detach() for p in online.parameters()]
    if len(t_params) != len(o_params):
        raise ValueError("target and online modules differ in their parameters")
    torch._foreach_lerp_(t_params, o_params, 1.0 - momentum)


def cosine_momentum(base: float, step: int, total_steps: int) -> float:
    """BYOL's schedule: ``1 - (1 - base) * (cos(pi * step / total_steps) + 1) / 2``, rising
    from ``base`` at step 0 to 1 at the end."""
    if total_steps <= 0:
        return base
    frac = min(max(step / total_steps, 0.0), 1.0)
    return 1.0 - (1.0 - base) * (math.cos(math.pi * frac) + 1.0) / 2.0


def feature_dim(encoder: nn.Module) -> int:
    """The backbone's ``out_dim`` (the width of its features), checked."""
    d = getattr(encoder, "out_dim", None)
    if not isinstance(encoder, nn.Module) or not isinstance(d, int) or d < 1:
        raise TypeError("encoder: expected an nn.Module with a positive int out_dim")
    return d


def gathering(wanted: bool) -> bool:
    """Whether a contrastive loss should gather negatives across processes: when asked for and
    torch.distributed is running with more than one process."""
    from pyssl import distributed

    return wanted and distributed.is_active()


def check_positive(name: str, value: object, *, integer: bool = False) -> None:
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok or not value > 0:  # type: ignore[operator]
        kind = "int" if integer else "number"
        raise ValueError(f"{name}: expected a positive {kind}, got {value!r}")


def check_unit(name: str, value: object, *, closed: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}: expected a float, got {type(value).__name__}")
    if not (0.0 <= value <= 1.0 if closed else 0.0 <= value < 1.0):
        raise ValueError(f"{name}: expected a value in [0, 1{']' if closed else ')'}, got {value}")
