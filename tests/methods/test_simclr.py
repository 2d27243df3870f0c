"""SimCLR: the loss against the paper's NT-Xent written out, training, gradients, bad input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from method_helpers import encoder_grads, synthetic_views, tiny_resnet, train

from pyssl.methods import SimCLR, build


def nt_xent_paper(z1: torch.Tensor, z2: torch.Tensor, t: float) -> torch.Tensor:
    """SimCLR's Algorithm 1: l(i, j) = -log exp(s_ij / t) / sum_{k != i} exp(s_ik / t), averaged
    over all 2N ordered positive pairs."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n = z1.shape[0]
    s = z @ z.T / t
    total = 0.0
    for i in range(2 * n):
        j = (i + n) % (2 * n)
        others = torch.cat([s[i, :i], s[i, i + 1 :]])
        total = total - (s[i, j] - torch.logsumexp(others, 0))
    return total / (2 * n)


def test_loss_matches_paper() -> None:
    torch.manual_seed(0)
    m = SimCLR(tiny_resnet(), proj_dim=8, temperature=0.3).double()
    v1, v2 = (v.double() for v in synthetic_views(n=6))
    loss = m.loss([v1, v2])
    z = m.projector(m.encoder(torch.cat([v1, v2])))
    torch.testing.assert_close(loss, nt_xent_paper(z[:6], z[6:], 0.3))


def test_trains_and_reaches_encoder() -> None:
    torch.manual_seed(0)
    m = SimCLR(tiny_resnet(), proj_dim=16)
    views = synthetic_views(n=16)
    loss = m.loss(views)
    assert torch.isfinite(loss)
    loss.backward()
    assert encoder_grads(m) > 0
    losses = train(m, lambda step: synthetic_views(n=16, seed=step % 2), steps=10)
    assert losses[-1] < losses[0] - 0.1, losses


def test_build_defaults_and_bad_input() -> None:
    m = build("simclr")
    assert m.name == "simclr" and m.modality == "image" and m.temperature == 0.5
    assert m.encoder.out_dim == 128 and m.projector[-1].out_features == 128
    assert build("simclr", image_size=96, temperature=0.1).encoder.out_dim == 512
    with pytest.raises(ValueError, match="unknown method"):
        build("nope")
    with pytest.raises(TypeError, match="unknown option"):
        build("simclr", temprature=0.1)
    with pytest.raises(ValueError, match="temperature"):
        build("simclr", temperature=0)
    with pytest.raises(ValueError, match="takes 2 views"):
        m.loss([torch.randn(2, 3, 8, 8)])
    with pytest.raises(TypeError, match="list of tensors"):
        m.loss(torch.randn(2, 3, 8, 8))
    with pytest.raises(ValueError, match="at least 2"):
        m.loss([torch.randn(1, 3, 8, 8)] * 2)
