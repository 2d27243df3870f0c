"""Triton kernels and launcher of the augmentation family: one SSL view of a batch of uint8
images (the default GPU backend of :func:`pyssl.ops.augment.augment_view`).

Semantics are those of :mod:`pyssl.reference.augment` and of the C++ kernel (``csrc/augment``):
torchvision's float pipeline on the 0-255 scale in float32. The launcher takes what the CPU
entry point takes: a uint8 ``base`` buffer, a table ``[B, 6]`` int64 of (byte offset into base,
H, W, row, column and channel strides), the params table ``[B, 16]`` float64, the view's
solarize threshold (0-255 scale), and writes ``out [B, 3, S, S]``. The caller validates
everything (crop boxes inside their images), so the kernels' loads stay inside each image.

Passes (each program owns a block of output pixels of one image; no atomics, every sum in a
fixed order, so results repeat bit for bit):

1. ``_resample_kernel``: the antialiased crop + resize as a 2-D sum over the separable weight
   tables (computed on the device by :func:`_aa_tables`, torch's ``_compute_weights_aa``), flip
   folded into the tables, clamp, the jitter ops before contrast; writes a float32 scratch image
   and one partial grayscale sum per program (contrast needs the mean of the whole image).
2. ``_colour_kernel``: the image mean from the partials, contrast, the rest of the jitter,
   grayscale; solarize + normalise into ``out`` for images without blur, else back to scratch.
3. ``_blur_kernel`` twice (rows, then columns with solarize + normalise), only for images whose
   sigma > 0: torchvision's Gaussian kernel with reflect padding.
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


_NPARAM = 16


@triton.jit
def _splat(x, BLOCK: tl.constexpr):
    """Scalar ``x`` as a [BLOCK] vector (see pyssl.kernels.triton.masking._splat)."""
    return tl.zeros([BLOCK], dtype=x.dtype) + x


@triton.jit
def _clamp255(v):
    return tl.minimum(tl.maximum(v, 0.0), 255.0)


@triton.jit
def _gray(r, g, b):
    return 0.2989 * r + 0.587 * g + 0.114 * b


@triton.jit
def _hue(r, g, b, factor):
    """torchvision's _rgb2hsv, h = (h + factor) mod 1, _hsv2rgb (as augment.h's hue_shift)."""
    maxc = tl.maximum(tl.maximum(r, g), b)
    minc = tl.minimum(tl.minimum(r, g), b)
    eqc = maxc == minc
    cr = maxc - minc
    s = cr / tl.where(eqc, 1.0, maxc)
    div = tl.where(eqc, 1.0, cr)
    rc = (maxc - r) / div
    gc = (maxc - g) / div
    bc = (maxc - b) / div
    h = tl.where(maxc == r, bc - gc, tl.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = h / 6.0 + 1.0
    h = h - tl.floor(h)
    h = h + factor
    h = h - tl.floor(h)
    h6 = h * 6.0
    fi = tl.floor(h6)
    f = h6 - fi
    i = fi.to(tl.int32)
    i = tl.where(i >= 6, i - 6, i)
    p = _clamp255(maxc * (1.0 - s))
    q = _clamp255(maxc * (1.0 - s * f))
    t = _clamp255(maxc * (1.0 - s * (1.0 - f)))
    v = maxc
    ro = tl.where((i == 0) | (i == 5), v, tl.where(i == 1, q, tl.where(i == 4, t, p)))
    go = tl.where((i == 1) | (i == 2), v, tl.where(i == 0, t, tl.where(i == 3, q, p)))
    bo = tl.where((i == 3) | (i == 4), v, tl.where(i == 2, t, tl.where(i == 5, q, p)))
    return ro, go, bo


@triton.jit
def _jitter(op, r, g, b, prm, mean):
    """Jitter op ``op`` (0 brightness, 1 contrast, 2 saturation, 3 hue) with the factors of
    params row ``prm``; identity factors change nothing."""
    if op == 0:
        f = tl.load(prm + 5).to(tl.float32)
        r = _clamp255(f * r)
        g = _clamp255(f * g)
        b = _clamp255(f * b)
    elif op == 1:
        f = tl.load(prm + 6).to(tl.float32)
        r = _clamp255(f * r + (1.0 - f) * mean)
        g = _clamp255(f * g + (1.0 - f) * mean)
        b = _clamp255(f * b + (1.0 - f) * mean)
    elif op == 2:
        f = tl.load(prm + 7).to(tl.float32)
        lum = _gray(r, g, b)
        r = _clamp255(f * r + (1.0 - f) * lum)
        g = _clamp255(f * g + (1.0 - f) * lum)
        b = _clamp255(f * b + (1.0 - f) * lum)
    else:
        f = tl.load(prm + 8).to(tl.float32)
        if f != 0.0:
            r, g, b = _hue(r, g, b, f)
    return r, g, b


@triton.jit
def _contrast_position(prm):
    pos = 4
    for k in tl.static_range(4):
        op = tl.load(prm + 9 + k).to(tl.int32)
        pos = tl.where(op == 1, k, pos)
    return pos


@triton.jit
def _finish(v, solarize, threshold, scale, shift):
    """Solarize (pixels >= ``threshold`` on the 0-255 scale are inverted), then normalise."""
    v = tl.where(solarize & (v >= threshold), 255.0 - v, v)
    return v * scale + shift


@triton.jit
def _resample_kernel(
    src_ptr,
    table_ptr,
    params_ptr,
    wx_ptr,
    fx_ptr,
    wy_ptr,
    fy_ptr,
    scratch_ptr,
    partial_ptr,
    S,
    K,
    NBLK,
    BLOCK: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)
    blk = tl.program_id(1)
    SS = S * S
    offs = blk * BLOCK + tl.arange(0, BLOCK)
    m = offs < SS
    oy = offs // S
    ox = offs % S
    row = table_ptr + b * 6
    base = tl.load(row)
    sy = tl.load(row + 3)
    sx = tl.load(row + 4)
    sc = tl.load(row + 5)
    x0 = tl.load(fx_ptr + b * S + ox, mask=m, other=0)
    y0 = tl.load(fy_ptr + b * S + oy, mask=m, other=0)
    r = tl.zeros([BLOCK], dtype=tl.float32)
    g = tl.zeros([BLOCK], dtype=tl.float32)
    bl = tl.zeros([BLOCK], dtype=tl.float32)
    for ky in range(K):
        wy = tl.load(wy_ptr + (b * S + oy) * K + ky, mask=m, other=0.0)
        for kx in range(K):
            wx = tl.load(wx_ptr + (b * S + ox) * K + kx, mask=m, other=0.0)
            w = wy * wx
            ok = m & (w != 0.0)  # taps past a pixel's count have weight 0 and are not read
            addr = base + (y0 + ky) * sy + (x0 + kx) * sx
            r += w * tl.load(src_ptr + addr, mask=ok, other=0).to(tl.float32)
            g += w * tl.load(src_ptr + addr + sc, mask=ok, other=0).to(tl.float32)
            bl += w * tl.load(src_ptr + addr + 2 * sc, mask=ok, other=0).to(tl.float32)
    r = _clamp255(r)
    g = _clamp255(g)
    bl = _clamp255(bl)
    prm = params_ptr + b * 16
    cpos = _contrast_position(prm)
    for k in range(0, cpos):
        op = tl.load(prm + 9 + k).to(tl.int32)
        r, g, bl = _jitter(op, r, g, bl, prm, 0.0)
    out = scratch_ptr + b * 3 * SS + offs
    tl.store(out, r, mask=m)
    tl.store(out + SS, g, mask=m)
    tl.store(out + 2 * SS, bl, mask=m)
    tl.store(partial_ptr + b * NBLK + blk, tl.sum(tl.where(m, _gray(r, g, bl), 0.0), axis=0))


@triton.jit
def _colour_kernel(
    scratch_ptr,
    partial_ptr,
    params_ptr,
    out_ptr,
    scale_ptr,
    shift_ptr,
    threshold,
    S,
    NBLK,
    BLOCK: tl.constexpr,
    NBLK_P2: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)
    blk = tl.program_id(1)
    SS = S * S
    offs = blk * BLOCK + tl.arange(0, BLOCK)
    m = offs < SS
    j = tl.arange(0, NBLK_P2)
    parts = tl.load(partial_ptr + b * NBLK + j, mask=j < NBLK, other=0.0)
    mean = tl.sum(parts, axis=0) / SS.to(tl.float32)
    prm = params_ptr + b * 16
    img = scratch_ptr + b * 3 * SS + offs
    r = tl.load(img, mask=m, other=0.0)
    g = tl.load(img + SS, mask=m, other=0.0)
    bl = tl.load(img + 2 * SS, mask=m, other=0.0)
    cpos = _contrast_position(prm)
    for k in range(cpos, 4):
        op = tl.load(prm + 9 + k).to(tl.int32)
        r, g, bl = _jitter(op, r, g, bl, prm, mean)
    gray = _splat(tl.load(prm + 13), BLOCK) != 0.0
    lum = _gray(r, g, bl)
    r = tl.where(gray, lum, r)
    g = tl.where(gray, lum, g)
    bl = tl.where(gray, lum, bl)
    blur = _splat(tl.load(prm + 14), BLOCK) > 0.0
    solarize = _splat(tl.load(prm + 15), BLOCK) != 0.0
    tl.store(img, r, mask=m & blur)
    tl.store(img + SS, g, mask=m & blur)
    tl.store(img + 2 * SS, bl, mask=m & blur)
    done = m & (blur == 0)
    o = out_ptr + b * 3 * SS + offs
    ty = out_ptr.dtype.element_ty
    s0, s1, s2 = tl.load(scale_ptr), tl.load(scale_ptr + 1), tl.load(scale_ptr + 2)
    h0, h1, h2 = tl.load(shift_ptr), tl.load(shift_ptr + 1), tl.load(shift_ptr + 2)
    tl.store(o, _finish(r, solarize, threshold, s0, h0).to(ty), mask=done)
    tl.store(o + SS, _finish(g, solarize, threshold, s1, h1).to(ty), mask=done)
    tl.store(o + 2 * SS, _finish(bl, solarize, threshold, s2, h2).to(ty), mask=done)


@triton.jit
def _blur_kernel(
    in_ptr,
    dst_ptr,
    gk_ptr,
    params_ptr,
    scale_ptr,
    shift_ptr,
    threshold,
    S,
    KB,
    BLOCK: tl.constexpr,
    VERTICAL: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)
    blk = tl.program_id(1)
    SS = S * S
    offs = blk * BLOCK + tl.arange(0, BLOCK)
    prm = params_ptr + b * 16
    blur = _splat(tl.load(prm + 14), BLOCK) > 0.0
    m = (offs < SS) & blur
    y = offs // S
    x = offs % S
    rad = KB // 2
    img = in_ptr + b * 3 * SS
    r = tl.zeros([BLOCK], dtype=tl.float32)
    g = tl.zeros([BLOCK], dtype=tl.float32)
    bl = tl.zeros([BLOCK], dtype=tl.float32)
    for k in range(KB):
        w = tl.load(gk_ptr + b * KB + k)
        if VERTICAL:
            t = y + k - rad
        else:
            t = x + k - rad
        t = tl.where(t < 0, -t, t)
        t = tl.where(t >= S, 2 * S - 2 - t, t)
        if VERTICAL:
            idx = t * S + x
        else:
            idx = y * S + t
        r += w * tl.load(img + idx, mask=m, other=0.0)
        g += w * tl.load(img + SS + idx, mask=m, other=0.0)
        bl += w * tl.load(img + 2 * SS + idx, mask=m, other=0.0)
    o = dst_ptr + b * 3 * SS + offs
    if VERTICAL:
        solarize = _splat(tl.load(prm + 15), BLOCK) != 0.0
        ty = dst_ptr.dtype.element_ty
        s0, s1, s2 = tl.load(scale_ptr), tl.load(scale_ptr + 1), tl.load(scale_ptr + 2)
        h0, h1, h2 = tl.load(shift_ptr), tl.load(shift_ptr + 1), tl.load(shift_ptr + 2)
        tl.store(o, _finish(r, solarize, threshold, s0, h0).to(ty), mask=m)
        tl.store(o + SS, _finish(g, solarize, threshold, s1, h1).to(ty), mask=m)
        tl.store(o + 2 * SS, _finish(bl, solarize, threshold, s2, h2).to(ty), mask=m)
    else:
        tl.store(o, r, mask=m)
        tl.store(o + SS, g, mask=m)
        tl.store(o + 2 * SS, bl, mask=m)


# ------------------------------------------------------------------------------- launcher


def _max_taps(lengths: list[float], size: int, bicubic: bool) -> int:
    """augment.h's aa_max_taps over a batch (host values, so no device sync)."""
    half = 2.0 if bicubic else 1.0
    scale = max(lengths) / size
    return int(2.0 * (half * scale if scale >= 1.0 else half)) + 3


def _aa_tables(
    start: torch.Tensor, length: torch.Tensor, size: int, bicubic: bool, flip: torch.Tensor, K: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image, the taps of every output index along one axis (torch's
    ``_compute_weights_aa``, as augment.h's ``aa_weights``): absolute first input index
    ``[B, S]`` int64 and normalised weights ``[B, S, K]`` float32 (0 past each count)."""
    dev = start.device
    n = length.to(torch.float32)[:, None]
    scale = n / size
    half = 2.0 if bicubic else 1.0
    support = torch.where(scale >= 1.0, half * scale, torch.full_like(scale, half))
    invscale = torch.where(scale >= 1.0, 1.0 / scale, torch.ones_like(scale))
    i = torch.arange(size, device=dev, dtype=torch.float32)[None, :].expand(len(start), -1)
    i = torch.where(flip[:, None], size - 1 - i, i)
    center = scale * (i + 0.5)
    lo = (center - support + 0.5).to(torch.int64).clamp(min=0)
    hi = torch.minimum((center + support + 0.5).to(torch.int64), length[:, None])
    count = hi - lo
    j = torch.arange(K, device=dev)
    x = (j[None, None, :] + lo[..., None]).to(torch.float32) - center[..., None] + 0.5
    x = (x * invscale[..., None]).abs()
    if bicubic:
        a = -0.5
        w = torch.where(
            x < 1.0,
            ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0,
            torch.where(x < 2.0, (((x - 5.0) * x + 8.0) * x - 4.0) * a, torch.zeros_like(x)),
        )
    else:
        w = (1.0 - x).clamp(min=0.0)
    w = torch.where(j[None, None, :] < count[..., None], w, torch.zeros_like(w))
    total = w.sum(-1, keepdim=True)
    w = torch.where(total != 0, w / torch.where(total != 0, total, 1.0), w)
    return (start[:, None] + lo).contiguous(), w.contiguous()


def _gaussian_tables(sigma: torch.Tensor, k: int) -> torch.Tensor:
    """torchvision's 1-D Gaussian kernel per image, ``[B, k]`` float32 (zeros where sigma=0)."""
    x = torch.arange(k, device=sigma.device, dtype=torch.float32) - (k - 1) * 0.5
    s = torch.where(sigma > 0, sigma, 1.0).to(torch.float32)[:, None]
    w = torch.exp(-0.5 * (x[None, :] / s) ** 2)
    w = w / w.sum(-1, keepdim=True)
    w = torch.where(w < 1e-30, torch.zeros_like(w), w)  # as augment.h: no subnormal taps
    return torch.where(sigma[:, None] > 0, w, torch.zeros_like(w)).contiguous()


def _block(n: int) -> int:
    return 64 if n <= 64 else (256 if n <= 4096 else 1024)


def augment_view(
    base: torch.Tensor,
    table: torch.Tensor,
    params: torch.Tensor,
    size: int,
    interpolation: int,
    blur_kernel: int,
    solarize_threshold: float,
    mean: list[float],
    std: list[float],
    out: torch.Tensor,
) -> None:
    """Writes one view of every image into ``out [B, 3, size, size]`` (see the module doc);
    ``solarize_threshold`` is the view's, on the 0-255 scale (pixels >= it are inverted)."""
    if base.dtype != torch.uint8 or table.dtype != torch.int64 or params.dtype != torch.float64:
        raise ValueError("augment_view: expected uint8 base, int64 table, float64 params")
    if out.shape != (table.shape[0], 3, size, size) or not out.is_contiguous():
        raise ValueError("out: expected a contiguous [B, 3, size, size] tensor")
    if not 0.0 <= solarize_threshold <= 255.0:
        raise ValueError(
            f"solarize_threshold: expected a value in [0, 255], got {solarize_threshold}"
        )
    threshold = float(solarize_threshold)
    dev = out.device
    host = params.detach().cpu()  # the caller's params live on the host: no device sync
    bicubic = interpolation == 1
    K = max(
        _max_taps(host[:, 2].tolist(), size, bicubic), _max_taps(host[:, 3].tolist(), size, bicubic)
    )
    table = table.to(dev).contiguous()
    params = host.to(dev).contiguous()
    B, S = table.shape[0], size
    box = params[:, :4].to(torch.int64)
    flip = params[:, 4] != 0
    fx, wx = _aa_tables(box[:, 1], box[:, 3], S, bicubic, flip, K)
    fy, wy = _aa_tables(box[:, 0], box[:, 2], S, bicubic, torch.zeros_like(flip), K)
    BLOCK = _block(S * S)
    nblk = triton.cdiv(S * S, BLOCK)
    scratch = torch.empty(B, 3, S, S, device=dev, dtype=torch.float32)
    partial = torch.empty(B, nblk, device=dev, dtype=torch.float32)
    scale = torch.tensor([1.0 / (255.0 * s) for s in std], device=dev, dtype=torch.float32)
    shift = torch.tensor([-m / s for m, s in zip(mean, std)], device=dev, dtype=torch.float32)
    grid = (B, nblk)
    wrap_triton(_resample_kernel)[grid](
        base, table, params, wx, fx, wy, fy, scratch, partial, S, K, nblk, BLOCK=BLOCK
    )
    wrap_triton(_colour_kernel)[grid](
        scratch,
        partial,
        params,
        out,
        scale,
        shift,
        threshold,
        S,
        nblk,
        BLOCK=BLOCK,
        NBLK_P2=triton.next_power_of_2(nblk),
    )
    if bool((host[:, 14] > 0).any()):  # unblurred images' programs only mask
        gk = _gaussian_tables(params[:, 14], blur_kernel)
        rows = torch.empty_like(scratch)
        wrap_triton(_blur_kernel)[grid](
            scratch,
            rows,
            gk,
            params,
            scale,
            shift,
            threshold,
            S,
            blur_kernel,
            BLOCK=BLOCK,
            VERTICAL=False,
        )
        wrap_triton(_blur_kernel)[grid](
            rows,
            out,
            gk,
            params,
            scale,
            shift,
            threshold,
            S,
            blur_kernel,
            BLOCK=BLOCK,
            VERTICAL=True,
        )
