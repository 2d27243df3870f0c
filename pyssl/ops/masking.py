"""Masked-patch ops for masked image modelling (MAE and its kin).

Anchor: facebookresearch/mae ``models_mae.py`` (``patchify``, ``unpatchify``,
``random_masking``, the decoder's mask-token unshuffle, ``forward_loss``). Patch rows use MAE's
order inside a patch: row ``p``, column ``q``, channel ``c`` fastest; patches are numbered
row-major over the grid. Every op takes float32, bfloat16, float16 and float64 tensors,
accumulates in float32 (float64 for float64), and returns outputs and gradients in the input
dtype. CPU tensors run the C++ kernels, CUDA tensors the Triton kernels (``backend="cuda"``
picks the CUDA C++ ones); see :func:`pyssl.ops.explain`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from pyssl.ops._backend import check_backend_arg, launch, resolve
from pyssl.reference import masking as ref

_FLOATS = (torch.float32, torch.float16, torch.bfloat16, torch.float64)

# ----------------------------------------------------------------------------- validation


def _check_tensor(t: object, name: str, ndim: int, floating: bool = True) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if t.dim() != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions, got shape {tuple(t.shape)}")
    if floating and t.dtype not in _FLOATS:
        raise TypeError(
            f"{name}: expected a float32/bfloat16/float16/float64 tensor, got {t.dtype}"
        )
    return t


def _check_ids(ids: object, name: str, batch: int) -> Tensor:
    t = _check_tensor(ids, name, 2, floating=False)
    if t.dtype != torch.int64:
        raise TypeError(f"{name}: expected int64 indices, got {t.dtype}")
    if t.shape[0] != batch:
        raise ValueError(f"{name}: batch size {t.shape[0]} differs from the data's {batch}")
    return t


def _check_same(a: Tensor, an: str, b: Tensor, bn: str, dtype: bool = True) -> None:
    if a.device != b.device:
        raise ValueError(f"{bn}: on {b.device}, but {an} is on {a.device}")
    if dtype and a.dtype != b.dtype:
        raise TypeError(f"{bn}: dtype {b.dtype} differs from {an}'s {a.dtype}")


def _check_batch(t: Tensor, name: str) -> None:
    if t.shape[0] == 0:
        raise ValueError(f"{name}: empty batch")


def _check_images(imgs: object, patch_size: object) -> Tensor:
    t = _check_tensor(imgs, "imgs", 4)
    if not isinstance(patch_size, int) or isinstance(patch_size, bool) or patch_size < 1:
        raise ValueError(f"patch_size: expected a positive int, got {patch_size!r}")
    _check_batch(t, "imgs")
    h, w = t.shape[2], t.shape[3]
    if h % patch_size or w % patch_size:
        raise ValueError(
            f"imgs: height and width {h}x{w} are not divisible by patch_size {patch_size}"
        )
    return t


# ------------------------------------------------------------------- patch gather / scatter


@torch.library.custom_op("pyssl::gather_patches", mutates_args=())
def _gather_patches(imgs: Tensor, ids: Tensor | None, patch_size: int, backend: str) -> Tensor:
    imgs = imgs.contiguous()
    ids = ids.contiguous() if ids is not None else None
    if backend == "reference":
        x = ref.patchify(imgs, patch_size)
        return x if ids is None else ref.gather_patches(imgs, ids, patch_size)
    out = _gather_patches_fake(imgs, ids, patch_size, backend)
    launch("masking", "gather_patches", backend, imgs, ids, patch_size, out)
    return out


@_gather_patches.register_fake
def _gather_patches_fake(imgs: Tensor, ids: Tensor | None, patch_size: int, backend: str) -> Tensor:
    b, c, h, w = imgs.shape
    k = ids.shape[1] if ids is not None else (h // patch_size) * (w // patch_size)
    return imgs.new_empty(b, k, patch_size * patch_size * c)


@torch.library.custom_op("pyssl::scatter_patches", mutates_args=())
def _scatter_patches(
    patches: Tensor,
    ids: Tensor | None,
    patch_size: int,
    channels: int,
    height: int,
    width: int,
    backend: str,
) -> Tensor:
    patches = patches.contiguous()
    ids = ids.contiguous() if ids is not None else None
    grid = (height // patch_size, width // patch_size)
    if backend == "reference":
        if ids is None:
            return ref.unpatchify(patches, patch_size, channels, grid)
        full = patches.new_zeros(patches.shape[0], grid[0] * grid[1], patches.shape[2])
        full.scatter_add_(1, ids.unsqueeze(-1).expand_as(patches), patches)
        return ref.unpatchify(full, patch_size, channels, grid)
    out = _scatter_patches_fake(patches, ids, patch_size, channels, height, width, backend)
    launch("masking", "scatter_patches", backend, patches, ids, patch_size, out)
    return out


@_scatter_patches.register_fake
def _scatter_patches_fake(
    patches: Tensor,
    ids: Tensor | None,
    patch_size: int,
    channels: int,
    height: int,
    width: int,
    backend: str,
) -> Tensor:
    return patches.new_empty(patches.shape[0], channels, height, width)


def _gather_setup(ctx, inputs, output):  # type: ignore[no-untyped-def]
    imgs, ids, patch_size, backend = inputs
    ctx.save_for_backward(ids)
    ctx.meta = (patch_size, imgs.shape[1], imgs.shape[2], imgs.shape[3], backend)


def _gather_backward(ctx, grad):  # type: ignore[no-untyped-def]
    (ids,) = ctx.saved_tensors
    return _scatter_patches(grad, ids, *ctx.meta), None, None, None


def _scatter_setup(ctx, inputs, output):  # type: ignore[no-untyped-def]
    patches, ids, patch_size, channels, height, width, backend = inputs
    ctx.save_for_backward(ids)
    ctx.meta = (patch_size, backend)


def _scatter_backward(ctx, grad):  # type: ignore[no-untyped-def]
    (ids,) = ctx.saved_tensors
    return _gather_patches(grad, ids, *ctx.meta), None, None, None, None, None, None


_gather_patches.register_autograd(_gather_backward, setup_context=_gather_setup)
_scatter_patches.register_autograd(_scatter_backward, setup_context=_scatter_setup)


def patchify(imgs: Tensor, patch_size: int, *, backend: str | None = None) -> Tensor:
    """Cuts images into flattened patches, as MAE's ``patchify``.

    Args:
        imgs: ``[B, C, H, W]`` float tensor, ``H`` and ``W`` divisible by ``patch_size``.
        patch_size: side ``p`` of the square patches.

    Returns:
        ``[B, L, p*p*C]`` with ``L = (H/p)*(W/p)``, patches row-major, each in (p, q, c) order.
        MAE assumes square RGB images; here any ``C``, ``H`` and ``W`` work.
    """
    check_backend_arg(backend)
    imgs = _check_images(imgs, patch_size)
    return _gather_patches(imgs, None, patch_size, resolve("patchify", imgs.device, backend))


def unpatchify(
    x: Tensor,
    patch_size: int,
    channels: int,
    *,
    grid: tuple[int, int] | None = None,
    backend: str | None = None,
) -> Tensor:
    """Inverse of :func:`patchify`: ``[B, L, p*p*C] -> [B, C, H, W]``.

    ``grid`` is the patch grid ``(rows, cols)``; by default it is square (MAE's assumption) and
    ``L`` must then be a perfect square.
    """
    check_backend_arg(backend)
    x = _check_tensor(x, "x", 3)
    _check_batch(x, "x")
    if not isinstance(patch_size, int) or patch_size < 1:
        raise ValueError(f"patch_size: expected a positive int, got {patch_size!r}")
    if not isinstance(channels, int) or channels < 1:
        raise ValueError(f"channels: expected a positive int, got {channels!r}")
    if x.shape[2] != patch_size * patch_size * channels:
        raise ValueError(
            f"x: last dimension {x.shape[2]} is not patch_size**2 * channels = "
            f"{patch_size * patch_size * channels}"
        )
    length = x.shape[1]
    if grid is None:
        side = int(round(length**0.5))
        if side * side != length:
            raise ValueError(
                f"x: {length} patches do not form a square grid; pass grid=(rows, cols)"
            )
        grid = (side, side)
    if len(grid) != 2 or grid[0] * grid[1] != length:
        raise ValueError(f"grid: {grid} does not hold the {length} patches of x")
    return _scatter_patches(
        x,
        None,
        patch_size,
        channels,
        grid[0] * patch_size,
        grid[1] * patch_size,
        resolve("unpatchify", x.device, backend),
    )


def gather_patches(
    imgs: Tensor, ids_keep: Tensor, patch_size: int, *, backend: str | None = None
) -> Tensor:
    """Patchify and keep the patches ``ids_keep`` names, fused: reads only the kept pixels.

    Equals ``torch.gather(patchify(imgs, p), 1, ids_keep[..., None].expand(-1, -1, p*p*C))``.

    Args:
        imgs: ``[B, C, H, W]`` float tensor.
        ids_keep: ``[B, K]`` int64 patch indices in ``[0, L)`` (from :func:`random_masking`).
        patch_size: side ``p`` of the patches.

    Returns:
        ``[B, K, p*p*C]``. The gradient to ``imgs`` is zero outside the kept patches; a patch
        named twice receives the sum (in a fixed order on the CPU; on CUDA the order of such
        sums is unspecified).
    """
    check_backend_arg(backend)
    imgs = _check_images(imgs, patch_size)
    ids_keep = _check_ids(ids_keep, "ids_keep", imgs.shape[0])
    _check_same(imgs, "imgs", ids_keep, "ids_keep", dtype=False)
    return _gather_patches(
        imgs, ids_keep, patch_size, resolve("gather_patches", imgs.device, backend)
    )


# ----------------------------------------------------------------------------- random masking


class MaskingResult(NamedTuple):
    """What :func:`random_masking` returns (MAE's ``x_masked, mask, ids_restore`` plus
    ``ids_keep``)."""

    visible: Tensor  # [B, K, D] kept tokens, in order of increasing noise
    mask: Tensor  # [B, L] 1 where a token is removed, 0 where kept; x's dtype
    ids_keep: Tensor  # [B, K] int64 positions of the kept tokens
    ids_restore: Tensor  # [B, L] int64 inverse permutation (MAE's ids_restore)


@torch.library.custom_op("pyssl::random_masking", mutates_args=())
def _random_masking(
    x: Tensor, noise: Tensor, keep: int, backend: str
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    x = x.contiguous()
    noise = noise.contiguous()
    if backend == "reference":
        ratio = 1.0 - keep / x.shape[1]  # len_keep = int(L * (1 - ratio)) == keep again
        visible, mask, ids_keep, ids_restore = ref.random_masking(x, ratio, noise)
        if visible.shape[1] != keep:  # guard against float round-off in the ratio
            raise AssertionError("reference random_masking kept a different count")
        return visible.clone(), mask, ids_keep.clone(), ids_restore
    outs = _random_masking_fake(x, noise, keep, backend)
    launch("masking", "random_masking", backend, x, noise, keep, *outs)
    return outs


@_random_masking.register_fake
def _random_masking_fake(
    x: Tensor, noise: Tensor, keep: int, backend: str
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    b, length, d = x.shape
    return (
        x.new_empty(b, keep, d),
        x.new_empty(b, length),
        x.new_empty(b, keep, dtype=torch.int64),
        x.new_empty(b, length, dtype=torch.int64),
    )


def _random_masking_setup(ctx, inputs, output):  # type: ignore[no-untyped-def]
    ctx.save_for_backward(output[3])
    ctx.backend = inputs[3]
    ctx.mark_non_differentiable(output[1], output[2], output[3])


def _random_masking_backward(ctx, grad_visible, *_):  # type: ignore[no-untyped-def]
    # The ids form a permutation, so the gradient is the unshuffle of grad_visible with zeros
    # at the removed positions: restore_masked with a zero mask token, no atomics.
    (ids_restore,) = ctx.saved_tensors
    return _restore_masked(grad_visible, None, ids_restore, ctx.backend), None, None, None


_random_masking.register_autograd(_random_masking_backward, setup_context=_random_masking_setup)


def random_masking(
    x: Tensor,
    mask_ratio: float,
    *,
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
    backend: str | None = None,
) -> MaskingResult:
    """MAE's per-sample random masking: keep ``K = int(L * (1 - mask_ratio))`` tokens.

    The kept tokens are those with the smallest ``noise``, in increasing order of noise, exactly
    as MAE's ``argsort(noise)`` code gives them, with one deliberate difference: ties are broken
    by index (a stable sort; MAE's argsort is not stable) and NaN sorts last.

    Args:
        x: ``[B, L, D]`` float tokens.
        mask_ratio: fraction removed, in ``[0, 1)``.
        noise: optional ``[B, L]`` float noise. When absent it is drawn as MAE does,
            ``torch.rand(B, L)``, from ``generator`` (or the global RNG): a seed reproduces a mask.
        generator: a ``torch.Generator`` on x's device.

    Returns:
        :class:`MaskingResult` ``(visible [B,K,D], mask [B,L], ids_keep [B,K], ids_restore [B,L])``.
        The gradient to ``x`` is ``grad_visible`` scattered to the kept positions (exact and
        deterministic: the ids form a permutation).
    """
    check_backend_arg(backend)
    x = _check_tensor(x, "x", 3)
    _check_batch(x, "x")
    if isinstance(mask_ratio, bool) or not isinstance(mask_ratio, (int, float)):
        raise TypeError(f"mask_ratio: expected a float, got {type(mask_ratio).__name__}")
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask_ratio: expected a value in [0, 1), got {mask_ratio}")
    b, length, _ = x.shape
    if noise is None:
        noise = torch.rand(b, length, generator=generator, device=x.device)
    else:
        noise = _check_tensor(noise, "noise", 2)
        _check_same(x, "x", noise, "noise", dtype=False)
        if tuple(noise.shape) != (b, length):
            raise ValueError(f"noise: expected shape {(b, length)}, got {tuple(noise.shape)}")
    keep = int(length * (1 - mask_ratio))
    return MaskingResult(
        *_random_masking(x, noise, keep, resolve("random_masking", x.device, backend))
    )


# ------------------------------------------------------------------------- restore (decoder)


@torch.library.custom_op("pyssl::restore_masked", mutates_args=())
def _restore_masked(
    visible: Tensor, mask_token: Tensor | None, ids_restore: Tensor, backend: str
) -> Tensor:
    visible = visible.contiguous()
    ids_restore = ids_restore.contiguous()
    if backend == "reference":
        zero = visible.new_zeros(visible.shape[2])
        token_or_zeros = mask_token if mask_token is not None else zero
        return ref.restore_masked(visible, token_or_zeros, ids_restore)
    out = _restore_masked_fake(visible, mask_token, ids_restore, backend)
    token = mask_token.contiguous() if mask_token is not None else None
    launch("masking", "restore_masked", backend, visible, token, ids_restore, out)
    return out


@_restore_masked.register_fake
def _restore_masked_fake(
    visible: Tensor, mask_token: Tensor | None, ids_restore: Tensor, backend: str
) -> Tensor:
    return visible.new_empty(visible.shape[0], ids_restore.shape[1], visible.shape[2])


@torch.library.custom_op("pyssl::restore_masked_backward", mutates_args=())
def _restore_masked_backward(
    grad: Tensor, ids_restore: Tensor, keep: int, with_token: bool, backend: str
) -> tuple[Tensor, Tensor]:
    grad = grad.contiguous()
    ids_restore = ids_restore.contiguous()
    b, _, d = grad.shape
    if backend == "reference":
        index = ids_restore.unsqueeze(-1).expand(-1, -1, d)
        full = grad.new_zeros(b, ids_restore.shape[1], d).scatter_add_(1, index, grad)
        removed = (ids_restore >= keep).unsqueeze(-1)
        token = (grad * removed).sum((0, 1)) if with_token else grad.new_empty(0)
        return full[:, :keep].contiguous(), token
    grad_visible, grad_token = _restore_masked_backward_fake(
        grad, ids_restore, keep, with_token, backend
    )
    launch(
        "masking",
        "restore_masked_backward",
        backend,
        grad,
        ids_restore,
        grad_visible,
        grad_token if with_token else None,
    )
    return grad_visible, grad_token


@_restore_masked_backward.register_fake
def _restore_masked_backward_fake(
    grad: Tensor, ids_restore: Tensor, keep: int, with_token: bool, backend: str
) -> tuple[Tensor, Tensor]:
    b, _, d = grad.shape
    return grad.new_empty(b, keep, d), grad.new_empty(d if with_token else 0)


def _restore_setup(ctx, inputs, output):  # type: ignore[no-untyped-def]
    visible, mask_token, ids_restore, backend = inputs
    ctx.save_for_backward(ids_restore)
    ctx.meta = (visible.shape[1], mask_token is not None, backend)


def _restore_backward(ctx, grad):  # type: ignore[no-untyped-def]
    (ids_restore,) = ctx.saved_tensors
    keep, with_token, backend = ctx.meta
    grad_visible, grad_token = _restore_masked_backward(
        grad, ids_restore, keep, with_token, backend
    )
    return grad_visible, (grad_token if with_token else None), None, None


_restore_masked.register_autograd(_restore_backward, setup_context=_restore_setup)


def restore_masked(
    visible: Tensor, mask_token: Tensor, ids_restore: Tensor, *, backend: str | None = None
) -> Tensor:
    """The MAE decoder's append-mask-tokens-and-unshuffle, in one op.

    Equals MAE's ``torch.gather(torch.cat([visible, mask_token.expand(B, L-K, D)], 1), 1,
    ids_restore[..., None].expand(-1, -1, D))`` (the class token is the caller's: pass the
    tokens without it).

    Args:
        visible: ``[B, K, D]`` decoder tokens of the kept patches.
        mask_token: ``[D]`` (or ``[1, 1, D]``) learned token; cast to ``visible``'s dtype (as
            under autocast), its gradient flows back through the cast.
        ids_restore: ``[B, L]`` int64 with values in ``[0, L)``; values ``>= K`` take the token.

    Returns:
        ``[B, L, D]``; gradients to ``visible`` and ``mask_token``.
    """
    check_backend_arg(backend)
    visible = _check_tensor(visible, "visible", 3)
    _check_batch(visible, "visible")
    if not isinstance(mask_token, Tensor):
        raise TypeError(f"mask_token: expected a torch.Tensor, got {type(mask_token).__name__}")
    if mask_token.dtype not in _FLOATS:
        raise TypeError(f"mask_token: expected a float tensor, got {mask_token.dtype}")
    if mask_token.numel() != visible.shape[2]:
        raise ValueError(
            f"mask_token: expected {visible.shape[2]} elements (D), "
            f"got shape {tuple(mask_token.shape)}"
        )
    _check_same(visible, "visible", mask_token, "mask_token", dtype=False)
    ids_restore = _check_ids(ids_restore, "ids_restore", visible.shape[0])
    _check_same(visible, "visible", ids_restore, "ids_restore", dtype=False)
    if ids_restore.shape[1] < visible.shape[1]:
        raise ValueError(
            f"ids_restore: {ids_restore.shape[1]} positions cannot hold "
            f"{visible.shape[1]} visible tokens"
        )
    token = mask_token.reshape(-1).to(visible.dtype)
    return _restore_masked(
        visible, token, ids_restore, resolve("restore_masked", visible.device, backend)
    )


# ------------------------------------------------------------------------------------- loss


@torch.library.custom_op("pyssl::masked_patch_loss", mutates_args=())
def _masked_patch_loss(
    pred: Tensor,
    imgs: Tensor,
    mask: Tensor,
    patch_size: int,
    norm_pix: bool,
    eps: float,
    backend: str,
) -> Tensor:
    pred, imgs, mask = pred.contiguous(), imgs.contiguous(), mask.contiguous()
    if backend == "reference":
        return ref.masked_patch_loss(pred, imgs, mask.to(pred.dtype), patch_size, norm_pix, eps)
    loss = pred.new_empty(())
    launch(
        "masking", "masked_patch_loss", backend, pred, imgs, mask, patch_size, norm_pix, eps, loss
    )
    return loss


@_masked_patch_loss.register_fake
def _masked_patch_loss_fake(pred, imgs, mask, patch_size, norm_pix, eps, backend):  # type: ignore[no-untyped-def]
    return pred.new_empty(())


@torch.library.custom_op("pyssl::masked_patch_loss_backward", mutates_args=())
def _masked_patch_loss_backward(
    grad: Tensor,
    pred: Tensor,
    imgs: Tensor,
    mask: Tensor,
    patch_size: int,
    norm_pix: bool,
    eps: float,
    backend: str,
) -> Tensor:
    pred, imgs, mask = pred.contiguous(), imgs.contiguous(), mask.contiguous()
    if backend == "reference":
        with torch.enable_grad():
            p = pred.detach().requires_grad_(True)
            loss = ref.masked_patch_loss(p, imgs, mask.to(pred.dtype), patch_size, norm_pix, eps)
            return torch.autograd.grad(loss, p, grad)[0]
    grad_pred = torch.empty_like(pred)
    launch(
        "masking",
        "masked_patch_loss_backward",
        backend,
        grad.contiguous(),
        pred,
        imgs,
        mask,
        patch_size,
        norm_pix,
        eps,
        grad_pred,
    )
    return grad_pred


@_masked_patch_loss_backward.register_fake
def _masked_patch_loss_backward_fake(grad, pred, imgs, mask, patch_size, norm_pix, eps, backend):  # type: ignore[no-untyped-def]
    return torch.empty_like(pred)


def _loss_setup(ctx, inputs, output):  # type: ignore[no-untyped-def]
    pred, imgs, mask, patch_size, norm_pix, eps, backend = inputs
    ctx.save_for_backward(pred, imgs, mask)
    ctx.meta = (patch_size, norm_pix, eps, backend)


def _loss_backward(ctx, grad):  # type: ignore[no-untyped-def]
    pred, imgs, mask = ctx.saved_tensors
    grad_pred = _masked_patch_loss_backward(grad, pred, imgs, mask, *ctx.meta)
    return grad_pred, None, None, None, None, None, None


_masked_patch_loss.register_autograd(_loss_backward, setup_context=_loss_setup)


def masked_patch_loss(
    pred: Tensor,
    imgs: Tensor,
    mask: Tensor,
    patch_size: int,
    *,
    norm_pix: bool = True,
    eps: float = 1e-6,
    backend: str | None = None,
) -> Tensor:
    """MAE's reconstruction loss, computed from the images without a patchified target.

    Per patch: the target is ``patchify(imgs)``'s row, normalised by its mean and unbiased
    variance when ``norm_pix`` (``(t - mean) / sqrt(var + eps)``); the patch's loss is the mean
    squared error over its ``p*p*C`` values; the result is ``sum(loss * mask) / sum(mask)``,
    the mean over removed patches (MAE's ``forward_loss``).

    Args:
        pred: ``[B, L, p*p*C]`` decoder predictions.
        imgs: ``[B, C, H, W]`` images, pred's dtype. The target is a constant: no gradient
            flows to ``imgs`` (as in MAE, where the images need none).
        mask: ``[B, L]`` weights, 1 for removed patches (bool or any float dtype).
        patch_size: side ``p`` of the patches.

    Returns:
        A 0-dim tensor in pred's dtype; gradient to ``pred``. An all-zero mask gives NaN as in
        MAE; its gradient is zero (MAE's is NaN).
    """
    check_backend_arg(backend)
    imgs = _check_images(imgs, patch_size)
    pred = _check_tensor(pred, "pred", 3)
    _check_same(imgs, "imgs", pred, "pred")
    b, c, h, w = imgs.shape
    length = (h // patch_size) * (w // patch_size)
    if tuple(pred.shape) != (b, length, patch_size * patch_size * c):
        raise ValueError(
            f"pred: expected shape {(b, length, patch_size * patch_size * c)}, "
            f"got {tuple(pred.shape)}"
        )
    if not isinstance(mask, Tensor):
        raise TypeError(f"mask: expected a torch.Tensor, got {type(mask).__name__}")
    if tuple(mask.shape) != (b, length):
        raise ValueError(f"mask: expected shape {(b, length)}, got {tuple(mask.shape)}")
    _check_same(imgs, "imgs", mask, "mask", dtype=False)
    if mask.dtype not in (*_FLOATS, torch.bool):
        raise TypeError(f"mask: expected a bool or float tensor, got {mask.dtype}")
    return _masked_patch_loss(
        pred,
        imgs,
        mask.detach().to(torch.float32),
        patch_size,
        bool(norm_pix),
        float(eps),
        resolve("masked_patch_loss", pred.device, backend),
    )
