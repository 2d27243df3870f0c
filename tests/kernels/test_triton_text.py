"""The Triton text kernels: token masking against the C++ kernel (the same counter-based draws:
identical masks), the chunked LM loss against float64 formulas from the full logits.

With no GPU the launchers run under ``TRITON_INTERPRET=1`` on CPU tensors with 16 x 16 tiles
and 16-wide chunks of H, so the shapes below take several row, vocabulary and H iterations.
Outputs are poisoned (NaN, or -1 for ids) before a launch. Low-precision tolerances follow
flash-attention's rule against eager ``cross_entropy`` in the same dtype.
"""

from __future__ import annotations

import textwrap

import pytest
import torch
import torch.nn.functional as F
from helpers import compile_triton_kernels, low_precision_tol, poisoned, triton_test_device

DEVICE = triton_test_device("text")

from pyssl.kernels.triton import text as tt  # noqa: E402
from pyssl.ops._backend import view  # noqa: E402

_C = pytest.importorskip("pyssl._C")


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("shape", [(1, 1), (3, 37), (4, 300)])
@pytest.mark.parametrize("extras", ["none", "special", "words"])
def test_mask_tokens_identical_to_cpu(shape, extras):
    g = gen(shape[1])
    ids = torch.randint(0, 5000, shape, generator=g)
    sp = torch.rand(shape, generator=g) < 0.2 if extras != "none" else None
    wid = None
    if extras == "words":
        wid = torch.sort(torch.randint(-1, max(shape[1] // 3, 1), shape, generator=g), 1).values
    for seed in (0, 2**40 + 12345, 2**63 - 1):
        want_m, want_l = poisoned(*shape, dtype=torch.int64), poisoned(*shape, dtype=torch.int64)
        _C.text_cpu.mask_tokens(
            view(ids), view(sp), view(wid), seed, 5000, 3, 0.35, 0.8, 0.1, view(want_m),
            view(want_l),
        )  # fmt: skip
        got_m = poisoned(*shape, dtype=torch.int64).to(DEVICE)
        got_l = poisoned(*shape, dtype=torch.int64).to(DEVICE)
        dev = [t.to(DEVICE) if t is not None else None for t in (ids, sp, wid)]
        tt.mask_tokens(*dev, seed, 5000, 3, 0.35, 0.8, 0.1, got_m, got_l)
        assert torch.equal(got_m.cpu(), want_m) and torch.equal(got_l.cpu(), want_l)


def _inputs(n, h, v, dtype, seed, bias):
    g = gen(seed)
    hidden = torch.randn(n, h, generator=g).to(dtype).to(DEVICE)
    weight = (torch.randn(v, h, generator=g) / h**0.5).to(dtype).to(DEVICE)
    b = torch.randn(v, generator=g).to(dtype).to(DEVICE) if bias else None
    labels = torch.randint(0, v, (n,), generator=g)
    labels[torch.rand(n, generator=g) < 0.4] = -100
    return hidden, weight, b, labels.to(DEVICE)


def _exact(hidden, weight, b, labels, grad):
    ps = [
        t.detach().double().requires_grad_()
        for t in (hidden, weight) + ((b,) if b is not None else ())
    ]
    logits = F.linear(ps[0], ps[1], ps[2] if b is not None else None)
    loss = F.cross_entropy(logits, labels, reduction="none")
    lse = torch.where(labels != -100, torch.logsumexp(logits, 1), 0)
    grads = torch.autograd.grad((loss * grad.double()).sum(), ps)
    return loss, lse, grads


def _run(hidden, weight, b, labels, grad, stat):
    n = hidden.shape[0]
    loss, lse = poisoned(n, dtype=stat).to(DEVICE), poisoned(n, dtype=stat).to(DEVICE)
    tt.lm_loss_forward(hidden, weight, b, labels, -100, loss, lse)
    dh = poisoned(*hidden.shape, dtype=hidden.dtype).to(DEVICE)
    dw = poisoned(*weight.shape, dtype=weight.dtype).to(DEVICE)
    db = poisoned(weight.shape[0], dtype=hidden.dtype).to(DEVICE) if b is not None else None
    tt.lm_loss_backward(hidden, weight, b, labels, -100, lse, grad, dh, dw, db)
    return loss, lse, [dh, dw] + ([db] if b is not None else [])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(1, 3, 5), (37, 40, 70)])
def test_lm_loss_matches_fp64(dtype, bias, shape):
    n, h, v = shape
    hidden, weight, b, labels = _inputs(n, h, v, dtype, n + v, bias)
    labels[0] = 1
    stat = torch.float64 if dtype == torch.float64 else torch.float32
    grad = torch.rand(n, generator=gen(1)).to(stat).to(DEVICE)
    loss, lse, grads = _run(hidden, weight, b, labels, grad, stat)
    e_loss, e_lse, e_grads = _exact(
        hidden.cpu(), weight.cpu(), b.cpu() if bias else None, labels.cpu(), grad.cpu()
    )
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(loss.cpu().double(), e_loss, **tol)
    torch.testing.assert_close(lse.cpu().double(), e_lse, **tol)
    for got, want in zip(grads, e_grads):
        torch.testing.assert_close(got.cpu().double(), want, **tol)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_lm_loss_low_precision(dtype):
    hidden, weight, b, labels = _inputs(33, 24, 50, dtype, 3, True)
    grad = torch.rand(33, generator=gen(2)).to(DEVICE)
    loss, _, grads = _run(hidden, weight, b, labels, grad, torch.float32)
    e_loss, _, e_grads = _exact(hidden.cpu(), weight.cpu(), b.cpu(), labels.cpu(), grad.cpu())
    # eager in the same dtype
    ps = [t.detach().cpu().requires_grad_() for t in (hidden, weight, b)]
    eager = F.cross_entropy(F.linear(*ps), labels.cpu(), reduction="none")
    eager_g = torch.autograd.grad((eager * grad.cpu().to(dtype)).sum(), ps)
    low_precision_tol(loss.cpu(), eager, e_loss)
    for got, eg, want in zip(grads, eager_g, e_grads):
        # the interpreter rounds float32 -> bfloat16 by truncation: one more ulp allowed there
        slack = want.abs().max().item() * (2**-8 if dtype == torch.bfloat16 else 0)
        err = (got.cpu().double() - want).abs().max().item()
        ref_err = (eg.double() - want).abs().max().item()
        assert err <= 2 * ref_err + slack + 1e-6, (err, ref_err)


def test_lm_loss_no_labels_and_partial_outputs():
    hidden, weight, b, labels = _inputs(9, 16, 20, torch.float32, 4, True)
    labels[:] = -100
    grad = torch.ones(9, device=DEVICE)
    loss, lse, (dh, dw, db) = _run(hidden, weight, b, labels, grad, torch.float32)
    for t in (loss, lse, dh, dw, db):
        assert (t == 0).all()
    hidden, weight, b, labels = _inputs(9, 16, 20, torch.float32, 5, True)
    loss, lse = torch.empty(9, device=DEVICE), torch.empty(9, device=DEVICE)
    tt.lm_loss_forward(hidden, weight, b, labels, -100, loss, lse)
    db = poisoned(20).to(DEVICE)
    tt.lm_loss_backward(hidden, weight, b, labels, -100, lse, grad, None, None, db)
    _, _, want = _exact(hidden.cpu(), weight.cpu(), b.cpu(), labels.cpu(), grad.cpu())
    torch.testing.assert_close(db.cpu().double(), want[2], rtol=1e-5, atol=1e-5)


def test_launchers_reject_bad_arguments():
    hidden, weight, b, labels = _inputs(4, 8, 10, torch.float32, 6, True)
    loss, lse = torch.empty(4, device=DEVICE), torch.empty(4, device=DEVICE)
    with pytest.raises(ValueError, match="weight"):
        tt.lm_loss_forward(hidden, weight[:, :5].contiguous(), None, labels, -100, loss, lse)
    with pytest.raises(ValueError, match="labels"):
        tt.lm_loss_forward(hidden, weight, b, labels[:3], -100, loss, lse)
    ids = torch.zeros(2, 3, dtype=torch.int64, device=DEVICE)
    with pytest.raises(ValueError, match="masked"):
        tt.mask_tokens(ids, None, None, 0, 10, 1, 0.1, 0.8, 0.1, ids[:1], ids)


_COMPILE_SCRIPT = textwrap.dedent(
    """
    import warnings
    warnings.filterwarnings("ignore")
    import torch
    import triton
    import triton.language as tl
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from pyssl.kernels.triton import text as T

    assert not T.INTERPRET
    FLOATS = {"prob", "mr", "rr"}
    INTS64 = {"s0", "s1", "vocab", "mask_id"}

    def compile_(kernel, ptrs, consts, num_warps=4):
        sig = {}
        for name in kernel.arg_names:
            if name in consts:
                sig[name] = "constexpr"
            elif name in ptrs:
                sig[name] = "*" + ptrs[name]
            else:
                sig[name] = "fp32" if name in FLOATS else "i64" if name in INTS64 else "i32"
        src = ASTSource(fn=kernel, signature=sig, constexprs=consts)
        opts = dict(num_warps=num_warps, num_stages=2)
        assert triton.compile(src, target=GPUTarget("cuda", 90, 32), options=opts).asm["cubin"]

    for flag in (True, False):
        compile_(T._mask_tokens_kernel,
                 dict(ids_ptr="i64", special_ptr="u8", word_ptr="i64", masked_ptr="i64",
                      labels_ptr="i64"),
                 dict(HAS_SPECIAL=flag, HAS_WORDS=flag, BLOCK=1024))
    for dt, tdt in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        bm, bn, bd, bdo = T._blocks(tdt, 768)
        acc = tl.float32
        blocks = dict(ACC=acc, BLOCK_M=bm, BLOCK_N=bn, BLOCK_D=bd)
        compile_(T._lm_fwd_kernel,
                 dict(h_ptr=dt, w_ptr=dt, b_ptr=dt, y_ptr="i64", m_ptr="fp32", l_ptr="fp32",
                      t_ptr="fp32"),
                 dict(HAS_BIAS=True, **blocks))
        ptrs = dict(h_ptr=dt, w_ptr=dt, b_ptr=dt, y_ptr="i64", lse_ptr="fp32", g_ptr="fp32",
                    dh_ptr=dt, dw_ptr=dt, db_ptr="fp32")
        compile_(T._lm_bwd_dh_kernel, ptrs, dict(HAS_BIAS=True, BLOCK_DO=bdo, **blocks), 8)
        compile_(T._lm_bwd_dw_kernel, ptrs,
                 dict(HAS_BIAS=True, WANT_DW=True, WANT_DB=True, BLOCK_DO=bdo, **blocks), 8)
    print("compiled")
    """
)


def test_kernels_compile_for_nvidia():
    """Every kernel compiles for sm_90 (bfloat16 and float32, the largest tiles) without the
    interpreter: what CI can check of them without a GPU."""
    compile_triton_kernels(_COMPILE_SCRIPT)
