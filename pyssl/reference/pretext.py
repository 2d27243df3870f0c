"""Plain eager references of the pretext-task ops: RotNet's rotations, jigsaw tile shuffles and
the jigsaw permutation set. The ground truth of the tests and the baseline of the benchmarks.

Anchors: Gidaris et al. 2018 ("Unsupervised Representation Learning by Predicting Image
Rotations", gidariss/FeatureLearningRotNet: the four rotations 0, 90, 180, 270 degrees of each
image, each image's four kept together in the batch) and Noroozi & Favaro 2016 ("Unsupervised
Learning of Visual Representations by Solving Jigsaw Puzzles", Algorithm 1: the greedy
maximal-Hamming-distance permutation set).
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor


def rotations(imgs: Tensor) -> Tensor:
    """``[B, C, S, S] -> [B, 4, C, S, S]`` with ``out[:, k] = rot90(imgs, k)`` (counter-clockwise
    quarter turns, ``torch.rot90``'s convention)."""
    return torch.stack([torch.rot90(imgs, k, dims=(-2, -1)) for k in range(4)], dim=1)


def rotations_backward(grad_out: Tensor) -> Tensor:
    """The gradient of :func:`rotations`: ``sum_k rot90(grad_out[:, k], -k)``."""
    return sum(torch.rot90(grad_out[:, k], -k, dims=(-2, -1)) for k in range(4))  # type: ignore[return-value]


def jigsaw_shuffle(imgs: Tensor, perms: Tensor, grid: int) -> Tensor:
    """Cuts ``imgs [B, C, S, S]`` into ``grid x grid`` tiles (row-major) and lays them out again
    so that tile position ``j`` of image ``b`` holds input tile ``perms[b, j]``."""
    b, c, s, _ = imgs.shape
    t = s // grid
    tiles = (
        imgs.reshape(b, c, grid, t, grid, t)
        .permute(0, 2, 4, 1, 3, 5)
        .reshape(b, grid * grid, c, t, t)
    )
    shuffled = tiles[torch.arange(b, device=imgs.device)[:, None], perms]
    return shuffled.reshape(b, grid, grid, c, t, t).permute(0, 3, 1, 4, 2, 5).reshape(b, c, s, s)


def jigsaw_permutations(num: int, grid: int = 3, seed: int = 0) -> Tensor:
    """Noroozi & Favaro's Algorithm 1, one permutation at a time in plain Python: start from a
    permutation drawn at random, then repeatedly add the permutation whose summed Hamming
    distance to those already chosen is largest (the first one on ties). ``int64 [num,
    grid**2]``. Slow (it scans all ``(grid**2)!`` permutations per step): for tests on small
    grids."""
    candidates = list(itertools.permutations(range(grid * grid)))
    g = torch.Generator().manual_seed(seed)
    first = int(torch.randint(len(candidates), (1,), generator=g))
    chosen = [first]
    total = [0] * len(candidates)
    while len(chosen) < num:
        last = candidates[chosen[-1]]
        for i, cand in enumerate(candidates):
            total[i] += sum(a != b for a, b in zip(cand, last))
        taken = set(chosen)
        best = max(
            (i for i in range(len(candidates)) if i not in taken), key=lambda i: (total[i], -i)
        )
        chosen.append(best)
    return torch.tensor([candidates[i] for i in chosen], dtype=torch.int64)
