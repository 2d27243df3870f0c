"""64-bit sizes: one op per family (masking, contrastive, augmentation, text) on a tensor of
more than 2**31 elements, checked at the far end where a 32-bit index would have wrapped. Marked
slow (4-10 GiB of memory at peak, a minute or two each); CI runs them in a step of their own
(``pytest --run-slow -m slow``)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pyssl import ops
from pyssl.ops import augment as ops_augment
from pyssl.ops._backend import _C, view
from pyssl.reference import augment as ref_augment
from pyssl.reference import contrastive as ref_contrastive
from pyssl.reference import text as ref_text

pytestmark = pytest.mark.slow
BIG = 2**31


def test_random_masking_past_2_to_31_elements():
    b, length, d = 2, 2**14, 2**16 + 8  # 2**31 + 2**18 elements
    assert b * length * d > BIG
    g = torch.Generator().manual_seed(0)
    rows = torch.randn(64, d, generator=g).to(torch.bfloat16)
    x = rows.repeat(b * length // 64, 1).view(b, length, d)  # row r holds rows[r % 64]
    noise = torch.rand(b, length, generator=g)
    visible, mask, ids_keep, ids_restore = ops.random_masking(x, 0.5, noise=noise)
    expected_ids = noise.argsort(dim=1, stable=True)[:, : length // 2]
    assert torch.equal(ids_keep, expected_ids)
    # the last batch's kept rows lie past element 2**31 of x
    last = ids_keep[1, -8:]
    assert torch.equal(visible[1, -8:], rows[(length + last) % 64])
    assert mask.sum().item() == b * (length - length // 2)


def test_info_nce_past_2_to_31_elements_forward_and_backward():
    # float32 query of 2**31 + 2**19 elements (8 GiB): block B repeated R times, labels with
    # period 8, so every loss row is known from B alone and the key gradient is R times B's.
    # Only the key takes a gradient (the backward still reads every query row), which keeps the
    # peak near 10 GiB.
    d, rows = 128, 4096
    reps = BIG // (d * rows) + 1
    n = rows * reps
    assert n * d > BIG
    g = torch.Generator().manual_seed(1)
    block = F.normalize(torch.randn(rows, d, generator=g), dim=1)
    k = F.normalize(torch.randn(8, d, generator=g), dim=1).requires_grad_(True)
    q = block.repeat(reps, 1)
    labels = torch.arange(n) % 8
    loss = ops.info_nce(q, k, temperature=0.1, labels=labels, reduction="none")
    loss.sum().backward()
    del q
    kb = k.detach().double().requires_grad_(True)
    ref = ref_contrastive.info_nce(
        block.double(), kb, temperature=0.1, labels=labels[:rows], reduction="none"
    )
    (ref.sum() * reps).backward()
    # the last rows lie past element 2**31 of the query
    assert torch.allclose(loss[-rows:].double(), ref, rtol=1e-5, atol=1e-5)
    assert torch.equal(loss[-rows:], loss[:rows])  # the same rows give the same bits
    assert torch.allclose(k.grad.double(), kb.grad, rtol=1e-3, atol=1e-3 * kb.grad.abs().max())


def test_augment_view_past_2_to_31_output_elements():
    # A bfloat16 output [B, 3, 512, 512] of 2**31 + 2**18 elements (4 GiB) from one 9x7 uint8
    # image, repeated by a stride-0 batch dimension (no copy). The parameters repeat with
    # period 7 (crop box, flip, jitter order, brightness, saturation, solarize; no hue, which
    # costs 5x the rest), so every view equals one of the first 7, which are checked against
    # the float64 reference; a view written at a wrapped 32-bit offset, or left unwritten, shows.
    s, period = 512, 7
    per_view = 3 * s * s
    b = BIG // per_view + 1
    assert b * per_view > BIG
    src = torch.randint(
        0, 256, (1, 9, 7, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(2)
    )
    images = src.expand(b, 9, 7, 3)
    cols = {c: i for i, c in enumerate(ops_augment.PARAM_COLUMNS)}
    rows = torch.zeros(period, len(cols), dtype=torch.float64)
    for k in range(period):
        top, left = k % 3, k % 2
        values = dict(top=top, left=left, height=9 - top - k % 2, width=7 - left, flip=k % 2,
                      brightness=0.6 + 0.1 * k, contrast=1.0, saturation=0.5 + 0.2 * k, hue=0.0,
                      order0=k % 4, order1=(k + 1) % 4, order2=(k + 2) % 4, order3=(k + 3) % 4,
                      solarize=float(k == 5))  # fmt: skip
        for name, value in values.items():
            rows[k, cols[name]] = value
    params = rows[torch.arange(b) % period]
    kw = dict(size=s, interpolation="bilinear", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    out = ops_augment.augment_view(images, params, **kw, dtype=torch.bfloat16)
    assert out.shape == (b, 3, s, s) and out.dtype == torch.bfloat16
    for k in range(period):
        exact = ref_augment.apply_one(
            src[0].permute(2, 0, 1), **ops_augment.unpack_row(rows[k].tolist()), **kw,
            blur_kernel_size=1,
        )  # fmt: skip
        err = (out[k].double() - exact).abs() * 255
        assert (err <= 1.0 + exact.abs() * 255 * 2.0**-8).all(), f"view {k}: {err.max():.3g}"
    # every view, the last ones past element 2**31 included, equals its period's first
    for i in range(0, b, 256):
        idx = torch.arange(i, min(i + 256, b))
        assert torch.equal(out[idx], out[idx % period]), f"views {i}.."


def test_masked_lm_loss_past_2_to_31_hidden_elements():
    # bfloat16 hidden [N, 64] of 2**31 + 2**12 elements (4 GiB): block B of 64 rows repeated,
    # a few labelled rows at the start, the middle, across element 2**31 (row 2**25) and at the
    # far end. The fused forward+backward (reduction "sum"), the separate forward and backward
    # ("none"), and the backward kernel into a NaN-poisoned dhidden (every element written: the
    # ignored rows zeroed) against the float64 reference of the labelled rows. Peak ~8.5 GiB.
    h, period, v = 64, 64, 1000
    n = BIG // h + h
    assert n * h > BIG
    g = torch.Generator().manual_seed(3)
    block = torch.randn(period, h, generator=g).to(torch.bfloat16)
    weight = (torch.randn(v, h, generator=g) / 8).to(torch.bfloat16)
    hidden = block.repeat(n // period, 1).requires_grad_(True)
    cross = BIG // h
    rows = torch.tensor([0, 1, 70, n // 2, cross - 1, cross, cross + 1, n - 2, n - 1])
    labels = torch.full((n,), -100, dtype=torch.int64)
    labels[rows] = torch.randint(0, v, (len(rows),), generator=g)
    exact_h = block[rows % period].double().requires_grad_(True)
    exact = ref_text.masked_lm_loss(exact_h, weight.double(), labels[rows], reduction="none")
    (exact_dh,) = torch.autograd.grad(exact.sum(), exact_h)

    def check_dh(dh: torch.Tensor) -> None:
        tol = 2.0**-7 * exact_dh.abs().max().item()
        assert torch.allclose(dh[rows].double(), exact_dh, rtol=2.0**-7, atol=tol)
        nonzero = 0
        for i in range(0, n, 2**22):  # every other row is zero, NaN nowhere
            part = dh[i : i + 2**22]
            assert not part.isnan().any()
            nonzero += int(part.ne(0).any(1).sum())
        assert nonzero == len(rows)

    total = ops.masked_lm_loss(hidden, weight, labels, reduction="sum")  # fused
    (dh,) = torch.autograd.grad(total, hidden)
    assert abs(total.double().item() - exact.sum().item()) <= 2.0**-7 * exact.sum().item()
    check_dh(dh)
    del dh
    per_row = ops.masked_lm_loss(hidden, weight, labels, reduction="none")
    (dh,) = torch.autograd.grad(per_row.float().sum(), hidden)
    assert torch.allclose(per_row[rows].double(), exact, rtol=2.0**-7, atol=1e-2)
    assert int(per_row.ne(0).sum()) <= len(rows)
    check_dh(dh)
    # the backward kernel on its own, into a poisoned buffer
    flat = hidden.detach()
    loss, lse = torch.empty(n), torch.empty(n)
    none = view(None)
    _C.text_cpu.lm_loss_forward(
        view(flat), view(weight), none, view(labels), -100, view(loss), view(lse)
    )
    assert torch.allclose(loss[rows].double(), exact, rtol=1e-3, atol=1e-3)
    dh.fill_(float("nan"))
    grad = (labels != -100).float()
    _C.text_cpu.lm_loss_backward(
        view(flat), view(weight), none, view(labels), -100, view(lse), view(grad), view(dh),
        none, none,
    )  # fmt: skip
    check_dh(dh)
