"""Triton kernels and launchers for the colour family: sRGB <-> CIELAB.

Semantics are those of :mod:`pyssl.reference.colour` (kornia's / scikit-image's conventions,
the exact CIE 6/29 constants). The launchers take contiguous ``[N, 3, P]`` planes (the caller,
:mod:`pyssl.ops.colour`, flattens ``[..., 3, H, W]``) and a preallocated output of the same
shape and dtype, and return ``None``; they re-check shapes, dtypes and contiguity (no device
work) and raise ``ValueError``.

One program converts ``BLOCK`` pixels of one image: three loads, the per-pixel math, three
stores; memory-bound, so a fixed power-of-two block and no autotuning. Math runs in float32
(float64 for float64 inputs); powers are ``exp2(y * log2(x))`` on arguments the branch keeps
positive (``x >= 0.04045`` or ``(6/29)^3``), so no NaN is formed. Index arithmetic is int64.
Compiled Triton's ``exp2``/``log2`` are approximate (a few float32 ulps); the interpreter
(the CPU test path) runs numpy's.
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


_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
BLOCK = 1024

DELTA = tl.constexpr(6.0 / 29.0)
DELTA3 = tl.constexpr((6.0 / 29.0) ** 3)
LIN_SLOPE = tl.constexpr(1.0 / (3.0 * (6.0 / 29.0) ** 2))
FOUR29 = tl.constexpr(4.0 / 29.0)


@triton.jit
def _pow(x, y):
    return tl.exp2(y * tl.log2(x))


@triton.jit
def _srgb_to_linear(c):
    hi = _pow((tl.maximum(c, 0.04045) + 0.055) / 1.055, 2.4)
    return tl.where(c <= 0.04045, c / 12.92, hi)


@triton.jit
def _linear_to_srgb(x):
    hi = 1.055 * _pow(tl.maximum(x, 0.0031308), 1.0 / 2.4) - 0.055
    return tl.where(x <= 0.0031308, 12.92 * x, hi)


@triton.jit
def _lab_f(t):
    hi = _pow(tl.maximum(t, DELTA3), 1.0 / 3.0)
    return tl.where(t > DELTA3, hi, t * LIN_SLOPE + FOUR29)


@triton.jit
def _lab_finv(f):
    return tl.where(f > DELTA, f * f * f, (f - FOUR29) / LIN_SLOPE)


@triton.jit
def _rgb_to_lab_kernel(src, dst, P, BLOCK: tl.constexpr, ACC: tl.constexpr):
    n = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = offs < P
    base = n * 3 * P + offs
    r = _srgb_to_linear(tl.load(src + base, mask=m, other=0.0).to(ACC))
    g = _srgb_to_linear(tl.load(src + base + P, mask=m, other=0.0).to(ACC))
    b = _srgb_to_linear(tl.load(src + base + 2 * P, mask=m, other=0.0).to(ACC))
    x = (0.412453 * r + 0.357580 * g + 0.180423 * b) / 0.95047
    y = 0.212671 * r + 0.715160 * g + 0.072169 * b
    z = (0.019334 * r + 0.119193 * g + 0.950227 * b) / 1.08883
    fx = _lab_f(x)
    fy = _lab_f(y)
    fz = _lab_f(z)
    ty = dst.dtype.element_ty
    tl.store(dst + base, (116.0 * fy - 16.0).to(ty), mask=m)
    tl.store(dst + base + P, (500.0 * (fx - fy)).to(ty), mask=m)
    tl.store(dst + base + 2 * P, (200.0 * (fy - fz)).to(ty), mask=m)


@triton.jit
def _lab_to_rgb_kernel(src, dst, P, CLIP: tl.constexpr, BLOCK: tl.constexpr, ACC: tl.constexpr):
    n = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = offs < P
    base = n * 3 * P + offs
    L = tl.load(src + base, mask=m, other=0.0).to(ACC)
    a = tl.load(src + base + P, mask=m, other=0.0).to(ACC)
    b = tl.load(src + base + 2 * P, mask=m, other=0.0).to(ACC)
    fy = (L + 16.0) / 116.0
    fx = fy + a / 500.0
    fz = tl.maximum(fy - b / 200.0, 0.0)
    x = _lab_finv(fx) * 0.95047
    y = _lab_finv(fy)
    z = _lab_finv(fz) * 1.08883
    r = _linear_to_srgb(3.2404813432005266 * x - 1.5371515162713185 * y - 0.4985363261688878 * z)
    g = _linear_to_srgb(-0.9692549499965682 * x + 1.8759900014898907 * y + 0.04155592655829284 * z)
    bb = _linear_to_srgb(0.05564663913517716 * x - 0.20404133836651123 * y + 1.0573110696453443 * z)
    if CLIP:
        r = tl.minimum(tl.maximum(r, 0.0), 1.0)
        g = tl.minimum(tl.maximum(g, 0.0), 1.0)
        bb = tl.minimum(tl.maximum(bb, 0.0), 1.0)
    ty = dst.dtype.element_ty
    tl.store(dst + base, r.to(ty), mask=m)
    tl.store(dst + base + P, g.to(ty), mask=m)
    tl.store(dst + base + 2 * P, bb.to(ty), mask=m)


def _check(src: torch.Tensor, name: str, out: torch.Tensor) -> tuple[int, int]:
    if src.dim() != 3 or src.shape[1] != 3:
        raise ValueError(f"{name}: expected [N, 3, P] planes, got shape {tuple(src.shape)}")
    if src.dtype not in _FLOAT_DTYPES:
        raise ValueError(f"{name}: expected a floating dtype, got {src.dtype}")
    if out.shape != src.shape or out.dtype != src.dtype or out.device != src.device:
        raise ValueError(f"out: expected {tuple(src.shape)} {src.dtype} on {src.device}")
    if not (src.is_contiguous() and out.is_contiguous()):
        raise ValueError(f"{name}, out: expected contiguous tensors")
    return int(src.shape[0]), int(src.shape[2])


def _acc(dtype: torch.dtype) -> tl.dtype:
    return tl.float64 if dtype == torch.float64 else tl.float32


def rgb_to_lab(img: torch.Tensor, out: torch.Tensor) -> None:
    """``out[n] = rgb_to_lab(img[n])`` over ``[N, 3, P]`` planes."""
    n, p = _check(img, "img", out)
    if n == 0 or p == 0:
        return
    grid = (n, triton.cdiv(p, BLOCK))
    wrap_triton(_rgb_to_lab_kernel)[grid](img, out, p, BLOCK=BLOCK, ACC=_acc(img.dtype))


def lab_to_rgb(lab: torch.Tensor, clip: bool, out: torch.Tensor) -> None:
    """``out[n] = lab_to_rgb(lab[n], clip)`` over ``[N, 3, P]`` planes."""
    n, p = _check(lab, "lab", out)
    if n == 0 or p == 0:
        return
    grid = (n, triton.cdiv(p, BLOCK))
    wrap_triton(_lab_to_rgb_kernel)[grid](
        lab, out, p, CLIP=bool(clip), BLOCK=BLOCK, ACC=_acc(lab.dtype)
    )
