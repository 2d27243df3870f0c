"""Pretext-task ops: RotNet's four rotations and jigsaw tile shuffles.

Anchors: Gidaris et al. 2018, "Unsupervised Representation Learning by Predicting Image
Rotations" (gidariss/FeatureLearningRotNet: each image's rotations by 0, 90, 180 and 270 degrees
kept together in the batch, labels 0..3), and Noroozi & Favaro 2016, "Unsupervised Learning of
Visual Representations by Solving Jigsaw Puzzles" (3x3 tiles, a permutation set chosen greedily
for maximal Hamming distance, Algorithm 1). CPU tensors run the C++ kernels, CUDA tensors the
Triton ones; the jigsaw shuffle is the masked-patch family's gather and scatter kernels (see
:func:`pyssl.ops.explain`).
"""

from __future__ import annotations

import itertools
import math
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

from pyssl.ops._backend import check_backend_arg, launch, resolve
from pyssl.ops.masking import _gather_patches, _scatter_patches
from pyssl.reference import pretext as ref

_FLOATS = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
_ROTATABLE = (torch.uint8, *_FLOATS)


def _check_square_images(imgs: object, dtypes: tuple[torch.dtype, ...]) -> Tensor:
    if not isinstance(imgs, Tensor):
        raise TypeError(f"imgs: expected a torch.Tensor, got {type(imgs).__name__}")
    if imgs.dim() != 4:
        raise ValueError(f"imgs: expected [B, C, S, S], got shape {tuple(imgs.shape)}")
    if imgs.dtype not in dtypes:
        names = "/".join(str(d).removeprefix("torch.") for d in dtypes)
        raise TypeError(f"imgs: expected a {names} tensor, got {imgs.dtype}")
    if imgs.shape[2] != imgs.shape[3]:
        raise ValueError(f"imgs: expected square images, got {imgs.shape[2]}x{imgs.shape[3]}")
    if imgs.shape[0] == 0:
        raise ValueError("imgs: empty batch")
    return imgs


# ------------------------------------------------------------------------------- rotations


@torch.library.custom_op("pyssl::rotations", mutates_args=())
def _rotations(imgs: Tensor, backend: str) -> Tensor:
    imgs = imgs.contiguous()
    if backend == "reference":
        return ref.rotations(imgs).contiguous()
    out = _rotations_fake(imgs, backend)
    launch("pretext", "rotations", backend, imgs, out)
    return out


@_rotations.register_fake
def _rotations_fake(imgs: Tensor, backend: str) -> Tensor:
    b, c, s, _ = imgs.shape
    return imgs.new_empty(b, 4, c, s, s)


@torch.library.custom_op("pyssl::rotations_backward", mutates_args=())
def _rotations_backward(grad_out: Tensor, backend: str) -> Tensor:
    grad_out = grad_out.contiguous()
    if backend == "reference":
        return ref.rotations_backward(grad_out).contiguous()
    grad = _rotations_backward_fake(grad_out, backend)
    launch("pretext", "rotations_backward", backend, grad_out, grad)
    return grad


@_rotations_backward.register_fake
def _rotations_backward_fake(grad_out: Tensor, backend: str) -> Tensor:
    b, _, c, s, _ = grad_out.shape
    return grad_out.new_empty(b, c, s, s)


def _rotations_setup(ctx, inputs, output):  # type: ignore[no-untyped-def]
    ctx.backend = inputs[1]


def _rotations_grad(ctx, grad):  # type: ignore[no-untyped-def]
    return _rotations_backward(grad, ctx.backend), None


_rotations.register_autograd(_rotations_grad, setup_context=_rotations_setup)


def rotations(imgs: Tensor, *, backend: str | None = None) -> tuple[Tensor, Tensor]:
    """RotNet's input: every image turned by 0, 90, 180 and 270 degrees, in one pass.

    Args:
        imgs: ``[B, C, S, S]`` square images, uint8 or float32/bfloat16/float16/float64.

    Returns:
        ``(views, labels)``: ``views [4B, C, S, S]`` where ``views[4b + k] = torch.rot90(imgs[b],
        k, dims=(-2, -1))`` (counter-clockwise quarter turns; each image's four rotations are
        adjacent, as FeatureLearningRotNet's loader builds its batches) and ``labels`` int64
        ``[4B]`` equal to ``k``. The views are a reshape of the kernel's one output, no other copy
        is made. Rotations are exact copies; the gradient to ``imgs`` is ``sum_k rot90(grad_k,
        -k)``, summed in float32 (float64 for float64) and rounded once.
    """
    check_backend_arg(backend)
    imgs = _check_square_images(imgs, _ROTATABLE)
    out = _rotations(imgs, resolve("rotations", imgs.device, backend))
    b, c, s, _ = imgs.shape
    labels = torch.arange(4, device=imgs.device).repeat(b)
    return out.view(4 * b, c, s, s), labels


# ---------------------------------------------------------------------------------- jigsaw


def _check_perms(perms: object, batch: int, tiles: int, device: torch.device) -> Tensor:
    if not isinstance(perms, Tensor):
        raise TypeError(f"perms: expected a torch.Tensor, got {type(perms).__name__}")
    if perms.dtype != torch.int64:
        raise TypeError(f"perms: expected int64, got {perms.dtype}")
    if tuple(perms.shape) != (batch, tiles):
        raise ValueError(f"perms: expected shape [{batch}, {tiles}], got {tuple(perms.shape)}")
    if perms.device != device:
        raise ValueError(f"perms: on {perms.device}, but imgs is on {device}")
    # one reduction (a device sync on CUDA) buys the guarantee that each row moves every tile
    # exactly once: a repeated index would silently duplicate a tile
    want = torch.arange(tiles, device=device).expand(batch, tiles)
    if not bool((perms.sort(dim=1).values == want).all()):
        raise ValueError(f"perms: every row must be a permutation of 0..{tiles - 1}")
    return perms


def jigsaw_shuffle(
    imgs: Tensor, perms: Tensor, grid: int = 3, *, backend: str | None = None
) -> Tensor:
    """Shuffles the ``grid x grid`` tiles of each image by its permutation.

    Args:
        imgs: ``[B, C, S, S]`` float images, ``S`` divisible by ``grid``.
        perms: int64 ``[B, grid**2]``, each row a permutation of the row-major tile indices
            (e.g. rows of :func:`jigsaw_permutations`).
        grid: tiles per side.

    Returns:
        ``[B, C, S, S]`` where tile position ``j`` of image ``b`` holds input tile ``perms[b,
        j]`` (Noroozi & Favaro feed the tiles in permuted order; here they are laid out as one
        image, so any image backbone takes the puzzle). ``jigsaw_shuffle(out,
        perms.argsort(1))`` restores the input. Runs as the masked-patch family's
        :func:`~pyssl.ops.gather_patches` (read each tile in permuted order) then its
        :func:`~pyssl.ops.unpatchify` kernel; differentiable through both.
    """
    check_backend_arg(backend)
    imgs = _check_square_images(imgs, _FLOATS)
    if not isinstance(grid, int) or isinstance(grid, bool) or grid < 1:
        raise ValueError(f"grid: expected a positive int, got {grid!r}")
    b, c, s, _ = imgs.shape
    if s % grid:
        raise ValueError(f"imgs: side {s} is not divisible by grid {grid}")
    perms = _check_perms(perms, b, grid * grid, imgs.device)
    tile = s // grid
    name = resolve("jigsaw_shuffle", imgs.device, backend)
    tiles = _gather_patches(imgs, perms, tile, name)
    return _scatter_patches(tiles, None, tile, c, s, s, name)


@lru_cache(maxsize=8)
def _all_permutations(n: int) -> np.ndarray:
    return np.array(list(itertools.permutations(range(n))), dtype=np.uint8)


@lru_cache(maxsize=32)
def _permutation_set(num: int, grid: int, seed: int) -> np.ndarray:
    cands = _all_permutations(grid * grid)
    g = torch.Generator().manual_seed(seed)
    chosen = [int(torch.randint(len(cands), (1,), generator=g))]
    total = np.zeros(len(cands), dtype=np.int64)
    taken = np.zeros(len(cands), dtype=bool)
    taken[chosen[0]] = True
    while len(chosen) < num:
        total += (cands != cands[chosen[-1]]).sum(axis=1)
        best = int(np.argmax(np.where(taken, -1, total)))  # first maximum, as the reference
        taken[best] = True
        chosen.append(best)
    return cands[chosen].astype(np.int64)


def jigsaw_permutations(num: int = 100, grid: int = 3, seed: int = 0) -> Tensor:
    """The jigsaw puzzle's permutation set, chosen for maximal Hamming distance.

    Noroozi & Favaro's Algorithm 1 ("maximal" set): draw the first permutation at random
    (``seed``), then repeatedly add the permutation of the ``grid**2`` tiles whose summed
    Hamming distance to the ones already chosen is largest (the lowest lexicographic index on
    ties). The default set (100 of 3x3, seed 0) has a mean pairwise Hamming distance of 8.08
    out of 9 and a minimum of 2; the paper trains with 1000 and finds 100 nearly as good.

    Args:
        num: set size, ``1 <= num <= (grid**2)!``.
        grid: tiles per side; 2 or 3 (every permutation of up to 9 tiles is scanned, as the
            paper does; larger grids would need a sampled candidate pool).
        seed: picks the first permutation.

    Returns:
        int64 ``[num, grid**2]``, row ``i`` the permutation of class ``i``. Cached: the same
        arguments return the same set without recomputing (100 of 3x3 takes about a second).
    """
    if not isinstance(grid, int) or isinstance(grid, bool) or grid not in (2, 3):
        raise ValueError(f"grid: expected 2 or 3 (tiles per side), got {grid!r}")
    limit = math.factorial(grid * grid)
    if not isinstance(num, int) or isinstance(num, bool) or not 1 <= num <= limit:
        raise ValueError(
            f"num: expected an int in [1, {limit}] for a {grid}x{grid} grid, got {num!r}"
        )
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed: expected an int, got {type(seed).__name__}")
    return torch.from_numpy(_permutation_set(num, grid, seed).copy())


__all__ = ["jigsaw_permutations", "jigsaw_shuffle", "rotations"]
