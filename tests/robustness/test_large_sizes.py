"""64-bit sizes: one op per family on a tensor of more than 2**31 elements, checked at the far
end where a 32-bit index would have wrapped. Marked slow (4-10 GiB of memory at peak, a minute
or two each); CI runs them in a step of their own (``pytest --run-slow -m slow``)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pyssl import ops
from pyssl.reference import contrastive as ref_contrastive

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
