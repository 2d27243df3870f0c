"""The Triton contrastive kernels against fp64 formulas computed from the full matrix.

With no GPU the launchers run under ``TRITON_INTERPRET=1`` on CPU tensors (``tests/conftest.py``
sets the variable before torch or triton is imported), with the interpreter's single 16 x 16
tile and 32-wide chunks of D, so the shapes below take several row, column and D iterations;
with a GPU and no interpreter they run on CUDA tensors. Every output is poisoned (NaN) before a
launch, so an unwritten element fails. The backward's positives (``row_pos``/``col_pos``) are
compared in every combination of given and None, with positives on excluded pairs, ignore
indices and values past int32; two tests measure the precision of the in-tile
``softmax - onehot`` against eager ``F.cross_entropy``.

Tolerances follow flash-attention's rule: the kernel's error against the fp64 formulas computed
from the same (rounded) inputs may be at most twice the error of the same formulas computed
eagerly in a yardstick dtype, plus a few float32 ulps of the result's condition magnitude (the
sum of absolute values that its rounding errors scale with). The yardstick is the output's own
precision where the kernel rounds to it (dq, dk in the inputs' dtype: G is rounded to that dtype
before its tl.dot, as in FlashAttention) and float32 for the float32 statistics (lse, loss,
dscale, dbias), which the kernel computes in float32 from exactly representable inputs.
Float64 results must match to a few float64 ulps of that magnitude. Under the interpreter only,
bfloat16 results get one more bfloat16 ulp of the magnitude: its float32 -> bfloat16 conversion
truncates where compiled Triton rounds to nearest even.
"""

from __future__ import annotations

import contextlib
import textwrap

import pytest
import torch
import torch.nn.functional as F
from helpers import compile_triton_kernels, triton_test_device

DEVICE = triton_test_device("contrastive")
INTERPRET = DEVICE == "cpu"

from pyssl.kernels.triton import contrastive as tk  # noqa: E402

NAN = float("nan")
INF = float("inf")
FLOAT_DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
SEEDS = (0, 1)

# (N, M, D, scale, exclude_offset or None, normalise rows): N != M both ways, a batch of one,
# D = 1, 17, 33, 128, 130 (one to five chunks of 32), positive, zero and negative offsets,
# scale 1 to 100 (at 100 on unit rows, like SimCLR's and CLIP's temperatures)
LSE_CASES = [
    (37, 50, 33, 10.0, None, False),
    (1, 7, 1, 1.0, None, False),
    (24, 24, 128, 100.0, 0, True),
    (20, 13, 130, 2.0, 5, False),
    (9, 40, 17, 5.0, -3, False),
]
# (N, M, D, scale, bias, normalise rows): SigLIP's init is scale 10, bias -10
SIGMOID_CASES = [
    (37, 50, 33, 10.0, -10.0, True),
    (1, 7, 1, 1.0, 0.5, False),
    (24, 24, 128, 100.0, -10.0, True),
    (20, 13, 130, 2.0, 3.0, False),
]


def stats_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def inputs(n, m, d, dtype, normalise, seed):
    g = gen(seed)
    q = torch.randn(n, d, generator=g, dtype=torch.float64)
    k = torch.randn(m, d, generator=g, dtype=torch.float64)
    if normalise:
        q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
    return q.to(dtype).to(DEVICE), k.to(dtype).to(DEVICE)


def poison(*shape: int, dtype: torch.dtype) -> torch.Tensor:
    return torch.full(shape, NAN, dtype=dtype, device=DEVICE)


def scalar_arg(value: float, seed: int) -> float | torch.Tensor:
    """Alternately a Python float and a 0-dim float32 tensor (the values used are exact)."""
    return value if seed % 2 == 0 else torch.tensor(value, dtype=torch.float32, device=DEVICE)


@contextlib.contextmanager
def deterministic_algorithms():
    """torch.use_deterministic_algorithms(True) inside, the previous setting restored after:
    the backward launchers then take the two-launch path, which has no atomics."""
    was = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was, warn_only=warn_only)


def assert_same_backward(got, ref, n: int, m: int) -> None:
    """(dq, dk, ...) bit for bit, except, on a GPU outside deterministic mode, the gradient the
    single-pass backward accumulates with atomics (dq when M >= N, else dk): its sums land in
    a scheduling-dependent order, so it is compared to float tolerance. (Under the interpreter
    the programs run one after another: the atomics add in a fixed order.)"""
    atomic = 0 if m >= n else 1
    exact = INTERPRET or torch.are_deterministic_algorithms_enabled()
    for i, (a, b) in enumerate(zip(got, ref)):
        if a is None or b is None:
            assert a is None and b is None, i
        elif i == atomic and not exact:
            torch.testing.assert_close(a, b)
        else:
            assert torch.equal(a, b), i


# --------------------------------------------------------------------------------------------
# the formulas, on the full matrix, in a given dtype (float64: the reference)


def excluded(n: int, m: int, off: int | None) -> torch.Tensor:
    i = torch.arange(n)[:, None]
    j = torch.arange(m)[None, :]
    if off is None:
        return torch.zeros(n, m, dtype=torch.bool)
    return j == i + off


def similarity(q, k, scale, dt):
    """(raw = q @ k.T, s = scale * raw) in dtype dt."""
    raw = q.cpu().to(dt) @ k.cpu().to(dt).T
    return raw, raw * float(scale)


def lse_formulas(q, k, scale, off, dt):
    _, s = similarity(q, k, scale, dt)
    s = s.masked_fill(excluded(*s.shape, off), -INF)
    return torch.logsumexp(s, 1), torch.logsumexp(s, 0)


def onehot(pos, n: int, m: int, rows: bool) -> torch.Tensor:
    """[n, m] bool: j == pos_i (rows) or i == pos_j (columns); a value out of range matches
    nothing."""
    pos = pos.cpu()
    if rows:
        return pos[:, None] == torch.arange(m)[None, :]
    return torch.arange(n)[:, None] == pos[None, :]


def lse_grad_formulas(q, k, scale, off, row, col, dt):
    """(dq, dk, dscale, G's magnitude) of the cross-entropy sum_i row_w (lse_i - s_i,pos_i) +
    sum_j col_w (lse_j - s_pos_j,j); row/col are (lse, w, pos or None) or None. The magnitude
    is |w| (P + onehot) per term: exp turns an absolute error of s into a relative one of P,
    not of P - onehot."""
    raw, s = similarity(q, k, scale, dt)
    g = torch.zeros_like(s)
    g_mag = torch.zeros(s.shape, dtype=torch.float64)
    for stats, is_row in ((row, True), (col, False)):
        if stats is None:
            continue
        lse, w, pos = stats
        lse, w = lse.cpu().to(dt), w.cpu().to(dt)
        lse, w = (lse[:, None], w[:, None]) if is_row else (lse[None, :], w[None, :])
        p = torch.exp(s - lse)
        hot = onehot(pos, *s.shape, is_row) if pos is not None else torch.zeros_like(s).bool()
        g = g + w * (p - hot.to(dt))  # the one-hot subtracted in dt, as eager cross-entropy
        g_mag += w.double().abs() * (p.double() + hot.double())
    ex = excluded(*s.shape, off)
    g, g_mag = g.masked_fill(ex, 0.0), g_mag.masked_fill(ex, 0.0)
    qd, kd = q.cpu().to(dt), k.cpu().to(dt)
    return float(scale) * (g @ kd), float(scale) * (g.T @ qd), (g * raw).sum(), g_mag


def sigmoid_formulas(q, k, scale, bias, grad, dt):
    """(loss, dq, dk, dscale, dbias, |G|)."""
    raw, s = similarity(q, k, scale, dt)
    z = s + float(bias)
    y = 2 * torch.eye(*z.shape, dtype=dt) - 1
    loss = -F.logsigmoid(y * z).sum()
    g = float(grad) * (-y) * torch.sigmoid(-y * z)
    qd, kd = q.cpu().to(dt), k.cpu().to(dt)
    dq, dk = float(scale) * (g @ kd), float(scale) * (g.T @ qd)
    return loss, dq, dk, (g * raw).sum(), g.sum(), g.abs()


def check(out, ref64, eager, mag: float) -> None:
    """The tolerance rule of the module docstring. ``eager``: the same formulas in the
    yardstick dtype (None for float64 results); ``mag``: the condition magnitude."""
    assert out.shape == ref64.shape
    assert not torch.isnan(out).any(), "an output element is NaN (unwritten, or a NaN result)"
    if out.numel() == 0:
        return
    out64 = out.double().cpu()
    ref64 = ref64.double().cpu()
    # infinities (fully excluded rows) must match exactly
    assert torch.equal(torch.isinf(out64), torch.isinf(ref64))
    assert torch.equal(out64[torch.isinf(out64)], ref64[torch.isinf(ref64)])
    finite = torch.isfinite(ref64)
    err = (out64 - ref64)[finite].abs().max().item() if finite.any() else 0.0
    mag = max(1.0, mag)
    if out.dtype == torch.float64:
        bound = 16 * torch.finfo(torch.float64).eps * mag
    else:
        e = (eager.double().cpu() - ref64)[finite].abs().max().item() if finite.any() else 0.0
        bound = 2 * e + 4 * torch.finfo(torch.float32).eps * mag
        if INTERPRET and out.dtype == torch.bfloat16:
            bound += torch.finfo(torch.bfloat16).eps * mag
    assert err <= bound, (err, bound)


def cond_s(q, k, scale) -> torch.Tensor:
    """scale * |q| @ |k|.T: what the rounding error of each s_ij scales with."""
    return float(scale) * (q.cpu().double().abs() @ k.cpu().double().abs().T)


def lse_mag(q, k, scale, off) -> float:
    """The condition magnitude of a log-sum-exp: the largest cond_s over admissible pairs."""
    cond = cond_s(q, k, scale).masked_fill(excluded(q.shape[0], k.shape[0], off), 0.0)
    return cond.max().item() if cond.numel() else 0.0


def grad_mags(q, k, scale, g_mag) -> tuple[float, float, float]:
    """Condition magnitudes of (dq, dk, sum G * raw), from a magnitude of each G_ij (|G_ij|, or
    what its terms sum to in absolute value): exp and sigmoid turn an absolute error of s_ij
    into a relative one of G_ij's terms, so each is weighted by (1 + cond_s_ij)."""
    qa, ka = q.cpu().double().abs(), k.cpu().double().abs()
    w = g_mag * (1 + cond_s(q, k, scale))
    top = lambda t: t.max().item() if t.numel() else 0.0  # noqa: E731
    return scale * top(w @ ka), scale * top(w.T @ qa), (w * (qa @ ka.T)).sum().item()


# --------------------------------------------------------------------------------------------
# lse_forward


def run_lse_forward(q, k, scale, off, want_row=True, want_col=True):
    sdt = stats_dtype(q.dtype)
    row = poison(q.shape[0], dtype=sdt) if want_row else None
    col = poison(k.shape[0], dtype=sdt) if want_col else None
    tk.lse_forward(q, k, scale, 0 if off is None else off, off is not None, row, col)
    return row, col


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("case", LSE_CASES)
def test_lse_forward_matches_reference(case, dtype):
    n, m, d, scale, off, normalise = case
    for seed in SEEDS:
        q, k = inputs(n, m, d, dtype, normalise, seed)
        sc = scalar_arg(scale, seed)
        ref_row, ref_col = lse_formulas(q, k, scale, off, torch.float64)
        eager_row, eager_col = lse_formulas(q, k, scale, off, torch.float32)
        mag = lse_mag(q, k, scale, off) + ref_row.abs().max().item()
        # both statistics (the fused pass and its merge), then each one alone
        row, col = run_lse_forward(q, k, sc, off)
        assert row.dtype == col.dtype == stats_dtype(dtype)
        check(row, ref_row, eager_row, mag)
        check(col, ref_col, eager_col, mag)
        row_only, none = run_lse_forward(q, k, sc, off, want_col=False)
        assert none is None
        assert torch.equal(row_only, row)  # the same row computation, bit for bit
        none, col_only = run_lse_forward(q, k, sc, off, want_row=False)
        check(col_only, ref_col, eager_col, mag)  # computed on (k, q): other rounding


@pytest.mark.parametrize("programs", [1, 3, 64])
def test_lse_forward_column_buffer_does_not_grow_with_n(programs, monkeypatch):
    # the column partials live in a [P, M] buffer, P bounded by the device: each program folds
    # several row blocks into its row (one, some, or at most one block per program)
    allocated = []
    real_full = torch.full

    def spy_full(size, *args, **kwargs):
        allocated.append(tuple(size))
        return real_full(size, *args, **kwargs)

    monkeypatch.setattr(tk, "_col_programs", lambda device: programs)
    monkeypatch.setattr(torch, "full", spy_full)
    n, m = 150, 21
    q, k = inputs(n, m, 9, torch.float32, False, 4)
    ref_row, ref_col = lse_formulas(q, k, 3.0, 2, torch.float64)
    eager_row, eager_col = lse_formulas(q, k, 3.0, 2, torch.float32)
    row, col = run_lse_forward(q, k, 3.0, 2)
    mag = lse_mag(q, k, 3.0, 2) + ref_row.abs().max().item()
    check(row, ref_row, eager_row, mag)
    check(col, ref_col, eager_col, mag)
    block_rows = -(-n // 16) if INTERPRET else -(-n // 64)
    # the poisoned outputs are 1-D; the only 2-D allocation is the partial buffer
    assert [shape for shape in allocated if len(shape) == 2] == [(min(programs, block_rows), m)]


def test_lse_forward_fully_excluded_rows_are_minus_inf():
    # N = M = 1, offset 0: the only pair is excluded; N = 3, M = 1: row 0 loses its only column
    for n, m in ((1, 1), (3, 1), (1, 3)):
        q, k = inputs(n, m, 5, torch.float32, False, 0)
        row, col = run_lse_forward(q, k, 1.0, 0)
        ref_row, ref_col = lse_formulas(q, k, 1.0, 0, torch.float64)
        check(row, ref_row, ref_row.float(), lse_mag(q, k, 1.0, 0))
        check(col, ref_col, ref_col.float(), lse_mag(q, k, 1.0, 0))
        assert (row[0].item() == -INF) == (m == 1) and (col[0].item() == -INF) == (n == 1)


def test_lse_forward_offset_outside_the_matrix_excludes_nothing():
    q, k = inputs(5, 6, 8, torch.float32, False, 3)
    plain = run_lse_forward(q, k, 2.0, None)
    for off in (6, -5, 2**40, -(2**40)):  # far offsets must not wrap around in int32
        far = run_lse_forward(q, k, 2.0, off)
        assert torch.equal(far[0], plain[0]) and torch.equal(far[1], plain[1])


# --------------------------------------------------------------------------------------------
# lse_backward

# (row terms, column terms, row_pos given, col_pos given): every switch of the dq launch, and
# of the dk launch, which swaps the roles
TERMS = (
    (True, True, True, True),
    (True, False, False, False),
    (False, True, False, True),
    (True, True, True, False),
)


def positives(n: int, m: int, off: int | None, seed: int) -> torch.Tensor:
    """int64 [n] indices into [0, m): random, then, where n allows, a positive on an excluded
    pair (row i0 = max(0, -off), column i0 + off), an ignore index (-100), one just past the
    end (m), and values off by +-2**32 (they would wrap onto valid indices in int32)."""
    g = gen(200 + seed)
    pos = torch.randint(0, max(m, 1), (n,), generator=g, dtype=torch.int64)
    rows = list(range(n))
    if off is not None and max(0, -off) < n and 0 <= max(0, -off) + off < m:
        i0 = max(0, -off)
        pos[i0] = i0 + off
        rows.remove(i0)
    for i, v in zip(rows, (-100, m, 2**32 + 1, -(2**32) + 2)):
        pos[i] = v
    return pos


def stats_for(q, k, scale, off, seed, row_pos=True, col_pos=True):
    """fp64 reference statistics rounded to the statistics dtype, random signed weights, and
    positives (or None)."""
    sdt = stats_dtype(q.dtype)
    n, m = q.shape[0], k.shape[0]
    g = gen(100 + seed)
    ref_row, ref_col = lse_formulas(q, k, scale, off, torch.float64)
    row_w = (2 * torch.rand(n, generator=g, dtype=torch.float64) - 1).to(sdt)
    col_w = (2 * torch.rand(m, generator=g, dtype=torch.float64) - 1).to(sdt)
    rp = positives(n, m, off, seed).to(DEVICE) if row_pos else None
    # column j's excluded pair is row j - off
    cp = positives(m, n, None if off is None else -off, seed + 1).to(DEVICE) if col_pos else None
    return (
        (ref_row.to(sdt).to(DEVICE), row_w.to(DEVICE), rp),
        (ref_col.to(sdt).to(DEVICE), col_w.to(DEVICE), cp),
    )


def run_lse_backward(q, k, scale, off, row, col, want=("dq", "dk", "dscale")):
    n, d = q.shape
    m = k.shape[0]
    dq = poison(n, d, dtype=q.dtype) if "dq" in want else None
    dk = poison(m, d, dtype=q.dtype) if "dk" in want else None
    ds = poison(dtype=stats_dtype(q.dtype)) if "dscale" in want else None
    row_lse, row_w, row_pos = row if row is not None else (None, None, None)
    col_lse, col_w, col_pos = col if col is not None else (None, None, None)
    tk.lse_backward(
        q, k, scale, 0 if off is None else off, off is not None,
        row_lse, row_w, row_pos, col_lse, col_w, col_pos, dq, dk, ds,
    )  # fmt: skip
    return dq, dk, ds


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("case", LSE_CASES)
def test_lse_backward_matches_reference(case, dtype):
    n, m, d, scale, off, normalise = case
    for seed, (rows, cols, row_pos, col_pos) in enumerate(TERMS):
        q, k = inputs(n, m, d, dtype, normalise, seed)
        row, col = stats_for(q, k, scale, off, seed, row_pos, col_pos)
        row = row if rows else None
        col = col if cols else None
        dq, dk, ds = run_lse_backward(q, k, scalar_arg(scale, seed), off, row, col)
        assert dq.dtype == dk.dtype == dtype and ds.dtype == stats_dtype(dtype)
        ref_dq, ref_dk, ref_ds, g_mag = lse_grad_formulas(q, k, scale, off, row, col, torch.float64)
        eager_dq, eager_dk, _, _ = lse_grad_formulas(q, k, scale, off, row, col, dtype)
        _, _, eager_ds, _ = lse_grad_formulas(q, k, scale, off, row, col, torch.float32)
        mag_dq, mag_dk, mag_ds = grad_mags(q, k, scale, g_mag)
        check(dq, ref_dq, eager_dq, mag_dq)
        check(dk, ref_dk, eager_dk, mag_dk)
        check(ds, ref_ds, eager_ds, mag_ds)


def test_lse_backward_none_outputs_are_skipped():
    """Each output alone (one launch of the two-launch kernel, whatever the mode) equals its
    value from the deterministic full launch (bit for bit where the same program computes it;
    dscale without dq comes from the dk launch: other rounding); the single pass's full launch
    equals it to float tolerance: it sums the same float32 partials in another order, so they
    may differ by a few ulps of the partials' magnitude (1.6e-5 seen on a value of 0.58 where
    numpy's float32 matmul, the interpreter's tl.dot, rounds differently)."""
    q, k = inputs(21, 34, 40, torch.float32, False, 5)
    row, col = stats_for(q, k, 3.0, 1, 5)
    with deterministic_algorithms():
        full = run_lse_backward(q, k, 3.0, 1, row, col)
    fused = run_lse_backward(q, k, 3.0, 1, row, col)
    for out, ref in zip(fused, full):
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    for want in (("dq",), ("dk",), ("dscale",), ("dq", "dscale"), ("dk", "dscale")):
        got = run_lse_backward(q, k, 3.0, 1, row, col, want)
        for name, out, ref in zip(("dq", "dk", "dscale"), got, full):
            if name not in want:
                assert out is None
            elif name == "dscale" and "dq" not in want:
                torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
            else:
                assert torch.equal(out, ref), (want, name)
    nothing = run_lse_backward(q, k, 3.0, 1, row, col, ())
    assert nothing == (None, None, None)


def test_lse_backward_fully_excluded_rows_give_zero_gradient():
    q, k = inputs(3, 1, 6, torch.float32, False, 2)  # row 0's only pair is excluded
    row, col = stats_for(q, k, 1.5, 0, 2)
    assert row[0][0].item() == -INF
    dq, dk, ds = run_lse_backward(q, k, 1.5, 0, row, col)
    assert (dq[0] == 0).all()
    ref_dq, ref_dk, ref_ds, g_mag = lse_grad_formulas(q, k, 1.5, 0, row, col, torch.float64)
    mag_dq, mag_dk, mag_ds = grad_mags(q, k, 1.5, g_mag)
    check(dq, ref_dq, ref_dq.float(), mag_dq)
    check(dk, ref_dk, ref_dk.float(), mag_dk)
    check(ds, ref_ds, ref_ds.float(), mag_ds)


def test_lse_backward_positives_that_match_no_pair_change_nothing():
    """Positives that are all out of range, or all on excluded pairs (NT-Xent's self-pair), give
    the bits of no positives at all: they match no admissible pair."""
    q, k = inputs(20, 27, 40, torch.float32, False, 12)
    row, col = stats_for(q, k, 3.0, None, 12, row_pos=False, col_pos=False)
    plain = run_lse_backward(q, k, 3.0, None, row, col)
    for bad in ((-1, -100), (27, 20), (2**32, 2**32 + 3), (-(2**32) + 1, -(2**31))):
        rp = torch.full((20,), bad[0], dtype=torch.int64, device=DEVICE)
        cp = torch.full((27,), bad[1], dtype=torch.int64, device=DEVICE)
        got = run_lse_backward(q, k, 3.0, None, (*row[:2], rp), (*col[:2], cp))
        assert_same_backward(got, plain, 20, 27)
    z, _ = inputs(20, 1, 40, torch.float32, True, 13)  # q = k, self-pairs excluded
    row, col = stats_for(z, z, 3.0, 0, 13, row_pos=False, col_pos=False)
    plain = run_lse_backward(z, z, 3.0, 0, row, col)
    self_pos = torch.arange(20, device=DEVICE)
    got = run_lse_backward(z, z, 3.0, 0, (*row[:2], self_pos), (*col[:2], self_pos))
    assert_same_backward(got, plain, 20, 20)


def ce_precision(q, k, scale, row_pos, col_pos):
    """Per-row errors against float64 of the gradients (dq, dk) of CLIP's symmetric
    cross-entropy ``(CE(s, row_pos) + CE(s.T, col_pos)) / 2`` (means) through the kernels
    (lse_forward, then lse_backward with the positives), and what bounds them. Returns, for dq
    and dk: (kernel error, eager float32 ``F.cross_entropy`` error, the statistics term, the
    rounding term, the error of an out-of-tile subtraction), each a [rows] tensor of the row's
    largest error over D.

    * statistics term: the backward's P_ij = exp(s_ij - lse_i) takes the float32 lse (one
      rounding of a number of magnitude |s| on top of the rounding of its own max + log-sum) and
      a recomputed float32 s_ij (a third rounding of magnitude |s|): 3 eps32 |lse| of relative
      error in every P_ij (C_ij). With one rounding counted, the bound held on one CPU and was
      exceeded 1.2-1.3x on another, where numpy's float32 matmul (the interpreter's tl.dot)
      rounds the logits differently; eager cross-entropy stores no rounded lse (its log_softmax
      forms (s - max) - log(sum), which is exact for the top logit), so at large logits this term,
      not the place of the subtraction, is what separates the kernel from eager;
    * rounding term (16-bit inputs): G is rounded to the inputs' dtype for the dot and dq, dk
      are rounded on output, an ulp of |G| and of |dq| (a full ulp: the interpreter truncates).
      With the one-hot subtracted in the tile, |G| = |w (P - onehot)| is small where the
      positive's probability is near 1;
    * the out-of-tile alternative, emulated in float64: G' = round(w P) - w onehot, i.e. the
      one-hot subtracted after the rounding for the dot; its rounding error is an ulp of |w P|,
      about |w|, however small the row's gradient."""
    n, m = q.shape[0], k.shape[0]
    dt = q.dtype
    qd, kd = q.cpu().double(), k.cpu().double()
    rp, cp = row_pos.cpu(), col_pos.cpu()

    def loss(a, b):
        s = scale * a @ b.T
        return (F.cross_entropy(s, rp) + F.cross_entropy(s.T, cp)) / 2

    def grads(a, b):
        a, b = a.clone().requires_grad_(), b.clone().requires_grad_()
        return [g.double() for g in torch.autograd.grad(loss(a, b), (a, b))]

    ref, eager = grads(qd, kd), grads(qd.float(), kd.float())
    sdt = torch.float32
    row_lse, col_lse = poison(n, dtype=sdt), poison(m, dtype=sdt)
    tk.lse_forward(q, k, scale, 0, False, row_lse, col_lse)
    row_w = torch.full((n,), 1 / (2 * n), dtype=sdt, device=DEVICE)
    col_w = torch.full((m,), 1 / (2 * m), dtype=sdt, device=DEVICE)
    out = run_lse_backward(q, k, scale, None, (row_lse, row_w, row_pos), (col_lse, col_w, col_pos))

    s64 = scale * qd @ kd.T
    wp = torch.softmax(s64, 1) / (2 * n)  # w P and w C, float64
    wc = torch.softmax(s64, 0) / (2 * m)
    hot = onehot(rp, n, m, True).double() / (2 * n) + onehot(cp, n, m, False).double() / (2 * m)
    g = wp + wc - hot
    eps32 = torch.finfo(torch.float32).eps
    t = wp * 3 * eps32 * row_lse.cpu().double().abs()[:, None]
    t = t + wc * 3 * eps32 * col_lse.cpu().double().abs()[None, :]
    e16 = torch.finfo(dt).eps if dt != torch.float32 else 0.0
    g_alt = (wp + wc).to(dt).double() - hot
    rows = []
    for o, r, e, x, t_, g_, g_alt_ in (
        (out[0], ref[0], eager[0], kd, t, g, g_alt),
        (out[1], ref[1], eager[1], qd, t.T, g.T, g_alt.T),
    ):
        err = lambda y, r=r: (y.cpu().double() - r).abs().amax(1)  # noqa: E731
        stats = (scale * t_ @ x.abs()).amax(1)
        rnd = e16 * (scale * g_.abs() @ x.abs() + r.abs()).amax(1)
        alt = (scale * g_alt_ @ x).to(dt)
        rows.append((err(o), err(e), stats, rnd, err(alt)))
    return rows


@pytest.mark.parametrize("seed", [0, 1])
def test_lse_backward_precision_at_large_logits_float32(seed):
    """Unnormalised features, scale 20, D = 64: logits near +-400, half the positives the row's
    (column's) argmax with a probability near 1. Per row, the gradient's error against float64
    is at most twice eager float32 cross-entropy's, plus the statistics term of
    :func:`ce_precision` (float32 lse of magnitude ~400: without that term the kernel's error
    is up to ~1000x eager's on some rows, whatever the place of the subtraction)."""
    n, m = 24, 40
    q, k = inputs(n, m, 64, torch.float32, False, 30 + seed)
    s = q.cpu().double() @ k.cpu().double().T
    g = gen(300 + seed)
    rp = torch.randint(0, m, (n,), generator=g)
    cp = torch.randint(0, n, (m,), generator=g)
    rp[::2], cp[::2] = s.argmax(1)[::2], s.argmax(0)[::2]
    for err, eager, stats, _, _ in ce_precision(q, k, 20.0, rp.to(DEVICE), cp.to(DEVICE)):
        assert (err <= 2 * eager + stats).all(), (err / (2 * eager + stats)).max()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_lse_backward_subtracts_the_onehot_in_the_tile(dtype):
    """A trained model (each row's positive has a probability from about 0.4 to 1 - 1e-4) in
    16-bit inputs: per row, the error is within twice eager float32 cross-entropy's plus the
    statistics and rounding terms of :func:`ce_precision`, where the rounding term counts
    |w (P - onehot)|. An out-of-tile subtraction breaks that bound: its G rounds w P, not
    w (P - onehot)."""
    n, m = 24, 40
    g = gen(40)
    q = F.normalize(torch.randn(n, 64, generator=g, dtype=torch.float64), dim=1)
    k = torch.randn(m, 64, generator=g, dtype=torch.float64)
    k[:n] += 5.3 * q  # the positives: k_i for q_i; columns n.. have the argmax row
    k = F.normalize(k, dim=1)
    q, k = q.to(dtype).to(DEVICE), k.to(dtype).to(DEVICE)
    s = q.cpu().double() @ k.cpu().double().T
    rp = torch.arange(n)
    cp = torch.where(torch.arange(m) < n, torch.arange(m), s.argmax(0))
    p_pos = torch.softmax(20.0 * s, 1)[rp, rp]
    assert 1e-5 < (1 - p_pos).min() and (1 - p_pos).max() < 0.9
    alt_fails = False
    for err, eager, stats, rnd, alt in ce_precision(q, k, 20.0, rp.to(DEVICE), cp.to(DEVICE)):
        bound = 2 * eager + stats + rnd
        assert (err <= bound).all(), (err / bound).max()
        alt_fails = alt_fails or bool((alt > 2 * bound).any())
    assert alt_fails, "the test no longer tells an in-tile subtraction from an out-of-tile one"


# --------------------------------------------------------------------------------------------
# sigmoid_forward / sigmoid_backward


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("case", SIGMOID_CASES)
def test_sigmoid_forward_and_backward_match_reference(case, dtype):
    n, m, d, scale, bias, normalise = case
    sdt = stats_dtype(dtype)
    for seed in SEEDS:
        q, k = inputs(n, m, d, dtype, normalise, seed)
        sc, bi = scalar_arg(scale, seed), scalar_arg(bias, seed + 1)
        grad = torch.tensor(0.75, dtype=torch.float32, device=DEVICE)
        loss = poison(dtype=sdt)
        tk.sigmoid_forward(q, k, sc, bi, loss)
        outs = poison(n, d, dtype=dtype), poison(m, d, dtype=dtype)
        scal = poison(dtype=sdt), poison(dtype=sdt)
        tk.sigmoid_backward(q, k, sc, bi, grad, *outs, *scal)

        ref = sigmoid_formulas(q, k, scale, bias, 0.75, torch.float64)
        eager = sigmoid_formulas(q, k, scale, bias, 0.75, dtype)
        eager32 = sigmoid_formulas(q, k, scale, bias, 0.75, torch.float32)
        g_abs = ref[5]
        mag_dq, mag_dk, mag_ds = grad_mags(q, k, scale, g_abs)
        # a term -log_sigmoid(yz) is off by a few ulps of 1 + |z|, |z| <= cond_s + |bias|
        z_mag = (1 + cond_s(q, k, scale) + abs(bias)).sum().item()
        check(loss, ref[0], eager32[0], z_mag)
        check(outs[0], ref[1], eager[1], mag_dq)
        check(outs[1], ref[2], eager[2], mag_dk)
        check(scal[0], ref[3], eager32[3], mag_ds)
        check(scal[1], ref[4], eager32[4], (g_abs * (1 + cond_s(q, k, scale))).sum().item())


def test_sigmoid_backward_float16_under_a_loss_scale():
    """grad = 2**17 (GradScaler's scale after a few growths): grad * H passes float16's range
    (65504) but dq and dk do not; grad is applied after the tile dots, so they stay finite."""
    q, k = inputs(8, 9, 16, torch.float64, True, 11)
    q, k = (1e-2 * q).half(), (1e-2 * k).half()
    grad = torch.tensor(2.0**17, device=DEVICE)
    outs = [poison(8, 16, dtype=torch.float16), poison(9, 16, dtype=torch.float16)]
    outs += [poison(dtype=torch.float32), poison(dtype=torch.float32)]
    tk.sigmoid_backward(q, k, 1.0, 0.0, grad, *outs)
    ref = sigmoid_formulas(q, k, 1.0, 0.0, 2.0**17, torch.float64)
    # the float16 formulas overflow with grad inside G: the yardstick takes grad out, as the
    # kernel does, and rounds the product to float16
    eager = sigmoid_formulas(q, k, 1.0, 0.0, 1.0, torch.float16)
    mag_dq, mag_dk, _ = grad_mags(q, k, 1.0, ref[5])
    check(outs[0], ref[1], (eager[1].float() * 2.0**17).half(), mag_dq)
    check(outs[1], ref[2], (eager[2].float() * 2.0**17).half(), mag_dk)
    assert torch.isfinite(outs[2]) and torch.isfinite(outs[3])


def test_sigmoid_backward_none_outputs_are_skipped():
    """As for the log-sum-exp backward: each output alone, bit for bit against the
    deterministic full launch; the single pass to float tolerance."""
    q, k = inputs(19, 23, 20, torch.float32, False, 4)
    grad = torch.tensor(1.25, device=DEVICE)

    def outputs():
        outs = [poison(19, 20, dtype=torch.float32), poison(23, 20, dtype=torch.float32)]
        return outs + [poison(dtype=torch.float32), poison(dtype=torch.float32)]

    full, fused = outputs(), outputs()
    with deterministic_algorithms():
        tk.sigmoid_backward(q, k, 4.0, -2.0, grad, *full)
    tk.sigmoid_backward(q, k, 4.0, -2.0, grad, *fused)
    for out, ref in zip(fused, full):
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    for keep in range(4):
        outs = [None] * 4
        outs[keep] = torch.full_like(full[keep], NAN)
        tk.sigmoid_backward(q, k, 4.0, -2.0, grad, *outs)
        # dscale / dbias alone come from the dq launch's partials, as in the full launch
        assert torch.equal(outs[keep], full[keep]), keep


# --------------------------------------------------------------------------------------------
# the single-pass backward: both gradients from one recomputation of s

# every loss the backward serves, as pyssl.ops.contrastive calls it: InfoNCE (row terms),
# NT-Xent (q = k, self-pairs excluded, row terms), CLIP (row and column terms), MoCo (row
# terms, with and without a gradient into the keys) and SigLIP
LOSS_KINDS = ["info_nce", "nt_xent", "clip", "moco", "moco_dq", "siglip"]


def kind_case(kind: str, d: int, dtype: torch.dtype, n: int = 37, m: int = 53):
    """(q, k, args) for one loss kind on odd shapes: args are the launcher's keyword arguments
    past q and k (lse_backward's statistics from fp64 forward formulas, or sigmoid_backward's
    scalars) and ``want``, the gradients it asks for. NT-Xent: one batch of 2 x 19 views."""
    if kind == "nt_xent":
        n = m = 38
    q, k = inputs(n, m, d, dtype, True, 7)
    sdt = stats_dtype(dtype)
    want = ("dq", "dscale") if kind == "moco_dq" else ("dq", "dk", "dscale")
    if kind == "siglip":
        return q, k, dict(scale=10.0, bias=-10.0, grad=0.75, want=want + ("dbias",))
    g = gen(70)
    off = None
    if kind == "nt_xent":
        k = q  # the same tensor, as nt_xent passes it
        off = 0
        rp, cp = torch.arange(n).roll(n // 2), None
    elif kind == "clip":
        rp, cp = torch.randint(0, m, (n,), generator=g), torch.randint(0, n, (m,), generator=g)
    elif kind in ("moco", "moco_dq"):
        rp, cp = torch.arange(n), None  # k = [this batch's keys; the queue]
    else:
        rp, cp = torch.randint(0, m, (n,), generator=g), None
    ref_row, ref_col = lse_formulas(q, k, 10.0, off, torch.float64)
    cols = cp is not None
    row = (
        ref_row.to(sdt).to(DEVICE),
        torch.full((n,), 1 / (2 * n if cols else n), dtype=sdt, device=DEVICE),
        rp.to(DEVICE),
    )
    col = None
    if cols:
        col = (
            ref_col.to(sdt).to(DEVICE),
            torch.full((m,), 1 / (2 * m), dtype=sdt, device=DEVICE),
            cp.to(DEVICE),
        )
    return q, k, dict(scale=10.0, off=off, row=row, col=col, want=want)


def run_kind(q, k, args):
    """The backward of kind_case's arguments: (dq, dk, dscale) or (dq, dk, dscale, dbias)."""
    if "bias" not in args:
        return run_lse_backward(
            q, k, args["scale"], args["off"], args["row"], args["col"], args["want"]
        )
    n, d = q.shape
    m, sdt = k.shape[0], stats_dtype(q.dtype)
    want = args["want"]
    outs = (
        poison(n, d, dtype=q.dtype) if "dq" in want else None,
        poison(m, d, dtype=q.dtype) if "dk" in want else None,
        poison(dtype=sdt) if "dscale" in want else None,
        poison(dtype=sdt) if "dbias" in want else None,
    )
    grad = torch.tensor(args["grad"], dtype=torch.float32, device=DEVICE)
    tk.sigmoid_backward(q, k, args["scale"], args["bias"], grad, *outs)
    return outs


def check_kind(q, k, args, outs) -> None:
    """The outputs against the fp64 formulas, by the module's tolerance rule."""
    dtype = q.dtype
    scale = args["scale"]
    if "bias" in args:
        bias, grad = args["bias"], args["grad"]
        ref = sigmoid_formulas(q, k, scale, bias, grad, torch.float64)
        eager = sigmoid_formulas(q, k, scale, bias, grad, dtype)
        eager32 = sigmoid_formulas(q, k, scale, bias, grad, torch.float32)
        mag_dq, mag_dk, mag_ds = grad_mags(q, k, scale, ref[5])
        mag_db = (ref[5] * (1 + cond_s(q, k, scale))).sum().item()
        refs = [(ref[1], eager[1], mag_dq), (ref[2], eager[2], mag_dk)]
        refs += [(ref[3], eager32[3], mag_ds), (ref[4], eager32[4], mag_db)]
    else:
        off, row, col = args["off"], args["row"], args["col"]
        ref_dq, ref_dk, ref_ds, g_mag = lse_grad_formulas(q, k, scale, off, row, col, torch.float64)
        eager_dq, eager_dk, _, _ = lse_grad_formulas(q, k, scale, off, row, col, dtype)
        _, _, eager_ds, _ = lse_grad_formulas(q, k, scale, off, row, col, torch.float32)
        mag_dq, mag_dk, mag_ds = grad_mags(q, k, scale, g_mag)
        refs = [(ref_dq, eager_dq, mag_dq), (ref_dk, eager_dk, mag_dk), (ref_ds, eager_ds, mag_ds)]
    for out, (ref, eager, mag) in zip(outs, refs):
        if out is not None:
            assert out.dtype == (dtype if out.dim() == 2 else stats_dtype(dtype))
            check(out, ref, eager, mag)


class LaunchSpy:
    """Records each launch through ``tk.wrap_triton`` (the kernel's name, its grid for the
    configuration it ran, its constexpr switches) and, under the interpreter only, every tile
    of s (:func:`_sim_tile` calls) and the FLOPs of every ``tl.dot`` (``2 * m * k * n`` of the
    padded tiles it multiplies)."""

    def __init__(self, monkeypatch):
        self.launches: list[tuple[str, tuple[int, ...], dict]] = []
        self.sim_tiles = 0
        self.flops = 0
        real_wrap = tk.wrap_triton

        def wrap(kernel):
            spy = self

            class Launch:
                def __getitem__(self, grid):
                    def run(*args, **kwargs):
                        out = real_wrap(kernel)[grid](*args, **kwargs)
                        name = (getattr(kernel, "base_fn", None) or kernel.fn).__name__
                        config = getattr(kernel, "best_config", None)
                        meta = {**(config.kwargs if config is not None else {}), **kwargs}
                        size = grid(meta) if callable(grid) else grid
                        spy.launches.append((name, tuple(int(x) for x in size), kwargs))
                        return out

                    return run

            return Launch()

        monkeypatch.setattr(tk, "wrap_triton", wrap)
        if INTERPRET:  # a Python wrapper inside a kernel: the interpreter alone runs it
            real_dot, real_sim = tk._dot, tk._sim_tile

            def dot(a, b, acc):
                self.flops += 2 * int(a.shape[0]) * int(a.shape[1]) * int(b.shape[1])
                return real_dot(a, b, acc)

            def sim_tile(*args):
                self.sim_tiles += 1
                return real_sim(*args)

            monkeypatch.setattr(tk, "_dot", dot)
            monkeypatch.setattr(tk, "_sim_tile", sim_tile)

    def grad_launches(self) -> list[tuple[str, tuple[int, ...], dict]]:
        return [x for x in self.launches if x[0] in ("_grad_kernel", "_grad_fused_kernel")]

    def reset(self) -> None:
        self.launches.clear()
        self.sim_tiles = self.flops = 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("d", [1, 33, 130])
@pytest.mark.parametrize("kind", LOSS_KINDS)
def test_single_pass_backward_matches_reference(kind, d, dtype, monkeypatch):
    """Every loss kind through the default path: with dq and dk, one launch of the single-pass
    kernel (D = 1: one accumulator; 33 and 130: D walked in 32-wide chunks under the
    interpreter, 130 also on a GPU); MoCo with dq alone, one launch without atomics."""
    spy = LaunchSpy(monkeypatch)
    q, k, args = kind_case(kind, d, dtype)
    outs = run_kind(q, k, args)
    check_kind(q, k, args, outs)
    both = "dk" in args["want"]
    assert [x[0] for x in spy.grad_launches()] == [
        "_grad_fused_kernel" if both or d > tk._blocks(d, dtype)[1] else "_grad_kernel"
    ]
    assert spy.grad_launches()[0][2].get("WRITE_DB", False) == both


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("d", [1, 130])
@pytest.mark.parametrize("kind", LOSS_KINDS)
def test_deterministic_backward_matches_reference(kind, d, dtype, monkeypatch):
    """Under torch.use_deterministic_algorithms(True): one launch per wanted side, none with
    atomics, the results bit for bit the same on a second run; the setting is restored."""
    spy = LaunchSpy(monkeypatch)
    q, k, args = kind_case(kind, d, dtype)
    before = torch.are_deterministic_algorithms_enabled()
    with deterministic_algorithms():
        first = run_kind(q, k, args)
        launches = spy.grad_launches()
        again = run_kind(q, k, args)
    assert torch.are_deterministic_algorithms_enabled() == before
    check_kind(q, k, args, first)
    assert all((a is None and b is None) or torch.equal(a, b) for a, b in zip(first, again))
    sides = 2 if "dk" in args["want"] else 1
    assert len(launches) == sides
    assert not any(kwargs.get("WRITE_DB", False) for _, _, kwargs in launches)


# (kind, N, M): N > M takes the single pass over the rows of q
FLOP_CASES = [(kind, 37, 53) for kind in LOSS_KINDS] + [("clip", 53, 37), ("siglip", 53, 37)]


@pytest.mark.parametrize("d", [1, 130])
@pytest.mark.parametrize("case", FLOP_CASES, ids=lambda c: f"{c[0]}-{c[1]}x{c[2]}")
def test_backward_recomputes_s_once(case, d, monkeypatch):
    """Issue 3's bound: at most 8 N M D matmul FLOPs for forward + backward with both
    gradients, one recomputation of s. The backward is one launch with one program per block of
    rows of the longer side (a 1-D grid: no program per slice of D); under the interpreter, the
    tiles of s it forms are counted (one per tile of the N x M matrix: a second recomputation
    doubles them) and so are the FLOPs of every tl.dot on the padded tiles: forward 2, backward
    6 (4 with dq alone) units of N' M' D', whatever D. The deterministic path recomputes s once
    per side: 10 units."""
    kind, n, m = case
    dtype = torch.float32
    spy = LaunchSpy(monkeypatch)
    q, k, args = kind_case(kind, d, dtype, n, m)
    n, m = q.shape[0], k.shape[0]
    bm, bn, _, _ = tk._CONFIGS["interpret"]["bwd_fused"][0] if INTERPRET else (16, 16, 0, 0)
    both = "dk" in args["want"]

    def forward():
        if "bias" in args:
            tk.sigmoid_forward(q, k, args["scale"], args["bias"], poison(dtype=torch.float32))
        else:
            want_col = args["col"] is not None
            run_lse_forward(q, k, args["scale"], args["off"], want_col=want_col)

    forward()
    fwd_tiles, fwd_flops = spy.sim_tiles, spy.flops
    spy.reset()
    run_kind(q, k, args)
    (name, grid, kwargs), *rest = spy.grad_launches()
    assert not rest, spy.grad_launches()  # one backward launch
    if both:
        assert name == "_grad_fused_kernel" and kwargs["WRITE_DB"]
        if INTERPRET:
            assert grid == (triton_cdiv(max(n, m), bm),)
        else:  # the autotuner's choice of BLOCK_M
            assert len(grid) == 1
    if not INTERPRET:
        return
    bd, bdo = tk._blocks(d, dtype)
    assert bd == bdo  # under the interpreter: the padded D of both kinds of tl.dot
    unit = triton_cdiv(n, bm) * bm * triton_cdiv(m, bn) * bn * triton_cdiv(d, bd) * bd
    tiles = triton_cdiv(n, bm) * triton_cdiv(m, bn)
    assert fwd_tiles == tiles and fwd_flops == 2 * unit
    assert spy.sim_tiles == tiles  # s recomputed once
    assert fwd_flops + spy.flops == (8 if both else 6) * unit
    spy.reset()
    with deterministic_algorithms():
        run_kind(q, k, args)
    assert spy.sim_tiles == (2 if both else 1) * tiles
    assert fwd_flops + spy.flops == (10 if both else 6) * unit


def triton_cdiv(a: int, b: int) -> int:
    return -(-a // b)


# --------------------------------------------------------------------------------------------
# properties: stability, determinism, scalars as tensors, empty inputs


def test_stable_at_scale_100_in_bfloat16():
    """SimCLR's NT-Xent at temperature 0.01 and SigLIP at scale 100 on unit rows in bf16: the
    logits reach +-100; nothing may overflow (q and k are the same tensor, as in NT-Xent)."""
    z, _ = inputs(48, 1, 64, torch.bfloat16, True, 9)
    row, col = run_lse_forward(z, z, 100.0, 0)
    assert torch.isfinite(row).all() and torch.isfinite(col).all()
    ref_row, _ = lse_formulas(z, z, 100.0, 0, torch.float64)
    check(row, ref_row, lse_formulas(z, z, 100.0, 0, torch.float32)[0], 100.0 + 100.0)
    pos = torch.arange(48, device=DEVICE).roll(24)  # NT-Xent's positives: the other view
    stats = (row, torch.full_like(row, 1 / 48), pos), (col, torch.full_like(col, 1 / 48), pos)
    dq, dk, ds = run_lse_backward(z, z, 100.0, 0, *stats)
    for t in (dq, dk, ds):
        assert torch.isfinite(t).all()
    loss = poison(dtype=torch.float32)
    tk.sigmoid_forward(z, z, 100.0, -10.0, loss)
    grads = [poison(48, 64, dtype=torch.bfloat16), poison(48, 64, dtype=torch.bfloat16)]
    grads += [poison(dtype=torch.float32), poison(dtype=torch.float32)]
    tk.sigmoid_backward(z, z, 100.0, -10.0, torch.tensor(1.0, device=DEVICE), *grads)
    for t in [loss, *grads]:
        assert torch.isfinite(t).all()
    ref_loss = sigmoid_formulas(z, z, 100.0, -10.0, 1.0, torch.float64)[0]
    assert abs(loss.item() - ref_loss.item()) <= 1e-5 * ref_loss.item()


def test_stable_at_extreme_logits_in_float32():
    """Logits of +-1e4 (far past exp's range): log-sum-exp and log-sigmoid stay exact."""
    q, k = inputs(17, 18, 3, torch.float32, True, 6)
    row, col = run_lse_forward(q, k, 1e4, None)
    ref_row, ref_col = lse_formulas(q, k, 1e4, None, torch.float64)
    mag = lse_mag(q, k, 1e4, None)
    check(row, ref_row, lse_formulas(q, k, 1e4, None, torch.float32)[0], mag)
    check(col, ref_col, lse_formulas(q, k, 1e4, None, torch.float32)[1], mag)
    loss = poison(dtype=torch.float32)
    tk.sigmoid_forward(q, k, 1e4, 0.0, loss)
    ref = sigmoid_formulas(q, k, 1e4, 0.0, 1.0, torch.float64)
    eager = sigmoid_formulas(q, k, 1e4, 0.0, 1.0, torch.float32)[0]
    check(loss, ref[0], eager, (1 + cond_s(q, k, 1e4)).sum().item())


def test_sigmoid_loss_keeps_its_tiny_terms():
    """Every pair confidently right (SigLIP late in training): each term is below float32's eps,
    so log(1 + exp(-|x|)) would round them all to 0; log1p keeps them to a few ulps each."""
    q, k = inputs(16, 16, 64, torch.float32, True, 10)
    k = F.normalize(k.double() + 8 * q.double(), dim=1).float()  # cos(q_i, k_i) near 1
    loss = poison(dtype=torch.float32)
    tk.sigmoid_forward(q, k, 100.0, -50.0, loss)
    ref = sigmoid_formulas(q, k, 100.0, -50.0, 1.0, torch.float64)[0].item()
    assert 0 < ref < 1e-6
    assert abs(loss.item() - ref) <= 1e-4 * ref, (loss.item(), ref)


def test_results_are_deterministic_and_scale_tensor_equals_float():
    q, k = inputs(30, 41, 45, torch.bfloat16, False, 8)
    scale_t = torch.tensor(7.0, device=DEVICE)
    first = run_lse_forward(q, k, 7.0, 2)
    again = run_lse_forward(q, k, scale_t, 2)  # read in-kernel: the same value, the same bits
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    row, col = stats_for(q, k, 7.0, 2, 8)
    first = run_lse_backward(q, k, 7.0, 2, row, col)
    again = run_lse_backward(q, k, scale_t, 2, row, col)
    assert_same_backward(again, first, 30, 41)  # the single pass: dq from atomics
    with deterministic_algorithms():
        first = run_lse_backward(q, k, 7.0, 2, row, col)
        again = run_lse_backward(q, k, scale_t, 2, row, col)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    losses = []
    for bias in (-3.0, torch.tensor(-3.0, device=DEVICE)):
        loss = poison(dtype=torch.float32)
        tk.sigmoid_forward(q, k, 7.0, bias, loss)
        losses.append(loss)
    assert torch.equal(*losses)


@pytest.mark.parametrize("n, m", [(0, 5), (4, 0), (0, 0)])
def test_empty_inputs(n, m):
    q, k = inputs(n, m, 6, torch.float32, False, 0)
    row, col = run_lse_forward(q, k, 2.0, 0)
    assert (row == -INF).all() and (col == -INF).all()  # logsumexp of nothing
    stats = stats_for(q, k, 2.0, None, 0)
    dq, dk, ds = run_lse_backward(q, k, 2.0, None, *stats)
    assert (dq == 0).all() and (dk == 0).all() and ds.item() == 0.0
    loss = poison(dtype=torch.float32)
    tk.sigmoid_forward(q, k, 2.0, 1.0, loss)
    assert loss.item() == 0.0
    outs = [poison(n, 6, dtype=torch.float32), poison(m, 6, dtype=torch.float32)]
    outs += [poison(dtype=torch.float32), poison(dtype=torch.float32)]
    tk.sigmoid_backward(q, k, 2.0, 1.0, torch.tensor(1.0, device=DEVICE), *outs)
    assert all((t == 0).all() for t in outs)


# --------------------------------------------------------------------------------------------
# bad input


def test_launchers_reject_bad_input():
    q = torch.zeros(4, 8, device=DEVICE)
    k = torch.zeros(5, 8, device=DEVICE)
    row, col = torch.zeros(4, device=DEVICE), torch.zeros(5, device=DEVICE)
    fwd = tk.lse_forward
    with pytest.raises(TypeError, match="q: expected dtype"):
        fwd(q.long(), k, 1.0, 0, False, row, col)
    with pytest.raises(TypeError, match="k: expected q's dtype"):
        fwd(q, k.double(), 1.0, 0, False, row, col)
    with pytest.raises(ValueError, match="k: expected D=8"):
        fwd(q, k[:, :4].contiguous(), 1.0, 0, False, row, col)
    with pytest.raises(ValueError, match="q: expected a contiguous"):
        fwd(torch.zeros(8, 4, device=DEVICE).T, k, 1.0, 0, False, row, col)
    with pytest.raises(ValueError, match="q: expected a 2-D"):
        fwd(q[None], k, 1.0, 0, False, row, col)
    with pytest.raises(ValueError, match="q: expected D >= 1"):
        fwd(q[:, :0], k[:, :0], 1.0, 0, False, row, col)
    with pytest.raises(ValueError, match="q: expected D < 2"):  # 32-bit in-tile offsets
        big = torch.empty(2, 2**24, device="meta")
        fwd(big, big, 1.0, 0, False, None, None)
    with pytest.raises(ValueError, match="k: expected fewer than 2"):
        fwd(q.to("meta"), torch.empty(2**30, 8, device="meta"), 1.0, 0, False, None, None)
    with pytest.raises(ValueError, match="k: expected q's device"):
        fwd(q, k.to("meta"), 1.0, 0, False, row, col)
    with pytest.raises(ValueError, match="row_lse: expected shape"):
        fwd(q, k, 1.0, 0, False, col, row)
    with pytest.raises(TypeError, match="col_lse: expected dtype torch.float32"):
        fwd(q, k, 1.0, 0, False, row, col.half())
    with pytest.raises(TypeError, match="row_lse: expected dtype torch.float64"):
        fwd(q.double(), k.double(), 1.0, 0, False, row, None)  # float64 statistics
    with pytest.raises(ValueError, match="scale: expected a 0-dim"):
        fwd(q, k, torch.ones(1, device=DEVICE), 0, False, row, col)
    with pytest.raises(TypeError, match="scale: expected a float"):
        fwd(q, k, "1.0", 0, False, row, col)
    with pytest.raises(TypeError, match="scale: expected a float32"):
        fwd(q, k, torch.tensor(1, device=DEVICE), 0, False, row, col)
    with pytest.raises(TypeError, match="exclude_offset"):
        fwd(q, k, 1.0, 0.5, True, row, col)
    with pytest.raises(TypeError, match="has_exclude"):
        fwd(q, k, 1.0, 0, 1, row, col)

    bwd = tk.lse_backward
    dq, dk, ds = torch.zeros_like(q), torch.zeros_like(k), torch.zeros((), device=DEVICE)
    rp = torch.zeros(4, dtype=torch.int64, device=DEVICE)
    cp = torch.zeros(5, dtype=torch.int64, device=DEVICE)
    with pytest.raises(ValueError, match="row_lse, row_w: give both"):
        bwd(q, k, 1.0, 0, False, row, None, None, None, None, None, dq, dk, ds)
    with pytest.raises(ValueError, match="col_w: expected shape"):
        bwd(q, k, 1.0, 0, False, None, None, None, col, row, None, dq, dk, ds)
    with pytest.raises(ValueError, match="dq: expected shape"):
        bwd(q, k, 1.0, 0, False, row, row, rp, col, col, cp, dk, dk, ds)
    with pytest.raises(TypeError, match="dk: expected dtype"):
        bwd(q, k, 1.0, 0, False, row, row, rp, col, col, cp, dq, dk.double(), ds)
    with pytest.raises(ValueError, match="dscale: expected shape"):
        bwd(q, k, 1.0, 0, False, row, row, rp, col, col, cp, dq, dk, ds[None])
    with pytest.raises(TypeError, match="row_pos: expected dtype torch.int64"):
        bwd(q, k, 1.0, 0, False, row, row, rp.int(), col, col, cp, dq, dk, ds)
    with pytest.raises(TypeError, match="col_pos: expected dtype torch.int64"):
        bwd(q, k, 1.0, 0, False, row, row, rp, col, col, cp.float(), dq, dk, ds)
    with pytest.raises(TypeError, match="row_pos: expected a tensor"):
        bwd(q, k, 1.0, 0, False, row, row, [0, 1, 2, 3], col, col, cp, dq, dk, ds)
    with pytest.raises(ValueError, match="row_pos: expected shape"):  # [M], not [N]
        bwd(q, k, 1.0, 0, False, row, row, cp, col, col, cp, dq, dk, ds)
    with pytest.raises(ValueError, match="col_pos: expected shape"):
        bwd(q, k, 1.0, 0, False, row, row, rp, col, col, cp[:, None], dq, dk, ds)
    with pytest.raises(ValueError, match="col_pos: expected device"):
        bwd(q, k, 1.0, 0, False, row, row, rp, col, col, cp.to("meta"), dq, dk, ds)
    with pytest.raises(ValueError, match="row_pos: expected a contiguous"):
        bwd(q, k, 1.0, 0, False, row, row, rp.repeat(2)[::2], col, col, cp, dq, dk, ds)

    loss = torch.zeros((), device=DEVICE)
    with pytest.raises(TypeError, match="bias: expected a float"):
        tk.sigmoid_forward(q, k, 1.0, None, loss)
    with pytest.raises(ValueError, match="loss: expected shape"):
        tk.sigmoid_forward(q, k, 1.0, 0.0, row)
    with pytest.raises(TypeError, match="grad: expected a 0-dim tensor"):
        tk.sigmoid_backward(q, k, 1.0, 0.0, 1.0, dq, dk, ds, ds)
    with pytest.raises(ValueError, match="grad: expected a 0-dim tensor"):
        tk.sigmoid_backward(q, k, 1.0, 0.0, ds[None], dq, dk, ds, ds)
    with pytest.raises(ValueError, match="dbias: expected shape"):
        tk.sigmoid_backward(q, k, 1.0, 0.0, ds, dq, dk, ds, ds[None])


# --------------------------------------------------------------------------------------------
# the compiled path: the interpreter accepts code that the compiler rejects, and it never runs
# the configurations that autotuning would, so compile every kernel for an sm_90 target with
# the largest tiles of the sm_90 sets, in every dtype and constexpr switch (and the three big
# kernels for sm_80: the forward, the two backward kernels). This needs no GPU: triton's
# NVIDIA backend ships ptxas. The script runs in three parts, each in a subprocess of its own
# (the helper gives one five minutes; on a loaded machine the single-pass backward in float32,
# with its FMA dots, takes about a minute and a half per variant).

_COMPILE_SCRIPT = textwrap.dedent(
    """
    import warnings
    warnings.filterwarnings("ignore")
    import torch
    import triton
    import triton.language as tl
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from pyssl.kernels.triton import contrastive as C

    assert not C.INTERPRET
    FLOATS = {"scale_val", "bias_val"}
    ALIGNED = {"D", "NA", "NB", "M", "L"}  # launches specialise these when divisible by 16

    def compile_(kernel, ptrs, consts, num_warps=8, num_stages=3, aligned=True, cap=90):
        sig, attrs = {}, {}
        for i, name in enumerate(kernel.arg_names):
            if name in consts:
                sig[name] = "constexpr"
            elif name in ptrs:
                sig[name] = "*" + ptrs[name]
            else:
                sig[name] = "fp32" if name in FLOATS else "i32"
            if aligned and sig[name] != "constexpr" and (name in ptrs or name in ALIGNED):
                attrs[(i,)] = [["tt.divisibility", 16]]
        src = ASTSource(fn=kernel, signature=sig, constexprs=consts, attrs=attrs)
        opts = dict(num_warps=num_warps, num_stages=num_stages)
        assert triton.compile(src, target=GPUTarget("cuda", cap, 32), options=opts).asm["cubin"]

    def fused_ptrs(dt, a):
        return dict(a_ptr=dt, b_ptr=dt, scale_ptr=a, bias_ptr="fp32", grad_ptr="fp32",
                    a_lse_ptr=a, a_w_ptr=a, a_pos_ptr="i64", b_lse_ptr=a, b_w_ptr=a,
                    b_pos_ptr="i64", da_ptr=dt, da_acc_ptr=a, db_acc_ptr=a, part_ptr=a)

    fwd = max(C._CONFIGS["sm90"]["fwd"], key=lambda c: c[0] * c[1])
    bwd = max(C._CONFIGS["sm90"]["bwd"], key=lambda c: c[0] * c[1])
    fused = max(C._CONFIGS["sm90"]["bwd_fused"], key=lambda c: c[0] * c[1])
    DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32,
              "fp64": torch.float64}
    for dt, tdt in DTYPES.items():
        if PART != "kernels":
            break
        acc, a = (tl.float64, "fp64") if dt == "fp64" else (tl.float32, "fp32")
        bd, bdo = C._blocks(1000, tdt)  # the largest chunks
        big = dt in ("bf16", "fp16")  # float32/float64: one config each, they compile slowly
        aligned = dt != "fp16"  # fp16: an odd D, unaligned rows
        for flag in ((True, False) if big else (True,)):
            bm, bn, w, s = fwd
            C_ = dict(ACC=acc, BLOCK_D=bd, BLOCK_M=bm, BLOCK_N=bn)
            compile_(C._lse_fwd_kernel,
                     dict(a_ptr=dt, b_ptr=dt, scale_ptr="fp32", row_lse_ptr=a, col_part_ptr=a,
                          count_ptr="i32"),
                     dict(HAS_EXCLUDE=flag, SCALE_PTR=flag, WITH_COLS=flag, **C_), w, s, aligned)
            compile_(C._sigmoid_fwd_kernel,
                     dict(a_ptr=dt, b_ptr=dt, scale_ptr="fp32", bias_ptr=dt, part_ptr=a),
                     dict(SCALE_PTR=flag, BIAS_PTR=not flag, **C_), w, s, aligned)
            bm, bn, w, s = bwd
            for sigmoid in (True, False):
                compile_(C._grad_kernel,
                         dict(a_ptr=dt, b_ptr=dt, scale_ptr=a, bias_ptr="fp32", grad_ptr="bf16",
                              a_lse_ptr=a, a_w_ptr=a, a_pos_ptr="i64", b_lse_ptr=a, b_w_ptr=a,
                              b_pos_ptr="i64", da_ptr=dt, part_ptr=a),
                         dict(SIGMOID=sigmoid, HAS_EXCLUDE=flag, HAS_A=flag, HAS_B=True,
                              HAS_A_POS=flag and not sigmoid, HAS_B_POS=not sigmoid,
                              SCALE_PTR=flag, BIAS_PTR=flag, WRITE_D=flag or sigmoid,
                              WRITE_PART=not flag or sigmoid, ACC=acc, BLOCK_D=bd,
                              BLOCK_DO=bdo, BLOCK_M=bm, BLOCK_N=bn), w, s, aligned)
        compile_(C._lse_merge_kernel, dict(part_ptr=a, count_ptr="i32", out_ptr=a),
                 dict(BLOCK=128), 4, 1)
        compile_(C._sum_kernel, dict(part_ptr=a, out_ptr=a), dict(BLOCK=1024), 4, 1)
    # the single-pass backward: in each dtype, its accumulator in registers and D walked in
    # chunks, with and without the atomic side (fused16: the 16-bit dtypes, fused32: the others)
    for dt in {"fused16": ("bf16", "fp16"), "fused32": ("fp32", "fp64")}.get(PART, ()):
        acc, a = (tl.float64, "fp64") if dt == "fp64" else (tl.float32, "fp32")
        bd, bdo = C._blocks(1000, DTYPES[dt])
        bm, bn, w, s = fused
        big = PART == "fused16"
        for flag in ((True, False) if big else (True,)):
            for sigmoid in (True, False):
                split = flag != sigmoid
                compile_(C._grad_fused_kernel, fused_ptrs(dt, a),
                         dict(SIGMOID=sigmoid, HAS_EXCLUDE=flag, HAS_A=flag, HAS_B=True,
                              HAS_A_POS=flag and not sigmoid, HAS_B_POS=not sigmoid,
                              SCALE_PTR=flag, BIAS_PTR=flag, SPLIT_D=split,
                              WRITE_DB=flag or not split, WRITE_PART=not flag or sigmoid,
                              ACC=acc, BLOCK_D=bd, BLOCK_DO=bdo, BLOCK_M=bm, BLOCK_N=bn),
                         w, s, dt != "fp16")
    # and the Ampere set's largest tiles, for the three big kernels in bf16
    bd, bdo = C._blocks(1000, torch.bfloat16)
    bm, bn, w, s = max(C._CONFIGS["sm80"]["fwd"], key=lambda c: c[0] * c[1])
    if PART == "kernels":
        compile_(C._lse_fwd_kernel,
                 dict(a_ptr="bf16", b_ptr="bf16", scale_ptr="fp32", row_lse_ptr="fp32",
                      col_part_ptr="fp32", count_ptr="i32"),
                 dict(HAS_EXCLUDE=True, SCALE_PTR=True, WITH_COLS=True, ACC=tl.float32,
                      BLOCK_D=bd, BLOCK_M=bm, BLOCK_N=bn), w, s, cap=80)
    bm, bn, w, s = max(C._CONFIGS["sm80"]["bwd"], key=lambda c: c[0] * c[1])
    if PART == "kernels":
        compile_(C._grad_kernel,
                 dict(a_ptr="bf16", b_ptr="bf16", scale_ptr="fp32", bias_ptr="fp32",
                      grad_ptr="fp32", a_lse_ptr="fp32", a_w_ptr="fp32", a_pos_ptr="i64",
                      b_lse_ptr="fp32", b_w_ptr="fp32", b_pos_ptr="i64", da_ptr="bf16",
                      part_ptr="fp32"),
                 dict(SIGMOID=False, HAS_EXCLUDE=True, HAS_A=True, HAS_B=True, HAS_A_POS=True,
                      HAS_B_POS=True, SCALE_PTR=True, BIAS_PTR=False, WRITE_D=True,
                      WRITE_PART=True, ACC=tl.float32, BLOCK_D=bd, BLOCK_DO=bdo, BLOCK_M=bm,
                      BLOCK_N=bn), w, s, cap=80)
    bm, bn, w, s = max(C._CONFIGS["sm80"]["bwd_fused"], key=lambda c: c[0] * c[1])
    for split, write_db in ((False, True), (True, True), (True, False)):
        if PART != "fused16":
            break
        compile_(C._grad_fused_kernel, fused_ptrs("bf16", "fp32"),
                 dict(SIGMOID=False, HAS_EXCLUDE=True, HAS_A=True, HAS_B=True, HAS_A_POS=True,
                      HAS_B_POS=True, SCALE_PTR=True, BIAS_PTR=False, SPLIT_D=split,
                      WRITE_DB=write_db, WRITE_PART=True, ACC=tl.float32, BLOCK_D=bd,
                      BLOCK_DO=bdo, BLOCK_M=bm, BLOCK_N=bn), w, s, cap=80)
    print("compiled")
    """
)


@pytest.mark.parametrize("part", ["kernels", "fused16", "fused32"])
def test_kernels_compile_for_sm90_and_sm80(part):
    compile_triton_kernels(f"PART = {part!r}\n" + _COMPILE_SCRIPT)


def test_autotune_configs_are_valid():
    """Every configuration keeps the invariants the launchers rely on: tiles of at least 16
    (tl.dot's minimum) in powers of two, and one config under the interpreter."""
    assert all(len(rows) == 1 for rows in tk._CONFIGS["interpret"].values())
    for arch, phases in tk._CONFIGS.items():
        assert set(phases) == {"fwd", "bwd", "bwd_fused"}, arch
        for phase, rows in phases.items():
            for bm, bn, warps, stages in rows:
                for b in (bm, bn):
                    assert b >= 16 and b & (b - 1) == 0, (arch, phase, bm, bn)
                assert warps in (1, 2, 4, 8) and stages >= 1
    for table in (tk._LSE_FWD, tk._SIGMOID_FWD, tk._GRAD, tk._GRAD_FUSED):
        assert set(table) == set(tk._CONFIGS)
