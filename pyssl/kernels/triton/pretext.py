"""Triton kernels and launchers for the pretext family (RotNet's four rotations).

Semantics are those of :mod:`pyssl.reference.pretext`: ``out[b, k] = torch.rot90(imgs[b], k,
dims=(-2, -1))`` for ``k = 0..3``, and the gradient ``sum_k rot90(grad_out[b, k], -k)``. The
launchers write into preallocated contiguous outputs; the caller (``pyssl.ops.pretext``)
validates and allocates, the launchers re-check shapes and dtypes and raise ``ValueError``.

Every output element is owned by one program and the backward sums its four terms in the fixed
order ``k = 0..3`` in float32 (float64 for float64), so results are reproducible bit for bit.
Rotations are pure copies: exact in every dtype, uint8 included. Index arithmetic is int64.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

try:
    from torch.library import wrap_triton
except ImportError:  # torch < 2.6

    def wrap_triton(kernel):  # type: ignore[no-redef]
        return kernel


_COPY_DTYPES = (torch.uint8, torch.float32, torch.float16, torch.bfloat16, torch.float64)


@triton.jit
def _rotation_source(k, i, j, S):
    # torch.rot90's counter-clockwise convention, as pyssl::pretext::rotation_source
    r = tl.where(k == 1, j, tl.where(k == 2, S - 1 - i, tl.where(k == 3, S - 1 - j, i)))
    c = tl.where(k == 1, S - 1 - i, tl.where(k == 2, S - 1 - j, tl.where(k == 3, i, j)))
    return r * S + c


@triton.jit
def _rotations_kernel(src_ptr, out_ptr, C, S, BLOCK: tl.constexpr):
    plane = tl.program_id(0).to(tl.int64)  # (b, k, c) of the output, row-major
    c = plane % C
    k = (plane // C) % 4
    b = plane // (4 * C)
    o = tl.program_id(1).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    n = S * S
    m = o < n
    src = _rotation_source(k, o // S, o % S, S)
    v = tl.load(src_ptr + (b * C + c) * n + src, mask=m)
    tl.store(out_ptr + plane * n + o, v, mask=m)


@triton.jit
def _rotations_backward_kernel(g_ptr, dx_ptr, C, S, F64: tl.constexpr, BLOCK: tl.constexpr):
    plane = tl.program_id(0).to(tl.int64)  # (b, c) of the input
    c = plane % C
    b = plane // C
    o = tl.program_id(1).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    n = S * S
    m = o < n
    y = o // S
    x = o % S
    acc_t = tl.float64 if F64 else tl.float32
    acc = tl.load(g_ptr + (b * 4 * C + c) * n + o, mask=m, other=0.0).to(acc_t)
    for k in tl.static_range(1, 4):
        # output (i, j) of rotation k read input (y, x) where (i, j) = rotation_source(4 - k)
        src = _rotation_source(4 - k, y, x, S)
        acc += tl.load(g_ptr + ((b * 4 + k) * C + c) * n + src, mask=m, other=0.0).to(acc_t)
    tl.store(dx_ptr + plane * n + o, acc.to(dx_ptr.dtype.element_ty), mask=m)


def _check(ok: bool, msg: str) -> None:
    if not ok:
        raise ValueError(msg)


def _check_four(imgs: torch.Tensor, four: torch.Tensor, name: str) -> tuple[int, int, int]:
    _check(imgs.dim() == 4 and imgs.shape[2] == imgs.shape[3], "imgs: expected [B, C, S, S]")
    b, c, s, _ = imgs.shape
    _check(tuple(four.shape) == (b, 4, c, s, s), f"{name}: expected shape [B, 4, C, S, S]")
    _check(four.dtype == imgs.dtype, f"{name}: dtype {four.dtype} differs from {imgs.dtype}")
    _check(imgs.is_contiguous() and four.is_contiguous(), "expected contiguous tensors")
    return b, c, s


def _block(n: int) -> int:
    return min(1024, triton.next_power_of_2(max(n, 16)))


def rotations(imgs: torch.Tensor, out: torch.Tensor) -> None:
    """``out[b, k] = rot90(imgs[b], k)``: ``imgs [B, C, S, S]`` -> ``out [B, 4, C, S, S]``."""
    _check(imgs.dtype in _COPY_DTYPES, f"imgs: unsupported dtype {imgs.dtype}")
    b, c, s = _check_four(imgs, out, "out")
    if out.numel() == 0:
        return
    block = _block(s * s)
    grid = (b * 4 * c, triton.cdiv(s * s, block))
    wrap_triton(_rotations_kernel)[grid](imgs, out, c, s, BLOCK=block)


def rotations_backward(grad_out: torch.Tensor, grad_imgs: torch.Tensor) -> None:
    """``grad_imgs[b] = sum_k rot90(grad_out[b, k], -k)`` (floating dtypes)."""
    _check(
        grad_imgs.is_floating_point(), f"grad_imgs: expected a float dtype, got {grad_imgs.dtype}"
    )
    b, c, s = _check_four(grad_imgs, grad_out, "grad_out")
    if grad_imgs.numel() == 0:
        return
    block = _block(s * s)
    grid = (b * c, triton.cdiv(s * s, block))
    wrap_triton(_rotations_backward_kernel)[grid](
        grad_out, grad_imgs, c, s, F64=grad_imgs.dtype == torch.float64, BLOCK=block
    )
