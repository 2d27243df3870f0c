"""The C++ CPU kernels of the contrastive family against eager float64 computations.

``lse_forward`` / ``lse_backward`` (InfoNCE, NT-Xent, CLIP, MoCo) and ``sigmoid_forward`` /
``sigmoid_backward`` (SigLIP) are compared with the same formulas evaluated in float64 on the
same (rounded) inputs. Every output is poisoned with NaN before a call, so an unwritten element
fails. Every instruction-set path of the float32 kernels runs (``set_isa``): AVX-512 and AVX2
(where the CPU has them) and the portable baseline (also ``PYSSL_FORCE_PORTABLE=1``).

Tolerances follow from the precision (flash-attention's rule, as ``helpers.low_precision_tol``):
a kernel output's error against float64 may be at most twice the error of the same formulas
computed eagerly in that output's dtype, plus 1e-6 of the result's magnitude. Statistics, weights
and scalar outputs are in the accumulation dtype (float32; float64 for float64 inputs), so their
eager baseline is float32 arithmetic on the same rounded inputs: for bfloat16/float16 inputs the
input rounding is common to kernel and reference and only the arithmetic is judged. The portable
path on x86-64 runs the baseline ISA, which has no fused multiply-add: each multiply-add of its
GEMMs rounds twice where torch's BLAS rounds once, which doubles the error bound, so it gets
four times the eager error (measured over 30 seeds at scale 100: up to 2.7x, median 1.1x; the
AVX2 and AVX-512 paths up to 1.3x). float64 inputs must match to 1e-10 relative.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import pyssl
from pyssl.ops import _backend

_C = _backend._C
CC = _C.contrastive_cpu
NAN = float("nan")
INF = float("inf")
DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]


def has_isa(name: str) -> bool:
    try:
        CC.set_isa(name)
        return True
    except ValueError:
        return False
    finally:
        CC.set_isa("auto")


ISAS = [
    pytest.param(
        "avx512",
        marks=pytest.mark.skipif(not has_isa("avx512"), reason="the CPU has no AVX-512F/BW/VL/DQ"),
    ),
    pytest.param(
        "avx2", marks=pytest.mark.skipif(not has_isa("avx2"), reason="the CPU has no AVX2 + FMA")
    ),
    "portable",
]


@pytest.fixture(params=ISAS)
def isa(request):
    CC.set_isa(request.param)
    assert CC.isa() == request.param
    yield request.param
    CC.set_isa("auto")


def acc_of(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def poisoned(*shape: int, dtype: torch.dtype) -> torch.Tensor:
    return torch.full(shape, NAN, dtype=dtype)


def inputs(n, m, d, dtype, seed, normalize=False, spread=1.0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(n, d, generator=g, dtype=torch.float64)
    k = torch.randn(m, d, generator=g, dtype=torch.float64)
    if normalize:
        q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
    else:
        q, k = q * spread / math.sqrt(max(d, 1)), k * spread / math.sqrt(max(d, 1))
    return q.to(dtype), k.to(dtype)


def check(out: torch.Tensor, eager: torch.Tensor, exact: torch.Tensor) -> None:
    """out against the float64 `exact`; `eager` is the same formulas in out's dtype."""
    assert out.shape == exact.shape and out.dtype == eager.dtype
    assert not torch.isnan(out).any(), "an output element was not written (NaN poison left)"
    if out.numel() == 0:
        return
    if out.dtype == torch.float64:
        torch.testing.assert_close(out, exact, rtol=1e-10, atol=1e-10 * max(1, exact.abs().max()))
        return
    finite = torch.isfinite(exact)  # -inf statistics of empty rows must match exactly
    assert torch.equal(torch.isfinite(out), finite)
    assert torch.equal(out[~finite], exact[~finite].to(out.dtype))
    if not finite.any():
        return
    out, eager, exact = out[finite].double(), eager[finite].double(), exact[finite]
    err = (out - exact).abs().max().item()
    err_eager = (eager - exact).abs().max().item()
    factor = 4 if CC.isa() == "portable" else 2  # no fused multiply-add (see the top)
    slack = 1e-6 * max(1.0, exact.abs().max().item())
    assert err <= factor * err_eager + slack, f"error {err:.3g} vs eager's {err_eager:.3g}"


# ---------------------------------------------------------------------------------------------
# Eager versions of the kernels' formulas, in any dtype (float64 for the exact values).


def logits(q, k, scale, offset, dtype):
    s = scale * (q.to(dtype) @ k.to(dtype).T)
    if offset is not None:
        i = torch.arange(q.shape[0])[:, None]
        j = torch.arange(k.shape[0])[None, :]
        s = s.masked_fill(j == i + offset, -INF)
    return s


def eager_lse(q, k, scale, offset, dtype):
    s = logits(q, k, scale, offset, dtype)
    return s.logsumexp(1), s.logsumexp(0)


def eager_lse_grads(
    q, k, scale, offset, row_lse, row_w, col_lse, col_w, dtype, row_pos=None, col_pos=None
):
    """(dq, dk, dscale) of the lse backward, computed in dtype (softmax - onehot of the
    positives, as eager cross-entropy)."""
    s = logits(q, k, scale, offset, dtype)
    g = torch.zeros_like(s)
    n, m = s.shape
    if row_w is not None:
        p = (s - row_lse.to(dtype)[:, None]).exp()
        if row_pos is not None:
            p = p - (torch.arange(m)[None, :] == row_pos[:, None]).to(dtype)
        g = g + row_w.to(dtype)[:, None] * p
    if col_w is not None:
        c = (s - col_lse.to(dtype)[None, :]).exp()
        if col_pos is not None:
            c = c - (torch.arange(n)[:, None] == col_pos[None, :]).to(dtype)
        g = g + col_w.to(dtype)[None, :] * c
    g = torch.where(torch.isinf(s), torch.zeros_like(g), g)  # excluded pairs
    qd, kd = q.to(dtype), k.to(dtype)
    return scale * g @ kd, scale * g.T @ qd, (g * (qd @ kd.T)).sum()


def eager_sigmoid(q, k, scale, bias, grad, dtype):
    """(loss, dq, dk, dscale, dbias) of SigLIP's pairwise loss, computed in dtype."""
    qd, kd = q.to(dtype), k.to(dtype)
    z = scale * (qd @ kd.T) + bias
    n, m = z.shape
    y = -torch.ones(n, m, dtype=dtype)
    y[torch.arange(min(n, m)), torch.arange(min(n, m))] = 1
    loss = -F.logsigmoid(y * z).sum()
    g = grad * (-y * torch.sigmoid(-y * z))
    return loss, scale * g @ kd, scale * g.T @ qd, (g * (qd @ kd.T)).sum(), g.sum()


def launch(fn, *args):
    _backend.launch("contrastive", fn, "cpu", *args)


def run_lse_forward(q, k, scale, offset, rows=True, cols=True):
    acc = acc_of(q.dtype)
    row = poisoned(q.shape[0], dtype=acc) if rows else None
    col = poisoned(k.shape[0], dtype=acc) if cols else None
    launch("lse_forward", q, k, scale, offset or 0, offset is not None, row, col)
    return row, col


def run_lse_backward(
    q, k, scale, offset, row_lse, row_w, col_lse, col_w, want=(1, 1, 1), row_pos=None, col_pos=None
):
    acc = acc_of(q.dtype)
    dq = poisoned(*q.shape, dtype=q.dtype) if want[0] else None
    dk = poisoned(*k.shape, dtype=k.dtype) if want[1] else None
    ds = poisoned(1, dtype=acc) if want[2] else None
    stats = (row_lse, row_w, row_pos, col_lse, col_w, col_pos)
    launch("lse_backward", q, k, scale, offset or 0, offset is not None, *stats, dq, dk, ds)
    return dq, dk, ds


# ---------------------------------------------------------------------------------------------
# lse_forward / lse_backward against float64


# (N, M, D): a batch of one, N != M, D = 1 / 33 / 128, partial tiles on both sides (tiles are
# 128 x 128) and enough tiles for several row and column chunks.
SHAPES = [(1, 1, 1), (7, 5, 33), (37, 300, 33), (130, 257, 128), (300, 129, 1)]
# (scale, offset, mode): temperature 1 and 0.01, exclusion on the diagonal, off it or none, and
# row statistics, column statistics or both.
VARIANTS = [
    (1.0, None, "both"),
    (100.0, 0, "rows"),
    (14.3, 3, "cols"),
    (100.0, -2, "both"),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_lse_matches_float64(shape, dtype, isa):
    n, m, d = shape
    acc = acc_of(dtype)
    for seed, (scale, offset, mode) in enumerate(VARIANTS):
        q, k = inputs(n, m, d, dtype, seed, normalize=scale > 10, spread=3.0)
        rows, cols = mode in ("rows", "both"), mode in ("cols", "both")
        row, col = run_lse_forward(q, k, scale, offset, rows, cols)
        exact_r, exact_c = eager_lse(q, k, scale, offset, torch.float64)
        eager_r, eager_c = eager_lse(q, k, scale, offset, acc)
        if rows:
            check(row, eager_r, exact_r)
        if cols:
            check(col, eager_c, exact_c)
        assert (row is None) == (not rows) and (col is None) == (not cols)

        # Backward from the exact statistics rounded to the accumulation dtype; the references
        # use the same rounded statistics, so only the backward kernel is judged.
        g = torch.Generator().manual_seed(100 + seed)
        rl, cl = exact_r.to(acc), exact_c.to(acc)
        rw = (torch.rand(n, generator=g, dtype=torch.float64) - 0.3).to(acc) if rows else None
        cw = (torch.rand(m, generator=g, dtype=torch.float64) - 0.3).to(acc) if cols else None
        args = (rl if rows else None, rw, cl if cols else None, cw)
        dq, dk, ds = run_lse_backward(q, k, scale, offset, *args)
        ex = eager_lse_grads(q, k, scale, offset, *args, torch.float64)
        same = eager_lse_grads(q, k, scale, offset, *args, dtype)
        check(dq, same[0], ex[0])
        check(dk, same[1], ex[1])
        ds_eager = eager_lse_grads(q, k, scale, offset, *args, acc)[2]
        check(ds, ds_eager.reshape(1), ex[2].reshape(1))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_lse_backward_optional_outputs_and_weights(dtype, isa):
    """Each output may be None (and is then left alone); the others do not change."""
    n, m, d = 40, 150, 33
    q, k = inputs(n, m, d, dtype, 7, spread=2.0)
    acc = acc_of(dtype)
    rl, cl = (t.to(acc) for t in eager_lse(q, k, 2.0, 1, torch.float64))
    rw = torch.full((n,), 1.0 / n, dtype=acc)
    cw = torch.full((m,), -0.5 / m, dtype=acc)
    full = run_lse_backward(q, k, 2.0, 1, rl, rw, cl, cw)
    for want in [(1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0), (0, 1, 1)]:
        part = run_lse_backward(q, k, 2.0, 1, rl, rw, cl, cw, want)
        for got, ref, w in zip(part, full, want):
            assert (got is None) != bool(w)
            if w:
                assert torch.equal(got, ref)
    # no weights at all: G = 0
    dq, dk, ds = run_lse_backward(q, k, 2.0, 1, rl, None, cl, None)
    assert not dq.any() and not dk.any() and ds.item() == 0
    # the statistics without their weights are ignored: rows only == (row terms)
    a = run_lse_backward(q, k, 2.0, 1, rl, rw, None, None)
    b = run_lse_backward(q, k, 2.0, 1, rl, rw, cl, None)
    for x, y in zip(a, b):
        assert torch.equal(x, y)


@pytest.mark.parametrize("shape", [(40, 300, 33), (300, 40, 8), (129, 129, 64)])
@pytest.mark.parametrize("offset", [None, 0, 3])
def test_lse_backward_subtracts_positives_in_the_tile(shape, offset, isa):
    n, m, d = shape
    q, k = inputs(n, m, d, torch.float32, 11, spread=3.0)
    scale = 20.0
    g = torch.Generator().manual_seed(12)
    # in range, out of range (matches nothing) and, with an offset, on excluded pairs (G = 0)
    row_pos = torch.randint(-2, m + 2, (n,), generator=g)
    col_pos = torch.randint(-2, n + 2, (m,), generator=g)
    if offset is not None:
        row_pos[: min(n, m) // 2] = torch.arange(min(n, m) // 2) + offset
    rl, cl = eager_lse(q, k, scale, offset, torch.float64)
    rw = torch.rand(n, generator=g, dtype=torch.float64)
    cw = torch.rand(m, generator=g, dtype=torch.float64)
    args = (rl.float(), rw.float(), cl.float(), cw.float())
    got = run_lse_backward(q, k, scale, offset, *args, row_pos=row_pos, col_pos=col_pos)
    eager = eager_lse_grads(q, k, scale, offset, *args, torch.float32, row_pos, col_pos)
    exact = eager_lse_grads(q, k, scale, offset, *args, torch.float64, row_pos, col_pos)
    for out, e, x in zip(got, eager, exact):
        check(out.reshape(x.shape), e.reshape(x.shape), x)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_nt_xent_same_tensor(dtype, isa):
    """NT-Xent: q and k are one tensor [z1; z2], the diagonal excluded; dq + dk is the gradient."""
    z = inputs(2 * 75, 1, 64, dtype, 3, normalize=True)[0]
    scale = 1 / 0.07
    row, _ = run_lse_forward(z, z, scale, 0, cols=False)
    exact = eager_lse(z, z, scale, 0, torch.float64)[0]
    check(row, eager_lse(z, z, scale, 0, torch.float32)[0], exact)
    rw = torch.full((z.shape[0],), 1.0 / z.shape[0])
    dq, dk, ds = run_lse_backward(z, z, scale, 0, exact.float(), rw, None, None)
    ex = eager_lse_grads(z, z, scale, 0, exact.float(), rw, None, None, torch.float64)
    same = eager_lse_grads(z, z, scale, 0, exact.float(), rw, None, None, dtype)
    check(dq, same[0], ex[0])
    check(dk, same[1], ex[1])
    # a distinct copy of z (no shared packing) gives the same result bit for bit
    dq2, dk2, ds2 = run_lse_backward(z, z.clone(), scale, 0, exact.float(), rw, None, None)
    assert torch.equal(dq, dq2) and torch.equal(dk, dk2) and torch.equal(ds, ds2)


def test_fully_excluded_row_is_minus_inf(isa):
    """With M = 1 and the exclusion on row 0's only pair, row 0 is empty: lse = -inf, G = 0."""
    q, k = inputs(3, 1, 5, torch.float32, 0)
    row, col = run_lse_forward(q, k, 1.0, 0)
    exact_r, exact_c = eager_lse(q, k, 1.0, 0, torch.float64)
    assert row[0].item() == -INF and torch.isfinite(row[1:]).all()
    check(row, eager_lse(q, k, 1.0, 0, torch.float32)[0], exact_r)
    check(col, eager_lse(q, k, 1.0, 0, torch.float32)[1], exact_c)
    rw, cw = torch.ones(3), torch.ones(1)
    dq, dk, ds = run_lse_backward(q, k, 1.0, 0, row, rw, col, cw)
    assert dq[0].abs().max().item() == 0 and torch.isfinite(dq).all() and torch.isfinite(dk).all()


@pytest.mark.parametrize("shape", [(0, 5, 3), (4, 0, 3), (3, 4, 0), (0, 0, 2)])
def test_empty_sizes(shape, isa):
    n, m, d = shape
    q, k = inputs(n, m, d, torch.float32, 0)
    row, col = run_lse_forward(q, k, 2.0, None)
    exact_r, exact_c = eager_lse(q, k, 2.0, None, torch.float64)
    torch.testing.assert_close(row.double(), exact_r)  # log(M) for D = 0, -inf for N or M = 0
    torch.testing.assert_close(col.double(), exact_c)
    rw, cw = torch.ones(n), torch.ones(m)
    dq, dk, ds = run_lse_backward(q, k, 2.0, None, row, rw, col, cw)
    ex = eager_lse_grads(q, k, 2.0, None, row, rw, col, cw, torch.float64)
    torch.testing.assert_close(dq.double(), ex[0])
    torch.testing.assert_close(dk.double(), ex[1])
    torch.testing.assert_close(ds.double(), ex[2].reshape(1))


# ---------------------------------------------------------------------------------------------
# SigLIP


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1, 1), (9, 4, 33), (130, 200, 128), (257, 3, 1)])
def test_sigmoid_matches_float64(shape, dtype, isa):
    n, m, d = shape
    acc = acc_of(dtype)
    for seed, (scale, bias) in enumerate([(1.0, 0.5), (10.0, -10.0), (100.0, -3.0)]):
        q, k = inputs(n, m, d, dtype, seed, normalize=scale > 1, spread=2.0)
        loss = poisoned(1, dtype=acc)
        launch("sigmoid_forward", q, k, scale, bias, loss)
        grad = 0.37
        ex = eager_sigmoid(q, k, scale, bias, grad, torch.float64)
        same = eager_sigmoid(q, k, scale, bias, grad, dtype)
        in_acc = eager_sigmoid(q, k, scale, bias, grad, acc)
        check(loss, in_acc[0].reshape(1), ex[0].reshape(1))
        dq, dk = poisoned(n, d, dtype=dtype), poisoned(m, d, dtype=dtype)
        ds, db = poisoned(1, dtype=acc), poisoned(1, dtype=acc)
        launch(
            "sigmoid_backward", q, k, scale, bias, torch.tensor([grad], dtype=acc), dq, dk, ds, db
        )
        check(dq, same[1], ex[1])
        check(dk, same[2], ex[2])
        check(ds, in_acc[3].reshape(1), ex[3].reshape(1))
        check(db, in_acc[4].reshape(1), ex[4].reshape(1))


# ---------------------------------------------------------------------------------------------
# Large sizes, stability, determinism


def chunked_reference(q, k, scale, offset, rw, cw, chunk=500):
    """float64 lse statistics and lse-backward gradients without the N x M matrix at once."""
    q64, k64 = q.double(), k.double()
    n, m = q.shape[0], k.shape[0]
    row = torch.empty(n, dtype=torch.float64)
    col_parts = []
    for i0 in range(0, n, chunk):
        s = scale * q64[i0 : i0 + chunk] @ k64.T
        i = torch.arange(i0, i0 + s.shape[0])[:, None]
        s = s.masked_fill(torch.arange(m)[None, :] == i + offset, -INF)
        row[i0 : i0 + chunk] = s.logsumexp(1)
        col_parts.append(s.logsumexp(0))
    col = torch.stack(col_parts).logsumexp(0)
    row32, col32 = row.float().double(), col.float().double()
    dq = torch.empty_like(q64)
    dk = torch.zeros_like(k64)
    dscale = 0.0
    for i0 in range(0, n, chunk):
        dots = q64[i0 : i0 + chunk] @ k64.T
        s = scale * dots
        g = rw.double()[i0 : i0 + chunk, None] * (s - row32[i0 : i0 + chunk, None]).exp()
        g = g + cw.double()[None, :] * (s - col32[None, :]).exp()
        i = torch.arange(i0, i0 + s.shape[0])[:, None]
        g = g.masked_fill(torch.arange(m)[None, :] == i + offset, 0.0)
        dq[i0 : i0 + chunk] = scale * g @ k64
        dk += scale * g.T @ q64[i0 : i0 + chunk]
        dscale += (g * dots).sum().item()
    return row, col, dq, dk, dscale


def test_large_against_chunked_float64(isa):
    n = m = 3000
    q, k = inputs(n, m, 64, torch.float32, 11, normalize=True)
    scale, offset = 1 / 0.1, 0
    rw, cw = torch.full((n,), 0.5 / n), torch.full((m,), 0.5 / m)
    row, col = run_lse_forward(q, k, scale, offset)
    ex_row, ex_col, ex_dq, ex_dk, ex_ds = chunked_reference(q, k, scale, offset, rw, cw)
    # float32 arithmetic over 3000 terms: absolute error of a few float32 ulps of the result
    torch.testing.assert_close(row.double(), ex_row, rtol=2e-6, atol=1e-5)
    torch.testing.assert_close(col.double(), ex_col, rtol=2e-6, atol=1e-5)
    dq, dk, ds = run_lse_backward(q, k, scale, offset, row, rw, col, cw)
    for got, ex in [(dq, ex_dq), (dk, ex_dk)]:
        assert not torch.isnan(got).any()
        err = (got.double() - ex).abs().max().item()
        assert err <= 2e-5 * ex.abs().max().item(), err
    assert abs(ds.item() - ex_ds) <= 1e-4 * max(1.0, abs(ex_ds))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_stable_at_temperature_001(dtype, isa):
    """scale 100 on normalised bf16/fp16 features: no inf or NaN, and the float64 values."""
    n = 2 * 300
    z = inputs(n, 1, 128, dtype, 5, normalize=True)[0]
    row, col = run_lse_forward(z, z, 100.0, 0)
    assert torch.isfinite(row).all() and torch.isfinite(col).all()
    exact_r, exact_c = eager_lse(z, z, 100.0, 0, torch.float64)
    check(row, eager_lse(z, z, 100.0, 0, torch.float32)[0], exact_r)
    rw, cw = torch.full((n,), 1.0 / n), torch.full((n,), 1.0 / n)
    dq, dk, ds = run_lse_backward(z, z, 100.0, 0, row, rw, col, cw)
    assert torch.isfinite(dq).all() and torch.isfinite(dk).all() and torch.isfinite(ds).all()
    ex = eager_lse_grads(z, z, 100.0, 0, row, rw, col, cw, torch.float64)
    same = eager_lse_grads(z, z, 100.0, 0, row, rw, col, cw, dtype)
    check(dq, same[0], ex[0])
    check(dk, same[1], ex[1])


def direct_calls(q, k, threads):
    """Every entry point once, called straight on the core with `threads` threads."""
    v = _backend.view
    _C.set_num_threads(threads)
    n, m = q.shape[0], k.shape[0]
    out = {name: poisoned(size, dtype=torch.float32) for name, size in [("row", n), ("col", m)]}
    CC.lse_forward(v(q), v(k), 5.0, 2, True, v(out["row"]), v(out["col"]))
    rw, cw = torch.linspace(-1, 1, n), torch.linspace(0, 1, m)
    for name in ["dq", "sdq"]:
        out[name] = poisoned(*q.shape, dtype=q.dtype)
    for name in ["dk", "sdk"]:
        out[name] = poisoned(*k.shape, dtype=k.dtype)
    for name in ["ds", "loss", "sds", "sdb"]:
        out[name] = poisoned(1, dtype=torch.float32)
    row_pos, col_pos = torch.arange(n) % m, (torch.arange(m) * 7) % n
    stats = (out["row"], rw, row_pos, out["col"], cw, col_pos)
    grads = (out["dq"], out["dk"], out["ds"])
    CC.lse_backward(v(q), v(k), 5.0, 2, True, *map(v, stats), *map(v, grads))
    CC.sigmoid_forward(v(q), v(k), 3.0, -1.0, v(out["loss"]))
    grad = torch.tensor([0.5])
    CC.sigmoid_backward(
        v(q), v(k), 3.0, -1.0, v(grad), v(out["sdq"]), v(out["sdk"]), v(out["sds"]), v(out["sdb"])
    )
    return out


@pytest.mark.parametrize("shape", [(700, 900), (1000, 40)], ids=["700x900", "1000x40"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_thread_count_does_not_change_results(shape, dtype, isa):
    # 700 x 900 runs transposed, as 8 x 6 tiles in 4 x 4 chunks: 16 tasks share the threads;
    # 1000 x 40 runs as 8 x 1 tiles in 8 x 1 chunks, and reads q row-major in GEMM3.
    q, k = inputs(*shape, 40, dtype, 2, spread=2.0)
    try:
        ref = direct_calls(q, k, 1)
        for threads in (2, 3):
            got = direct_calls(q, k, threads)
            for name in ref:
                assert not torch.isnan(ref[name]).any(), name
                assert torch.equal(got[name], ref[name]), (name, threads)
    finally:
        _C.set_num_threads(torch.get_num_threads())


def test_torch_thread_setting_reaches_the_core():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        q, k = inputs(5, 6, 3, torch.float32, 0)
        run_lse_forward(q, k, 1.0, None)
        assert _C.num_threads() == 1
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------------------------------------
# The vectorised math


def ulps(out: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
    """|out - exact| in units of the float32 spacing at exact (float64 in, float64 out)."""
    e32 = exact.float().abs()
    spacing = (torch.nextafter(e32, torch.tensor(INF)) - e32).double()
    return (out.double() - exact).abs() / spacing


@pytest.mark.parametrize("fn", ["exp", "exp2"])
def test_vector_exp_within_2_ulp(fn, isa):
    lo, hi = (-87.3, 88.7) if fn == "exp" else (-126.0, 127.9)  # normal results
    x = torch.cat([torch.linspace(lo, hi, 200_003), torch.linspace(-1, 1, 20_001)]).float()
    out = poisoned(x.numel(), dtype=torch.float32)
    CC.vector_math(fn, _backend.view(x), _backend.view(out))
    exact = x.double().exp() if fn == "exp" else torch.exp2(x.double())
    assert ulps(out, exact).max().item() <= 2.0
    # edges: underflow through the subnormals to zero, overflow to inf, NaN passes, -inf -> 0
    edge = torch.tensor([-200.0, -100.0, -149.0, 0.0, 200.0, NAN, -INF])
    if fn == "exp2":
        edge[1:3] = torch.tensor([-140.0, -160.0])
    out = poisoned(edge.numel(), dtype=torch.float32)
    CC.vector_math(fn, _backend.view(edge), _backend.view(out))
    exact = edge.double().exp() if fn == "exp" else torch.exp2(edge.double())
    assert out[0].item() == 0 and out[3].item() == 1 and out[4].item() == INF
    tiny = torch.finfo(torch.float32).smallest_normal
    assert abs(out[1].item() - exact[1].item()) <= 2 * 2**-149 and exact[1] < tiny  # subnormal
    assert out[2].item() == exact[2].float().item()  # rounds to 0 or the least subnormal
    assert math.isnan(out[5].item()) and out[6].item() == 0


def test_vector_softplus(isa):
    x = torch.linspace(-60, 60, 100_001).float()
    out = poisoned(x.numel(), dtype=torch.float32)
    CC.vector_math("softplus", _backend.view(x), _backend.view(out))
    exact = F.softplus(x.double())
    rel = ((out.double() - exact).abs() / exact).max().item()
    assert rel <= 4 * torch.finfo(torch.float32).eps, rel


def test_force_portable_environment_variable():
    code = "from pyssl.ops import _backend; print(_backend._C.contrastive_cpu.isa())"
    # the child imports the same pyssl as this process (installed, or a built source tree)
    root = os.path.dirname(os.path.dirname(pyssl.__file__))
    env = dict(os.environ, PYSSL_FORCE_PORTABLE="1", PYTHONPATH=root)
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=root
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "portable"


# ---------------------------------------------------------------------------------------------
# Bad inputs: ValueError naming the argument, before any output is written


def test_bad_inputs_raise_value_error():
    v = _backend.view
    q, k = torch.randn(5, 4), torch.randn(6, 4)
    row, col = torch.empty(5), torch.empty(6)
    dq, dk, ds = torch.empty(5, 4), torch.empty(6, 4), torch.empty(1)

    def fwd(q=q, k=k, scale=1.0, row=row, col=col):
        CC.lse_forward(v(q), v(k), scale, 0, True, v(row), v(col))

    def bwd(row_w=row, col_w=col, row=row, col=col, dq=dq, dk=dk, ds=ds, q=q, rp=None, cp=None):
        CC.lse_backward(
            v(q),
            v(k),
            1.0,
            0,
            True,
            v(row),
            v(row_w),
            v(rp),
            v(col),
            v(col_w),
            v(cp),
            v(dq),
            v(dk),
            v(ds),
        )

    cases = [
        (lambda: fwd(q=torch.randn(5)), "q: expected 2 dimensions"),
        (lambda: fwd(k=torch.randn(6, 3)), "k: feature dimension 3 differs from q's 4"),
        (lambda: fwd(k=k.double()), "k: dtype float64 differs from q's float32"),
        (lambda: fwd(q=torch.randn(4, 5).T), "q: expected a contiguous tensor"),
        (lambda: fwd(q=torch.ones(5, 4, dtype=torch.int64)), "q: expected a floating dtype"),
        (lambda: fwd(scale=NAN), "scale: expected a finite number"),
        (lambda: fwd(row=torch.empty(4)), "row_lse: expected 5 elements, got 4"),
        (lambda: fwd(col=torch.empty(6, dtype=torch.float64)), "col_lse: expected dtype float32"),
        (
            lambda: fwd(q=q.bfloat16(), k=k.bfloat16(), row=torch.empty(5).bfloat16()),
            "row_lse: expected dtype float32",
        ),
        (lambda: bwd(row=None), "row_lse: required when row_w is given"),
        (lambda: bwd(col_w=torch.empty(5)), "col_w: expected 6 elements"),
        (lambda: bwd(rp=torch.zeros(5, dtype=torch.int32)), "row_pos: expected int64"),
        (lambda: bwd(cp=torch.zeros(5, dtype=torch.int64)), "col_pos: expected 6 elements"),
        (lambda: bwd(dq=torch.empty(4, 5)), "dq: expected q's shape"),
        (lambda: bwd(dk=dk.double()), "dk: expected k's dtype float32"),
        (lambda: bwd(ds=torch.empty(2)), "dscale: expected one element"),
        (lambda: CC.sigmoid_forward(v(q), v(k), 1.0, INF, v(ds)), "bias: expected a finite"),
        (lambda: CC.sigmoid_forward(v(q), v(k), 1.0, 0.0, v(None)), "loss: required"),
        (
            lambda: CC.sigmoid_backward(
                v(q), v(k), 1.0, 0.0, v(torch.empty(1).double()), v(dq), v(dk), v(ds), v(ds)
            ),
            "grad: expected dtype float32",
        ),
        (lambda: CC.set_isa("sse"), "isa: expected 'auto', 'portable', 'avx2' or 'avx512'"),
        (lambda: CC.vector_math("log", v(row), v(row)), "fn: expected"),
    ]
    for call, message in cases:
        for t in (row, col, dq, dk, ds):
            t.fill_(NAN)
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
            call()
        for t in (row, col, dq, dk, ds):  # nothing was written before the check failed
            assert torch.isnan(t).all(), message
