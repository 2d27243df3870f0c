"""pyssl's losses against the libraries users come from: lightly's NTXentLoss, open_clip's
ClipLoss and SigLipLoss. Runs where those install (CI's peers environment: torch 2.14.1 with
torchvision, lightly and open_clip); skipped elsewhere."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pyssl import ops
from pyssl.reference import contrastive as R

lightly_loss = pytest.importorskip("lightly.loss", reason="lightly is not installed (peers extra)")
open_clip_loss = pytest.importorskip(
    "open_clip.loss", reason="open_clip is not installed (peers extra)"
)


def feats(n, d, seed, normalize=False):
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return (F.normalize(x, dim=1) if normalize else x).requires_grad_(True)


def same(a, b, inputs):
    torch.testing.assert_close(a, b.to(a.dtype), rtol=1e-10, atol=1e-12)
    for x, y in zip(torch.autograd.grad(a, inputs), torch.autograd.grad(b, inputs)):
        torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("n,d,temp", [(8, 5, 0.3), (33, 128, 0.1), (1, 3, 0.5)])
def test_nt_xent_matches_lightly(n, d, temp):
    z1, z2 = feats(n, d, 0), feats(n, d, 1)
    peer = lightly_loss.NTXentLoss(temperature=temp)
    same(ops.nt_xent(z1, z2, temperature=temp), peer(z1, z2), (z1, z2))
    same(R.nt_xent(z1, z2, temperature=temp), peer(z1, z2), (z1, z2))


@pytest.mark.parametrize("n,d", [(8, 5), (40, 64)])
def test_clip_and_siglip_match_open_clip(n, d):
    image, text = feats(n, d, 2, True), feats(n, d, 3, True)
    scale = torch.tensor(7.5, dtype=torch.float64, requires_grad=True)
    bias = torch.tensor(-4.0, dtype=torch.float64, requires_grad=True)
    clip = open_clip_loss.ClipLoss()
    same(ops.clip_loss(image, text, scale), clip(image, text, scale), (image, text, scale))
    same(R.clip_loss(image, text, scale), clip(image, text, scale), (image, text, scale))
    sig = open_clip_loss.SigLipLoss()
    inputs = (image, text, scale, bias)
    same(ops.siglip_loss(*inputs), sig(*inputs), inputs)
    same(R.siglip_loss(*inputs), sig(*inputs), inputs)
