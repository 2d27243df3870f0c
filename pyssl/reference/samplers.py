"""The mask samplers of ``pyssl.samplers`` as their methods' repositories write them, in pure
Python: the definitions the numba samplers are tested against (mask for mask, same draws from
one ``numpy.random.Generator``) and the baselines of their benchmarks.

Sources: BEiT ``masking_generator.py`` (``MaskingGenerator``; BEiT v2's exact-count top-up),
SimMIM ``data_simmim.py`` (``MaskGenerator``), VideoMAE ``masking_generator.py``
(``TubeMaskingGenerator``), I-JEPA ``src/masks/multiblock.py`` (``MaskCollator``), data2vec 2.0
``compute_block_mask_2d`` (fairseq ``data_utils.py``). Python's ``random`` calls become the
generator's: ``random.uniform(a, b)`` -> ``a + (b - a) * rng.random()``, ``random.randint(a, b)`` ->
``rng.integers(a, b + 1)``, ``round`` -> ``np.rint``, permutations -> partial Fisher-Yates
shuffles (``rng.integers(0, n - k)`` per pick).
"""

from __future__ import annotations

import math

import numpy as np


def choose_subset(cand: list[int], need: int, rng: np.random.Generator) -> list[int]:
    """A uniform subset of ``need`` entries of ``cand``: a partial Fisher-Yates shuffle."""
    cand = list(cand)
    for k in range(need):
        j = k + int(rng.integers(0, len(cand) - k))
        cand[k], cand[j] = cand[j], cand[k]
    return cand[:need]


def beit_mask(
    rng: np.random.Generator,
    height: int = 14,
    width: int = 14,
    num_masking_patches: int = 75,
    min_num_patches: int = 16,
    max_num_patches: int | None = None,
    min_aspect: float = 0.3,
    max_aspect: float | None = None,
    exact: bool = False,
) -> list[list[int]]:
    """BEiT's ``MaskingGenerator.__call__`` for one image (0/1 lists, [height][width])."""
    max_num_patches = num_masking_patches if max_num_patches is None else max_num_patches
    max_aspect = max_aspect or 1 / min_aspect
    log_aspect_ratio = (math.log(min_aspect), math.log(max_aspect))
    mask = [[0] * width for _ in range(height)]

    def _mask(max_mask_patches: int) -> int:
        delta = 0
        for _attempt in range(10):
            # random.uniform(a, b) = a + (b - a) * random(), also for b < a
            target_area = min_num_patches + (max_mask_patches - min_num_patches) * rng.random()
            lo, hi = log_aspect_ratio
            aspect_ratio = math.exp(lo + (hi - lo) * rng.random())
            h = int(np.rint(math.sqrt(target_area * aspect_ratio)))
            w = int(np.rint(math.sqrt(target_area / aspect_ratio)))
            if w < width and h < height:
                top = int(rng.integers(0, height - h + 1))
                left = int(rng.integers(0, width - w + 1))
                num_masked = sum(
                    mask[i][j] for i in range(top, top + h) for j in range(left, left + w)
                )
                if 0 < h * w - num_masked <= max_mask_patches:
                    for i in range(top, top + h):
                        for j in range(left, left + w):
                            if mask[i][j] == 0:
                                mask[i][j] = 1
                                delta += 1
            if delta > 0:
                break
        return delta

    mask_count = 0
    while mask_count < num_masking_patches:
        max_mask_patches = min(num_masking_patches - mask_count, max_num_patches)
        delta = _mask(max_mask_patches)
        if delta == 0:
            break
        mask_count += delta
    if exact and mask_count < num_masking_patches:
        free = [k for k in range(height * width) if mask[k // width][k % width] == 0]
        for k in choose_subset(free, num_masking_patches - mask_count, rng):
            mask[k // width][k % width] = 1
    return mask


def simmim_mask(
    rng: np.random.Generator,
    input_size: int = 192,
    mask_patch_size: int = 32,
    model_patch_size: int = 4,
    mask_ratio: float = 0.6,
) -> list[list[int]]:
    """SimMIM's ``MaskGenerator.__call__``."""
    rand_size = input_size // mask_patch_size
    scale = mask_patch_size // model_patch_size
    token_count = rand_size**2
    mask_count = int(math.ceil(token_count * mask_ratio))
    mask_idx = choose_subset(list(range(token_count)), mask_count, rng)
    coarse = [0] * token_count
    for k in mask_idx:
        coarse[k] = 1
    side = rand_size * scale
    return [
        [coarse[(i // scale) * rand_size + j // scale] for j in range(side)] for i in range(side)
    ]


def tube_mask(
    rng: np.random.Generator,
    frames: int = 8,
    height: int = 14,
    width: int = 14,
    mask_ratio: float = 0.9,
) -> list[list[int]]:
    """VideoMAE's ``TubeMaskingGenerator.__call__`` ([frames][height * width])."""
    num_patches_per_frame = height * width
    num_masks_per_frame = int(mask_ratio * num_patches_per_frame)
    mask_per_frame = [0] * num_patches_per_frame
    for k in choose_subset(list(range(num_patches_per_frame)), num_masks_per_frame, rng):
        mask_per_frame[k] = 1
    return [list(mask_per_frame) for _ in range(frames)]


def ijepa_block_size(
    u: float, height: int, width: int, scale: tuple[float, float], aspect: tuple[float, float]
) -> tuple[int, int]:
    """I-JEPA's ``_sample_block_size`` given its one uniform ``u``."""
    min_s, max_s = scale
    mask_scale = min_s + u * (max_s - min_s)
    max_keep = int(height * width * mask_scale)
    min_ar, max_ar = aspect
    aspect_ratio = min_ar + u * (max_ar - min_ar)
    h = int(np.rint(math.sqrt(max_keep * aspect_ratio)))
    w = int(np.rint(math.sqrt(max_keep / aspect_ratio)))
    while h >= height:
        h -= 1
    while w >= width:
        w -= 1
    return h, w


def ijepa_masks(
    rng: np.random.Generator,
    batch: int,
    height: int = 14,
    width: int = 14,
    enc_mask_scale: tuple[float, float] = (0.85, 1.0),
    pred_mask_scale: tuple[float, float] = (0.15, 0.2),
    aspect_ratio: tuple[float, float] = (0.75, 1.5),
    nenc: int = 1,
    npred: int = 4,
    min_keep: int = 10,
    allow_overlap: bool = False,
) -> tuple[list[list[list[int]]], list[list[list[int]]]]:
    """I-JEPA's ``MaskCollator.__call__`` (corners uniform over every valid position)."""
    p_size = ijepa_block_size(rng.random(), height, width, pred_mask_scale, aspect_ratio)
    e_size = ijepa_block_size(rng.random(), height, width, enc_mask_scale, (1.0, 1.0))

    def sample_block_mask(b_size, acceptable_regions=None):  # type: ignore[no-untyped-def]
        h, w = b_size
        tries, timeout = 0, 20
        while True:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            mask = [[0] * width for _ in range(height)]
            for i in range(top, top + h):
                for j in range(left, left + w):
                    mask[i][j] = 1
            if acceptable_regions is not None:
                n_used = max(len(acceptable_regions) - tries, 0)
                for k in range(n_used):
                    mask = [
                        [a * b for a, b in zip(r, q)] for r, q in zip(mask, acceptable_regions[k])
                    ]
            idx = [i * width + j for i in range(height) for j in range(width) if mask[i][j]]
            if len(idx) > min_keep:
                complement = [[1] * width for _ in range(height)]
                for i in range(top, top + h):
                    for j in range(left, left + w):
                        complement[i][j] = 0
                return idx, complement
            timeout -= 1
            if timeout == 0:
                tries += 1
                timeout = 20

    enc_all, pred_all = [], []
    min_keep_pred = min_keep_enc = height * width
    for _ in range(batch):
        masks_p, masks_c = [], []
        for _ in range(npred):
            mask, mask_c = sample_block_mask(p_size)
            masks_p.append(mask)
            masks_c.append(mask_c)
            min_keep_pred = min(min_keep_pred, len(mask))
        pred_all.append(masks_p)
        regions = None if allow_overlap else masks_c
        masks_e = []
        for _ in range(nenc):
            mask, _ = sample_block_mask(e_size, acceptable_regions=regions)
            masks_e.append(mask)
            min_keep_enc = min(min_keep_enc, len(mask))
        enc_all.append(masks_e)
    enc = [[m[:min_keep_enc] for m in ms] for ms in enc_all]
    pred = [[m[:min_keep_pred] for m in ms] for ms in pred_all]
    return enc, pred


def data2vec_mask(
    rng: np.random.Generator,
    num_patches: int = 196,
    mask_prob: float = 0.8,
    mask_length: int = 3,
    mask_prob_adjust: float = 0.07,
) -> list[int]:
    """data2vec 2.0's ``compute_block_mask_2d`` for one image (``inverse_mask=True,
    require_same_masks=True``): 1 = masked."""
    d = int(num_patches**0.5)
    mask_prob = 1 - mask_prob  # inverse: the blocks are what stays visible
    n_centers = int(num_patches * ((mask_prob + mask_prob_adjust) / mask_length**2))
    centres = set()
    for _ in range(n_centers):
        centres.add(int(rng.integers(0, num_patches)))
    keep = [0] * num_patches
    offset = mask_length // 2
    for c in sorted(centres):
        ci, cj = divmod(c, d)
        for i in range(mask_length):
            for j in range(mask_length):
                ii = min(max(ci + i - offset, 0), d - 1)
                jj = min(max(cj + j - offset, 0), d - 1)
                keep[ii * d + jj] = 1
    target_len = int(num_patches * mask_prob)
    n = sum(keep)
    if n > target_len:
        for k in choose_subset([k for k in range(num_patches) if keep[k]], n - target_len, rng):
            keep[k] = 0
    elif n < target_len:
        for k in choose_subset([k for k in range(num_patches) if not keep[k]], target_len - n, rng):
            keep[k] = 1
    return [1 - k for k in keep]
