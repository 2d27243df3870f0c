"""sRGB <-> CIELAB in plain eager PyTorch: the ground truth of the colour tests (run it in
float64) and the baseline of its benchmarks.

Conventions are kornia's ``rgb_to_lab`` / ``lab_to_rgb`` and scikit-image's ``rgb2lab`` /
``lab2rgb`` (both: sRGB transfer with the 0.04045 threshold, the 6-digit sRGB -> XYZ matrix,
D65 white (0.95047, 1, 1.08883), Z clamped at 0 and RGB clipped to [0, 1] on the way back).
One deliberate difference: the CIE f(t) uses the exact constants (6/29)^3 and 1 / (3 (6/29)^2)
where kornia and scikit-image use their 4-digit roundings 0.008856 and 7.787 (a difference
below 4e-7 in f, about 5e-5 in L). Images are ``[..., 3, H, W]``: channels third from last.

The backward functions are the closed-form vector-Jacobian products of the forward maps; the
custom ops' autograd (``pyssl.ops.colour``) calls them, and the tests check them against
autograd through the forward functions here.
"""

from __future__ import annotations

import torch
from torch import Tensor

DELTA = 6.0 / 29.0
DELTA3 = DELTA**3  # 0.008856...
LIN_SLOPE = 1.0 / (3.0 * DELTA**2)  # 7.787...
FOUR29 = 4.0 / 29.0
WHITE = (0.95047, 1.0, 1.08883)  # D65, 2-degree observer
RGB_TO_XYZ = (
    (0.412453, 0.357580, 0.180423),
    (0.212671, 0.715160, 0.072169),
    (0.019334, 0.119193, 0.950227),
)
XYZ_TO_RGB = (  # float64 inverse of RGB_TO_XYZ
    (3.2404813432005266, -1.5371515162713185, -0.4985363261688878),
    (-0.9692549499965682, 1.8759900014898907, 0.04155592655829284),
    (0.05564663913517716, -0.20404133836651123, 1.0573110696453443),
)


def _mix(m: tuple[tuple[float, ...], ...], x: Tensor) -> Tensor:
    """``m @ x`` over the channel axis (-3) of ``[..., 3, H, W]``."""
    c = x.unbind(-3)
    return torch.stack([row[0] * c[0] + row[1] * c[1] + row[2] * c[2] for row in m], dim=-3)


def _scale(x: Tensor, s: tuple[float, float, float], inverse: bool = False) -> Tensor:
    w = torch.tensor(s, dtype=x.dtype, device=x.device).reshape(3, 1, 1)
    return x / w if inverse else x * w


def srgb_to_linear(c: Tensor) -> Tensor:
    return torch.where(c <= 0.04045, c / 12.92, ((c.clamp(min=0.04045) + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: Tensor) -> Tensor:
    return torch.where(
        x <= 0.0031308, 12.92 * x, 1.055 * x.clamp(min=0.0031308) ** (1.0 / 2.4) - 0.055
    )


def lab_f(t: Tensor) -> Tensor:
    return torch.where(t > DELTA3, t.clamp(min=DELTA3) ** (1.0 / 3.0), t * LIN_SLOPE + FOUR29)


def lab_finv(f: Tensor) -> Tensor:
    return torch.where(f > DELTA, f**3, (f - FOUR29) / LIN_SLOPE)


def rgb_to_lab(img: Tensor) -> Tensor:
    """``[..., 3, H, W]`` sRGB in [0, 1] -> ``[..., 3, H, W]`` CIELAB: L in [0, 100], a and b
    unbounded (about [-86, 98] and [-108, 95] over the sRGB cube)."""
    xyz = _scale(_mix(RGB_TO_XYZ, srgb_to_linear(img)), WHITE, inverse=True)
    fx, fy, fz = lab_f(xyz).unbind(-3)
    return torch.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], dim=-3)


def lab_to_rgb(lab: Tensor, clip: bool = True) -> Tensor:
    """``[..., 3, H, W]`` CIELAB -> sRGB. ``f(Z)`` is clamped at 0 (Z < 0 is out of every
    gamut); with ``clip`` the result is clamped to [0, 1] (kornia's default, scikit-image's
    behaviour); without, out-of-gamut colours come back outside [0, 1]."""
    L, a, b = lab.unbind(-3)
    fy = (L + 16.0) / 116.0
    f = torch.stack([fy + a / 500.0, fy, (fy - b / 200.0).clamp(min=0.0)], dim=-3)
    rgb = linear_to_srgb(_mix(XYZ_TO_RGB, _scale(lab_finv(f), WHITE)))
    return rgb.clamp(0.0, 1.0) if clip else rgb


# ------------------------------------------------------------------------ closed-form VJPs


def rgb_to_lab_backward(img: Tensor, grad: Tensor) -> Tensor:
    """``d<grad, rgb_to_lab(img)> / d img``, in the dtype of ``img`` (compute in float32 or
    float64 by passing such tensors)."""
    lin = srgb_to_linear(img)
    dlin = torch.where(
        img <= 0.04045,
        torch.full_like(img, 1.0 / 12.92),
        (2.4 / 1.055) * ((img.clamp(min=0.04045) + 0.055) / 1.055) ** 1.4,
    )
    t = _scale(_mix(RGB_TO_XYZ, lin), WHITE, inverse=True)
    df = torch.where(
        t > DELTA3, (1.0 / 3.0) * t.clamp(min=DELTA3) ** (-2.0 / 3.0), torch.full_like(t, LIN_SLOPE)
    )
    gL, ga, gb = grad.unbind(-3)
    gf = torch.stack([500.0 * ga, 116.0 * gL - 500.0 * ga + 200.0 * gb, -200.0 * gb], dim=-3)
    gxyz = _scale(gf * df, WHITE, inverse=True)
    m_t = tuple(zip(*RGB_TO_XYZ, strict=True))
    return _mix(m_t, gxyz) * dlin


def lab_to_rgb_backward(lab: Tensor, grad: Tensor, clip: bool = True) -> Tensor:
    """``d<grad, lab_to_rgb(lab, clip)> / d lab``. At the kinks (the clamps) the gradient is
    torch.clamp's: it passes where the value equals the bound."""
    L, a, b = lab.unbind(-3)
    fy = (L + 16.0) / 116.0
    fz_raw = fy - b / 200.0
    f = torch.stack([fy + a / 500.0, fy, fz_raw.clamp(min=0.0)], dim=-3)
    dfinv = torch.where(f > DELTA, 3.0 * f * f, torch.full_like(f, 1.0 / LIN_SLOPE))
    lin = _mix(XYZ_TO_RGB, _scale(lab_finv(f), WHITE))
    dsrgb = torch.where(
        lin <= 0.0031308,
        torch.full_like(lin, 12.92),
        (1.055 / 2.4) * lin.clamp(min=0.0031308) ** (1.0 / 2.4 - 1.0),
    )
    g = grad
    if clip:
        rgb = linear_to_srgb(lin)
        g = g * ((rgb >= 0.0) & (rgb <= 1.0)).to(g.dtype)
    m_t = tuple(zip(*XYZ_TO_RGB, strict=True))
    gf = _scale(_mix(m_t, g * dsrgb), WHITE) * dfinv
    gfx, gfy, gfz = gf.unbind(-3)
    gfz = gfz * (fz_raw >= 0.0).to(gfz.dtype)
    return torch.stack([(gfx + gfy + gfz) / 116.0, gfx / 500.0, -gfz / 200.0], dim=-3)
