"""Image methods: every loss against an eager re-derivation of its paper's pseudo-code on a
fixed input, training on a tiny synthetic problem, gradients to the encoder, and the updates
``on_step_end`` owns (EMA schedules, the MoCo queue, DINO's centre and teacher temperature)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from method_helpers import encoder_grads, synthetic_views, tiny_resnet, tiny_vit, train

from pyssl.methods import (
    BYOL,
    DINO,
    MAE,
    BarlowTwins,
    MoCoV2,
    MoCoV3,
    SimCLR,
    SimSiam,
    VICReg,
    build,
)
from pyssl.reference import masking as ref

SMALL = {
    "simclr": (SimCLR, {"proj_dim": 16}),
    "mocov2": (MoCoV2, {"proj_dim": 16, "queue_size": 32}),
    "mocov3": (MoCoV3, {"proj_dim": 16, "hidden": 32}),
    "byol": (BYOL, {"proj_dim": 16, "hidden": 32}),
    "simsiam": (SimSiam, {"proj_dim": 32, "pred_hidden": 8}),
    "barlow": (BarlowTwins, {"proj_dim": 32}),
    "vicreg": (VICReg, {"proj_dim": 32}),
    "dino": (DINO, {"out_dim": 64, "hidden": 32, "bottleneck": 16}),
    "mae": (MAE, {"decoder_dim": 16, "decoder_depth": 1, "decoder_heads": 2}),
}


def small(name: str, seed: int = 0):  # type: ignore[no-untyped-def]
    torch.manual_seed(seed)
    cls, kw = SMALL[name]
    return cls(tiny_vit() if name == "mae" else tiny_resnet(), **kw)


def views_for(name: str, n: int = 16, seed: int = 0) -> list[torch.Tensor]:
    if name == "mae":
        return synthetic_views(n=n, count=1, seed=seed)
    views = synthetic_views(n=n, seed=seed)
    if name == "dino":  # two global crops, two local ones
        views += [v[:, :, 2:6, 2:6] for v in synthetic_views(n=n, seed=seed + 100)]
    return views


@pytest.mark.parametrize("name", list(SMALL))
def test_trains_with_gradients_to_the_encoder(name: str) -> None:
    m = small(name)
    views = views_for(name)
    loss = m.loss(views)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert encoder_grads(m) > 0
    m.zero_grad()
    start = 0
    if name == "mocov2":
        # the queue holds its random initial keys for two steps (32 rows, 16 keys a step);
        # from then on the same 16 images' older keys are among the negatives
        start = 2
    if name == "dino":
        # DINO's loss rises while the centre and the teacher temperature move (its own
        # schedule, tested below); with both held, the student must learn its teacher
        m.center_momentum, m.warmup_teacher_frac = 1.0, 0.0
        m.teacher_temp = m.final_teacher_temp
    losses = train(m, lambda step: views, steps=12)
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-3:]) / 3 < losses[start], losses


def test_every_method_builds_with_its_defaults() -> None:
    for name in SMALL:
        m = build(name)
        assert m.name == name and m.modality == "image"
        assert m.encoder.out_dim == 128


# --------------------------------------------------------------------- loss re-derivations


def test_mocov2_loss_matches_algorithm_1_and_queue_is_fifo() -> None:
    m = small("mocov2").double()
    x_q, x_k = (v.double() for v in views_for("mocov2", n=6))
    queue = m.queue.features().clone()
    loss = m.loss([x_q, x_k])
    # MoCo's Algorithm 1: logits [l_pos, l_neg] / t, cross-entropy against index 0
    q = F.normalize(m.projector(m.encoder(x_q)), dim=1)
    k = F.normalize(m.key_projector(m.key_encoder(x_k)), dim=1).detach()
    l_pos = (q * k).sum(1, keepdim=True)
    l_neg = q @ queue.T
    logits = torch.cat([l_pos, l_neg], 1) / 0.2
    want = F.cross_entropy(logits, torch.zeros(6, dtype=torch.int64))
    torch.testing.assert_close(loss, want)
    # on_step_end: keys in at the end, the 6 oldest out; key encoder k = m k + (1 - m) q
    online = [p.detach().clone() for p in m.encoder.parameters()]
    before = [p.detach().clone() for p in m.key_encoder.parameters()]
    m.on_step_end(0, 10)
    torch.testing.assert_close(m.queue.features(), torch.cat([queue[6:], k]))
    for p, o, b in zip(m.key_encoder.parameters(), online, before):
        torch.testing.assert_close(p, 0.99 * b + 0.01 * o)


def test_mocov3_loss_matches_pseudo_code_and_momentum_rises() -> None:
    m = small("mocov3").double()
    x1, x2 = (v.double() for v in views_for("mocov3", n=6))
    loss = m.loss([x1, x2])
    q1, q2 = (m.predictor(m.projector(m.encoder(x))) for x in (x1, x2))
    with torch.no_grad():
        k1, k2 = (m.momentum_projector(m.momentum_encoder(x)) for x in (x1, x2))

    def ctr(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:  # MoCo v3's Algorithm 1
        q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
        return F.cross_entropy(q @ k.T / 0.2, torch.arange(6)) * 2 * 0.2

    torch.testing.assert_close(loss, ctr(q1, k2) + ctr(q2, k1))
    m.on_step_end(50, 100)
    assert m.momentum == pytest.approx(1 - 0.01 * 0.5)
    m.on_step_end(100, 100)
    assert m.momentum == 1.0


def test_byol_loss_and_momentum_schedule() -> None:
    m = small("byol").double()
    x1, x2 = (v.double() for v in views_for("byol", n=6))
    loss = m.loss([x1, x2])
    p1, p2 = (m.predictor(m.projector(m.encoder(x))) for x in (x1, x2))
    z1, z2 = (m.target_projector(m.target_encoder(x)) for x in (x1, x2))

    def regression(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:  # BYOL eq. 2
        p, z = F.normalize(p, dim=-1), F.normalize(z, dim=-1)
        return ((p - z) ** 2).sum(-1).mean()

    torch.testing.assert_close(loss, regression(p1, z2) + regression(p2, z1))
    # tau = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2, then target = tau target + (1-tau) online
    base = m.base_momentum
    for k, want in (
        (0, base),
        (25, 1 - (1 - base) * (math.cos(math.pi / 4) + 1) / 2),
        (50, (1 + base) / 2),
        (100, 1.0),
    ):
        online = [p.detach().clone() for p in m.encoder.parameters()]
        before = [p.detach().clone() for p in m.target_encoder.parameters()]
        m.on_step_end(k, 100)
        assert m.momentum == pytest.approx(want, abs=1e-12)
        for p, o, b in zip(m.target_encoder.parameters(), online, before):
            torch.testing.assert_close(p, want * b + (1 - want) * o)
        with torch.no_grad():  # move the online network so the next EMA is visible
            for p in m.encoder.parameters():
                p.add_(0.1)


def test_simsiam_loss_and_stop_gradient() -> None:
    m = small("simsiam").double()
    x1, x2 = (v.double() for v in views_for("simsiam", n=6))
    m.loss([x1, x2]).backward()
    got = [p.grad.clone() for p in m.projector.parameters()]
    m.zero_grad()
    z1, z2 = (m.projector(m.encoder(x)) for x in (x1, x2))
    p1, p2 = m.predictor(z1), m.predictor(z2)

    def d(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:  # SimSiam's Algorithm 1
        z = z.detach()
        p, z = F.normalize(p, dim=1), F.normalize(z, dim=1)
        return -(p * z).sum(dim=1).mean()

    want = d(p1, z2) / 2 + d(p2, z1) / 2
    m2 = small("simsiam").double()
    torch.testing.assert_close(m2.loss([x1, x2]), want)
    want.backward()  # with the stop-gradient: the same projector gradients
    for g, p in zip(got, m.projector.parameters()):
        torch.testing.assert_close(g, p.grad)


def test_barlow_twins_matches_reference_code() -> None:
    m = small("barlow").double()
    x1, x2 = (v.double() for v in views_for("barlow", n=6))
    loss = m.loss([x1, x2])
    z1, z2 = (m.projector(m.encoder(x)) for x in (x1, x2))
    # facebookresearch/barlowtwins main.py: affine-free BatchNorm1d, c / batch, lambd off-diag
    bn = torch.nn.BatchNorm1d(32, affine=False).double()
    c = bn(z1).T @ bn(z2) / 6
    on = (torch.diagonal(c) - 1).pow(2).sum()
    off = (c - torch.diag(torch.diagonal(c))).pow(2).sum()
    torch.testing.assert_close(loss, on + 0.0051 * off)


def test_vicreg_matches_algorithm_1() -> None:
    m = small("vicreg").double()
    x1, x2 = (v.double() for v in views_for("vicreg", n=6))
    loss = m.loss([x1, x2])
    z_a, z_b = (m.projector(m.encoder(x)) for x in (x1, x2))
    n, d = z_a.shape
    sim = F.mse_loss(z_a, z_b)
    std_a = torch.sqrt(z_a.var(dim=0) + 1e-04)
    std_b = torch.sqrt(z_b.var(dim=0) + 1e-04)
    std = torch.mean(F.relu(1 - std_a)) / 2 + torch.mean(F.relu(1 - std_b)) / 2
    za, zb = z_a - z_a.mean(dim=0), z_b - z_b.mean(dim=0)
    cov_a, cov_b = (za.T @ za) / (n - 1), (zb.T @ zb) / (n - 1)
    eye = torch.eye(d, dtype=torch.bool)
    cov = cov_a[~eye].pow(2).sum() / d + cov_b[~eye].pow(2).sum() / d
    torch.testing.assert_close(loss, 25 * sim + 25 * std + 1 * cov)


def test_dino_loss_centre_and_schedules() -> None:
    m = small("dino").double()
    m.center.normal_()  # a non-zero centre, so that centring is exercised
    views = [v.double() for v in views_for("dino", n=5)]
    loss = m.loss(views)
    # views of one size share a batch (DINO's MultiCropWrapper), so batch norm sees them together
    s = [*m.head(m.encoder(torch.cat(views[:2]))).chunk(2)]
    s += [*m.head(m.encoder(torch.cat(views[2:]))).chunk(2)]
    with torch.no_grad():
        t = [*m.teacher_head(m.teacher_encoder(torch.cat(views[:2]))).chunk(2)]

    def h(t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:  # DINO's Algorithm 1
        s = F.softmax(s / 0.1, dim=1)
        t = F.softmax((t - m.center) / 0.04, dim=1)
        return -(t * torch.log(s)).sum(dim=1).mean()

    pairs = [h(t[i], s[v]) for i in range(2) for v in range(4) if v != i]
    torch.testing.assert_close(loss, sum(pairs) / len(pairs), rtol=1e-9, atol=1e-9)
    # centre: C = l C + (1 - l) mean(teacher outputs)
    c0 = m.center.clone()
    m.on_step_end(0, 100)
    torch.testing.assert_close(m.center, 0.9 * c0 + 0.1 * torch.cat(t).mean(0, keepdim=True))
    # teacher temperature: linspace(0.04, 0.07, 30) over the first 30 steps, then 0.07
    want = torch.linspace(0.04, 0.07, 30).tolist() + [0.07] * 70
    got = [m.teacher_temp_at(k, 100) for k in range(100)]
    assert got == pytest.approx(want, abs=1e-7)
    assert m.teacher_temp == pytest.approx(want[1])
    assert m.momentum == pytest.approx(0.996)
    m.on_step_end(99, 100)
    assert m.teacher_temp == pytest.approx(0.07)


def test_mae_loss_matches_mae_forward() -> None:
    m = small("mae")
    (x,) = views_for("mae", n=3)
    m.generator = torch.Generator().manual_seed(7)
    loss = m.loss([x])
    noise = torch.rand(3, 16, generator=torch.Generator().manual_seed(7))
    # MaskedAutoencoderViT.forward with reference ops: encoder, decoder, forward_loss
    e = m.encoder
    tokens = e.patch_embed(ref.patchify(x, 2)) + e.pos_embed
    vis, mask, _, ids_restore = ref.random_masking(tokens, 0.75, noise)
    h = torch.cat([e.cls_token.expand(3, -1, -1), vis], 1)
    for blk in e.blocks:
        h = blk(h)
    y = m.decoder_embed(e.norm(h))
    full = ref.restore_masked(y[:, 1:], m.mask_token, ids_restore) + m.decoder_pos
    y = torch.cat([y[:, :1], full], 1)
    for blk in m.decoder_blocks:
        y = blk(y)
    pred = m.decoder_pred(m.decoder_norm(y))[:, 1:]
    target = ref.patchify(x, 2)
    mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)
    target = (target - mean) / (var + 1.0e-6) ** 0.5
    per_patch = ((pred - target) ** 2).mean(dim=-1)
    want = (per_patch * mask).sum() / mask.sum()
    torch.testing.assert_close(loss, want, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------- bad input


def test_bad_views_and_options() -> None:
    m = small("byol")
    with pytest.raises(ValueError, match="differs"):
        small("simclr").loss([torch.randn(4, 3, 8, 8), torch.randn(4, 3, 6, 6)])
    with pytest.raises(ValueError, match="batch 3 differs"):
        m.loss([torch.randn(4, 3, 8, 8), torch.randn(3, 3, 8, 8)])
    with pytest.raises(ValueError, match="float"):
        m.loss([torch.zeros(4, 3, 8, 8, dtype=torch.uint8)] * 2)
    with pytest.raises(ValueError, match="at least 2 views"):
        small("dino").loss([torch.randn(4, 3, 8, 8)])
    with pytest.raises(ValueError, match="global crops"):
        small("dino").loss([torch.randn(4, 3, 8, 8), torch.randn(4, 3, 4, 4)])
    with pytest.raises(TypeError, match="ViT"):
        MAE(tiny_resnet())
    with pytest.raises(ValueError, match="MAE takes 8x8"):
        small("mae").loss([torch.randn(2, 3, 4, 4)])
    with pytest.raises(ValueError, match="momentum"):
        build("byol", momentum=1.5)
    with pytest.raises(ValueError, match="queue_size"):
        build("mocov2", queue_size=0)
    with pytest.raises(ValueError, match="mask_ratio"):
        build("mae", mask_ratio=1.0)


@pytest.mark.parametrize("name", list(SMALL))
def test_bfloat16_autocast(name: str) -> None:
    m = small(name)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = m.loss(views_for(name, n=8))
    assert torch.isfinite(loss)
    loss.backward()
    assert encoder_grads(m) > 0
    m.on_step_end(0, 10)


def test_state_dict_carries_the_schedules_and_queue() -> None:
    # a resumed run must continue where it stopped: the teacher temperature, the centre and
    # the queue travel in the state dict with the weights
    m = small("dino")
    views = views_for("dino", n=4)
    for step in range(3):
        m.loss(views)
        m.on_step_end(step, 20)
    fresh = small("dino", seed=1)
    fresh.load_state_dict(m.state_dict())
    assert fresh.teacher_temp == m.teacher_temp == pytest.approx(m.teacher_temp_at(3, 20))
    torch.testing.assert_close(fresh.center, m.center)
    torch.testing.assert_close(fresh.loss(views), m.loss(views))
    q = small("mocov2")
    q.loss(views_for("mocov2", n=4))
    q.on_step_end(0, 10)
    q2 = small("mocov2", seed=1)
    q2.load_state_dict(q.state_dict())
    torch.testing.assert_close(q2.queue.features(), q.queue.features())


def test_accumulated_losses_all_reach_the_queue_and_centre() -> None:
    # gradient accumulation: two losses, one optimiser step; on_step_end takes both batches
    q = small("mocov2").double()
    a, b = views_for("mocov2", n=3, seed=0), views_for("mocov2", n=3, seed=1)
    before = q.queue.features().clone()
    q.loss([v.double() for v in a])
    q.loss([v.double() for v in b])
    keys = torch.cat([q.keys(a[1].double()), q.keys(b[1].double())])
    q.on_step_end(0, 10)
    torch.testing.assert_close(q.queue.features(), torch.cat([before[6:], keys]))
    d = small("dino").double()
    c0 = d.center.clone()
    outs = []
    for seed in (0, 1):
        views = [v.double() for v in views_for("dino", n=3, seed=seed)]
        d.loss(views)
        with torch.no_grad():
            outs.append(d.teacher_head(d.teacher_encoder(torch.cat(views[:2]))))
    d.on_step_end(0, 10)
    torch.testing.assert_close(d.center, 0.9 * c0 + 0.1 * torch.cat(outs).mean(0, keepdim=True))
