"""Triton kernels and launchers for the masked-patch family (MAE's hot path).

Semantics are those of :mod:`pyssl.reference.masking` (facebookresearch/mae, ``models_mae.py``):
MAE's patch order ``(p, q, c)`` inside a patch, patches in row-major grid order, a *stable*
argsort of the noise in :func:`random_masking`. Each launcher writes into preallocated,
contiguous outputs and returns ``None``; the caller (``pyssl.ops.masking``) validates devices,
dtypes and shapes and allocates. The launchers re-check only what costs no device work (shapes,
dtypes, contiguity) and raise ``ValueError`` on a mismatch.

Precision. Float tensors may be float32, float16, bfloat16 or float64. Sums and the loss math
run in float32 (float64 when the inputs are float64); results are rounded once to the output
dtype. Copies (gathers, scatters with unique ids) are exact.

Determinism. No kernel uses atomics: every output element is owned by exactly one program, and
every sum (repeated ids in :func:`scatter_patches`, :func:`restore_masked_backward`, the loss
reductions) runs in a fixed order, so results are bitwise reproducible run to run. The order in
which repeated ids are summed (tiles of ``k``, tree sums inside a tile) is an implementation
detail and may differ from the eager reference's order, hence in the last bits.

Invalid indices. On the GPU path no host-side range check runs (it would need a device sync),
so the kernels guard themselves: an out-of-range id never touches memory (loads and stores are
masked and the id is clamped before it forms an address) and the error is made loud instead:

* :func:`gather_patches`, :func:`restore_masked`: the output row of an invalid id is NaN;
* :func:`scatter_patches`: an invalid id in ``ids[b]`` has no output row to go to, so the whole
  image ``out[b]`` is NaN;
* :func:`restore_masked_backward`: an invalid id in ``ids_restore[b]`` makes ``grad_visible[b]``
  and ``grad_token`` NaN.

Launch sizes are plain power-of-two blocks picked from the problem size (every kernel here is a
memory-bound single pass over its data, and one block usually covers a whole patch or token
row), so there is no autotuning; under ``TRITON_INTERPRET=1`` the same blocks run on the CPU.
Index arithmetic that can exceed 2**31 is done in int64 (program ids are widened first).

Triton 3.9's interpreter (the CPU test path) differs from the compiler in three places, each
worked around where it occurs without changing the compiled meaning: masks that mix a scalar
with a vector are built from splatted operands (:func:`_splat`), noise is compared after a cast
to float32/float64 (the interpreter compares bfloat16 as raw bits), and a boolean becomes a
float through ``tl.where``. It also rounds float32 to bfloat16 by truncation, where compiled
Triton rounds to nearest even; the tests allow for that one bfloat16 ulp.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

try:
    from torch.library import wrap_triton  # lets torch.library.triton_op trace the launches
except ImportError:  # torch < 2.6: plain launches (no triton_op there either)

    def wrap_triton(kernel):  # type: ignore[no-redef]
        return kernel


_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


# --------------------------------------------------------------------------------------------
# shared device helpers


@triton.jit
def _splat(x, BLOCK: tl.constexpr):
    """Scalar ``x`` broadcast to a [BLOCK] vector. Masks mixing a per-program scalar with a
    vector are built from splatted operands: triton 3.9's interpreter keeps the operand dtype on
    a scalar comparison, so broadcasting its result gives a non-boolean mask (the compiled path
    is unaffected and folds the splat)."""
    return tl.zeros([BLOCK], dtype=x.dtype) + x


@triton.jit
def _patch_pixel_offset(patch, j, H, W, C: tl.constexpr, P: tl.constexpr):
    """Offset inside one [C, H, W] image of element ``j`` of patch number ``patch``, MAE's
    layout: ``j = (r * P + q) * C + c``, the patch at grid cell
    ``(patch // grid_w, patch % grid_w)``."""
    grid_w = W // P
    c = j % C
    q = (j // C) % P
    r = j // (C * P)
    y = (patch // grid_w) * P + r
    x = (patch % grid_w) * P + q
    return (c * H + y) * W + x


@triton.jit
def _patch_norm_stats(
    img_ptr, patch, live, N, H, W, eps, C: tl.constexpr, P: tl.constexpr, NORM_PIX: tl.constexpr,
    ACC: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """(mean, 1/std) of patch ``patch`` for MAE's ``norm_pix_loss`` (unbiased variance, like
    ``Tensor.var``), or (0, 1) without it. Two passes over the patch: the second one reads it
    back from cache, and is stable where sum-of-squares is not."""
    if not NORM_PIX:
        return tl.cast(0.0, ACC), tl.cast(1.0, ACC)  # typed: both returns must agree
    total = tl.zeros([BLOCK_N], dtype=ACC)
    for j0 in range(0, N, BLOCK_N):
        j = j0 + tl.arange(0, BLOCK_N)
        m = (j < N) & live
        t = tl.load(img_ptr + _patch_pixel_offset(patch, j, H, W, C, P), mask=m, other=0)
        total += t.to(ACC)
    mean = tl.sum(total, axis=0) / N
    sq = tl.zeros([BLOCK_N], dtype=ACC)
    for j0 in range(0, N, BLOCK_N):
        j = j0 + tl.arange(0, BLOCK_N)
        m = (j < N) & live
        t = tl.load(img_ptr + _patch_pixel_offset(patch, j, H, W, C, P), mask=m, other=0)
        dev = tl.where(m, t.to(ACC) - mean, 0.0)
        sq += dev * dev
    var = tl.sum(sq, axis=0) / (N - 1)
    rstd = 1.0 / tl.sqrt(var + eps)
    return mean, rstd


# --------------------------------------------------------------------------------------------
# kernels


@triton.jit
def _gather_patches_kernel(
    imgs_ptr, ids_ptr, out_ptr, K, L, H, W, N,
    C: tl.constexpr, P: tl.constexpr, HAS_IDS: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """out[b, k, :] = patch ids[b, k] of imgs[b]. Program (b*K + k, j-block)."""
    row = tl.program_id(0).to(tl.int64)
    b = row // K
    j = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    in_row = j < N
    if HAS_IDS:
        patch = tl.load(ids_ptr + row)
    else:
        patch = row % K
    patch_v = _splat(patch, BLOCK_N)
    valid = (patch_v >= 0) & (patch_v < L)
    patch = tl.where((patch >= 0) & (patch < L), patch, 0)  # an invalid id forms no address
    src = imgs_ptr + b * C * H * W + _patch_pixel_offset(patch, j, H, W, C, P)
    v = tl.load(src, mask=in_row & valid, other=0)
    v = tl.where(valid, v, float("nan"))
    tl.store(out_ptr + row * N + j, v, mask=in_row)


@triton.jit
def _scatter_patches_kernel(
    patches_ptr, ids_ptr, out_ptr, K, L, H, W, N,
    C: tl.constexpr, P: tl.constexpr, HAS_IDS: tl.constexpr, ACC: tl.constexpr,
    BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """Adjoint of gather: program (b*L + l, j-block) owns output patch l of image b and sums
    the rows k with ids[b, k] == l, scanning ids[b] in tiles. No atomics, fixed order; the
    scan also catches invalid ids, which poison the whole image."""
    pos = tl.program_id(0).to(tl.int64)
    b = pos // L
    patch = pos % L
    j = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    in_row = j < N
    if HAS_IDS:
        acc = tl.zeros([BLOCK_N], dtype=ACC)
        bad = tl.zeros([BLOCK_K], dtype=tl.int32)
        for k0 in range(0, K, BLOCK_K):
            k = k0 + tl.arange(0, BLOCK_K)
            in_k = k < K
            ids = tl.load(ids_ptr + b * K + k, mask=in_k, other=0)
            bad |= (in_k & ((ids < 0) | (ids >= L))).to(tl.int32)
            hit = in_k & (ids == patch)
            # only the matching rows are read: a masked-off lane costs no memory traffic
            src = patches_ptr + (b * K + k)[:, None] * N + j[None, :]
            v = tl.load(src, mask=hit[:, None] & in_row[None, :], other=0)
            acc += tl.sum(v.to(ACC), axis=0)
        val = tl.where(_splat(tl.max(bad, axis=0), BLOCK_N) == 0, acc, float("nan"))
    else:
        val = tl.load(patches_ptr + pos * N + j, mask=in_row, other=0)
    dst = out_ptr + b * C * H * W + _patch_pixel_offset(patch, j, H, W, C, P)
    tl.store(dst, val.to(out_ptr.dtype.element_ty), mask=in_row)


@triton.jit
def _stable_rank_kernel(
    noise_ptr, ids_restore_ptr, ids_keep_ptr, mask_ptr, L, keep,
    CMP: tl.constexpr, BLOCK_I: tl.constexpr, BLOCK_J: tl.constexpr,
):  # fmt: skip
    """Rank of each noise[b, i] in the order of torch.sort(stable=True): NaN last, ties (and
    NaNs among themselves) broken by index. The rank is the count of j that come before i,
    summed over tiles of j: O(L^2) compares per row, no sort network, exact. Since the ranks
    are a permutation, writing ids_keep[b, rank] = i is race free."""
    b = tl.program_id(0).to(tl.int64)
    i = tl.program_id(1) * BLOCK_I + tl.arange(0, BLOCK_I)
    in_i = i < L
    # compared in float32 (float64 for float64 noise): exact for every input dtype, and the
    # interpreter compares bfloat16 as raw bits
    a = tl.load(noise_ptr + b * L + i, mask=in_i, other=0).to(CMP)
    a_nan = a != a
    rank = tl.zeros([BLOCK_I], dtype=tl.int32)
    for j0 in range(0, L, BLOCK_J):
        j = j0 + tl.arange(0, BLOCK_J)
        in_j = j < L
        z = tl.load(noise_ptr + b * L + j, mask=in_j, other=0).to(CMP)
        z_nan = z != z
        zj = z[None, :]
        ai = a[:, None]
        zj_nan = z_nan[None, :]
        ai_nan = a_nan[:, None]
        # j strictly before i by value: j is a number and (i is NaN or j < i)
        less = (~zj_nan) & (ai_nan | (zj < ai))
        # same value (+0 == -0; all NaNs equal): the lower index goes first
        tie = (zj == ai) | (zj_nan & ai_nan)
        before = (less | (tie & (j[None, :] < i[:, None]))) & in_j[None, :]
        rank += tl.sum(before.to(tl.int32), axis=1)
    tl.store(ids_restore_ptr + b * L + i, rank.to(tl.int64), mask=in_i)
    # via float32: the interpreter mis-converts a boolean straight to bfloat16
    removed = tl.where(rank >= keep, 1.0, 0.0).to(mask_ptr.dtype.element_ty)
    tl.store(mask_ptr + b * L + i, removed, mask=in_i)
    tl.store(ids_keep_ptr + b * keep + rank, i.to(tl.int64), mask=in_i & (rank < keep))


@triton.jit
def _gather_rows_kernel(
    src_ptr, idx_ptr, token_ptr, out_ptr, R, S, T, D,
    HAS_TOKEN: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """out[b, r, :] = src[b, s, :] for s = idx[b, r] in [0, S); the token (or zeros) for s in
    [S, T); NaN for any other s. Serves random_masking (S = T = L) and MAE's decoder unshuffle
    (S = K visible rows, T = L). Program (b*R + r, d-block)."""
    row = tl.program_id(0).to(tl.int64)
    b = row // R
    d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    in_d = d < D
    s = tl.load(idx_ptr + row)
    sv = _splat(s, BLOCK_D)
    from_src = (sv >= 0) & (sv < S)
    from_token = (sv >= S) & (sv < T)
    s = tl.where((s >= 0) & (s < S), s, 0)  # an invalid id never forms an address
    v = tl.load(src_ptr + (b * S + s) * D + d, mask=in_d & from_src, other=0)
    if HAS_TOKEN:
        t = tl.load(token_ptr + d, mask=in_d & from_token, other=0)
        v = tl.where(from_token, t, v)
    v = tl.where(from_src | from_token, v, float("nan"))
    tl.store(out_ptr + row * D + d, v.to(out_ptr.dtype.element_ty), mask=in_d)


@triton.jit
def _restore_masked_backward_kernel(
    grad_out_ptr, ids_ptr, grad_visible_ptr, token_partial_ptr, K, L, D, NSLOT,
    ACC: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """Adjoint of the unshuffle. MAE gathers x_ = cat([visible, mask tokens]) by ids_restore,
    so slot s of x_ receives the sum of grad_out[b, l] over l with ids_restore[b, l] == s.
    Program (b*NSLOT + s, d-block) owns slot s < K (a row of grad_visible) or, for s == K,
    all mask-token slots of sample b (its partial of grad_token). It scans ids_restore[b] in
    tiles: fixed order, no atomics."""
    pid = tl.program_id(0).to(tl.int64)
    b = pid // NSLOT
    s = pid % NSLOT
    # slot s gathers the ids in [lo, hi): {s} for a visible row, [K, L) for the token slot
    lo = s
    hi = tl.where(s < K, s + 1, L)
    d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    in_d = d < D
    acc = tl.zeros([BLOCK_D], dtype=ACC)
    bad = tl.zeros([BLOCK_L], dtype=tl.int32)
    for l0 in range(0, L, BLOCK_L):
        pos = l0 + tl.arange(0, BLOCK_L)  # token positions of sample b
        in_l = pos < L
        ids = tl.load(ids_ptr + b * L + pos, mask=in_l, other=0)
        bad |= (in_l & ((ids < 0) | (ids >= L))).to(tl.int32)
        hit = in_l & (ids >= lo) & (ids < hi)
        src = grad_out_ptr + (b * L + pos)[:, None] * D + d[None, :]
        g = tl.load(src, mask=hit[:, None] & in_d[None, :], other=0)
        acc += tl.sum(g.to(ACC), axis=0)
    acc = tl.where(_splat(tl.max(bad, axis=0), BLOCK_D) == 0, acc, float("nan"))
    if s < K:
        dst = grad_visible_ptr + (b * K + s) * D + d
        tl.store(dst, acc.to(grad_visible_ptr.dtype.element_ty), mask=in_d)
    else:
        tl.store(token_partial_ptr + b * D + d, acc, mask=in_d)


@triton.jit
def _sum_rows_kernel(part_ptr, out_ptr, B, D, BLOCK_B: tl.constexpr, BLOCK_D: tl.constexpr):
    """out[d] = sum over b of part[b, d], in a fixed order (the grad_token reduction)."""
    d = tl.program_id(0) * BLOCK_D + tl.arange(0, BLOCK_D)
    in_d = d < D
    acc = tl.zeros([BLOCK_B, BLOCK_D], dtype=part_ptr.dtype.element_ty)
    for b0 in range(0, B, BLOCK_B):
        b = (b0 + tl.arange(0, BLOCK_B)).to(tl.int64)
        m = (b < B)[:, None] & in_d[None, :]
        acc += tl.load(part_ptr + b[:, None] * D + d[None, :], mask=m, other=0)
    tl.store(out_ptr + d, tl.sum(acc, axis=0).to(out_ptr.dtype.element_ty), mask=in_d)


@triton.jit
def _patch_loss_kernel(
    pred_ptr, imgs_ptr, mask_ptr, per_patch_ptr, L, H, W, N, eps,
    C: tl.constexpr, P: tl.constexpr, NORM_PIX: tl.constexpr, ACC: tl.constexpr,
    BLOCK_N: tl.constexpr,
):  # fmt: skip
    """per_patch[b*L + l] = mask[b, l] * mean_j (pred[b, l, j] - target[b, l, j])^2, the target
    read straight from imgs (no patchified copy). Kept patches (mask == 0) read nothing."""
    pos = tl.program_id(0).to(tl.int64)
    b = pos // L
    patch = pos % L
    w = tl.load(mask_ptr + pos).to(ACC)
    live = _splat(w, BLOCK_N) != 0
    img_ptr = imgs_ptr + b * C * H * W
    mean, rstd = _patch_norm_stats(img_ptr, patch, live, N, H, W, eps, C, P, NORM_PIX, ACC, BLOCK_N)
    sq = tl.zeros([BLOCK_N], dtype=ACC)
    for j0 in range(0, N, BLOCK_N):
        j = j0 + tl.arange(0, BLOCK_N)
        m = (j < N) & live
        t = tl.load(img_ptr + _patch_pixel_offset(patch, j, H, W, C, P), mask=m, other=0)
        x = tl.load(pred_ptr + pos * N + j, mask=m, other=0)
        e = tl.where(m, x.to(ACC) - (t.to(ACC) - mean) * rstd, 0.0)
        sq += e * e
    # a kept patch read nothing, so its sum is 0 and w * 0 == 0
    tl.store(per_patch_ptr + pos, w * (tl.sum(sq, axis=0) / N))


@triton.jit
def _masked_mean_kernel(per_patch_ptr, mask_ptr, M, loss_ptr, BLOCK: tl.constexpr):
    """loss = sum(per_patch) / sum(mask), both summed in a fixed order by one program."""
    ACC: tl.constexpr = per_patch_ptr.dtype.element_ty
    num = tl.zeros([BLOCK], dtype=ACC)
    den = tl.zeros([BLOCK], dtype=ACC)
    for i0 in range(0, M, BLOCK):
        i = i0 + tl.arange(0, BLOCK)
        m = i < M
        num += tl.load(per_patch_ptr + i, mask=m, other=0)
        den += tl.load(mask_ptr + i, mask=m, other=0).to(ACC)
    loss = tl.sum(num, axis=0) / tl.sum(den, axis=0)
    tl.store(loss_ptr, loss.to(loss_ptr.dtype.element_ty))


@triton.jit
def _loss_grad_scale_kernel(grad_loss_ptr, mask_ptr, M, N, scale_ptr, BLOCK: tl.constexpr):
    """scale = 2 * grad_loss / (N * sum(mask)): d loss / d pred[b, l, j] is
    scale * mask[b, l] * (pred - target)[b, l, j]."""
    ACC: tl.constexpr = scale_ptr.dtype.element_ty
    den = tl.zeros([BLOCK], dtype=ACC)
    for i0 in range(0, M, BLOCK):
        i = i0 + tl.arange(0, BLOCK)
        den += tl.load(mask_ptr + i, mask=i < M, other=0).to(ACC)
    g = tl.load(grad_loss_ptr).to(ACC)
    tl.store(scale_ptr, 2.0 * g / (N * tl.sum(den, axis=0)))


@triton.jit
def _patch_loss_backward_kernel(
    pred_ptr, imgs_ptr, mask_ptr, scale_ptr, grad_pred_ptr, L, H, W, N, eps,
    C: tl.constexpr, P: tl.constexpr, NORM_PIX: tl.constexpr, ACC: tl.constexpr,
    BLOCK_N: tl.constexpr,
):  # fmt: skip
    """grad_pred[b, l, :] = scale * mask[b, l] * (pred - target)[b, l, :]; exact zeros (and no
    reads) where mask == 0. Program (b*L + l) walks its patch in blocks."""
    pos = tl.program_id(0).to(tl.int64)
    b = pos // L
    patch = pos % L
    w = tl.load(mask_ptr + pos).to(ACC)
    live = _splat(w, BLOCK_N) != 0
    coef = tl.load(scale_ptr) * w
    img_ptr = imgs_ptr + b * C * H * W
    mean, rstd = _patch_norm_stats(img_ptr, patch, live, N, H, W, eps, C, P, NORM_PIX, ACC, BLOCK_N)
    for j0 in range(0, N, BLOCK_N):
        j = j0 + tl.arange(0, BLOCK_N)
        in_row = j < N
        m = in_row & live
        t = tl.load(img_ptr + _patch_pixel_offset(patch, j, H, W, C, P), mask=m, other=0)
        x = tl.load(pred_ptr + pos * N + j, mask=m, other=0)
        g = tl.where(m, coef * (x.to(ACC) - (t.to(ACC) - mean) * rstd), 0.0)
        tl.store(grad_pred_ptr + pos * N + j, g.to(grad_pred_ptr.dtype.element_ty), mask=in_row)


# --------------------------------------------------------------------------------------------
# launchers


def _block(n: int, cap: int) -> int:
    """The power-of-two block covering ``n`` elements, at most ``cap`` (at least 1)."""
    return max(1, min(triton.next_power_of_2(max(n, 1)), cap))


def _acc(dtype: torch.dtype) -> tl.dtype:
    return tl.float64 if dtype == torch.float64 else tl.float32


def _acc_torch(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _check(ok: bool, msg: str) -> None:
    if not ok:
        raise ValueError(msg)


def _check_tensor(
    name: str, t: torch.Tensor, shape: tuple[int, ...], dtypes: tuple[torch.dtype, ...]
) -> None:
    _check(
        tuple(t.shape) == tuple(shape),
        f"{name}: expected shape {tuple(shape)}, got {tuple(t.shape)}",
    )
    _check(t.dtype in dtypes, f"{name}: expected dtype in {dtypes}, got {t.dtype}")
    _check(t.is_contiguous(), f"{name}: expected a contiguous tensor")


def _check_image(name: str, imgs: torch.Tensor, p: int) -> tuple[int, int, int, int, int]:
    """Shape of an image batch, and the patch count L; H and W must be multiples of p."""
    _check(imgs.dim() == 4, f"{name}: expected [B, C, H, W], got shape {tuple(imgs.shape)}")
    _check(p >= 1, f"p: expected a positive patch size, got {p}")
    b, c, h, w = imgs.shape
    _check(h % p == 0 and w % p == 0, f"{name}: H={h} and W={w} must be multiples of p={p}")
    _check_tensor(name, imgs, (b, c, h, w), _FLOAT_DTYPES)
    return b, c, h, w, (h // p) * (w // p)


def gather_patches(imgs: torch.Tensor, ids: torch.Tensor | None, p: int, out: torch.Tensor) -> None:
    """Patchify then gather: ``out[b, k] = patchify(imgs, p)[b, ids[b, k]]``.

    imgs [B, C, H, W] float; ids [B, K] int64 or None (all L patches in order, K == L);
    out [B, K, p*p*C] of imgs' dtype. An out-of-range id gives a NaN row.
    """
    b, c, h, w, length = _check_image("imgs", imgs, p)
    n = p * p * c
    k = length if ids is None else ids.shape[-1]
    if ids is not None:
        _check_tensor("ids", ids, (b, k), (torch.int64,))
    _check_tensor("out", out, (b, k, n), (imgs.dtype,))
    if out.numel() == 0:
        return
    block_n = _block(n, 1024)
    grid = (b * k, triton.cdiv(n, block_n))
    wrap_triton(_gather_patches_kernel)[grid](
        imgs, out if ids is None else ids, out, k, length, h, w, n,
        C=c, P=p, HAS_IDS=ids is not None, BLOCK_N=block_n,
    )  # fmt: skip


def scatter_patches(
    patches: torch.Tensor, ids: torch.Tensor | None, p: int, out: torch.Tensor
) -> None:
    """Adjoint of :func:`gather_patches`: ``out = 0``, then
    ``out[b, pixel(ids[b, k], j)] += patches[b, k, j]``.

    patches [B, K, p*p*C] float; ids [B, K] int64 or None (K == L, a plain unpatchify);
    out [B, C, H, W] of patches' dtype, fully written (no zeroing needed). Repeated ids sum in
    float32 (float64) in a fixed order; with unique ids the result is an exact copy. An
    out-of-range id in ``ids[b]`` makes ``out[b]`` NaN.
    """
    b, c, h, w, length = _check_image("out", out, p)
    n = p * p * c
    k = length if ids is None else ids.shape[-1]
    if ids is not None:
        _check_tensor("ids", ids, (b, k), (torch.int64,))
    _check_tensor("patches", patches, (b, k, n), (out.dtype,))
    if out.numel() == 0:
        return
    block_n = _block(n, 256)
    block_k = _block(k, max(1, 4096 // block_n))
    grid = (b * length, triton.cdiv(n, block_n))
    wrap_triton(_scatter_patches_kernel)[grid](
        patches, out if ids is None else ids, out, k, length, h, w, n,
        C=c, P=p, HAS_IDS=ids is not None, ACC=_acc(out.dtype), BLOCK_K=block_k, BLOCK_N=block_n,
    )  # fmt: skip


def random_masking(
    x: torch.Tensor,
    noise: torch.Tensor,
    keep: int,
    visible: torch.Tensor,
    mask: torch.Tensor,
    ids_keep: torch.Tensor,
    ids_restore: torch.Tensor,
) -> None:
    """MAE's ``random_masking`` given the noise, with a stable argsort (torch.sort's order:
    NaN last, ties by index).

    x [B, L, D] float; noise [B, L] float; 0 <= keep <= L. Writes visible [B, keep, D] (x's
    dtype) = the kept rows of x in rank order, mask [B, L] (x's dtype, 1 = removed),
    ids_keep [B, keep] int64, ids_restore [B, L] int64 (the rank of each patch).
    """
    _check(x.dim() == 3, f"x: expected [B, L, D], got shape {tuple(x.shape)}")
    b, length, d = x.shape
    _check(0 <= keep <= length, f"keep: expected 0 <= keep <= L={length}, got {keep}")
    _check_tensor("x", x, (b, length, d), _FLOAT_DTYPES)
    _check_tensor("noise", noise, (b, length), _FLOAT_DTYPES)
    _check_tensor("visible", visible, (b, keep, d), (x.dtype,))
    _check_tensor("mask", mask, (b, length), (x.dtype,))
    _check_tensor("ids_keep", ids_keep, (b, keep), (torch.int64,))
    _check_tensor("ids_restore", ids_restore, (b, length), (torch.int64,))
    if b * length == 0:
        return
    block_i = _block(length, 64)
    block_j = _block(length, 64)
    wrap_triton(_stable_rank_kernel)[(b, triton.cdiv(length, block_i))](
        noise, ids_restore, ids_keep, mask, length, keep,
        CMP=_acc(noise.dtype), BLOCK_I=block_i, BLOCK_J=block_j,
    )  # fmt: skip
    if visible.numel() == 0:
        return
    block_d = _block(d, 1024)
    wrap_triton(_gather_rows_kernel)[(b * keep, triton.cdiv(d, block_d))](
        x, ids_keep, x, visible, keep, length, length, d, HAS_TOKEN=False, BLOCK_D=block_d
    )


def restore_masked(
    visible: torch.Tensor,
    token: torch.Tensor | None,
    ids_restore: torch.Tensor,
    out: torch.Tensor,
) -> None:
    """MAE's decoder unshuffle: ``out[b, l] = visible[b, r]`` for ``r = ids_restore[b, l] < K``,
    else the mask token (zeros when ``token`` is None).

    visible [B, K, D] float; token [D] of visible's dtype or None; ids_restore [B, L] int64;
    out [B, L, D] of visible's dtype. An id outside [0, L) gives a NaN row.
    """
    _check(visible.dim() == 3, f"visible: expected [B, K, D], got shape {tuple(visible.shape)}")
    b, k, d = visible.shape
    _check(ids_restore.dim() == 2, "ids_restore: expected [B, L]")
    length = ids_restore.shape[1]
    _check(k <= length, f"visible: K={k} exceeds L={length}")
    _check_tensor("visible", visible, (b, k, d), _FLOAT_DTYPES)
    if token is not None:
        _check_tensor("token", token, (d,), (visible.dtype,))
    _check_tensor("ids_restore", ids_restore, (b, length), (torch.int64,))
    _check_tensor("out", out, (b, length, d), (visible.dtype,))
    if out.numel() == 0:
        return
    block_d = _block(d, 1024)
    wrap_triton(_gather_rows_kernel)[(b * length, triton.cdiv(d, block_d))](
        visible, ids_restore, visible if token is None else token, out, length, k, length, d,
        HAS_TOKEN=token is not None, BLOCK_D=block_d,
    )  # fmt: skip


def restore_masked_backward(
    grad_out: torch.Tensor,
    ids_restore: torch.Tensor,
    grad_visible: torch.Tensor,
    grad_token: torch.Tensor | None,
) -> None:
    """Gradients of :func:`restore_masked`: ``grad_visible[b, k]`` = sum of ``grad_out[b, l]``
    over ``l`` with ``ids_restore[b, l] == k``; ``grad_token`` = sum of ``grad_out[b, l]`` over
    all ``(b, l)`` with ``ids_restore[b, l] >= K`` (skipped when None).

    grad_out [B, L, D] float; ids_restore [B, L] int64; grad_visible [B, K, D] and grad_token
    [D] of grad_out's dtype. Sums run in float32 (float64) in a fixed order, no atomics. An id
    outside [0, L) in ``ids_restore[b]`` makes ``grad_visible[b]`` and ``grad_token`` NaN.
    """
    _check(grad_out.dim() == 3, f"grad_out: expected [B, L, D], got {tuple(grad_out.shape)}")
    b, length, d = grad_out.shape
    _check(grad_visible.dim() == 3, "grad_visible: expected [B, K, D]")
    k = grad_visible.shape[1]
    _check(k <= length, f"grad_visible: K={k} exceeds L={length}")
    _check_tensor("grad_out", grad_out, (b, length, d), _FLOAT_DTYPES)
    _check_tensor("ids_restore", ids_restore, (b, length), (torch.int64,))
    _check_tensor("grad_visible", grad_visible, (b, k, d), (grad_out.dtype,))
    if grad_token is not None:
        _check_tensor("grad_token", grad_token, (d,), (grad_out.dtype,))
    if d == 0:
        return
    nslot = k + (grad_token is not None)  # slot K: the mask-token partial of each sample
    partial = grad_visible  # unused unless grad_token is wanted
    if grad_token is not None:
        partial = torch.empty((b, d), dtype=_acc_torch(grad_out.dtype), device=grad_out.device)
    block_l = _block(length, 32)
    block_d = _block(d, 256)
    if b * nslot > 0:
        wrap_triton(_restore_masked_backward_kernel)[(b * nslot, triton.cdiv(d, block_d))](
            grad_out, ids_restore, grad_visible, partial, k, length, d, nslot,
            ACC=_acc(grad_out.dtype), BLOCK_L=block_l, BLOCK_D=block_d,
        )  # fmt: skip
    if grad_token is not None:
        block_b = _block(b, max(1, 4096 // block_d))
        wrap_triton(_sum_rows_kernel)[(triton.cdiv(d, block_d),)](
            partial, grad_token, b, d, BLOCK_B=block_b, BLOCK_D=block_d
        )


def _check_loss_args(
    pred: torch.Tensor, imgs: torch.Tensor, mask: torch.Tensor, p: int
) -> tuple[int, int, int, int, int, int]:
    b, c, h, w, length = _check_image("imgs", imgs, p)
    n = p * p * c
    _check_tensor("pred", pred, (b, length, n), (imgs.dtype,))
    _check_tensor("mask", mask, (b, length), _FLOAT_DTYPES)
    return b, c, h, w, length, n


def masked_patch_loss(
    pred: torch.Tensor,
    imgs: torch.Tensor,
    mask: torch.Tensor,
    p: int,
    norm_pix: bool,
    eps: float,
    loss: torch.Tensor,
) -> None:
    """MAE's ``forward_loss``: ``loss = sum_bl mask * mean_j (pred - target)^2 / sum(mask)``,
    with ``target = patchify(imgs, p)``, normalised per patch by its mean and unbiased variance
    (``(t - mean) / sqrt(var + eps)``) when ``norm_pix``.

    pred [B, L, p*p*C] float; imgs [B, C, H, W] of pred's dtype; mask [B, L] float weights;
    loss a 0-dim tensor of pred's dtype. Deliberate difference: patches with mask == 0 are not
    read, so a NaN/inf in them does not reach the loss (the reference gives NaN).
    """
    b, c, h, w, length, n = _check_loss_args(pred, imgs, mask, p)
    _check_tensor("loss", loss, (), (pred.dtype,))
    acc = _acc_torch(pred.dtype)
    per_patch = torch.empty(b * length, dtype=acc, device=pred.device)
    if b * length > 0:
        wrap_triton(_patch_loss_kernel)[(b * length,)](
            pred, imgs, mask, per_patch, length, h, w, n, eps,
            C=c, P=p, NORM_PIX=bool(norm_pix), ACC=_acc(pred.dtype), BLOCK_N=_block(n, 1024),
        )  # fmt: skip
    wrap_triton(_masked_mean_kernel)[(1,)](
        per_patch, mask, b * length, loss, BLOCK=_block(b * length, 1024)
    )


def masked_patch_loss_backward(
    grad_loss: torch.Tensor,
    pred: torch.Tensor,
    imgs: torch.Tensor,
    mask: torch.Tensor,
    p: int,
    norm_pix: bool,
    eps: float,
    grad_pred: torch.Tensor,
) -> None:
    """Gradient of :func:`masked_patch_loss` with respect to ``pred``:
    ``grad_pred[b, l, j] = grad_loss * 2 * mask[b, l] / (n * sum(mask)) * (pred - target)``,
    ``n = p*p*C``; rows with mask == 0 are exact zeros.

    grad_loss 0-dim float; grad_pred [B, L, p*p*C] of pred's dtype; the rest as in
    :func:`masked_patch_loss`.
    """
    b, c, h, w, length, n = _check_loss_args(pred, imgs, mask, p)
    _check_tensor("grad_loss", grad_loss, (), _FLOAT_DTYPES)
    _check_tensor("grad_pred", grad_pred, (b, length, n), (pred.dtype,))
    if grad_pred.numel() == 0:
        return
    scale = torch.empty((), dtype=_acc_torch(pred.dtype), device=pred.device)
    wrap_triton(_loss_grad_scale_kernel)[(1,)](
        grad_loss, mask, b * length, n, scale, BLOCK=_block(b * length, 1024)
    )
    wrap_triton(_patch_loss_backward_kernel)[(b * length,)](
        pred, imgs, mask, scale, grad_pred, length, h, w, n, eps,
        C=c, P=p, NORM_PIX=bool(norm_pix), ACC=_acc(pred.dtype), BLOCK_N=_block(n, 1024),
    )  # fmt: skip
