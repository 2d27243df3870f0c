"""Classic pretext tasks: rotation prediction (RotNet) and jigsaw puzzles.

Anchors: Gidaris et al. 2018, "Unsupervised Representation Learning by Predicting Image
Rotations" (gidariss/FeatureLearningRotNet) and Noroozi & Favaro 2016, "Unsupervised Learning of
Visual Representations by Solving Jigsaw Puzzles". Both are classification over labels the data
makes itself: the rotation ``k`` of each image (:func:`pyssl.ops.rotations`), or the index of the
permutation its tiles were shuffled by (:func:`pyssl.ops.jigsaw_shuffle` over
:func:`pyssl.ops.jigsaw_permutations`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pyssl.methods.augment import mae_augment
from pyssl.methods.base import SSLMethod, check_positive, feature_dim, mlp
from pyssl.ops.pretext import jigsaw_permutations, jigsaw_shuffle, rotations


class RotNet(SSLMethod):
    """RotNet: ``loss([x])`` is the cross-entropy of predicting which of the four rotations
    (0, 90, 180, 270 degrees) each of ``rotations(x)``'s ``4B`` images is.

    Defaults, published -> here: the paper trains a Network-In-Network whose conv blocks feed a
    classifier; here any backbone with ``out_dim`` feeds an MLP head ``out_dim -> head_hidden ->
    4`` (BN, ReLU), so the backbone's pooled features are what a linear probe reads. All four
    rotations of every image are in the same batch (the paper's best setting). Views: MAE's
    recipe (random resized crop, scale (0.2, 1), flip) — the paper uses plain crops and flips.

    Args:
        encoder: backbone with ``out_dim``; takes square images.
        head_hidden: hidden width of the rotation head (default: the encoder's width).
    """

    name = "rotnet"
    num_views = 1

    def __init__(self, encoder: nn.Module, *, head_hidden: int | None = None) -> None:
        super().__init__()
        d = feature_dim(encoder)
        hidden = head_hidden or d
        check_positive("head_hidden", hidden, integer=True)
        self.encoder = encoder
        self.head = mlp([d, hidden, 4])

    def logits(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Rotation logits ``[4B, 4]`` of ``x [B, C, S, S]`` and their labels ``[4B]``."""
        views, labels = rotations(x)
        return self.head(self.encoder(views)), labels

    def loss(self, views: list[Tensor]) -> Tensor:
        (x,) = self._check_views(views)
        if x.shape[2] != x.shape[3]:
            raise ValueError(f"views[0]: RotNet needs square images, got {tuple(x.shape[2:])}")
        logits, labels = self.logits(x)
        return F.cross_entropy(logits.float(), labels)

    def default_augment(self, image_size: int, channels: int) -> Callable[..., list[Tensor]]:
        return mae_augment(image_size, channels)


class Jigsaw(SSLMethod):
    """Jigsaw puzzles: each image's ``grid x grid`` tiles are shuffled by one permutation drawn
    from a maximal-Hamming-distance set, and the network predicts which one.

    Defaults, published -> here: 3x3 tiles (kept); 1000 permutations -> 100 (the paper's table 3
    finds 100 nearly as good, and the small data here has few images per class); the paper's
    context-free network encodes the nine tiles separately and concatenates their features —
    here the shuffled tiles are laid out as one image (:func:`~pyssl.ops.jigsaw_shuffle`) and the
    backbone encodes it whole, so the features a probe reads are the same backbone's on whole
    images; the paper's gaps between tiles and per-tile jitter (against edge-continuity
    shortcuts) are left out. Images whose side is not a multiple of ``grid`` are cropped to the
    largest multiple, centred (32 -> 30 for the digits).

    Args:
        encoder: backbone with ``out_dim``.
        grid: tiles per side (2 or 3).
        num_permutations: size of the permutation set (classes).
        head_hidden: hidden width of the permutation head (default: the encoder's width).
        permutation_seed: seed of :func:`~pyssl.ops.jigsaw_permutations`'s first draw.

    ``generator`` (optional) draws the permutation of each image, for reproducible runs (the
    global generator otherwise).
    """

    name = "jigsaw"
    num_views = 1
    permutations: Tensor

    def __init__(
        self,
        encoder: nn.Module,
        *,
        grid: int = 3,
        num_permutations: int = 100,
        head_hidden: int | None = None,
        permutation_seed: int = 0,
    ) -> None:
        super().__init__()
        d = feature_dim(encoder)
        hidden = head_hidden or d
        check_positive("head_hidden", hidden, integer=True)
        self.encoder = encoder
        self.grid = grid
        # a buffer, so a checkpoint carries the exact set its head's classes index
        self.register_buffer(
            "permutations", jigsaw_permutations(num_permutations, grid, permutation_seed)
        )
        self.head = mlp([d, hidden, num_permutations])
        self.generator: torch.Generator | None = None

    def puzzle(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Shuffled images (cropped to a multiple of ``grid``) and their permutation indices."""
        s = x.shape[2]
        side = s - s % self.grid
        if side == 0:
            raise ValueError(f"views[0]: a {s}-pixel image has no {self.grid}x{self.grid} tiles")
        o = (s - side) // 2
        x = x[:, :, o : o + side, o : o + side]
        idx = torch.randint(len(self.permutations), (x.shape[0],), generator=self.generator)
        idx = idx.to(x.device)
        return jigsaw_shuffle(x, self.permutations[idx], self.grid), idx

    def loss(self, views: list[Tensor]) -> Tensor:
        (x,) = self._check_views(views)
        if x.shape[2] != x.shape[3]:
            raise ValueError(f"views[0]: Jigsaw needs square images, got {tuple(x.shape[2:])}")
        puzzles, idx = self.puzzle(x)
        return F.cross_entropy(self.head(self.encoder(puzzles)).float(), idx)

    def default_augment(self, image_size: int, channels: int) -> Callable[..., list[Tensor]]:
        return mae_augment(image_size, channels)
