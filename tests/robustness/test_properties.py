"""Property-based tests: every op on shapes, dtypes, ratios, temperatures and contents drawn by
hypothesis, against the plain references in ``pyssl.reference``.

Drawn: batch 1 and sizes of 1, odd sizes, non-contiguous and transposed inputs, magnitudes
from 1e-6 to 1e6 (float64; float32 where the result stays in range), temperatures down to 1e-3.
Invalid combinations must raise the op's documented error (``ValueError``/``TypeError``).

Profiles (``tests/robustness/conftest.py``): ``ci`` (the default, a bounded number of examples
per test) and ``long`` (``pytest tests/robustness --hypothesis-profile=long``: 10,000 examples
per test; what it found is recorded in ``docs/robustness.md``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from hypothesis import assume, given
from hypothesis import strategies as st

from pyssl import ops
from pyssl.reference import contrastive as ref_contrastive
from pyssl.reference import masking as ref_masking

# --------------------------------------------------------------------------------------------
# drawing tensors


@st.composite
def tensors(draw, shape, dtype=torch.float64, magnitude=(-6, 6), layout=True):
    """A random tensor of ``shape``: values ``randn * 10**e`` for a drawn exponent, seeded by
    hypothesis; contiguous, or a transposed / strided view with the same values."""
    seed = draw(st.integers(0, 2**31 - 1))
    e = draw(st.integers(*magnitude))
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=g, dtype=torch.float64) * 10.0**e).to(dtype)
    kind = draw(st.sampled_from(["contiguous", "transposed", "strided"])) if layout else ""
    if kind == "transposed" and x.dim() >= 2:
        x = x.transpose(-1, -2).contiguous().transpose(-1, -2)  # same values, column-major
    elif kind == "strided":
        x = torch.stack([x, torch.zeros_like(x)], dim=-1)[..., 0]  # every other element
    return x


def close(out: torch.Tensor, ref: torch.Tensor, rtol: float, scale: float = 0.0) -> None:
    """|out - ref| <= rtol * (|ref| + scale), element-wise, NaN nowhere."""
    out, ref = out.double(), ref.double()
    assert not out.isnan().any(), "NaN in the output"
    bound = rtol * (ref.abs() + scale)
    err = (out - ref).abs()
    assert (err <= bound).all(), f"max error {err.max().item():.3g}, bound {bound.min().item():.3g}"


def grads(fn, *inputs):
    """The value of ``fn(*inputs)`` and the gradients of its sum to the inputs that require one."""
    leaves = [x.detach().clone().requires_grad_(x.requires_grad) for x in inputs]
    out = fn(*leaves)
    out.sum().backward()
    return out.detach(), [x.grad for x in leaves if x.requires_grad]


# --------------------------------------------------------------------------------------------
# masking family

FLOATS = st.sampled_from([torch.float64, torch.float32, torch.bfloat16, torch.float16])


@st.composite
def image_batch(draw, dtype=None):
    b = draw(st.integers(1, 3))
    c = draw(st.integers(1, 4))
    p = draw(st.integers(1, 5))
    gh, gw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    dtype = dtype or draw(FLOATS)
    mag = (-3, 3) if dtype in (torch.float16, torch.bfloat16) else (-6, 6)
    imgs = draw(tensors((b, c, gh * p, gw * p), dtype, mag))
    return imgs, p


@given(image_batch())
def test_patchify_unpatchify_are_exact_permutations(batch):
    imgs, p = batch
    x = ops.patchify(imgs, p)
    assert torch.equal(x, ref_masking.patchify(imgs, p))  # a copy: bit-exact in every dtype
    grid = (imgs.shape[2] // p, imgs.shape[3] // p)
    assert torch.equal(ops.unpatchify(x, p, imgs.shape[1], grid=grid), imgs)


@given(image_batch(torch.float64), st.data())
def test_gather_patches_matches_reference_with_gradient(batch, data):
    imgs, p = batch
    imgs.requires_grad_(True)
    b, length = imgs.shape[0], (imgs.shape[2] // p) * (imgs.shape[3] // p)
    k = data.draw(st.integers(0, length))
    seed = data.draw(st.integers(0, 2**31 - 1))
    ids = torch.rand(b, length, generator=torch.Generator().manual_seed(seed)).argsort(1)[:, :k]
    out, (g,) = grads(lambda x: ops.gather_patches(x, ids, p), imgs)
    ref, (g_ref,) = grads(lambda x: ref_masking.gather_patches(x, ids, p), imgs)
    assert torch.equal(out, ref)
    assert torch.equal(g, g_ref)


@given(st.data())
def test_random_masking_matches_reference_ties_included(data):
    b, length, d = (
        data.draw(st.integers(1, 4)),
        data.draw(st.integers(1, 40)),
        data.draw(st.integers(1, 9)),
    )
    ratio = data.draw(st.floats(0.0, 1.0, exclude_max=True))
    dtype = data.draw(FLOATS)
    x = data.draw(tensors((b, length, d), dtype))
    # few distinct noise values, so ties are common: broken by index as the reference does
    levels = data.draw(st.integers(1, 2 * length))
    seed = data.draw(st.integers(0, 2**31 - 1))
    noise = torch.randint(levels, (b, length), generator=torch.Generator().manual_seed(seed))
    noise = noise.to(torch.float32)
    got = ops.random_masking(x, ratio, noise=noise)
    ref = ref_masking.random_masking(x, ratio, noise)
    for a, r in zip(got, ref):
        assert torch.equal(a, r.to(a.dtype))


@given(st.data())
def test_restore_masked_matches_reference_with_gradient(data):
    b, length, d = (
        data.draw(st.integers(1, 3)),
        data.draw(st.integers(1, 30)),
        data.draw(st.integers(1, 9)),
    )
    k = data.draw(st.integers(0, length))
    visible = data.draw(tensors((b, k, d))).requires_grad_(True)
    token = data.draw(tensors((d,))).requires_grad_(True)
    seed = data.draw(st.integers(0, 2**31 - 1))
    ids_restore = torch.rand(b, length, generator=torch.Generator().manual_seed(seed)).argsort(1)
    out, g = grads(lambda v, t: ops.restore_masked(v, t, ids_restore), visible, token)
    ref, g_ref = grads(lambda v, t: ref_masking.restore_masked(v, t, ids_restore), visible, token)
    assert torch.equal(out, ref)
    close(g[0], g_ref[0], 0.0)
    close(g[1], g_ref[1], 1e-12, g_ref[1].abs().max().item())  # a sum over masked slots


@given(image_batch(torch.float64), st.booleans(), st.data())
def test_masked_patch_loss_matches_reference_with_gradient(batch, norm_pix, data):
    imgs, p = batch
    b, length = imgs.shape[0], (imgs.shape[2] // p) * (imgs.shape[3] // p)
    dim = p * p * imgs.shape[1]
    assume(not norm_pix or dim > 1)  # the unbiased variance of one pixel is undefined
    pred = data.draw(tensors((b, length, dim))).requires_grad_(True)
    seed = data.draw(st.integers(0, 2**31 - 1))
    mask = (torch.rand(b, length, generator=torch.Generator().manual_seed(seed)) < 0.6).double()
    assume(mask.sum() > 0)
    out, (g,) = grads(lambda x: ops.masked_patch_loss(x, imgs, mask, p, norm_pix=norm_pix), pred)
    ref, (g_ref,) = grads(
        lambda x: ref_masking.masked_patch_loss(x, imgs, mask, p, norm_pix=norm_pix), pred
    )
    close(out, ref, 1e-10)
    close(g, g_ref, 1e-10, g_ref.abs().max().item())


# --------------------------------------------------------------------------------------------
# contrastive family: float64 (exact to rounding) with extreme magnitudes and temperatures


@st.composite
def features(draw, n, d, normal=True):
    x = draw(tensors((n, d), torch.float64, (-3, 3)))
    return F.normalize(x, dim=1) if normal else x


def check_loss(fn, ref_fn, inputs, rtol=1e-9):
    out, g = grads(fn, *inputs)
    ref, g_ref = grads(ref_fn, *inputs)
    scale = ref.abs().max().item()
    close(out, ref, rtol, 1.0 + scale)
    for a, r in zip(g, g_ref):
        close(a, r, rtol, 1.0 + r.abs().max().item())


TEMPS = st.floats(1e-3, 10.0)


@given(st.data())
def test_info_nce_matches_reference(data):
    n = data.draw(st.integers(1, 24))
    m = data.draw(st.integers(n, 40))
    d = data.draw(st.integers(1, 40))
    t = data.draw(TEMPS)
    normalize = data.draw(st.booleans())
    reduction = data.draw(st.sampled_from(["mean", "sum", "none"]))
    q = data.draw(features(n, d, normal=not normalize)).requires_grad_(True)
    k = data.draw(features(m, d, normal=not normalize)).requires_grad_(True)
    kw = dict(temperature=t, normalize=normalize, reduction=reduction)
    check_loss(
        lambda a, b: ops.info_nce(a, b, **kw),
        lambda a, b: ref_contrastive.info_nce(a, b, **kw),
        (q, k),
    )


@given(st.data())
def test_nt_xent_matches_reference(data):
    n, d = data.draw(st.integers(1, 24)), data.draw(st.integers(1, 40))
    t = data.draw(TEMPS)
    z1 = data.draw(tensors((n, d), torch.float64, (-6, 6))).requires_grad_(True)
    z2 = data.draw(tensors((n, d), torch.float64, (-6, 6))).requires_grad_(True)
    check_loss(
        lambda a, b: ops.nt_xent(a, b, temperature=t),
        lambda a, b: ref_contrastive.nt_xent(a, b, temperature=t),
        (z1, z2),
    )


@given(st.data())
def test_clip_and_siglip_match_reference(data):
    n, d = data.draw(st.integers(1, 24)), data.draw(st.integers(1, 40))
    img = data.draw(features(n, d)).requires_grad_(True)
    txt = data.draw(features(n, d)).requires_grad_(True)
    scale = torch.tensor(data.draw(st.floats(0.1, 1000.0)), dtype=torch.float64)
    bias = torch.tensor(data.draw(st.floats(-20.0, 20.0)), dtype=torch.float64)
    scale.requires_grad_(True)
    bias.requires_grad_(True)
    check_loss(ops.clip_loss, ref_contrastive.clip_loss, (img, txt, scale))
    check_loss(ops.siglip_loss, ref_contrastive.siglip_loss, (img, txt, scale, bias))


@given(st.data())
def test_moco_matches_reference(data):
    n, d, kq = (
        data.draw(st.integers(1, 16)),
        data.draw(st.integers(1, 33)),
        data.draw(st.integers(1, 50)),
    )
    t = data.draw(TEMPS)
    q = data.draw(features(n, d)).requires_grad_(True)
    k = data.draw(features(n, d)).requires_grad_(True)
    queue = data.draw(features(kq, d))
    check_loss(
        lambda a, b: ops.moco_loss(a, b, queue, temperature=t),
        lambda a, b: ref_contrastive.moco_loss(a, b, queue, temperature=t),
        (q, k),
    )


@given(st.data())
def test_low_precision_contrastive_is_finite_and_close(data):
    # float32 / bfloat16 / float16 at temperatures down to 0.01: finite, and as close to the
    # float64 result as the flash-attention rule asks
    dtype = data.draw(st.sampled_from([torch.float32, torch.bfloat16, torch.float16]))
    n, d = data.draw(st.integers(1, 20)), data.draw(st.integers(1, 40))
    t = data.draw(st.floats(0.01, 1.0))
    z1, z2 = data.draw(features(n, d)), data.draw(features(n, d))
    a, b = z1.to(dtype).requires_grad_(True), z2.to(dtype).requires_grad_(True)
    out = ops.nt_xent(a, b, temperature=t)
    out.backward()
    # the loss in float32 (documented), gradients in the inputs' dtype
    assert out.dtype == torch.float32 and a.grad is not None and a.grad.dtype == dtype
    exact = ref_contrastive.nt_xent(a.detach().double(), b.detach().double(), temperature=t)
    eager = ref_contrastive.nt_xent(a.detach(), b.detach(), temperature=t)
    assert torch.isfinite(out) and torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all()
    # flash-attention's rule against the same-dtype eager reference (which normalises in dtype)
    err = abs(out.double().item() - exact.item())
    # slack: a few float32 ulps of the logits' magnitude 1/t (unit rows), the condition
    # magnitude of the loss (N = 1 has loss 0 = lse - positive, each rounded at 1/t)
    slack = 1e-6 * (1 + abs(exact.item())) + 8 * 2**-23 / t
    assert err <= 2 * abs(eager.double().item() - exact.item()) + slack


# --------------------------------------------------------------------------------------------
# invalid combinations raise the documented error, never crash


@given(st.data())
def test_invalid_contrastive_arguments_raise(data):
    n, d = data.draw(st.integers(1, 6)), data.draw(st.integers(1, 6))
    q, k = torch.randn(n, d), torch.randn(n, d)
    case = data.draw(
        st.sampled_from(
            ["d_mismatch", "temperature", "scale", "labels", "dtype", "empty", "queue", "n_gt_m"]
        )
    )
    bad = data.draw(st.sampled_from([0.0, -1.0, -1e-9, math.nan]))
    if case == "d_mismatch":
        call = lambda: ops.info_nce(q, torch.randn(n, d + 1))  # noqa: E731
    elif case == "temperature":
        call = lambda: ops.nt_xent(q, k, temperature=bad)  # noqa: E731
    elif case == "scale":
        call = lambda: ops.clip_loss(q, k, torch.tensor(bad))  # noqa: E731
    elif case == "labels":
        off = data.draw(st.sampled_from([-1, n, n + 100]))
        call = lambda: ops.info_nce(q, k, labels=torch.full((n,), off))  # noqa: E731
    elif case == "dtype":
        call = lambda: ops.info_nce(q, k.double())  # noqa: E731
    elif case == "empty":
        call = lambda: ops.nt_xent(q[:0], k[:0])  # noqa: E731
    elif case == "queue":
        call = lambda: ops.moco_loss(q, k, torch.randn(5, d + 1))  # noqa: E731
    else:
        call = lambda: ops.info_nce(torch.randn(n + 1, d), k)  # noqa: E731
    try:
        call()
    except (ValueError, TypeError) as e:
        assert str(e)
    else:
        raise AssertionError(f"{case} with {bad} was accepted")


@given(st.data())
def test_invalid_masking_arguments_raise(data):
    case = data.draw(st.sampled_from(["ratio", "patch", "ids", "restore", "mask", "dtype"]))
    x = torch.randn(2, 6, 4)
    imgs = torch.randn(2, 3, 8, 8)
    if case == "ratio":
        r = data.draw(st.sampled_from([-0.1, 1.0, 1.5, math.nan]))
        call = lambda: ops.random_masking(x, r)  # noqa: E731
    elif case == "patch":
        p = data.draw(st.sampled_from([0, -2, 3, 5, 16]))
        call = lambda: ops.patchify(imgs, p)  # noqa: E731
    elif case == "ids":
        i = data.draw(st.sampled_from([-1, 4, 1000]))
        call = lambda: ops.gather_patches(imgs, torch.tensor([[0, i], [1, 2]]), 4)  # noqa: E731
    elif case == "restore":
        ids = torch.tensor([[0, 1, 2, 3, 4, 9]] * 2)
        call = lambda: ops.restore_masked(x, torch.zeros(4), ids)  # noqa: E731
    elif case == "mask":
        call = lambda: ops.masked_patch_loss(  # noqa: E731
            torch.randn(2, 4, 48), imgs, torch.ones(2, 5), 4
        )
    else:
        call = lambda: ops.patchify(imgs.to(torch.int32), 4)  # noqa: E731
    try:
        call()
    except (ValueError, TypeError) as e:
        assert str(e)
    else:
        raise AssertionError(f"{case} was accepted")
