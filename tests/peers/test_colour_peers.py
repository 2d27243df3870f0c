"""pyssl's sRGB <-> CIELAB against the libraries users come from: kornia's
``rgb_to_lab`` / ``lab_to_rgb`` and scikit-image's ``rgb2lab`` / ``lab2rgb``, in float64.
Runs where they install (CI's peers environment); each is skipped cleanly elsewhere.

The one deliberate difference: pyssl's CIE f(t) uses the exact constants (6/29)^3 and
1 / (3 (6/29)^2) where both peers use 0.008856 and 7.787, which moves L, a, b by < 2e-4."""

from __future__ import annotations

import pytest
import torch

from pyssl.ops.colour import lab_to_rgb, rgb_to_lab


def _rgb(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(2, 3, 9, 11, generator=g, dtype=torch.float64)
    x[0, :, 0, :4] = torch.tensor([0.0, 1.0, 0.04045, 0.02])  # edges and the dark segment
    return x


@pytest.mark.parametrize("seed", [0, 1])
def test_against_kornia(seed):
    kc = pytest.importorskip("kornia.color", reason="kornia is not installed (peers extra)")
    x = _rgb(seed)
    lab = rgb_to_lab(x)
    torch.testing.assert_close(lab, kc.rgb_to_lab(x), rtol=0, atol=2e-4)
    torch.testing.assert_close(lab_to_rgb(lab), kc.lab_to_rgb(lab), rtol=0, atol=1e-5)
    wild = lab * torch.tensor([1.0, 2.0, 2.0], dtype=torch.float64).view(3, 1, 1)
    torch.testing.assert_close(lab_to_rgb(wild), kc.lab_to_rgb(wild, clip=True), rtol=0, atol=1e-5)


@pytest.mark.parametrize("seed", [0, 1])
def test_against_scikit_image(seed):
    sk = pytest.importorskip("skimage.color", reason="scikit-image is not installed")
    x = _rgb(seed)
    lab = rgb_to_lab(x)
    want = torch.from_numpy(sk.rgb2lab(x.permute(0, 2, 3, 1).numpy())).permute(0, 3, 1, 2)
    torch.testing.assert_close(lab, want, rtol=0, atol=2e-4)
    back = torch.from_numpy(sk.lab2rgb(lab.permute(0, 2, 3, 1).numpy())).permute(0, 3, 1, 2)
    torch.testing.assert_close(lab_to_rgb(lab), back, rtol=0, atol=1e-5)
