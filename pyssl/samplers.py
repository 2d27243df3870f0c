"""Host-side mask samplers, compiled by numba: they run in DataLoader workers on numpy.

Each sampler is the published method's per-sample loop, kept readable and compiled with
``numba.njit(cache=True)`` (a worker does not recompile). Every sampler takes a
``numpy.random.Generator`` (or an int seed) and makes exactly the draws of its pure-Python
definition in ``pyssl.reference.samplers``, so the two agree mask for mask for one seed.

* :func:`beit_masks`: BEiT's block-wise masking (``MaskingGenerator``): blocks of log-uniform
  aspect ratio and uniform area, 10 attempts per block; ``exact=True`` tops up or trims to
  exactly ``num_masking_patches`` as BEiT v2 does.
* :func:`simmim_masks`: SimMIM's ``MaskGenerator``: a random subset of a coarse grid, upsampled.
* :func:`tube_masks`: VideoMAE's ``TubeMaskingGenerator``: one frame mask repeated in time.
* :func:`ijepa_masks`: I-JEPA's ``MaskCollator``: context and target blocks, the targets removed
  from the context, a minimum-keep rule that relaxes its constraints and never loops forever.
* :func:`data2vec_masks`: data2vec 2.0's inverse block masking (``compute_block_mask_2d``).
* :func:`span_mask_batch` / :func:`time_mask_batch`: the samplers behind
  :func:`pyssl.ops.span_mask` and :func:`pyssl.ops.time_mask`.

Masks are numpy bool arrays, True where a patch is masked (removed from the encoder's input),
except I-JEPA's, which are index arrays as its collator returns them.
"""

from __future__ import annotations

import functools
import math

import numba
import numpy as np

Rng = np.random.Generator


def _rng(rng: Rng | int | None) -> Rng:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def _pos_int(v: object, name: str, lo: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
        raise ValueError(f"{name}: expected an int >= {lo}, got {v!r}")
    return int(v)


def _ratio(v: object, name: str, lo: float = 0.0, hi: float = 1.0) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= float(v) <= hi:
        raise ValueError(f"{name}: expected a number in [{lo}, {hi}], got {v!r}")
    return float(v)


@numba.njit(cache=True)
def _choose_subset(cand: np.ndarray, n_cand: int, need: int, rng: Rng) -> None:
    """Moves a uniform subset of ``need`` of the first ``n_cand`` entries of ``cand`` to its
    front (a partial Fisher-Yates shuffle: ``need`` draws)."""
    for k in range(need):
        j = k + rng.integers(0, n_cand - k)
        cand[k], cand[j] = cand[j], cand[k]


# ------------------------------------------------------------------------------------- BEiT


@numba.njit(cache=True)
def beit_block(
    mask: np.ndarray,
    rng: Rng,
    max_mask: int,
    min_num: int,
    log_lo: float,
    log_hi: float,
) -> int:
    """One block of BEiT's ``MaskingGenerator._mask``: at most 10 attempts, each an area
    ``U(min_num, max_mask)``, an aspect ratio ``exp(U(log_lo, log_hi))`` and a uniform corner;
    the first block of ``round(sqrt(area * aspect)) x round(sqrt(area / aspect))`` patches
    that fits the grid and adds between 1 and ``max_mask`` new patches is masked. Returns the
    number of patches it added (0: no attempt succeeded)."""
    height, width = mask.shape
    delta = 0
    for _attempt in range(10):
        # Python's random.uniform(a, b) = a + (b - a) * random(), also for b < a
        target_area = min_num + (max_mask - min_num) * rng.random()
        aspect = math.exp(log_lo + (log_hi - log_lo) * rng.random())
        h = int(np.rint(math.sqrt(target_area * aspect)))
        w = int(np.rint(math.sqrt(target_area / aspect)))
        if w < width and h < height:
            top = rng.integers(0, height - h + 1)
            left = rng.integers(0, width - w + 1)
            num_masked = 0
            for i in range(top, top + h):
                for j in range(left, left + w):
                    num_masked += mask[i, j]
            if 0 < h * w - num_masked <= max_mask:
                for i in range(top, top + h):
                    for j in range(left, left + w):
                        if not mask[i, j]:
                            mask[i, j] = True
                            delta += 1
        if delta > 0:
            break
    return delta


@numba.njit(cache=True)
def _beit_one(
    mask: np.ndarray,
    rng: Rng,
    num_masking: int,
    min_num: int,
    max_num: int,
    log_lo: float,
    log_hi: float,
    exact: bool,
) -> None:
    height, width = mask.shape
    count = 0
    while count < num_masking:
        max_mask = min(num_masking - count, max_num)
        delta = beit_block(mask, rng, max_mask, min_num, log_lo, log_hi)
        if delta == 0:
            break
        count += delta
    if exact and count < num_masking:
        # BEiT v2: top up with a uniform subset of the unmasked patches
        cand = np.empty(height * width, dtype=np.int64)
        n = 0
        for k in range(height * width):
            if not mask[k // width, k % width]:
                cand[n] = k
                n += 1
        need = num_masking - count
        _choose_subset(cand, n, need, rng)
        for k in range(need):
            mask[cand[k] // width, cand[k] % width] = True


@numba.njit(cache=True)
def _beit_batch(
    out: np.ndarray,
    rng: Rng,
    num_masking: int,
    min_num: int,
    max_num: int,
    log_lo: float,
    log_hi: float,
    exact: bool,
) -> None:
    for b in range(out.shape[0]):
        _beit_one(out[b], rng, num_masking, min_num, max_num, log_lo, log_hi, exact)


def beit_masks(
    batch: int,
    input_size: int | tuple[int, int] = 14,
    num_masking_patches: int = 75,
    min_num_patches: int = 16,
    max_num_patches: int | None = None,
    min_aspect: float = 0.3,
    max_aspect: float | None = None,
    *,
    exact: bool = False,
    rng: Rng | int | None = None,
) -> np.ndarray:
    """BEiT's block-wise masking for ``batch`` images: ``[batch, h, w]`` bool.

    Defaults are BEiT's (a 14x14 grid, 75 patches, blocks of at least 16 patches, aspect ratio
    log-uniform in [0.3, 1/0.3]). Blocks are added while fewer than ``num_masking_patches`` are
    masked: each of at most 10 attempts draws an area ``U(min_num_patches, remaining)`` and an
    aspect ratio, places the block uniformly and keeps it if it adds between 1 and ``remaining``
    new patches; when no attempt adds a patch the loop stops (BEiT v1 may then mask fewer).
    ``exact=True`` tops up with uniform unmasked patches to exactly ``num_masking_patches``
    (BEiT v2's rule: equal counts in a batch).
    """
    h, w = (input_size, input_size) if isinstance(input_size, int) else input_size
    h, w = _pos_int(h, "input_size"), _pos_int(w, "input_size")
    n = _pos_int(num_masking_patches, "num_masking_patches", 0)
    if n > h * w:
        raise ValueError(f"num_masking_patches: {n} exceeds the {h}x{w} grid's {h * w} patches")
    lo = _pos_int(min_num_patches, "min_num_patches", 0)
    hi = n if max_num_patches is None else _pos_int(max_num_patches, "max_num_patches")
    if not isinstance(min_aspect, (int, float)) or min_aspect <= 0:
        raise ValueError(f"min_aspect: expected a positive number, got {min_aspect!r}")
    max_a = 1.0 / min_aspect if max_aspect is None else max_aspect
    if not isinstance(max_a, (int, float)) or max_a < min_aspect:
        got = f"{max_aspect!r}" if max_aspect is not None else f"None (1 / min_aspect = {max_a:g})"
        raise ValueError(f"max_aspect: expected a number >= min_aspect, got {got}")
    out = np.zeros((_pos_int(batch, "batch", 0), h, w), dtype=np.bool_)
    _beit_batch(out, _rng(rng), n, lo, hi, math.log(min_aspect), math.log(max_a), bool(exact))
    return out


# ----------------------------------------------------------------------------------- SimMIM


@numba.njit(cache=True)
def _simmim_batch(out: np.ndarray, rng: Rng, rand_size: int, scale: int, mask_count: int) -> None:
    tokens = rand_size * rand_size
    perm = np.empty(tokens, dtype=np.int64)
    for b in range(out.shape[0]):
        for k in range(tokens):
            perm[k] = k
        _choose_subset(perm, tokens, mask_count, rng)
        for k in range(mask_count):
            gy, gx = perm[k] // rand_size, perm[k] % rand_size
            for i in range(gy * scale, gy * scale + scale):
                for j in range(gx * scale, gx * scale + scale):
                    out[b, i, j] = True


def simmim_masks(
    batch: int,
    input_size: int = 192,
    mask_patch_size: int = 32,
    model_patch_size: int = 4,
    mask_ratio: float = 0.6,
    *,
    rng: Rng | int | None = None,
) -> np.ndarray:
    """SimMIM's masking: ``ceil(mask_ratio * r^2)`` random cells of the ``r x r`` coarse grid
    (``r = input_size // mask_patch_size``), each upsampled to ``mask_patch_size //
    model_patch_size`` model patches a side. Returns ``[batch, r*s, r*s]`` bool (SimMIM's
    defaults: 192 px, 32 px cells, 4 px patches, ratio 0.6: 48x48 with 22 of 36 cells)."""
    ins = _pos_int(input_size, "input_size")
    mps = _pos_int(mask_patch_size, "mask_patch_size")
    mop = _pos_int(model_patch_size, "model_patch_size")
    if ins % mps:
        raise ValueError(f"input_size: {ins} is not divisible by mask_patch_size {mps}")
    if mps % mop:
        raise ValueError(f"mask_patch_size: {mps} is not divisible by model_patch_size {mop}")
    ratio = _ratio(mask_ratio, "mask_ratio")
    r, s = ins // mps, mps // mop
    out = np.zeros((_pos_int(batch, "batch", 0), r * s, r * s), dtype=np.bool_)
    _simmim_batch(out, _rng(rng), r, s, int(math.ceil(r * r * ratio)))
    return out


# --------------------------------------------------------------------------------- VideoMAE


@numba.njit(cache=True)
def _tube_batch(out: np.ndarray, rng: Rng, per_frame: int) -> None:
    frames, height, width = out.shape[1], out.shape[2], out.shape[3]
    n = height * width
    cand = np.empty(n, dtype=np.int64)
    for b in range(out.shape[0]):
        for k in range(n):
            cand[k] = k
        _choose_subset(cand, n, per_frame, rng)
        for k in range(per_frame):
            for f in range(frames):
                out[b, f, cand[k] // width, cand[k] % width] = True


def tube_masks(
    batch: int,
    input_size: tuple[int, int, int] = (8, 14, 14),
    mask_ratio: float = 0.9,
    *,
    rng: Rng | int | None = None,
) -> np.ndarray:
    """VideoMAE's tube masking: ``int(mask_ratio * h * w)`` random patches of one frame, the
    same in every temporal slice. ``input_size`` is (frames // tubelet, h, w) (VideoMAE's
    16-frame, tubelet-2, 224 px default: (8, 14, 14), ratio 0.9). Returns
    ``[batch, frames, h, w]`` bool."""
    if not (isinstance(input_size, (tuple, list)) and len(input_size) == 3):
        raise ValueError(f"input_size: expected (frames, h, w), got {input_size!r}")
    f, h, w = (_pos_int(v, "input_size") for v in input_size)
    ratio = _ratio(mask_ratio, "mask_ratio")
    out = np.zeros((_pos_int(batch, "batch", 0), f, h, w), dtype=np.bool_)
    _tube_batch(out, _rng(rng), int(ratio * h * w))
    return out


# ----------------------------------------------------------------------------------- I-JEPA


@numba.njit(cache=True)
def _ijepa_block_size(
    u: float, height: int, width: int, s_lo: float, s_hi: float, a_lo: float, a_hi: float
) -> tuple[int, int]:
    # I-JEPA draws one uniform for both the scale and the aspect ratio
    max_keep = int(height * width * (s_lo + u * (s_hi - s_lo)))
    aspect = a_lo + u * (a_hi - a_lo)
    h = int(np.rint(math.sqrt(max_keep * aspect)))
    w = int(np.rint(math.sqrt(max_keep / aspect)))
    h = min(h, height - 1)
    w = min(w, width - 1)
    return h, w


@numba.njit(cache=True)
def _ijepa_block(
    rng: Rng,
    height: int,
    width: int,
    h: int,
    w: int,
    regions: np.ndarray,
    n_regions: int,
    min_keep: int,
    out_idx: np.ndarray,
    out_region: int,
) -> int:
    """One block of h x w patches, constrained to the first ``n_regions`` acceptable regions;
    its patch indices go to out_idx (row-major), its complement to regions[out_region]; returns
    the count. After 20 failed draws one more constraint is dropped, so with none left any
    block (h * w > min_keep) succeeds."""
    tries = 0
    timeout = 20
    while True:
        top = rng.integers(0, height - h + 1)
        left = rng.integers(0, width - w + 1)
        n_used = max(n_regions - tries, 0)
        count = 0
        for i in range(top, top + h):
            for j in range(left, left + w):
                ok = True
                for k in range(n_used):
                    if not regions[k, i, j]:
                        ok = False
                        break
                if ok:
                    out_idx[count] = i * width + j
                    count += 1
        if count > min_keep:
            regions[out_region, :, :] = True
            for i in range(top, top + h):
                for j in range(left, left + w):
                    regions[out_region, i, j] = False
            return count
        timeout -= 1
        if timeout == 0:
            tries += 1
            timeout = 20


@numba.njit(cache=True)
def _ijepa_batch(
    rng: Rng,
    batch: int,
    height: int,
    width: int,
    p_size: tuple[int, int],
    e_size: tuple[int, int],
    nenc: int,
    npred: int,
    min_keep: int,
    allow_overlap: bool,
    enc: np.ndarray,
    enc_n: np.ndarray,
    pred: np.ndarray,
    pred_n: np.ndarray,
) -> None:
    # regions[k]: the complement of target block k; regions[npred]: scratch
    regions = np.ones((npred + 1, height, width), dtype=np.bool_)
    ph, pw = p_size
    eh, ew = e_size
    for b in range(batch):
        for k in range(npred):
            pred_n[b, k] = _ijepa_block(
                rng, height, width, ph, pw, regions, 0, min_keep, pred[b, k], k
            )
        n_regions = 0 if allow_overlap else npred
        for k in range(nenc):
            enc_n[b, k] = _ijepa_block(
                rng, height, width, eh, ew, regions, n_regions, min_keep, enc[b, k], npred
            )


@functools.cache
def _ijepa_smallest(
    height: int,
    width: int,
    scale: tuple[float, float],
    aspect: tuple[float, float],
) -> int:
    """The smallest block area over a fine grid of the shared uniform (to check min_keep up
    front); cached, since a collator asks for the same sizes at every batch."""
    return min(
        int(np.prod(_ijepa_block_size(u, height, width, *scale, *aspect)))
        for u in np.linspace(0.0, 1.0, 1025)
    )


def ijepa_masks(
    batch: int,
    input_size: int | tuple[int, int] = 14,
    enc_mask_scale: tuple[float, float] = (0.85, 1.0),
    pred_mask_scale: tuple[float, float] = (0.15, 0.2),
    aspect_ratio: tuple[float, float] = (0.75, 1.5),
    nenc: int = 1,
    npred: int = 4,
    min_keep: int = 10,
    allow_overlap: bool = False,
    *,
    rng: Rng | int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """I-JEPA's multi-block masks for a batch, as its ``MaskCollator`` returns them.

    One target size and one context size are drawn per batch (scale and aspect from one
    uniform, as in I-JEPA; the context block is square). Per image: ``npred`` target blocks,
    then ``nenc`` context blocks restricted to the complement of every target block (unless
    ``allow_overlap``). A block must keep more than ``min_keep`` patches; after 20 failures one
    target constraint is dropped (I-JEPA's rule), so the loop ends. The scales, aspect range,
    counts and ``min_keep`` default to I-JEPA's published configs (the ImageNet ViT-H/14 ones),
    on the 14x14 grid of a ViT/16 at 224 px (``MaskCollator``'s own default, patch 16); a
    ViT-H/14 at 224 px has a 16x16 grid: pass ``input_size=16`` for it.

    Returns ``(enc_idx [batch, nenc, K_enc], pred_idx [batch, npred, K_pred])`` int64 patch
    indices (row-major), each list cut to the smallest count in the batch, as I-JEPA does.

    Deliberate difference: block corners are uniform over every valid position (I-JEPA's
    ``torch.randint(0, H - h)`` never places a block on the last row or column). A
    ``min_keep`` that a block of the drawn sizes cannot exceed is a ValueError (I-JEPA loops
    forever there).
    """
    height, width = (input_size, input_size) if isinstance(input_size, int) else input_size
    height, width = _pos_int(height, "input_size", 2), _pos_int(width, "input_size", 2)
    for name, pair, hi in (
        ("enc_mask_scale", enc_mask_scale, 1.0),
        ("pred_mask_scale", pred_mask_scale, 1.0),
        ("aspect_ratio", aspect_ratio, math.inf),
    ):
        if len(pair) != 2 or not 0 < pair[0] <= pair[1] <= hi:
            raise ValueError(f"{name}: expected (lo, hi) with 0 < lo <= hi <= {hi}, got {pair!r}")
    nenc, npred = _pos_int(nenc, "nenc"), _pos_int(npred, "npred")
    min_keep = _pos_int(min_keep, "min_keep", 0)
    for name, scale, aspect in (
        ("pred_mask_scale", pred_mask_scale, aspect_ratio),
        ("enc_mask_scale", enc_mask_scale, (1.0, 1.0)),
    ):
        smallest = _ijepa_smallest(
            height, width, (float(scale[0]), float(scale[1])), (float(aspect[0]), float(aspect[1]))
        )
        if smallest <= min_keep:
            raise ValueError(
                f"min_keep: {min_keep} patches cannot be exceeded by the smallest {name} block "
                f"({smallest} patches on a {height}x{width} grid)"
            )
    g = _rng(rng)
    u = g.random()
    p_size = _ijepa_block_size(u, height, width, *pred_mask_scale, *aspect_ratio)
    u = g.random()
    e_size = _ijepa_block_size(u, height, width, *enc_mask_scale, 1.0, 1.0)
    for size in (p_size, e_size):
        if size[0] * size[1] <= min_keep:  # a draw between the grid points checked above
            raise ValueError(f"min_keep: {min_keep} cannot be exceeded by a {size} block")
    b = _pos_int(batch, "batch")
    n = height * width
    enc = np.zeros((b, nenc, n), dtype=np.int64)
    pred = np.zeros((b, npred, n), dtype=np.int64)
    enc_n = np.zeros((b, nenc), dtype=np.int64)
    pred_n = np.zeros((b, npred), dtype=np.int64)
    _ijepa_batch(
        g,
        b,
        height,
        width,
        p_size,
        e_size,
        nenc,
        npred,
        min_keep,
        bool(allow_overlap),
        enc,
        enc_n,
        pred,
        pred_n,
    )
    return enc[:, :, : enc_n.min()], pred[:, :, : pred_n.min()]


# -------------------------------------------------------------------------------- data2vec


@numba.njit(cache=True)
def _data2vec_batch(
    out: np.ndarray, rng: Rng, side: int, n_centers: int, mask_length: int, target: int
) -> None:
    length = side * side
    keep = np.zeros(length, dtype=np.bool_)
    centre = np.zeros(length, dtype=np.bool_)
    cand = np.empty(length, dtype=np.int64)
    offset = mask_length // 2
    for b in range(out.shape[0]):
        keep[:] = False
        centre[:] = False
        for _ in range(n_centers):
            centre[rng.integers(0, length)] = True
        for c in range(length):
            if not centre[c]:
                continue
            ci, cj = c // side, c % side
            for i in range(mask_length):
                for j in range(mask_length):
                    ii = min(max(ci + i - offset, 0), side - 1)
                    jj = min(max(cj + j - offset, 0), side - 1)
                    keep[ii * side + jj] = True
        n = 0
        for k in range(length):
            n += keep[k]
        # equal counts: remove or add uniform positions until exactly `target` blocks' patches
        if n > target:
            m = 0
            for k in range(length):
                if keep[k]:
                    cand[m] = k
                    m += 1
            _choose_subset(cand, m, n - target, rng)
            for k in range(n - target):
                keep[cand[k]] = False
        elif n < target:
            m = 0
            for k in range(length):
                if not keep[k]:
                    cand[m] = k
                    m += 1
            _choose_subset(cand, m, target - n, rng)
            for k in range(target - n):
                keep[cand[k]] = True
        for k in range(length):
            out[b, k] = not keep[k]


def data2vec_masks(
    batch: int,
    num_patches: int = 196,
    mask_prob: float = 0.8,
    mask_length: int = 3,
    mask_prob_adjust: float = 0.07,
    *,
    rng: Rng | int | None = None,
) -> np.ndarray:
    """data2vec 2.0's inverse block masking (``compute_block_mask_2d`` with
    ``inverse_mask=True, require_same_masks=True``; its image defaults).

    ``int(L * (1 - mask_prob + mask_prob_adjust) / mask_length^2)`` block centres are drawn
    uniformly (with replacement) on the ``sqrt(L)`` grid; ``mask_length`` x ``mask_length``
    blocks around them (clamped at the border) are the *visible* patches; uniform patches are
    then added or removed until exactly ``int(L * (1 - mask_prob))`` are visible. Returns
    ``[batch, L]`` bool, True = masked: every row masks ``L - int(L * (1 - mask_prob))``.
    """
    length = _pos_int(num_patches, "num_patches")
    side = math.isqrt(length)
    if side * side != length:
        raise ValueError(f"num_patches: expected a square number, got {length}")
    mp = _ratio(mask_prob, "mask_prob")
    ml = _pos_int(mask_length, "mask_length", 2)
    adj = _ratio(mask_prob_adjust, "mask_prob_adjust")
    keep_prob = 1.0 - mp
    n_centers = int(length * ((keep_prob + adj) / ml**2))
    out = np.zeros((_pos_int(batch, "batch", 0), length), dtype=np.bool_)
    _data2vec_batch(out, _rng(rng), side, n_centers, ml, int(length * keep_prob))
    return out


# ------------------------------------------------------------------------- text: span, time


def span_length_cdf(p: float, max_span: int, length: int) -> np.ndarray:
    """The CDF of SpanBERT's span-length law as the sampler draws it: Geometric(``p``)
    truncated to ``1..max_span`` and renormalised (SpanBERT's ``len_distrib = [p * (1 - p) **
    (i - 1) for i in 1..max_span]`` divided by its sum; mean 3.79 for p = 0.2, max_span = 10),
    ``F(l) = (1 - (1 - p)^l) / (1 - (1 - p)^max_span)`` in closed form (``math.expm1`` and
    ``math.log1p``, the expression :func:`pyssl.reference.text.span_mask` evaluates: the same
    bits, so the two draw the same lengths).

    Only ``K = min(max_span, length)`` points are kept, the last one set to 1: a span is cut to
    the remaining budget (at most ``length``) anyway, so every length from ``K`` on acts alike.
    A length is ``1 + searchsorted(cdf, u, side="right")`` for ``u ~ U[0, 1)``, as
    ``np.random.choice(lens, p=len_distrib)`` draws it."""
    k = max(min(max_span, length), 1)
    a = math.log1p(-p) if p < 1.0 else -math.inf
    denom = math.expm1(max_span * a)
    cdf = np.array([math.expm1(n * a) / denom for n in range(1, k + 1)], dtype=np.float64)
    cdf[-1] = 1.0
    return cdf


@numba.njit(cache=True)
def span_mask_row(
    allowed: np.ndarray,
    budget: int,
    cdf: np.ndarray,
    rng: Rng,
    chosen: np.ndarray,
    span_id: np.ndarray,
    first_span: int,
) -> int:
    """SpanBERT's spans for one row (see ``pyssl.reference.text.span_mask``): writes chosen and
    span ids (from ``first_span``) and returns the number of spans. ``cdf``: the span-length
    law (:func:`span_length_cdf`)."""
    length = allowed.shape[0]
    count = 0
    spans = 0
    for _ in range(50 * length):
        if count >= budget:
            break
        span = min(int(np.searchsorted(cdf, rng.random(), side="right")) + 1, budget - count)
        start = rng.integers(0, length)
        if start + span > length:
            continue
        free = True
        for k in range(start, start + span):
            if not allowed[k] or chosen[k]:
                free = False
                break
        if not free:
            continue
        for k in range(start, start + span):
            chosen[k] = True
            span_id[k] = first_span + spans
        count += span
        spans += 1
    if count < budget:
        # out of draws: the rest of the budget as one-token spans on uniform free tokens
        cand = np.empty(length, dtype=np.int64)
        n_free = 0
        for k in range(length):
            if allowed[k] and not chosen[k]:
                cand[n_free] = k
                n_free += 1
        need = min(budget - count, n_free)
        _choose_subset(cand, n_free, need, rng)
        for k in range(need):
            chosen[cand[k]] = True
            span_id[cand[k]] = first_span + spans
            spans += 1
    return spans


@numba.njit(cache=True)
def _span_batch(
    allowed: np.ndarray,
    prob: float,
    cdf: np.ndarray,
    rng: Rng,
    chosen: np.ndarray,
    span_id: np.ndarray,
) -> None:
    for b in range(allowed.shape[0]):
        n = 0
        for k in range(allowed.shape[1]):
            n += allowed[b, k]
        budget = int(prob * n + 0.5)
        span_mask_row(allowed[b], budget, cdf, rng, chosen[b], span_id[b], 0)


def span_mask_batch(
    allowed: np.ndarray, prob: float, p: float, max_span: int, rng: Rng
) -> tuple[np.ndarray, np.ndarray]:
    """SpanBERT spans for each row of ``allowed`` ([B, T] bool: tokens that may be masked),
    with a budget of ``int(prob * allowed_in_row + 0.5)`` tokens, span lengths from
    Geometric(``p``) truncated to ``1..max_span`` and renormalised (SpanBERT's law): (chosen
    [B, T] bool, span id [B, T] int64, -1 outside spans, numbered per row). Every row chooses
    exactly its budget (see :func:`pyssl.ops.span_mask` for the rules)."""
    allowed = np.ascontiguousarray(allowed, dtype=np.bool_)
    if allowed.ndim != 2:
        raise ValueError(f"allowed: expected a [B, T] array, got shape {allowed.shape}")
    prob = _ratio(prob, "prob")
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 < p <= 1.0:
        raise ValueError(f"p: expected a probability in (0, 1], got {p!r}")
    max_span = _pos_int(max_span, "max_span")
    chosen = np.zeros(allowed.shape, dtype=np.bool_)
    span_id = np.full(allowed.shape, -1, dtype=np.int64)
    cdf = span_length_cdf(float(p), max_span, allowed.shape[1])
    _span_batch(allowed, prob, cdf, _rng(rng), chosen, span_id)
    return chosen, span_id


@numba.njit(cache=True)
def _time_batch(
    out: np.ndarray,
    rng: Rng,
    mask_prob: float,
    mask_length: int,
    min_masks: int,
    lengths: np.ndarray,
) -> None:
    seq = out.shape[1]
    eps = rng.random()
    cand = np.empty(seq, dtype=np.int64)
    for b in range(out.shape[0]):
        length = lengths[b]
        n = int(mask_prob * length / mask_length + eps)
        n = max(n, min_masks)
        if n * mask_length > seq:
            n = seq // mask_length
        if length - (mask_length - 1) < n:
            n = max(length - (mask_length - 1), 0)
        n_cand = max(length - (mask_length - 1), 0)
        for k in range(n_cand):
            cand[k] = k
        _choose_subset(cand, n_cand, n, rng)
        for k in range(n):
            for off in range(mask_length):
                out[b, min(cand[k] + off, seq - 1)] = True


def time_mask_batch(
    batch: int,
    seq: int,
    mask_prob: float,
    mask_length: int,
    min_masks: int,
    lengths: np.ndarray,
    rng: Rng,
) -> np.ndarray:
    """wav2vec 2.0's ``_compute_mask_indices`` (see :func:`pyssl.ops.time_mask`)."""
    out = np.zeros((batch, seq), dtype=np.bool_)
    _time_batch(out, rng, mask_prob, mask_length, min_masks, lengths.astype(np.int64))
    return out
