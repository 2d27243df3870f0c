"""Masked-patch ops against MAE's reference: values, gradients, registration, bad input."""

from __future__ import annotations

import pytest
import torch
from helpers import low_precision_tol, poisoned

from pyssl import ops
from pyssl.losses import MaskedPatchLoss
from pyssl.masking import RandomMasking
from pyssl.ops import _backend
from pyssl.reference import masking as ref

FLOATS = [torch.float32, torch.bfloat16, torch.float16, torch.float64]
LOW = [torch.bfloat16, torch.float16]
# (B, C, H, W, p): a batch of one, one channel, non-square images, p=1, a single patch (L=1)
IMAGE_CASES = [(2, 3, 32, 48, 8), (1, 1, 12, 8, 4), (3, 2, 5, 7, 1), (2, 3, 16, 16, 16)]
# (B, L, D, ratio): L=1, L=196, D=33, ratios 0 and 0.9
TOKEN_CASES = [
    (4, 196, 33, 0.75),
    (1, 1, 8, 0.0),
    (3, 196, 64, 0.9),
    (2, 10, 33, 0.0),
    (5, 7, 3, 0.5),
]


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- forward values


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("case", IMAGE_CASES)
@pytest.mark.parametrize("seed", [0, 1])
def test_patchify_roundtrip_and_gather(dtype, case, seed):
    b, c, h, w, p = case
    g = gen(seed)
    imgs = torch.randn(b, c, h, w, generator=g).to(dtype)
    patches = ops.patchify(imgs, p)
    assert torch.equal(patches, ref.patchify(imgs, p))
    grid = (h // p, w // p)
    assert torch.equal(ops.unpatchify(patches, p, c, grid=grid), imgs)
    length = grid[0] * grid[1]
    k = max(1, length // 3)
    ids = torch.stack([torch.randperm(length, generator=g)[:k] for _ in range(b)])
    assert torch.equal(ops.gather_patches(imgs, ids, p), ref.gather_patches(imgs, ids, p))


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("case", TOKEN_CASES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_masking_matches_mae(dtype, case, seed):
    b, length, d, ratio = case
    g = gen(seed)
    x = torch.randn(b, length, d, generator=g).to(dtype)
    noise = torch.rand(b, length, generator=g)
    got = ops.random_masking(x, ratio, noise=noise)
    want = ref.random_masking(x, ratio, noise)
    for name, a, e in zip(got._fields, got, want):
        assert a.dtype == e.dtype, name
        assert torch.equal(a, e), name
    assert got.visible.shape[1] == int(length * (1 - ratio))


def test_random_masking_ties_and_nan_follow_stable_argsort():
    g = gen(3)
    noise = torch.randint(0, 4, (6, 50), generator=g).float()  # many ties
    noise[0, 5] = float("nan")
    noise[1, :] = float("nan")
    noise[2, 10:20] = float("inf")
    x = torch.randn(6, 50, 5, generator=g)
    got = ops.random_masking(x, 0.5, noise=noise)
    want = ref.random_masking(x, 0.5, noise)
    for a, e in zip(got, want):
        assert torch.equal(a, e)
    assert torch.equal(got.ids_keep[1], torch.arange(25))


def test_random_masking_generator_reproduces_and_thread_count_does_not_matter():
    x = torch.randn(8, 196, 40)
    a = ops.random_masking(x, 0.75, generator=gen(7))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        b = ops.random_masking(x, 0.75, generator=gen(7))
    finally:
        torch.set_num_threads(threads)
    c = ops.random_masking(x, 0.75, generator=gen(8))
    for u, v in zip(a, b):
        assert torch.equal(u, v)
    assert not torch.equal(a.ids_keep, c.ids_keep)
    # without noise, the noise is MAE's torch.rand(B, L) from the generator
    want = ref.random_masking(x, 0.75, torch.rand(8, 196, generator=gen(7)))
    assert torch.equal(a.ids_restore, want[3])


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("case", TOKEN_CASES)
def test_restore_masked_matches_mae(dtype, case):
    b, length, d, ratio = case
    g = gen(4)
    x = torch.randn(b, length, d, generator=g).to(dtype)
    m = ops.random_masking(x, ratio, generator=g)
    token = torch.randn(d, generator=g).to(dtype)
    got = ops.restore_masked(m.visible, token, m.ids_restore)
    assert torch.equal(got, ref.restore_masked(m.visible, token, m.ids_restore))
    kept = (1 - m.mask).bool()
    assert torch.equal(got[kept], x[kept])  # unshuffle puts every kept token back in place


@pytest.mark.parametrize("norm_pix", [True, False])
@pytest.mark.parametrize("case", IMAGE_CASES)
@pytest.mark.parametrize("seed", [0, 1])
def test_masked_patch_loss_fp32_and_fp64(norm_pix, case, seed):
    b, c, h, w, p = case
    if norm_pix and p * p * c == 1:
        pytest.skip("the unbiased variance of one value is undefined (MAE divides by zero too)")
    g = gen(seed)
    imgs = torch.rand(b, c, h, w, generator=g, dtype=torch.float64)
    length = (h // p) * (w // p)
    pred = torch.randn(b, length, p * p * c, generator=g, dtype=torch.float64)
    mask = (torch.rand(b, length, generator=g) < 0.7).double()
    mask[0, 0] = 1.0
    want = ref.masked_patch_loss(pred, imgs, mask, p, norm_pix)
    got64 = ops.masked_patch_loss(pred, imgs, mask, p, norm_pix=norm_pix)
    torch.testing.assert_close(got64, want, rtol=1e-12, atol=0)
    got32 = ops.masked_patch_loss(pred.float(), imgs.float(), mask.bool(), p, norm_pix=norm_pix)
    torch.testing.assert_close(got32.double(), want, rtol=2e-6, atol=1e-7)


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("norm_pix", [True, False])
def test_masked_patch_loss_low_precision(dtype, norm_pix):
    g = gen(5)
    imgs = torch.rand(2, 3, 32, 32, generator=g)
    pred = torch.randn(2, 16, 192, generator=g)
    mask = (torch.rand(2, 16, generator=g) < 0.75).float()
    exact = ref.masked_patch_loss(pred.double(), imgs.double(), mask.double(), 8, norm_pix)
    lo_pred = pred.to(dtype).requires_grad_(True)
    lo_imgs = imgs.to(dtype)
    got = ops.masked_patch_loss(lo_pred, lo_imgs, mask, 8, norm_pix=norm_pix)
    eager_pred = lo_pred.detach().clone().requires_grad_(True)
    eager = ref.masked_patch_loss(eager_pred, lo_imgs, mask.to(dtype), 8, norm_pix)
    exact_in = ref.masked_patch_loss(
        lo_pred.detach().double(), lo_imgs.double(), mask.double(), 8, norm_pix
    )
    assert got.dtype == dtype
    low_precision_tol(got, eager, exact_in)
    (g_got,) = torch.autograd.grad(got, lo_pred)
    (g_eager,) = torch.autograd.grad(eager, eager_pred)
    p64 = lo_pred.detach().double().requires_grad_(True)
    (g_exact,) = torch.autograd.grad(
        ref.masked_patch_loss(p64, lo_imgs.double(), mask.double(), 8, norm_pix), p64
    )
    assert g_got.dtype == dtype
    low_precision_tol(g_got, g_eager, g_exact)
    assert abs(exact.item() - exact_in.item()) < 0.1  # the rounding of the inputs is small


def test_masked_patch_loss_all_zero_mask_is_nan_like_mae():
    imgs = torch.rand(1, 3, 8, 8)
    pred = torch.randn(1, 4, 48, requires_grad=True)
    mask = torch.zeros(1, 4)
    loss = ops.masked_patch_loss(pred, imgs, mask, 4)
    assert torch.isnan(loss) and torch.isnan(ref.masked_patch_loss(pred, imgs, mask, 4))
    loss.backward()
    assert torch.equal(pred.grad, torch.zeros_like(pred))


# ------------------------------------------------------------------------------ gradients


def test_gradcheck_patchify_unpatchify_gather():
    g = gen(6)
    imgs = torch.randn(2, 3, 8, 12, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: ops.patchify(a, 4), (imgs,))
    x = torch.randn(2, 6, 48, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: ops.unpatchify(a, 4, 3, grid=(2, 3)), (x,))
    ids = torch.tensor([[4, 0, 2], [1, 5, 3]])
    assert torch.autograd.gradcheck(lambda a: ops.gather_patches(a, ids, 4), (imgs,))
    # repeated ids: the gradient sums
    dup = torch.tensor([[4, 4, 2], [1, 1, 1]])
    assert torch.autograd.gradcheck(lambda a: ops.gather_patches(a, dup, 4), (imgs,))
    assert torch.autograd.gradgradcheck(lambda a: ops.gather_patches(a, ids, 4), (imgs,))


# gradcheck builds the full Jacobian: small shapes (L=196 and D=33 are covered by the fp32 and
# low-precision gradient comparisons with the reference)
GRAD_CASES = [(2, 10, 5, 0.5), (1, 1, 3, 0.0), (2, 12, 4, 0.9), (3, 7, 3, 0.0)]


@pytest.mark.parametrize("case", GRAD_CASES)
def test_gradcheck_random_masking_and_restore(case):
    b, length, d, ratio = case
    g = gen(7)
    x = torch.randn(b, length, d, generator=g, dtype=torch.float64, requires_grad=True)
    noise = torch.rand(b, length, generator=g)
    assert torch.autograd.gradcheck(
        lambda a: ops.random_masking(a, ratio, noise=noise).visible, (x,)
    )
    m = ops.random_masking(x.detach(), ratio, noise=noise)
    vis = m.visible.clone().requires_grad_(True)
    tok = torch.randn(d, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda v, t: ops.restore_masked(v, t, m.ids_restore), (vis, tok)
    )


@pytest.mark.parametrize("dtype", FLOATS)
def test_gradients_match_reference_in_every_dtype(dtype):
    g = gen(8)
    x = torch.randn(3, 49, 33, generator=g).to(dtype).requires_grad_(True)
    noise = torch.rand(3, 49, generator=g)
    tok = torch.randn(33, generator=g).to(dtype).requires_grad_(True)
    up = torch.randn(3, 49, 33, generator=g).to(dtype)

    def run(fm, fr, xx, tt):
        vis = fm(xx, 0.75, noise)[0]
        return (fr(vis * 2, tt, fm(xx, 0.75, noise)[3]) * up).sum()

    got = torch.autograd.grad(
        run(lambda a, r, n: ops.random_masking(a, r, noise=n), ops.restore_masked, x, tok), (x, tok)
    )
    want = torch.autograd.grad(run(ref.random_masking, ref.restore_masked, x, tok), (x, tok))
    for a, e in zip(got, want):
        assert a.dtype == dtype
        if dtype in LOW:  # the token's gradient is a sum: compare with fp64
            exact = torch.autograd.grad(
                run(ref.random_masking, ref.restore_masked, x.double(), tok.double()),
                (x, tok),
            )
            del exact
            torch.testing.assert_close(a.double(), e.double(), rtol=2e-2, atol=2e-2)
        else:
            torch.testing.assert_close(a, e)


def test_restore_masked_backward_with_repeated_ids_sums_in_order():
    g = gen(9)
    vis = torch.randn(2, 3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    tok = torch.randn(4, generator=g, dtype=torch.float64, requires_grad=True)
    ids = torch.tensor([[0, 0, 5, 2, 4, 0], [1, 1, 1, 3, 3, 2]])  # not a permutation
    assert torch.torch.autograd.gradcheck(lambda v, t: ops.restore_masked(v, t, ids), (vis, tok))


def test_gradcheck_masked_patch_loss():
    g = gen(10)
    imgs = torch.rand(2, 3, 8, 8, generator=g, dtype=torch.float64)
    pred = torch.randn(2, 4, 48, generator=g, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[1.0, 0.0, 1.0, 0.5], [0.0, 1.0, 1.0, 1.0]], dtype=torch.float64)
    for norm_pix in (True, False):
        assert torch.autograd.gradcheck(
            lambda a, n=norm_pix: ops.masked_patch_loss(a, imgs, mask, 4, norm_pix=n), (pred,)
        )


# ------------------------------------------------------ C++ launchers write every element


def test_cpp_launchers_write_every_output_element():
    g = gen(11)
    imgs = torch.randn(2, 3, 16, 24, generator=g)
    ids = torch.tensor([[5, 0, 3, 3], [1, 2, 4, 0]])
    out = poisoned(2, 4, 48)
    _backend.launch("masking", "gather_patches", "cpu", imgs, ids, 4, out)
    assert torch.equal(out, ref.gather_patches(imgs, ids, 4))
    back = poisoned(2, 3, 16, 24)
    _backend.launch("masking", "scatter_patches", "cpu", out, ids, 4, back)
    full = torch.zeros(2, 24, 48).scatter_add_(1, ids[..., None].expand(-1, -1, 48), out)
    assert torch.equal(back, ref.unpatchify(full, 4, 3, (4, 6)))
    x = torch.randn(2, 24, 5, generator=g)
    outs = (
        poisoned(2, 6, 5),
        poisoned(2, 24),
        poisoned(2, 6, dtype=torch.int64),
        poisoned(2, 24, dtype=torch.int64),
    )
    noise = torch.rand(2, 24, generator=g)
    _backend.launch("masking", "random_masking", "cpu", x, noise, 6, *outs)
    for a, e in zip(outs, ref.random_masking(x, 0.75, noise)):
        assert torch.equal(a, e)
    grad_vis, grad_tok = poisoned(2, 6, 5), poisoned(5)
    up = torch.randn(2, 24, 5, generator=g)
    _backend.launch("masking", "restore_masked_backward", "cpu", up, outs[3], grad_vis, grad_tok)
    assert not grad_vis.isnan().any() and not grad_tok.isnan().any()
    grads = poisoned(2, 24, 48)
    pred = torch.randn(2, 24, 48, generator=g)
    mask = outs[1]
    _backend.launch(
        "masking",
        "masked_patch_loss_backward",
        "cpu",
        torch.tensor(1.0),
        pred,
        imgs,
        mask,
        4,
        True,
        1e-6,
        grads,
    )
    assert not grads.isnan().any()


def test_core_half_and_bfloat16_rounding_matches_torch():
    bits = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16)
    halves = bits.view(torch.float16)
    out = poisoned(2**16)
    _backend._C.convert(_backend.view(halves), _backend.view(out))
    assert torch.equal(out.isnan(), halves.float().isnan())
    fin = ~out.isnan()
    assert torch.equal(out[fin], halves.float()[fin])
    g = gen(12)
    x = torch.cat(
        [
            torch.randn(100000, generator=g) * 10.0 ** torch.randint(-9, 6, (100000,), generator=g),
            torch.tensor(
                [
                    65504.0,
                    65519.0,
                    65520.0,
                    1e-8,
                    2.0**-25,
                    2.0**-24,
                    3 * 2.0**-26,
                    -0.0,
                    float("inf"),
                    -float("inf"),
                    3.0e38,
                ]
            ),
        ]
    )
    for dtype in (torch.float16, torch.bfloat16):
        y = torch.empty(x.shape, dtype=dtype)
        _backend._C.convert(_backend.view(x), _backend.view(y))
        assert torch.equal(y.view(torch.int16), x.to(dtype).view(torch.int16)), dtype


# ------------------------------------------------------------------ registration, compile


def test_opcheck_every_op():
    g = gen(13)
    imgs = torch.randn(2, 3, 8, 8, generator=g, requires_grad=True)
    ids = torch.tensor([[0, 3], [2, 1]])
    x = torch.randn(2, 4, 6, generator=g, requires_grad=True)
    noise = torch.rand(2, 4, generator=g)
    vis = torch.randn(2, 2, 6, generator=g, requires_grad=True)
    tok = torch.randn(6, generator=g, requires_grad=True)
    restore = torch.tensor([[1, 3, 0, 2], [2, 0, 3, 1]])
    pred = torch.randn(2, 4, 48, generator=g, requires_grad=True)
    mask = torch.tensor([[1.0, 0, 1, 1], [0, 1, 1, 0]])
    m = torch.ops.pyssl
    cases = [
        (m.gather_patches, (imgs, ids, 4, "cpu")),
        (m.gather_patches, (imgs, None, 4, "cpu")),
        (m.scatter_patches, (pred, None, 4, 3, 8, 8, "cpu")),
        (m.scatter_patches, (pred[:, :2], ids, 4, 3, 8, 8, "cpu")),
        (m.random_masking, (x, noise, 2, "cpu")),
        (m.restore_masked, (vis, tok, restore, "cpu")),
        (m.restore_masked, (vis, None, restore, "cpu")),
        (m.restore_masked_backward, (x.detach(), restore, 2, True, "cpu")),
        (m.masked_patch_loss, (pred, imgs.detach(), mask, 4, True, 1e-6, "cpu")),
        (
            m.masked_patch_loss_backward,
            (torch.tensor(1.0), pred.detach(), imgs.detach(), mask, 4, True, 1e-6, "cpu"),
        ),
    ]
    for op, args in cases:
        torch.library.opcheck(op, args)


class TinyMAE(torch.nn.Module):
    """A small MAE step built from pyssl ops: patchify, mask, encode, restore, decode, loss."""

    def __init__(self, p: int = 4, c: int = 3, d: int = 32) -> None:
        super().__init__()
        self.p = p
        self.embed = torch.nn.Linear(p * p * c, d)
        self.encoder = torch.nn.Sequential(torch.nn.Linear(d, d), torch.nn.GELU())
        self.mask_token = torch.nn.Parameter(torch.zeros(d))
        self.decoder = torch.nn.Linear(d, p * p * c)
        self.masking = RandomMasking(0.75)
        self.loss = MaskedPatchLoss(p)

    def forward(self, imgs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(ops.patchify(imgs, self.p))
        visible, mask, ids_keep, ids_restore = self.masking(tokens, noise=noise)
        kept_pixels = ops.gather_patches(imgs, ids_keep, self.p)
        latent = self.encoder(visible) + 0.0 * kept_pixels.mean()
        full = ops.restore_masked(latent, self.mask_token, ids_restore)
        return self.loss(self.decoder(full), imgs, mask)


@pytest.mark.parametrize("compile_backend", ["aot_eager", "inductor"])
def test_compile_fullgraph_mae_step_matches_eager(compile_backend):
    torch._dynamo.reset()
    model = TinyMAE()
    imgs = torch.rand(2, 3, 16, 16)
    noise = torch.rand(2, 16)
    eager = model(imgs, noise)
    eager.backward()
    want = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    compiled = torch.compile(model, fullgraph=True, backend=compile_backend)
    got = compiled(imgs, noise)
    got.backward()
    torch.testing.assert_close(got, eager)
    for p, w in zip(model.parameters(), want):
        torch.testing.assert_close(p.grad, w)


def test_modules_drop_in():
    m = RandomMasking(0.6)
    x = torch.randn(2, 10, 4)
    assert m(x).visible.shape == (2, 4, 4)
    m.eval()
    out = m(x)
    assert torch.equal(out.visible, x) and not out.mask.any()
    with pytest.raises(ValueError, match="mask_ratio"):
        RandomMasking(1.0)
    assert "patch_size=4" in repr(MaskedPatchLoss(4))


def test_explain_names_backends():
    e = ops.explain("patchify", torch.zeros(1, 3, 4, 4))
    assert e.backend == "cpu"
    assert "CUDA tensors" in e.reasons["cuda"]
    assert "runs on 'cpu'" in str(e)
    with pytest.raises(ValueError, match="backend='cuda' cannot run"):
        ops.patchify(torch.zeros(1, 3, 4, 4), 2, backend="cuda")
    with pytest.raises(ValueError, match="backend: expected"):
        ops.patchify(torch.zeros(1, 3, 4, 4), 2, backend="gpu")


def test_reference_backend_gives_the_same_results():
    g = gen(14)
    imgs = torch.randn(2, 3, 8, 8, generator=g)
    x = torch.randn(2, 4, 48, generator=g)
    noise = torch.rand(2, 4, generator=g)
    a = ops.random_masking(x, 0.5, noise=noise, backend="reference")
    b = ops.random_masking(x, 0.5, noise=noise)
    for u, v in zip(a, b):
        assert torch.equal(u, v)
    assert torch.equal(ops.patchify(imgs, 4, backend="reference"), ops.patchify(imgs, 4))
    torch.testing.assert_close(
        ops.masked_patch_loss(x, imgs, a.mask, 4, backend="reference"),
        ops.masked_patch_loss(x, imgs, a.mask, 4),
    )


# ---------------------------------------------------------------------------- bad input


def test_bad_input_errors_name_the_argument():
    imgs = torch.zeros(2, 3, 8, 8)
    x = torch.zeros(2, 4, 6)
    ids = torch.zeros(2, 2, dtype=torch.int64)
    restore = torch.tensor([[0, 1, 2, 3], [3, 2, 1, 0]])
    cases = [
        (ValueError, "imgs: expected 4 dimensions", lambda: ops.patchify(x, 2)),
        (ValueError, "not divisible by patch_size", lambda: ops.patchify(imgs, 3)),
        (ValueError, "patch_size", lambda: ops.patchify(imgs, 0)),
        (TypeError, "imgs: expected a torch.Tensor", lambda: ops.patchify([1, 2], 2)),
        (TypeError, "imgs: expected a float32", lambda: ops.patchify(imgs.long(), 2)),
        (ValueError, "imgs: empty batch", lambda: ops.patchify(imgs[:0], 2)),
        (ValueError, "mask_ratio", lambda: ops.random_masking(x, 1.0)),
        (ValueError, "mask_ratio", lambda: ops.random_masking(x, -0.1)),
        (TypeError, "mask_ratio", lambda: ops.random_masking(x, "0.5")),
        (ValueError, "x: expected 3 dimensions", lambda: ops.random_masking(imgs, 0.5)),
        (ValueError, "x: empty batch", lambda: ops.random_masking(x[:0], 0.5)),
        (
            ValueError,
            "noise: expected shape",
            lambda: ops.random_masking(x, 0.5, noise=torch.rand(2, 5)),
        ),
        (TypeError, "ids_keep: expected int64", lambda: ops.gather_patches(imgs, ids.int(), 4)),
        (ValueError, "ids_keep: batch size", lambda: ops.gather_patches(imgs, ids[:1], 4)),
        (
            ValueError,
            r"ids_keep: index 4 .* out of range \[0, 4\)",
            lambda: ops.gather_patches(imgs, ids + 4, 4),
        ),
        (ValueError, r"ids_keep: index -1", lambda: ops.gather_patches(imgs, ids - 1, 4)),
        (
            ValueError,
            r"ids_restore: index 4",
            lambda: ops.restore_masked(x[:, :2], torch.zeros(6), restore + 1),
        ),
        (
            TypeError,
            "ids_restore: expected int64",
            lambda: ops.restore_masked(x[:, :2], torch.zeros(6), restore.float()),
        ),
        (
            ValueError,
            "mask_token: expected 6 elements",
            lambda: ops.restore_masked(x[:, :2], torch.zeros(5), restore),
        ),
        (ValueError, "cannot hold", lambda: ops.restore_masked(x, torch.zeros(6), restore[:, :2])),
        (
            TypeError,
            "pred: dtype",
            lambda: ops.masked_patch_loss(
                torch.zeros(2, 4, 48).double(), imgs, torch.ones(2, 4), 4
            ),
        ),
        (
            ValueError,
            "pred: expected shape",
            lambda: ops.masked_patch_loss(torch.zeros(2, 5, 48), imgs, torch.ones(2, 4), 4),
        ),
        (
            ValueError,
            "mask: expected shape",
            lambda: ops.masked_patch_loss(torch.zeros(2, 4, 48), imgs, torch.ones(2, 5), 4),
        ),
        (
            TypeError,
            "mask: expected a bool or float",
            lambda: ops.masked_patch_loss(
                torch.zeros(2, 4, 48), imgs, torch.ones(2, 4, dtype=torch.int64), 4
            ),
        ),
        (ValueError, "x: last dimension", lambda: ops.unpatchify(torch.zeros(2, 4, 47), 4, 3)),
        (ValueError, "square grid", lambda: ops.unpatchify(torch.zeros(2, 6, 48), 4, 3)),
        (ValueError, "grid", lambda: ops.unpatchify(torch.zeros(2, 6, 48), 4, 3, grid=(2, 2))),
    ]
    for exc, pattern, call in cases:
        with pytest.raises(exc, match=pattern):
            call()


def test_meta_device_mismatch_is_an_error():
    x = torch.zeros(2, 4, 6)
    with pytest.raises(ValueError, match="noise: on meta"):
        ops.random_masking(x, 0.5, noise=torch.zeros(2, 4, device="meta"))


def test_core_checks_its_inputs_itself():
    # Direct calls into the C++ core, bypassing the Python checks, still raise ValueError.
    imgs = torch.zeros(2, 3, 8, 8)
    out = torch.empty(2, 2, 48)
    v = _backend.view
    with pytest.raises(ValueError, match="ids_keep: index 9"):
        _backend._C.masking_cpu.gather_patches(
            v(imgs), v(torch.tensor([[0, 9], [1, 2]])), 4, v(out)
        )
    with pytest.raises(ValueError, match="not divisible"):
        _backend._C.masking_cpu.gather_patches(v(imgs), v(None), 3, v(out))
    with pytest.raises(ValueError, match="expected a contiguous"):
        _backend._C.masking_cpu.gather_patches(v(imgs.transpose(2, 3)), v(None), 4, v(out))
    with pytest.raises(ValueError, match="ids: expected int64"):
        _backend._C.masking_cpu.gather_patches(
            v(imgs), v(torch.zeros(2, 2, dtype=torch.int32)), 4, v(out)
        )
    with pytest.raises(ValueError, match="keep"):
        _backend._C.masking_cpu.random_masking(
            v(torch.zeros(2, 4, 3)), v(torch.zeros(2, 4)), 5, v(out), v(out), v(out), v(out)
        )


def test_ops_dispatch_to_triton_kernels_under_the_interpreter():
    pytest.importorskip("triton")
    if _backend.unavailable("triton", torch.device("cpu")):
        pytest.skip("Triton launchers take CPU tensors only under TRITON_INTERPRET=1")
    g = gen(15)
    imgs = torch.randn(2, 3, 8, 12, generator=g, requires_grad=True)
    x = torch.randn(2, 6, 5, generator=g, requires_grad=True)
    noise = torch.rand(2, 6, generator=g)
    tok = torch.randn(5, generator=g, requires_grad=True)

    def run(backend):
        m = ops.random_masking(x, 0.5, noise=noise, backend=backend)
        rest = ops.restore_masked(m.visible * 3, tok, m.ids_restore, backend=backend)
        pred = ops.patchify(imgs, 4, backend=backend) * 0.5
        loss = ops.masked_patch_loss(pred, imgs.detach(), m.mask, 4, backend=backend)
        kept = ops.gather_patches(imgs, m.ids_keep, 4, backend=backend)
        back = ops.unpatchify(pred, 4, 3, grid=(2, 3), backend=backend)
        total = rest.sum() + loss + kept.square().sum() + back.sum()
        return [*m, rest, loss, kept, back, *torch.autograd.grad(total, (x, tok, imgs))]

    for a, b in zip(run("triton"), run("cpu")):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("backend", ["triton", "cuda"])
@pytest.mark.parametrize("dtype", FLOATS)
def test_gpu_backends_match_the_cpu_kernels(backend, dtype):
    if _backend.unavailable(backend, torch.device("cuda")):
        pytest.skip(_backend.unavailable(backend, torch.device("cuda")))
    g = gen(16)
    imgs = torch.randn(4, 3, 32, 48, generator=g).to(dtype)
    x = torch.randn(4, 96, 33, generator=g).to(dtype)
    noise = torch.rand(4, 96, generator=g)
    tok = torch.randn(33, generator=g).to(dtype)
    up = torch.randn(4, 96, 33, generator=g).to(dtype)

    def run(device, be):
        xx = x.to(device).requires_grad_(True)
        tt = tok.to(device).requires_grad_(True)
        ii = imgs.to(device).requires_grad_(True)
        m = ops.random_masking(xx, 0.75, noise=noise.to(device), backend=be)
        rest = ops.restore_masked(m.visible, tt, m.ids_restore, backend=be)
        kept = ops.gather_patches(ii, m.ids_keep[:, :12] % 24, 8, backend=be)
        pred = torch.randn(4, 24, 192, generator=gen(17)).to(dtype).to(device)
        loss = ops.masked_patch_loss(pred, ii.detach(), m.mask[:, :24], 8, backend=be)
        total = (rest * up.to(device)).sum() + kept.float().square().sum().to(dtype) + loss
        grads = torch.autograd.grad(total, (xx, tt, ii))
        return [t.cpu() for t in (*m, rest, kept, loss, *grads)]

    tol = {"rtol": 2e-2, "atol": 2e-2} if dtype in LOW else {"rtol": 1e-5, "atol": 1e-5}
    for a, b in zip(run("cuda", backend), run("cpu", "cpu")):
        torch.testing.assert_close(a, b, **tol)
