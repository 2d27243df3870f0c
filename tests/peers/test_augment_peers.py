"""pyssl's augmentation against torchvision itself: the float64 reference step by step against
``torchvision.transforms.functional`` on float64 images, the fused kernel against torchvision's
composed float pipeline, and pyssl's vectorised samplers against torchvision's ``get_params``
(two-sample Kolmogorov-Smirnov statistics, computed here so no scipy is needed). Runs where
torchvision installs (CI's peers environment); skipped elsewhere."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from pyssl import augment as A
from pyssl.ops import augment as ops
from pyssl.reference import augment as R

TF = pytest.importorskip(
    "torchvision.transforms.functional", reason="torchvision is not installed (peers extra)"
)
T = pytest.importorskip("torchvision.transforms")
IM = pytest.importorskip("torchvision.transforms").InterpolationMode


def _image(seed: int, h: int, w: int) -> torch.Tensor:
    """A smooth image with edges (closer to a photograph than noise): low-frequency colour
    fields plus a few uniform-noise pixels, uint8 [3, H, W]."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(1, 3, 5, 6, generator=g, dtype=torch.float64)
    img = torch.nn.functional.interpolate(low, size=(h, w), mode="bicubic", align_corners=False)
    img = img[0].clamp(0, 1) * 255
    noise = torch.rand(3, h, w, generator=g, dtype=torch.float64) < 0.05
    img = torch.where(noise, torch.rand(3, h, w, generator=g, dtype=torch.float64) * 255, img)
    return img.round().to(torch.uint8)


def _f64(img: torch.Tensor) -> torch.Tensor:
    return img.to(torch.float64) / 255.0


@pytest.mark.parametrize("interp", ["bilinear", "bicubic"])
@pytest.mark.parametrize("box,size", [((3, 5, 40, 31), 17), ((0, 0, 12, 9), 30), ((7, 2, 1, 1), 5)])
def test_resized_crop_matches_torchvision(interp, box, size):
    img = _f64(_image(0, 48, 40))
    mode = IM.BILINEAR if interp == "bilinear" else IM.BICUBIC
    tv = TF.resized_crop(img, *box, [size, size], interpolation=mode, antialias=True)
    torch.testing.assert_close(
        R.resized_crop(img, *box, size, interp), tv.clamp(0, 1), rtol=0, atol=1e-12
    )


@pytest.mark.parametrize("seed", [0, 1])
def test_colour_ops_match_torchvision(seed):
    img = _f64(_image(seed, 23, 29))
    pairs = [
        (R.adjust_brightness(img, 1.37), TF.adjust_brightness(img, 1.37)),
        (R.adjust_contrast(img, 0.61), TF.adjust_contrast(img, 0.61)),
        (R.adjust_saturation(img, 1.8), TF.adjust_saturation(img, 1.8)),
        (R.rgb_to_grayscale(img).expand(3, -1, -1), TF.rgb_to_grayscale(img, 3)),
        (R.solarize(img, 128 / 255), TF.solarize(img, 128 / 255)),
        (R.hflip(img), TF.hflip(img)),
        (
            R.normalize(img, A.IMAGENET_MEAN, A.IMAGENET_STD),
            TF.normalize(img, A.IMAGENET_MEAN, A.IMAGENET_STD),
        ),
    ]
    for ours, theirs in pairs:
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)
    # torchvision computes hue in float32 and builds the Gaussian kernel in float32 (linspace's
    # default dtype) whatever the image dtype; the reference stays in the image's dtype.
    for f in (-0.27, 0.5):
        torch.testing.assert_close(R.adjust_hue(img, f), TF.adjust_hue(img, f), rtol=0, atol=2e-6)
    blur = TF.gaussian_blur(img, [7, 7], [1.3, 1.3])
    torch.testing.assert_close(R.gaussian_blur(img, 7, 1.3), blur, rtol=0, atol=1e-6)


@pytest.mark.parametrize("order", list(itertools.permutations(range(4)))[::7])
def test_fused_kernel_matches_torchvision_pipeline(order):
    """The C++ kernel against torchvision's functional pipeline on float64 images, within one
    level of the 0-255 scale."""
    imgs = [_image(s, 50 + 3 * s, 61 - 2 * s) for s in range(3)]
    cfg = A.ViewConfig(size=33, blur_kernel_size=5)
    factors = (1.3, 0.7, 1.4, 0.21)
    boxes = [(2, 3, 40, 35), (0, 0, 53, 59), (10, 20, 5, 7)]
    rows = []
    for i, box in enumerate(boxes):
        rows.append([*box, i % 2, *factors, *order, i == 1, 0.9 * (i != 0), i == 2])
    packed = torch.tensor(rows, dtype=torch.float64)
    ours = ops.augment_view([t.permute(1, 2, 0) for t in imgs], packed, size=33, blur_kernel_size=5)
    fns = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
    for i, (img, box) in enumerate(zip(imgs, boxes)):
        x = TF.resized_crop(_f64(img), *box, [33, 33], antialias=True)
        x = TF.hflip(x) if i % 2 else x
        for op in order:
            x = fns[op](x, factors[op])
        x = TF.rgb_to_grayscale(x, 3) if i == 1 else x
        x = TF.gaussian_blur(x, [5, 5], [0.9, 0.9]) if i != 0 else x
        x = TF.solarize(x, 128 / 255) if i == 2 else x
        x = TF.normalize(x, cfg.mean, cfg.std)
        std = torch.tensor(cfg.std, dtype=torch.float64).view(3, 1, 1)
        assert ((ours[i].double() - x) * std * 255).abs().max().item() <= 1.0


def _ks_stat(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().sort().values, b.double().sort().values
    grid = torch.cat([a, b])
    fa = torch.searchsorted(a, grid, right=True).double() / len(a)
    fb = torch.searchsorted(b, grid, right=True).double() / len(b)
    return (fa - fb).abs().max().item()


def _ks_ok(a: torch.Tensor, b: torch.Tensor) -> bool:
    # Critical value at alpha = 0.001: c(alpha) = sqrt(-ln(alpha / 2) / 2) = 1.95.
    n, m = len(a), len(b)
    return _ks_stat(a, b) < 1.95 * math.sqrt((n + m) / (n * m))


@pytest.mark.parametrize(
    "hw,scale,ratio",
    [
        ((64, 80), (0.08, 1.0), (3 / 4, 4 / 3)),
        ((30, 200), (0.4, 1.0), (3 / 4, 4 / 3)),
        ((50, 50), (0.05, 0.4), (0.5, 2.0)),
    ],
)
def test_crop_law_matches_torchvision(hw, scale, ratio):
    n = 3000
    torch.manual_seed(0)
    img = torch.zeros(1, *hw)
    tv = torch.tensor(
        [T.RandomResizedCrop.get_params(img, list(scale), list(ratio)) for _ in range(n)],
        dtype=torch.float64,
    )
    cfg = A.ViewConfig(size=8, scale=scale, ratio=ratio)
    ours = A.sample_view(cfg, [hw] * n, torch.Generator().manual_seed(1)).boxes.double()
    for f in (
        lambda b: b[:, 2] * b[:, 3],
        lambda b: torch.log(b[:, 3] / b[:, 2]),
        lambda b: b[:, 0],
        lambda b: b[:, 1],
    ):
        assert _ks_ok(f(ours), f(tv))


def test_jitter_law_matches_torchvision():
    n = 2400
    torch.manual_seed(0)
    jit = T.ColorJitter(0.4, 0.4, 0.2, 0.1)
    draws = [
        jit.get_params(jit.brightness, jit.contrast, jit.saturation, jit.hue) for _ in range(n)
    ]
    tv_order = torch.stack([d[0] for d in draws])
    tv_f = torch.tensor([d[1:] for d in draws], dtype=torch.float64)
    cfg = A.ViewConfig(size=8, jitter_p=1.0)
    ours = A.sample_view(cfg, [(8, 8)] * n, torch.Generator().manual_seed(1))
    for k in range(4):
        assert _ks_ok(ours.factors[:, k], tv_f[:, k])
    perms = {p: i for i, p in enumerate(itertools.permutations(range(4)))}
    for order in (ours.order, tv_order):
        counts = torch.bincount(
            torch.tensor([perms[tuple(r)] for r in order.tolist()]), minlength=24
        ).double()
        chi2 = ((counts - n / 24) ** 2 / (n / 24)).sum().item()
        assert chi2 < 51.2  # chi-square with 23 degrees of freedom at p = 0.001
