"""Contrastive losses against the lightly/open_clip-style references: values, gradients,
registration, memory, bad input."""

from __future__ import annotations

import pytest
import torch
from helpers import low_precision_tol

from pyssl import ops
from pyssl.losses import (
    ClipLoss,
    FeatureQueue,
    InfoNCELoss,
    MoCoLoss,
    NTXentLoss,
    SigLipLoss,
)
from pyssl.ops import _backend
from pyssl.ops import contrastive as C
from pyssl.reference import contrastive as R

LOW = [torch.bfloat16, torch.float16]


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def feats(n: int, d: int, seed: int, dtype=torch.float64, normalize=False) -> torch.Tensor:
    """Unit-norm rows, or unnormalised rows of norm about 2 (logits up to ~4/temperature: a
    softmax that is nearly one-hot at temperature 0.05, short of pure saturation; in fp32 at
    |logits| ~ 1000 the recomputed backward is 2-4x less precise than eager, see
    bench/NOTES.md)."""
    x = torch.randn(n, d, generator=gen(seed), dtype=torch.float64)
    x = torch.nn.functional.normalize(x, dim=1) if normalize else x * (2 / d**0.5)
    return x.to(dtype).requires_grad_(True)


def scalar(v: float, dtype=torch.float64) -> torch.Tensor:
    return torch.tensor(v, dtype=dtype, requires_grad=True)


def loss_cases(n, m, d, seed, dtype, temp):
    # normalize=True only where the inputs are float32/float64: normalising bf16/fp16 rows
    # rounds the unit vectors the loss then sees (2^-8 relative), which swamps the kernel's error
    # against float64 and makes the comparison with eager a coin toss.
    norm = dtype in (torch.float32, torch.float64)
    """(name, pyssl loss fn(backend, *inputs), reference fn(*inputs), inputs) for every loss."""
    q, k = feats(n, d, seed, dtype), feats(m, d, seed + 1, dtype)
    z2 = feats(n, d, seed + 5, dtype)
    a, b = feats(n, d, seed + 2, dtype, True), feats(n, d, seed + 3, dtype, True)
    queue = feats(m, d, seed + 4, dtype, True).detach()
    ls, lb = scalar(1 / temp), scalar(-2.0)
    labels = torch.randint(0, m, (n,), generator=gen(seed))
    return [
        (
            "info_nce",
            lambda be, x, y: C.info_nce(x, y, temperature=temp, backend=be),
            lambda x, y: R.info_nce(x, y, temperature=temp),
            (q, k),
        ),
        (
            "info_nce_labels_scale",
            lambda be, x, y, s: C.info_nce(
                x, y, logit_scale=s, labels=labels, normalize=norm, reduction="sum", backend=be
            ),
            lambda x, y, s: R.info_nce(
                x, y, logit_scale=s, labels=labels, normalize=norm, reduction="sum"
            ),
            (q, k, ls),
        ),
        (
            "info_nce_none",
            lambda be, x, y: C.info_nce(
                x, y, temperature=temp, labels=labels, reduction="none", backend=be
            ),
            lambda x, y: R.info_nce(x, y, temperature=temp, labels=labels, reduction="none"),
            (q, k),
        ),
        (
            "nt_xent",
            lambda be, x, y: C.nt_xent(x, y, temperature=temp, backend=be),
            lambda x, y: R.nt_xent(x, y, temperature=temp),
            (q, z2),
        ),
        ("clip", lambda be, x, y, s: C.clip_loss(x, y, s, backend=be), R.clip_loss, (a, b, ls)),
        (
            "siglip",
            lambda be, x, y, s, t: C.siglip_loss(x, y, s, t, backend=be),
            R.siglip_loss,
            (a, b, ls, lb),
        ),
        (
            "moco",
            lambda be, x, y: C.moco_loss(x, y, queue.to(x.dtype), temperature=temp, backend=be),
            lambda x, y: R.moco_loss(x, y, queue.to(x.dtype), temperature=temp),
            (a, b),
        ),
    ]


def compare(got, want, inputs, rtol, atol, name):
    torch.testing.assert_close(got.double(), want.double(), rtol=rtol, atol=atol, msg=name)
    up = torch.rand(got.shape, generator=gen(99), dtype=torch.float64)
    g1 = torch.autograd.grad((got.double() * up).sum(), inputs)
    g2 = torch.autograd.grad((want.double() * up).sum(), inputs)
    for x, y, t in zip(g1, g2, inputs):
        assert x.dtype == t.dtype, name
        torch.testing.assert_close(x.double(), y.double(), rtol=rtol, atol=atol, msg=name)


@pytest.mark.parametrize("backend", ["cpu", "reference"])
@pytest.mark.parametrize("shape", [(7, 9, 33), (1, 1, 1), (16, 16, 128), (5, 40, 3)])
@pytest.mark.parametrize("temp", [0.05, 0.5, 1.0])
@pytest.mark.parametrize("seed", [0, 1])
def test_losses_match_reference_fp64(backend, shape, temp, seed):
    n, m, d = shape
    for name, fn, ref, inputs in loss_cases(n, m, d, seed, torch.float64, temp):
        compare(fn(backend, *inputs), ref(*inputs), inputs, 1e-11, 1e-12, name)


@pytest.mark.parametrize("dtype", [torch.float32, *LOW])
@pytest.mark.parametrize("temp", [0.05, 0.5])
@pytest.mark.parametrize("shape", [(32, 48, 64), (7, 9, 33)])
def test_losses_fp32_and_low_precision_follow_the_precision(dtype, temp, shape):
    # Error against float64 on the same rounded inputs: at most ~2x the eager reference's.
    for name, fn, ref, inputs in loss_cases(*shape, 4, dtype, temp):
        exact_in = [t.detach().double().requires_grad_(True) for t in inputs]
        got, eager, exact = fn(None, *inputs), ref(*inputs), ref(*exact_in)
        assert torch.isfinite(got).all(), name
        low_precision_tol(got, eager, exact)
        for g, e, x, t in zip(
            torch.autograd.grad(got.sum(), inputs),
            torch.autograd.grad(eager.sum(), inputs),
            torch.autograd.grad(exact.sum(), exact_in),
            inputs,
        ):
            assert g.dtype == t.dtype, name
            low_precision_tol(g, e, x)


def test_stable_at_temperature_0_01_in_bf16():
    g = gen(5)
    z1 = torch.nn.functional.normalize(torch.randn(64, 32, generator=g), dim=1)
    z2 = (z1 + 0.01 * torch.randn(64, 32, generator=g)).bfloat16().requires_grad_(True)
    z1 = z1.bfloat16().requires_grad_(True)
    loss = C.nt_xent(z1, z2, temperature=0.01)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z1.grad).all() and torch.isfinite(z2.grad).all()
    exact = R.nt_xent(z1.detach().double(), z2.detach().double(), temperature=0.01)
    assert abs(loss.item() - exact.item()) < 0.05 * max(1.0, exact.item())


def test_gradcheck_fp64_every_loss():
    for name, fn, _, inputs in loss_cases(4, 6, 5, 7, torch.float64, 0.3):
        assert torch.autograd.gradcheck(lambda *a, f=fn: f(None, *a), inputs), name


def test_no_quadratic_buffer_in_autograd_graph():
    # Everything the graph saves is O((N + M) * D): no N x M tensor is kept for the backward.
    n, d = 512, 16
    z1, z2 = feats(n, d, 0, torch.float32), feats(n, d, 1, torch.float32)
    saved = []

    def pack(t):
        saved.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = C.nt_xent(z1, z2)
    assert max(saved) <= 2 * n * d, max(saved)
    loss.backward()


def test_opcheck_contrastive_ops():
    q, k = feats(5, 7, 0, torch.float32), feats(6, 7, 1, torch.float32)
    s = torch.tensor(2.0, requires_grad=True)
    b = torch.tensor(-1.0, requires_grad=True)
    m = torch.ops.pyssl
    for be in ("cpu", "reference"):
        pos = torch.tensor([1, 0, 3, 2, 4])
        torch.library.opcheck(m.contrastive_ce, (q, k, s, 0, True, None, None, True, True, be))
        torch.library.opcheck(m.contrastive_ce, (q, k, s, 0, False, pos, None, True, False, be))
        torch.library.opcheck(m.contrastive_ce, (q, k[:5], s, 0, False, pos, pos, True, True, be))
        torch.library.opcheck(m.contrastive_sigmoid, (q, k[:5], s, b, be))


@pytest.mark.parametrize("backend", ["cpu", "reference", "triton"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_grouped_nt_xent_is_the_mean_of_per_group_calls(backend, dtype):
    if backend == "triton" and _backend.unavailable("triton", torch.device("cpu"), "contrastive"):
        pytest.skip("Triton launchers take CPU tensors only under TRITON_INTERPRET=1")
    g = gen(11)
    z1 = (torch.randn(4, 6, 8, generator=g, dtype=torch.float64) / 2).to(dtype).requires_grad_()
    z2 = (torch.randn(4, 6, 8, generator=g, dtype=torch.float64) / 2).to(dtype).requires_grad_()
    for normalize in (True, False):
        got = ops.nt_xent(z1, z2, temperature=0.3, normalize=normalize, backend=backend)
        per = [
            ops.nt_xent(z1[i], z2[i], temperature=0.3, normalize=normalize, backend=backend)
            for i in range(4)
        ]
        want = torch.stack(per).mean()
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
        for a, b in zip(torch.autograd.grad(got, (z1, z2)), torch.autograd.grad(want, (z1, z2))):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_grouped_contrastive_ce_gradcheck_opcheck_and_errors():
    q, k = feats(18, 5, 0).view(3, 6, 5), feats(21, 5, 1).view(3, 7, 5)
    q, k = q.detach().requires_grad_(), k.detach().requires_grad_()
    s = scalar(1.5)
    pos = torch.tensor([2, 0, 4, 1, 3, 4])  # never an excluded pair (j = i + 1)
    col_pos = torch.tensor([1, 2, 0, 4, 5, 3, 0])  # nor here (i = j - 1)
    for be in ("cpu", "reference"):

        def rows_and_cols(q, k, s, be=be):
            r, c = C.softmax_cross_entropy(
                q, k, s, cols=True, row_pos=pos, col_pos=col_pos, exclude_offset=1, backend=be
            )
            return r.sum() + 0.5 * c.sum()

        assert torch.autograd.gradcheck(rows_and_cols, (q, k, s))
        # each group equals the same problem on its own
        got = C.softmax_cross_entropy(q, k, s, row_pos=pos, exclude_offset=1, backend=be)[0]
        for i in range(3):
            one = C.softmax_cross_entropy(q[i], k[i], s, row_pos=pos, exclude_offset=1, backend=be)
            torch.testing.assert_close(got[i], one[0])
        args = (q.float(), k.float(), s.float(), 0, True, pos, col_pos, True, True, be)
        torch.library.opcheck(torch.ops.pyssl.contrastive_ce, args)
    # a positive that is the excluded pair: rejected (row i + 1, column j - 1 here)
    with pytest.raises(ValueError, match="row_pos: a positive is the pair"):
        C.softmax_cross_entropy(q, k, s, row_pos=torch.tensor([1, 0, 4, 1, 3, 4]), exclude_offset=1)
    with pytest.raises(ValueError, match="col_pos: a positive is the pair"):
        C.softmax_cross_entropy(
            q, k, s, cols=True, col_pos=torch.tensor([1, 0, 0, 0, 0, 0, 0]), exclude_offset=1
        )
    z = torch.randn(2, 4, 3)
    with pytest.raises(ValueError, match="z2: shape"):
        ops.nt_xent(z, torch.randn(2, 5, 3))
    with pytest.raises(ValueError, match="z2: grouped"):
        ops.nt_xent(z, torch.randn(8, 3))
    with pytest.raises(ValueError, match="z1: no groups"):
        ops.nt_xent(torch.randn(0, 4, 3), torch.randn(0, 4, 3))
    with pytest.raises(ValueError, match="gather"):
        ops.nt_xent(z, z, gather=True)


def test_compile_fullgraph_simclr_step():
    torch._dynamo.reset()
    proj = torch.nn.Sequential(torch.nn.Linear(12, 16), torch.nn.ReLU(), torch.nn.Linear(16, 8))
    x1, x2 = torch.randn(10, 12, generator=gen(1)), torch.randn(10, 12, generator=gen(2))

    def step(a, b):
        return ops.nt_xent(proj(a), proj(b), temperature=0.2)

    eager = step(x1, x2)
    eager.backward()
    want = [p.grad.clone() for p in proj.parameters()]
    proj.zero_grad()
    got = torch.compile(step, fullgraph=True)(x1, x2)
    got.backward()
    torch.testing.assert_close(got, eager)
    for p, w in zip(proj.parameters(), want):
        torch.testing.assert_close(p.grad, w)


def test_feature_queue_is_a_fifo_of_detached_keys():
    qu = FeatureQueue(5, 3)
    assert qu.features().shape == (0, 3)
    k1 = torch.arange(9.0).reshape(3, 3).requires_grad_(True)
    qu.push(k1)
    qu.push(torch.full((4, 3), -1.0))
    f = qu.features()
    assert f.shape == (5, 3) and not f.requires_grad
    # the newest 5 rows survive, oldest first dropped
    assert torch.equal(f, torch.cat([k1.detach()[2:], torch.full((4, 3), -1.0)]).roll(0))
    with pytest.raises(ValueError, match="keys: expected width 3"):
        qu.push(torch.zeros(2, 4))


def test_bad_input_errors_name_the_argument():
    q, k = torch.randn(4, 8), torch.randn(6, 8)
    s = torch.tensor(2.0)
    cases = [
        (ValueError, "key: feature dimension 7", lambda: ops.info_nce(q, torch.randn(6, 7))),
        (ValueError, "needs M >= N", lambda: ops.info_nce(q, k[:3])),
        (
            ValueError,
            r"labels: values must lie in \[0, 6\)",
            lambda: ops.info_nce(q, k, labels=torch.tensor([0, 1, 2, 6])),
        ),
        (TypeError, "labels: expected an int64", lambda: ops.info_nce(q, k, labels=torch.zeros(4))),
        (ValueError, "temperature", lambda: ops.info_nce(q, k, temperature=0.0)),
        (ValueError, "temperature", lambda: ops.nt_xent(q, q, temperature=-1.0)),
        (ValueError, "temperature", lambda: ops.nt_xent(q, q, temperature=float("inf"))),
        (
            TypeError,
            "temperature: expected a positive number",
            lambda: ops.nt_xent(q, q, temperature="0.5"),
        ),
        (TypeError, "temperature", lambda: ops.info_nce(q, k, temperature=None)),
        (TypeError, "temperature", lambda: ops.moco_loss(q, q, k, temperature=True)),
        (TypeError, "temperature", lambda: ops.moco_loss(q, q, None, temperature="a")),
        (
            TypeError,
            "temperature: .*pass a tensor as logit_scale",
            lambda: ops.info_nce(q, k, temperature=torch.tensor(0.1)),
        ),
        (TypeError, "temperature", lambda: NTXentLoss(temperature="0.5")),
        (TypeError, "queue: expected a", lambda: ops.moco_loss(q, q, [[0.0] * 8])),
        (ValueError, "queue: expected a", lambda: ops.moco_loss(q, q, torch.randn(8))),
        (
            ValueError,
            "logit_scale: expected a positive",
            lambda: ops.clip_loss(q, q, torch.tensor(-1.0)),
        ),
        (ValueError, "logit_scale: expected a scalar", lambda: ops.clip_loss(q, q, torch.ones(2))),
        (
            TypeError,
            "logit_scale: expected a scalar torch.Tensor",
            lambda: ops.clip_loss(q, q, 2.0),
        ),
        (
            ValueError,
            "logit_scale: expected a scalar",
            lambda: ops.info_nce(q, k, logit_scale=torch.ones(3)),
        ),
        (TypeError, "text: dtype", lambda: ops.clip_loss(q, q.double(), s)),
        (ValueError, "text: 3 rows", lambda: ops.clip_loss(q, q[:3], s)),
        (ValueError, "query: empty batch", lambda: ops.info_nce(q[:0], k)),
        (ValueError, "z2: on meta", lambda: ops.nt_xent(q, q.to("meta"))),
        (ValueError, "queue: width 5", lambda: ops.moco_loss(q, q, torch.randn(10, 5))),
        (
            ValueError,
            "logit_bias: expected a scalar",
            lambda: ops.siglip_loss(q, q, s, torch.ones(2)),
        ),
        (ValueError, "reduction", lambda: ops.info_nce(q, k, reduction="max")),
        (TypeError, "query: expected a float", lambda: ops.info_nce(q.long(), k.long())),
        (ValueError, "query: expected a", lambda: ops.info_nce(q[0], k)),
    ]
    for exc, pattern, call in cases:
        with pytest.raises(exc, match=pattern):
            call()


def test_core_checks_its_inputs_itself():
    if not hasattr(_backend._C, "contrastive_cpu"):
        pytest.fail("the CPU contrastive kernels are not built")
    v = _backend.view
    q, k = torch.randn(4, 8), torch.randn(6, 7)
    with pytest.raises(ValueError):
        _backend._C.contrastive_cpu.lse_forward(
            v(q), v(k), 1.0, 0, False, v(torch.empty(4)), v(None)
        )


def test_ops_dispatch_to_triton_kernels_under_the_interpreter():
    pytest.importorskip("triton")
    if _backend.unavailable("triton", torch.device("cpu"), "contrastive"):
        pytest.skip("Triton launchers take CPU tensors only under TRITON_INTERPRET=1")
    for name, fn, _, inputs in loss_cases(6, 9, 5, 8, torch.float32, 0.2):
        got = fn("triton", *inputs)
        want = fn("cpu", *inputs)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6, msg=name)
        for a, b in zip(
            torch.autograd.grad(got.sum(), inputs), torch.autograd.grad(want.sum(), inputs)
        ):
            # atol scales with the gradient: info_nce without normalisation reaches logits ~50,
            # where the float32 lse each backend recomputes P from differs by an ulp of |lse|
            # (measured up to 2.8e-6 of max|grad| on an AMD EPYC, whose numpy float32 matmul
            # rounds differently); a wrong kernel is off by O(1) of max|grad|
            atol = 1e-5 * float(b.abs().max())
            torch.testing.assert_close(a, b, rtol=1e-5, atol=atol, msg=name)


def test_explain_names_the_family_without_cuda_cpp_kernels():
    e = ops.explain("nt_xent", torch.zeros(2, 3))
    assert e.backend == "cpu"
    if _backend._C.cuda:
        why = _backend.unavailable("cuda", torch.device("cuda"), "contrastive")
        assert "no CUDA C++ kernels for the contrastive ops" in why


def test_moco_loss_without_a_queue_is_moco_v3_in_batch_form():
    q, k = feats(6, 5, 0), feats(6, 5, 1)
    got = ops.moco_loss(q, k, None, temperature=0.2)
    logits = q @ k.T / 0.2  # MoCo v3's contrastive_loss, less its 2 * T factor
    want = torch.nn.functional.cross_entropy(logits, torch.arange(6))
    compare(got, want, (q, k), 1e-11, 1e-12, "moco_v3")
    # gather=True outside a process group changes nothing, with or without a queue
    queue = feats(9, 5, 2).detach()
    for qu in (None, queue):
        torch.testing.assert_close(
            ops.moco_loss(q, k, qu, gather=True), ops.moco_loss(q, k, qu), rtol=0, atol=0
        )


def _module_cases(n, d, seed):
    """(name, module, functional op, inputs) pairs that must agree in value and gradient."""
    q, k = feats(n, d, seed), feats(n + 3, d, seed + 1)
    z1, z2 = feats(n, d, seed + 2), feats(n, d, seed + 3)
    a, b = feats(n, d, seed + 4, normalize=True), feats(n, d, seed + 5, normalize=True)
    queue = feats(11, d, seed + 6, normalize=True).detach()
    ls, lb = scalar(7.0), scalar(-3.0)
    labels = torch.randint(0, n + 3, (n,), generator=gen(seed))
    return [
        ("info_nce", InfoNCELoss(0.3), lambda x, y: C.info_nce(x, y, temperature=0.3), (q, k)),
        (
            "info_nce_options",
            lambda x, y, s: InfoNCELoss(0.3, normalize=True, reduction="none")(x, y, labels, s),
            lambda x, y, s: C.info_nce(
                x, y, logit_scale=s, labels=labels, normalize=True, reduction="none"
            ),
            (q, k, ls),
        ),
        ("nt_xent", NTXentLoss(0.2), lambda x, y: C.nt_xent(x, y, temperature=0.2), (z1, z2)),
        (
            "nt_xent_raw",
            NTXentLoss(0.7, normalize=False),
            lambda x, y: C.nt_xent(x, y, temperature=0.7, normalize=False),
            (z1, z2),
        ),
        ("clip", ClipLoss(), C.clip_loss, (a, b, ls)),
        ("siglip", SigLipLoss(), C.siglip_loss, (a, b, ls, lb)),
        (
            "siglip_no_bias",  # open_clip's logit_bias=None
            SigLipLoss(),
            lambda x, y, s: C.siglip_loss(x, y, s, torch.zeros((), dtype=s.dtype)),
            (a, b, ls),
        ),
        (
            "moco",
            lambda x, y: MoCoLoss(0.3)(x, y, queue),
            lambda x, y: C.moco_loss(x, y, queue, temperature=0.3),
            (a, b),
        ),
        (
            "moco_v3",
            MoCoLoss(0.3),
            lambda x, y: C.moco_loss(x, y, None, temperature=0.3),
            (a, b),
        ),
    ]


@pytest.mark.parametrize("seed", [0, 1])
def test_loss_modules_equal_the_functional_ops(seed):
    for name, module, op, inputs in _module_cases(7, 9, seed):
        compare(module(*inputs), op(*inputs), inputs, 1e-12, 1e-12, name)


def test_learnable_scale_modules_own_open_clip_and_siglip_initial_parameters():
    a, b = feats(5, 4, 0, normalize=True), feats(5, 4, 1, normalize=True)
    clip = ClipLoss(learnable=True).double()
    assert [n for n, _ in clip.named_parameters()] == ["logit_scale"]
    torch.testing.assert_close(clip.logit_scale.exp(), torch.tensor(1 / 0.07, dtype=torch.float64))
    sig = SigLipLoss(learnable=True).double()
    assert [n for n, _ in sig.named_parameters()] == ["logit_scale", "logit_bias"]
    assert float(sig.logit_scale.detach().exp()) == pytest.approx(10.0)
    assert float(sig.logit_bias.detach()) == -10.0
    for module, params, op in (
        (clip, [clip.logit_scale], lambda x, y, t: C.clip_loss(x, y, t.exp())),
        (
            sig,
            [sig.logit_scale, sig.logit_bias],
            lambda x, y, t, c: C.siglip_loss(x, y, t.exp(), c),
        ),
    ):
        got = module(a, b)
        copies = [p.detach().clone().requires_grad_(True) for p in params]
        want = op(a, b, *copies)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
        for g, w in zip(
            torch.autograd.grad(got, [a, b, *params]), torch.autograd.grad(want, [a, b, *copies])
        ):
            torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)
    custom = SigLipLoss(learnable=True, init_logit_scale=0.5, init_logit_bias=1.0)
    assert custom.logit_scale.item() == 0.5 and custom.logit_bias.item() == 1.0
    with pytest.raises(ValueError, match="logit_scale: this ClipLoss owns a learnable"):
        clip(a, b, scalar(2.0))
    with pytest.raises(ValueError, match="logit_bias: this SigLipLoss owns a learnable"):
        sig(a, b, None, scalar(2.0))
    with pytest.raises(TypeError, match="logit_scale: expected a scalar torch.Tensor"):
        ClipLoss()(a, b)
    with pytest.raises(TypeError, match="logit_scale: expected a scalar torch.Tensor"):
        SigLipLoss()(a, b)


def test_moco_module_owns_a_queue_scores_a_copy_then_enqueues_the_keys():
    torch.manual_seed(0)
    loss_fn = MoCoLoss(0.2, queue_size=8, dim=4).double()
    assert loss_fn.queue is not None
    first = loss_fn.queue.features().clone()
    assert first.shape == (8, 4)  # filled with random unit vectors, as MoCo's builder does
    torch.testing.assert_close(first.norm(dim=1), torch.ones(8, dtype=torch.float64))
    q, k = feats(3, 4, 0, normalize=True), feats(3, 4, 1, normalize=True)
    got = loss_fn(q, k)
    want = C.moco_loss(q, k, first, temperature=0.2)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    # the keys are in the queue already, and the backward still runs (the loss saw a copy)
    torch.testing.assert_close(loss_fn.queue.features(), torch.cat([first[3:], k.detach()]))
    compare(got, want, (q, k), 1e-12, 1e-12, "moco_queue")
    # evaluation mode scores without enqueueing
    before = loss_fn.queue.features().clone()
    loss_fn.eval()
    loss_fn(q, k)
    assert torch.equal(loss_fn.queue.features(), before)
    # float32 queue against bfloat16 features: the copy takes the features' dtype
    low = MoCoLoss(queue_size=8, dim=4)
    assert low(q.detach().bfloat16(), k.detach().bfloat16()).dtype == torch.float32
    with pytest.raises(ValueError, match="queue: this MoCoLoss owns a queue"):
        loss_fn(q, k, first)
    with pytest.raises(ValueError, match="queue_size and dim"):
        MoCoLoss(queue_size=8)


def test_loss_modules_repr_names_their_options():
    assert repr(InfoNCELoss()) == (
        "InfoNCELoss(temperature=0.1, normalize=False, reduction='mean', gather=False)"
    )
    assert repr(NTXentLoss(0.2, gather=True)) == (
        "NTXentLoss(temperature=0.2, normalize=True, gather=True)"
    )
    assert repr(ClipLoss()) == "ClipLoss(learnable=False, gather=False)"
    assert repr(SigLipLoss(backend="reference")) == (
        "SigLipLoss(learnable=False, gather=False, backend='reference')"
    )
    assert repr(MoCoLoss()) == "MoCoLoss(temperature=0.2, gather=False)"
    text = repr(MoCoLoss(queue_size=16, dim=8))
    assert "temperature=0.2" in text and "(queue): FeatureQueue(size=16, dim=8)" in text
    with pytest.raises(ValueError, match="reduction"):
        InfoNCELoss(reduction="max")
    with pytest.raises(ValueError, match="temperature"):
        MoCoLoss(0.0)
