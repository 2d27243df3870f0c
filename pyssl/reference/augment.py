"""Eager reference of the augmentation family: torchvision's functional definitions, one image
and one op at a time.

Each function follows ``torchvision.transforms.functional`` (``_functional_tensor``) on a float
image ``[3, H, W]`` in ``[0, 1]``: the formulas are the same, written out so they can be read and
run in float64 (the tests' ground truth) or float32 (the benchmarks' per-image baseline). The
samplers follow ``RandomResizedCrop.get_params``, ``ColorJitter.get_params`` and the ``p`` tests
of ``RandomApply``/``RandomHorizontalFlip``/``RandomGrayscale``/``RandomSolarize`` one draw at a
time, as torchvision does.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

GRAY = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights


def to_float(img: Tensor, dtype: torch.dtype = torch.float64) -> Tensor:
    """uint8 ``[3, H, W]`` -> float in ``[0, 1]`` (``ToTensor``/``convert_image_dtype``)."""
    return img.to(dtype) / 255.0


def resized_crop(
    img: Tensor, top: int, left: int, height: int, width: int, size: int, interpolation: str
) -> Tensor:
    """``F.resized_crop(..., antialias=True)`` of a float image: crop, then ``interpolate``
    (align_corners=False, antialias=True). Bicubic overshoot is clamped to ``[0, 1]``, as
    torchvision clamps it for uint8 images."""
    crop = img[:, top : top + height, left : left + width]
    out = F.interpolate(
        crop[None], size=(size, size), mode=interpolation, align_corners=False, antialias=True
    )[0]
    return out.clamp(0.0, 1.0)


def hflip(img: Tensor) -> Tensor:
    return img.flip(-1)


def rgb_to_grayscale(img: Tensor) -> Tensor:
    r, g, b = img.unbind(-3)
    return (GRAY[0] * r + GRAY[1] * g + GRAY[2] * b).unsqueeze(-3)


def _blend(img1: Tensor, img2: Tensor, ratio: float) -> Tensor:
    return (ratio * img1 + (1.0 - ratio) * img2).clamp(0.0, 1.0)


def adjust_brightness(img: Tensor, factor: float) -> Tensor:
    return _blend(img, torch.zeros_like(img), factor)


def adjust_contrast(img: Tensor, factor: float) -> Tensor:
    mean = torch.mean(rgb_to_grayscale(img), dim=(-3, -2, -1), keepdim=True)
    return _blend(img, mean, factor)


def adjust_saturation(img: Tensor, factor: float) -> Tensor:
    return _blend(img, rgb_to_grayscale(img), factor)


def _rgb2hsv(img: Tensor) -> Tensor:
    r, g, b = img.unbind(dim=-3)
    maxc = torch.max(img, dim=-3).values
    minc = torch.min(img, dim=-3).values
    eqc = maxc == minc
    cr = maxc - minc
    ones = torch.ones_like(maxc)
    s = cr / torch.where(eqc, ones, maxc)
    cr_divisor = torch.where(eqc, ones, cr)
    rc = (maxc - r) / cr_divisor
    gc = (maxc - g) / cr_divisor
    bc = (maxc - b) / cr_divisor
    hr = (maxc == r) * (bc - gc)
    hg = ((maxc == g) & (maxc != r)) * (2.0 + rc - bc)
    hb = ((maxc != g) & (maxc != r)) * (4.0 + gc - rc)
    h = torch.fmod((hr + hg + hb) / 6.0 + 1.0, 1.0)
    return torch.stack((h, s, maxc), dim=-3)


def _hsv2rgb(img: Tensor) -> Tensor:
    h, s, v = img.unbind(dim=-3)
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.to(torch.int32) % 6
    p = torch.clamp(v * (1.0 - s), 0.0, 1.0)
    q = torch.clamp(v * (1.0 - s * f), 0.0, 1.0)
    t = torch.clamp(v * (1.0 - s * (1.0 - f)), 0.0, 1.0)
    mask = i.unsqueeze(dim=-3) == torch.arange(6, device=i.device).view(-1, 1, 1)
    a1 = torch.stack((v, q, p, p, t, v), dim=-3)
    a2 = torch.stack((t, v, v, q, p, p), dim=-3)
    a3 = torch.stack((p, p, t, v, v, q), dim=-3)
    a4 = torch.stack((a1, a2, a3), dim=-4)
    return torch.einsum("...ijk, ...xijk -> ...xjk", mask.to(dtype=img.dtype), a4)


def adjust_hue(img: Tensor, factor: float) -> Tensor:
    hsv = _rgb2hsv(img)
    h, s, v = hsv.unbind(dim=-3)
    h = (h + factor) % 1.0
    return _hsv2rgb(torch.stack((h, s, v), dim=-3))


def gaussian_kernel1d(kernel_size: int, sigma: float, dtype: torch.dtype) -> Tensor:
    half = (kernel_size - 1) * 0.5
    x = torch.linspace(-half, half, steps=kernel_size, dtype=dtype)
    pdf = torch.exp(-0.5 * (x / sigma).pow(2))
    return pdf / pdf.sum()


def gaussian_blur(img: Tensor, kernel_size: int, sigma: float) -> Tensor:
    """``F.gaussian_blur`` with one sigma for both axes: a 2-D kernel (outer product of the 1-D
    ones) over the reflect-padded image."""
    k1 = gaussian_kernel1d(kernel_size, sigma, img.dtype)
    k2 = torch.mm(k1[:, None], k1[None, :]).expand(img.shape[-3], 1, kernel_size, kernel_size)
    r = kernel_size // 2
    padded = F.pad(img[None], [r, r, r, r], mode="reflect")
    return F.conv2d(padded, k2, groups=img.shape[-3])[0]


def solarize(img: Tensor, threshold: float) -> Tensor:
    """``F.solarize`` of a float image: pixels ``>= threshold`` (same scale as ``img``) are
    inverted."""
    return torch.where(img >= threshold, 1.0 - img, img)


def normalize(img: Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    m = torch.tensor(mean, dtype=img.dtype).view(-1, 1, 1)
    s = torch.tensor(std, dtype=img.dtype).view(-1, 1, 1)
    return (img - m) / s


JITTER_OPS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)
IDENTITY = (1.0, 1.0, 1.0, 0.0)


def apply_one(
    img: Tensor,
    *,
    box: tuple[int, int, int, int],
    flip: bool,
    factors: tuple[float, float, float, float],
    order: tuple[int, ...],
    grayscale: bool,
    sigma: float,
    solarize_: bool,
    size: int,
    interpolation: str,
    blur_kernel_size: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    dtype: torch.dtype = torch.float64,
    solarize_threshold: float = 128.0,
) -> Tensor:
    """One view of one uint8 image ``[3, H, W]``: torchvision's SSL pipeline with fixed
    parameters (a jitter op whose factor is the identity is skipped, as ``ColorJitter`` skips
    an unset one). ``solarize_threshold`` is on the 0-255 scale, as for torchvision's uint8
    ``RandomSolarize``. Returns ``[3, size, size]`` in ``dtype``."""
    x = resized_crop(to_float(img, dtype), *box, size, interpolation)
    if flip:
        x = hflip(x)
    for op in order:
        if factors[op] != IDENTITY[op]:
            x = JITTER_OPS[op](x, factors[op])
    if grayscale:
        x = rgb_to_grayscale(x).expand(3, -1, -1)
    if sigma > 0:
        x = gaussian_blur(x, blur_kernel_size, sigma)
    if solarize_:
        x = solarize(x, solarize_threshold / 255.0)
    return normalize(x, mean, std)


# ------------------------------------------------------------------------ samplers


def crop_params(
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    generator: torch.Generator | None = None,
) -> tuple[int, int, int, int]:
    """``RandomResizedCrop.get_params``: (top, left, height, width)."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1], generator=generator).item()
        aspect = math.exp(
            torch.empty(1).uniform_(log_ratio[0], log_ratio[1], generator=generator).item()
        )
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            i = int(torch.randint(0, height - h + 1, size=(1,), generator=generator).item())
            j = int(torch.randint(0, width - w + 1, size=(1,), generator=generator).item())
            return i, j, h, w
    in_ratio = float(width) / float(height)
    if in_ratio < min(ratio):
        w = width
        h = int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        h = height
        w = int(round(h * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def jitter_params(
    ranges: tuple[tuple[float, float] | None, ...], generator: torch.Generator | None = None
) -> tuple[list[int], list[float]]:
    """``ColorJitter.get_params``: a random order of the four ops, then one uniform factor per
    op whose range is set (identity for an unset one)."""
    order = torch.randperm(4, generator=generator).tolist()
    factors = []
    for rng, ident in zip(ranges, IDENTITY):
        if rng is None:
            factors.append(ident)
        else:
            factors.append(torch.empty(1).uniform_(rng[0], rng[1], generator=generator).item())
    return order, factors
