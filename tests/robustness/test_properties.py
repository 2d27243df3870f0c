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

import contextlib
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given
from hypothesis import strategies as st

from pyssl import augment as A
from pyssl import ops, samplers
from pyssl.ops import augment as ops_augment
from pyssl.reference import augment as ref_augment
from pyssl.reference import contrastive as ref_contrastive
from pyssl.reference import masking as ref_masking
from pyssl.reference import samplers as ref_samplers
from pyssl.reference import text as ref_text

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


def check_loss(fn, ref_fn, inputs, rtol=1e-9, temperature=None):
    """Value and gradients within ``rtol`` of the reference's scale. ``temperature`` set: the
    op L2-normalises its inputs, whose backward ``(g - u (u.g)) / |z|`` rounds to about
    ``eps * |g| / |z|`` per row with ``|g| <= 2 / t``; for D = 1 the exact gradient is 0 and only
    that rounding is left, so each row's bound also holds ``(1 / t) / |z_row|``."""
    out, g = grads(fn, *inputs)
    ref, g_ref = grads(ref_fn, *inputs)
    scale = ref.abs().max().item()
    close(out, ref, rtol, 1.0 + scale)
    wanted = [x for x in inputs if x.requires_grad]
    for a, r, x in zip(g, g_ref, wanted):
        row_noise = 0.0
        if temperature is not None:
            row_noise = (1.0 / temperature) / x.detach().norm(dim=1, keepdim=True).clamp_min(1e-12)
        close(a, r, rtol, 1.0 + r.abs().max().item() + row_noise)


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
        temperature=t if normalize else None,
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
        temperature=t,
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
    # slack: a few float32 ulps of the logits' magnitude 1/t (unit rows), the condition
    # magnitude of the loss (N = 1 has loss 0 = lse - positive, each rounded at 1/t)
    slack = 1e-6 * (1 + abs(exact.item())) + 8 * 2**-23 / t
    # the kernel accumulates in float32: exact to that slack on the rows it is given (the op
    # normalises in the inputs' dtype, as eager does)
    unit = [F.normalize(x.detach(), dim=1).double() for x in (a, b)]
    given_rows = ref_contrastive.nt_xent(*unit, temperature=t, normalize=False)
    assert abs(out.double().item() - given_rows.item()) <= slack
    # flash-attention's rule against the same-dtype eager reference. Eager's loss is itself
    # rounded to the dtype and can land arbitrarily near the exact value by luck (the long
    # profile found |eager - exact| = 1.3e-5 at a loss of 0.9 in bf16, half an ulp being 2e-3),
    # so the bar is at least one rounding of the loss in that dtype.
    err = abs(out.double().item() - exact.item())
    ulp = torch.finfo(dtype).eps * abs(exact.item())
    assert err <= 2 * max(abs(eager.double().item() - exact.item()), ulp) + slack


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


# --------------------------------------------------------------------------------------------
# augmentation family: augment_view (the batch-tensor custom op and the image-list path) and the
# recipes' sample/apply, against the float64 reference of torchvision's formulas


def _side(draw, hi: int = 40) -> int:
    return draw(st.one_of(st.just(1), st.integers(1, hi)))


@st.composite
def uint8_images(draw):
    """``(input, hwc)``: a batch of uint8 RGB images in one of the accepted layouts (channels
    last or first, contiguous or not, numpy with negative strides, a list of mixed sizes and
    layouts) and the same images as ``[H, W, 3]`` tensors for the reference. Sizes from 1x1."""
    b = draw(st.integers(1, 3))
    layout = draw(st.sampled_from(["hwc", "chw", "chw_view", "strided", "numpy_flipped", "list"]))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    # every level, or a few: the clamps, the solarize threshold (128 is inverted, 127 is not)
    levels = draw(st.sampled_from([None, (0, 127, 128, 255), (0, 255), (128,)]))

    def pixels(h: int, w: int) -> torch.Tensor:
        if levels is None:
            return torch.randint(0, 256, (h, w, 3), dtype=torch.uint8, generator=g)
        pick = torch.randint(0, len(levels), (h, w, 3), generator=g)
        return torch.tensor(levels, dtype=torch.uint8)[pick]

    if layout == "list":
        hwc = [pixels(_side(draw), _side(draw)) for _ in range(b)]
        # [3, H, 3] would read as channels last (the documented rule): channels first only where
        # the width is not 3
        first = [t.shape[1] != 3 and draw(st.booleans()) for t in hwc]
        return [t.permute(2, 0, 1).contiguous() if f else t for t, f in zip(hwc, first)], hwc
    h, w = _side(draw), _side(draw)
    if layout in ("chw", "chw_view") and w == 3:
        layout = "hwc"
    batch = torch.stack([pixels(h, w) for _ in range(b)])
    if layout == "hwc":
        x = batch
    elif layout == "chw":
        x = batch.permute(0, 3, 1, 2).contiguous()
    elif layout == "chw_view":
        x = batch.permute(0, 3, 1, 2)  # channels first, not contiguous
    elif layout == "strided":  # every other column of a wider image
        wide = torch.zeros(b, h, 2 * w, 3, dtype=torch.uint8)
        wide[:, :, ::2] = batch
        x = wide[:, :, ::2]
    else:  # negative strides: read through a copy
        x = np.flip(batch.numpy()[:, ::-1], axis=1)
    return x, list(batch)


def _factor(lo: float, hi: float, identity: float):
    return st.one_of(st.just(identity), st.floats(lo, hi))


@st.composite
def view_params(draw, sizes):
    """A params table (``PARAM_COLUMNS``) for images of ``sizes``: crop boxes anywhere inside
    each image, every step's parameter over its valid range (identity values included)."""
    rows = []
    for h, w in sizes:
        top, left = draw(st.integers(0, h - 1)), draw(st.integers(0, w - 1))
        order = draw(st.permutations(range(4)))
        row = dict(
            top=top,
            left=left,
            height=draw(st.integers(1, h - top)),
            width=draw(st.integers(1, w - left)),
            flip=draw(st.integers(0, 1)),
            brightness=draw(_factor(0.0, 3.0, 1.0)),
            contrast=draw(_factor(0.0, 3.0, 1.0)),
            saturation=draw(_factor(0.0, 3.0, 1.0)),
            hue=draw(_factor(-0.5, 0.5, 0.0)),
            order0=order[0],
            order1=order[1],
            order2=order[2],
            order3=order[3],
            grayscale=draw(st.integers(0, 1)),
            sigma=draw(st.one_of(st.just(0.0), st.floats(0.05, 5.0))),
            solarize=draw(st.integers(0, 1)),
        )
        rows.append([float(row[c]) for c in ops_augment.PARAM_COLUMNS])
    return torch.tensor(rows, dtype=torch.float64)


_NEAR = 0.05  # levels: a pixel this close to the solarize threshold may land on either side


@contextlib.contextmanager
def one_thread():
    """Runs the eager references on one intra-op thread: the same float64 results, and on a
    loaded machine tiny tensors otherwise wait on the thread pool (30x slower here)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def augment_reference(hwc, params, threshold: float = 128.0, **kw):
    """The float64 reference, one ``[H, W, 3]`` image and one params row at a time:
    ``(exact, flipped, near)``, where ``near`` marks the solarized pixels whose value before
    solarize lies within ``_NEAR`` levels of the threshold (float32 rounding may put the
    kernel's pixel on the other side there, as torchvision's uint8 path would after rounding)
    and ``flipped`` is the view with those pixels on the other side."""
    exact, other, near = [], [], []
    for t, row in zip(hwc, params.tolist()):
        args = ops_augment.unpack_row(row)
        solarize, args["solarize_"] = args["solarize_"], False
        with one_thread():  # the view in [0, 1] before solarize, then solarize and normalize
            pre = ref_augment.apply_one(
                t.permute(2, 0, 1), **args, **dict(kw, mean=(0, 0, 0), std=(1, 1, 1))
            )
            done = ref_augment.solarize(pre, threshold / 255.0) if solarize else pre
            flipped = torch.where(done == pre, 1.0 - pre, pre)  # the other side of the threshold
            exact.append(ref_augment.normalize(done, kw["mean"], kw["std"]))
            other.append(ref_augment.normalize(flipped, kw["mean"], kw["std"]))
        near.append(((pre * 255 - threshold).abs() < _NEAR) if solarize else pre < -1)
    return torch.stack(exact), torch.stack(other), torch.stack(near)


_UNIT_ROUNDOFF = {torch.float32: 0.0, torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}


def within_a_level(out: torch.Tensor, reference, std) -> None:
    """Every output within one level of the 0-255 scale of the float64 reference (the family's
    bar) plus the rounding of a 16-bit output dtype; near the solarize threshold, within a level
    of either side."""
    exact, other, near = reference
    assert not out.isnan().any(), "NaN in the output"
    s = torch.tensor(std, dtype=torch.float64).view(1, 3, 1, 1) * 255
    unit = _UNIT_ROUNDOFF[out.dtype]
    excess = []
    for ref in (exact, other):
        err = (out.double() - ref).abs() * s
        excess.append(err - (1.0 + 1e-9 + ref.abs() * s * unit))
    worst = torch.where(near, torch.minimum(*excess), excess[0]).max().item()
    assert worst <= 0, f"one level exceeded by {worst:.4g} levels"


def _sizes_of(hwc) -> list[tuple[int, int]]:
    return [(int(t.shape[0]), int(t.shape[1])) for t in hwc]


@given(uint8_images(), st.data())
def test_augment_view_matches_reference(images, data):
    x, hwc = images
    params = data.draw(view_params(_sizes_of(hwc)))
    size = data.draw(st.integers(1, 24))
    kw = dict(
        size=size,
        interpolation=data.draw(st.sampled_from(ops_augment.INTERPOLATIONS)),
        blur_kernel_size=data.draw(st.sampled_from([k for k in range(1, 16, 2) if k // 2 < size])),
        mean=tuple(data.draw(st.floats(0.0, 1.0)) for _ in range(3)),
        std=tuple(data.draw(st.floats(0.05, 2.0)) for _ in range(3)),
    )
    dtype = data.draw(st.sampled_from(ops_augment.OUT_DTYPES))
    # the solarize threshold, 0-255 scale: the ends, the default, any value between
    threshold = data.draw(st.one_of(st.sampled_from([0.0, 128.0, 255.0]), st.floats(0, 255)))
    out = ops_augment.augment_view(x, params, **kw, solarize_threshold=threshold, dtype=dtype)
    assert out.shape == (len(hwc), 3, size, size) and out.dtype == dtype
    within_a_level(out, augment_reference(hwc, params, threshold, **kw), kw["std"])


def _probability():
    return st.one_of(st.sampled_from([0.0, 1.0]), st.floats(0.0, 1.0))


@st.composite
def view_configs(draw):
    """A valid ``ViewConfig``: every range and probability drawn, edge values included."""
    size = draw(st.integers(1, 24))
    s0 = draw(st.floats(0.0, 1.0))
    # ratio bounds keep torchvision's fallback crop (the whole image cut to the nearest allowed
    # ratio) at least one pixel high and wide on a 1-pixel image: see
    # test_fallback_crop_of_a_one_pixel_image
    r0 = draw(st.floats(0.1, 1.9))
    b0 = draw(st.floats(0.05, 3.0))
    jitter = st.one_of(st.floats(0.0, 1.5), st.tuples(st.floats(0.0, 1.0), st.floats(1.0, 2.5)))
    kernel = draw(
        st.one_of(st.none(), st.sampled_from([k for k in range(1, 16, 2) if k // 2 < size]))
    )
    return A.ViewConfig(
        size=size,
        scale=(s0, draw(st.floats(s0, 1.0))),
        ratio=(r0, draw(st.floats(max(r0, 0.51), 8.0))),
        interpolation=draw(st.sampled_from(ops_augment.INTERPOLATIONS)),
        hflip_p=draw(_probability()),
        jitter_p=draw(_probability()),
        brightness=draw(jitter),
        contrast=draw(jitter),
        saturation=draw(jitter),
        hue=draw(st.floats(0.0, 0.5)),
        grayscale_p=draw(_probability()),
        blur_p=draw(_probability()),
        blur_kernel_size=kernel,
        blur_sigma=(b0, draw(st.floats(b0, 5.0))),
        solarize_p=draw(_probability()),
        solarize_threshold=draw(st.one_of(st.just(128.0), st.floats(0.0, 255.0))),
        mean=tuple(draw(st.floats(0.0, 1.0)) for _ in range(3)),
        std=tuple(draw(st.floats(0.05, 2.0)) for _ in range(3)),
    )


@given(st.lists(view_configs(), min_size=1, max_size=2), uint8_images(), st.data())
def test_recipe_sample_and_apply_match_reference(configs, images, data):
    x, hwc = images
    dtype = data.draw(st.sampled_from(ops_augment.OUT_DTYPES))
    seed = data.draw(st.integers(0, 2**31 - 1))
    aug = A.Augment(configs, dtype=dtype)
    params = aug.sample(x, torch.Generator().manual_seed(seed))
    views = aug.apply(x, params)
    again = aug(x, seed=seed)  # the same seed, the same views
    assert all(torch.equal(a, b) for a, b in zip(views, again))
    sizes = torch.tensor(_sizes_of(hwc))
    for cfg, p, v in zip(configs, params, views):
        box = p.boxes
        assert bool(((box[:, :2] >= 0) & (box[:, 2:] >= 1)).all())
        assert bool((box[:, :2] + box[:, 2:] <= sizes).all())
        assert v.shape == (len(hwc), 3, cfg.size, cfg.size) and v.dtype == dtype
        kw = dict(
            size=cfg.size,
            interpolation=cfg.interpolation,
            blur_kernel_size=cfg.kernel_size,
            mean=cfg.mean,
            std=cfg.std,
        )
        reference = augment_reference(hwc, p.pack(), cfg.solarize_threshold, **kw)
        within_a_level(v, reference, cfg.std)


def _raises(call, what: str) -> None:
    try:
        call()
    except (ValueError, TypeError) as e:
        assert str(e)
    else:
        raise AssertionError(f"{what} was accepted")


AUGMENT_BAD = [
    "box_outside",
    "box_fraction",
    "box_empty",
    "factor_negative",
    "not_finite",
    "hue",
    "order",
    "sigma",
    "params_dtype",
    "params_shape",
    "size",
    "kernel",
    "interpolation",
    "std",
    "mean_len",
    "threshold",
    "out_dtype",
    "image_dtype",
    "channels",
    "empty",
    "config",
]


@given(st.sampled_from(AUGMENT_BAD), st.data())
def test_invalid_augment_arguments_raise(case, data):
    h, w = data.draw(st.integers(1, 12)), data.draw(st.integers(1, 12))
    b = data.draw(st.integers(1, 3))
    img = torch.zeros(b, h, w, 3, dtype=torch.uint8)
    cols = {c: i for i, c in enumerate(ops_augment.PARAM_COLUMNS)}
    identity = dict(brightness=1.0, contrast=1.0, saturation=1.0, order1=1, order2=2, order3=3)
    row = [float(identity.get(c, 0.0)) for c in ops_augment.PARAM_COLUMNS]
    row[cols["height"]], row[cols["width"]] = h, w
    p = torch.tensor([row] * b, dtype=torch.float64)
    kw: dict = dict(size=data.draw(st.integers(1, 8)))
    r = data.draw(st.integers(0, b - 1))  # the row made invalid
    if case == "box_outside":
        col = data.draw(st.sampled_from(["top", "left", "height", "width"]))
        extent = h if col in ("top", "height") else w
        p[r, cols[col]] = data.draw(st.sampled_from([-1, extent + 1, 2 * extent + 3]))
    elif case == "box_fraction":
        p[r, cols[data.draw(st.sampled_from(["top", "left", "height", "width"]))]] -= 0.5
    elif case == "box_empty":
        p[r, cols[data.draw(st.sampled_from(["height", "width"]))]] = 0
    elif case == "factor_negative":
        col = data.draw(st.sampled_from(["brightness", "contrast", "saturation"]))
        p[r, cols[col]] = -data.draw(st.floats(1e-9, 10.0))
    elif case == "not_finite":
        col = data.draw(st.sampled_from(ops_augment.PARAM_COLUMNS))
        p[r, cols[col]] = data.draw(st.sampled_from([math.nan, math.inf, -math.inf]))
    elif case == "hue":
        p[r, cols["hue"]] = data.draw(st.sampled_from([-1.0, -0.5001, 0.5001, 3.0]))
    elif case == "order":
        order = data.draw(st.lists(st.integers(-1, 4), min_size=4, max_size=4))
        assume(sorted(order) != [0, 1, 2, 3])
        p[r, cols["order0"] : cols["order3"] + 1] = torch.tensor(order, dtype=torch.float64)
    elif case == "sigma":
        p[r, cols["sigma"]] = -data.draw(st.floats(1e-9, 5.0))
    elif case == "params_dtype":
        p = p.to(data.draw(st.sampled_from([torch.float32, torch.int64])))
    elif case == "params_shape":
        p = data.draw(st.sampled_from([p[:, :-1], p[:0], torch.cat([p, p]), p[0]]))
    elif case == "size":
        kw["size"] = data.draw(st.sampled_from([0, -3, 2.0, True, None]))
    elif case == "kernel":
        k = data.draw(st.sampled_from([0, 2, -1, 2 * kw["size"] + 1, 3.0]))
        kw["blur_kernel_size"] = k
    elif case == "interpolation":
        kw["interpolation"] = data.draw(st.sampled_from(["nearest", "BILINEAR", "", None]))
    elif case == "std":
        kw["std"] = (0.2, data.draw(st.sampled_from([0.0, -0.1])), 0.2)
    elif case == "mean_len":
        kw["mean"] = data.draw(st.sampled_from([(0.5, 0.5), (0.5,) * 4]))
    elif case == "threshold":  # 0-255 scale
        kw["solarize_threshold"] = data.draw(st.sampled_from([-0.5, 255.5, math.nan, True, "1"]))
    elif case == "out_dtype":
        kw["dtype"] = data.draw(st.sampled_from([torch.float64, torch.int32, torch.uint8]))
    elif case == "image_dtype":
        img = img.to(data.draw(st.sampled_from([torch.float32, torch.int32, torch.bool])))
    elif case == "channels":
        c = data.draw(st.sampled_from([1, 2, 4]))
        img = torch.zeros(b, 4, 5, c, dtype=torch.uint8)  # neither end is 3
    elif case == "empty":
        img = data.draw(
            st.sampled_from([[], img[:0], [torch.zeros(0, w, 3, dtype=torch.uint8)] * b])
        )
    else:  # a recipe's configuration
        bad = data.draw(
            st.sampled_from(
                [
                    dict(hflip_p=1.5),
                    dict(blur_p=math.nan),
                    dict(scale=(0.9, 0.1)),
                    dict(scale=(-0.1, 1.0)),
                    dict(ratio=(0.0, 1.0)),
                    dict(hue=0.6),
                    dict(brightness=-0.1),
                    dict(saturation=(1.2, 0.8)),
                    dict(blur_sigma=(0.0, 1.0)),
                    dict(blur_kernel_size=4),
                    dict(size=2, blur_kernel_size=5),
                    dict(std=(1.0, 0.0, 1.0)),
                    dict(interpolation="nearest"),
                    dict(solarize_threshold=-1.0),
                    dict(solarize_threshold=math.inf),
                ]
            )
        )
        _raises(lambda: A.ViewConfig(**bad), f"ViewConfig({bad})")
        return
    _raises(lambda: ops_augment.augment_view(img, p, **kw), case)


def test_fallback_crop_of_a_one_pixel_image():
    aug = A.Augment([A.ViewConfig(size=4, scale=(0.0, 0.0), ratio=(2.0, 3.0))])
    img = torch.zeros(1, 1, 1, 3, dtype=torch.uint8)
    (p,) = aug.sample(img, torch.Generator().manual_seed(0))
    assert p.boxes[0, 2] >= 1 and p.boxes[0, 3] >= 1
    aug.apply(img, [p])


# --------------------------------------------------------------------------------------------
# text family: token masking (invariants, and the counter-based reference draw for draw), span
# and time masks, the fused masked / causal LM losses, the numba mask samplers


@st.composite
def token_batch(draw, vocab):
    b, t = draw(st.integers(1, 5)), draw(st.integers(1, 64))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    ids = torch.randint(0, vocab, (b, t), generator=g)
    special = None
    if draw(st.booleans()):
        special = torch.rand(b, t, generator=g) < draw(st.floats(0.0, 1.0))
    return ids, special, g


@given(st.data())
def test_mask_tokens_invariants_and_counter_reference(data):
    vocab = data.draw(st.one_of(st.integers(1, 8), st.integers(1, 2**32 - 1)))
    ids, special, g = data.draw(token_batch(vocab))
    b, t = ids.shape
    # int32 ids only where every id fits (see test_mask_tokens_int32_ids_with_a_huge_vocabulary)
    dtype = data.draw(
        st.sampled_from([torch.int64, torch.int32] if vocab <= 2**31 else [torch.int64])
    )
    ids = ids.to(dtype)
    if data.draw(st.booleans()):
        ids = ids.t().contiguous().t()  # column-major, same values
    word_ids = None
    if data.draw(st.booleans()):
        word_ids = torch.randint(-1, t, (b, t), generator=g)  # words need not be contiguous
    mask_id = data.draw(st.integers(0, vocab - 1))
    prob = data.draw(_probability())
    mr = data.draw(_probability())
    rr = data.draw(st.one_of(st.just(0.0), st.just(1.0 - mr), st.floats(0.0, 1.0 - mr)))
    kw = dict(
        vocab_size=vocab,
        mask_token_id=mask_id,
        mlm_probability=prob,
        mask_replace_prob=mr,
        random_replace_prob=rr,
        special_tokens_mask=special,
        word_ids=word_ids,
    )
    seed = data.draw(st.integers(0, 2**63 - 1))
    masked, labels = ops.mask_tokens(ids, **kw, generator=torch.Generator().manual_seed(seed))
    assert masked.shape == labels.shape == ids.shape
    assert masked.dtype == labels.dtype == dtype
    chosen = labels != -100
    assert torch.equal(labels[chosen], ids[chosen])  # the original id where chosen
    assert torch.equal(masked[~chosen], ids[~chosen])  # unchanged elsewhere
    assert bool(((masked >= 0) & (masked < vocab)).all())
    allowed = torch.ones_like(chosen)
    if special is not None:
        allowed &= ~special
    if word_ids is not None:
        allowed &= word_ids >= 0
        for r in range(b):  # whole words: one draw per word
            for w in word_ids[r][allowed[r]].unique().tolist():
                c = chosen[r][(word_ids[r] == w) & allowed[r]]
                assert bool(c.all() or not c.any())
    assert not chosen[~allowed].any()  # special tokens and tokens of no word: never
    if prob == 0.0:
        assert not chosen.any()
    if prob == 1.0:
        assert torch.equal(chosen, allowed)
    if mr == 1.0:
        assert bool((masked[chosen] == mask_id).all())
    if mr == 0.0 and rr == 0.0:
        assert torch.equal(masked, ids)
    if rr == 0.0:  # the mask token or the original
        assert bool(((masked[chosen] == mask_id) | (masked[chosen] == ids[chosen])).all())
    # the eager counter-based reference, draw for draw, from the same generator state (its
    # random ids overflow int64 above 2**31 ids: see test_mask_tokens_reference_huge_vocabulary)
    if vocab > 2**31:
        return
    ref = ops.mask_tokens(
        ids, **kw, generator=torch.Generator().manual_seed(seed), backend="reference"
    )
    assert torch.equal(ref[0], masked) and torch.equal(ref[1], labels)


def test_mask_tokens_int32_ids_with_a_huge_vocabulary():
    ids = torch.randint(0, 2**31 - 1, (4, 64), dtype=torch.int32)
    try:
        masked, _ = ops.mask_tokens(
            ids,
            vocab_size=2**32 - 1,
            mask_token_id=0,
            mlm_probability=1.0,
            mask_replace_prob=0.0,
            random_replace_prob=1.0,
            generator=torch.Generator().manual_seed(0),
        )
    except (ValueError, TypeError):
        return  # refusing the combination is fine
    assert bool((masked >= 0).all())


def test_mask_tokens_reference_huge_vocabulary():
    ids = torch.zeros(4, 64, dtype=torch.int64)
    kw = dict(vocab_size=2**32 - 1, mask_token_id=0, mlm_probability=1.0, mask_replace_prob=0.0)
    kw["random_replace_prob"] = 1.0
    got = ops.mask_tokens(ids, **kw, generator=torch.Generator().manual_seed(0))
    ref = ops.mask_tokens(
        ids, **kw, generator=torch.Generator().manual_seed(0), backend="reference"
    )
    assert bool((got[0] >= 0).all())
    assert torch.equal(ref[0], got[0])


@given(st.data())
def test_span_mask_invariants(data):
    vocab = data.draw(st.integers(1, 500))
    ids, special, _ = data.draw(token_batch(vocab))
    max_span = data.draw(st.integers(1, 12))
    prob, mr = data.draw(_probability()), data.draw(_probability())
    rr = data.draw(st.one_of(st.just(0.0), st.floats(0.0, 1.0 - mr)))
    mask_id = data.draw(st.integers(0, vocab - 1))
    kw = dict(
        vocab_size=vocab,
        mask_token_id=mask_id,
        mlm_probability=prob,
        p=data.draw(st.one_of(st.just(1.0), st.floats(1e-3, 1.0))),
        max_span=max_span,
        mask_replace_prob=mr,
        random_replace_prob=rr,
        special_tokens_mask=special,
    )
    seed = data.draw(st.integers(0, 2**63 - 1))
    masked, labels = ops.span_mask(ids, **kw, generator=torch.Generator().manual_seed(seed))
    assert masked.shape == labels.shape == ids.shape and masked.dtype == ids.dtype
    chosen = labels != -100
    assert torch.equal(labels[chosen], ids[chosen])
    assert torch.equal(masked[~chosen], ids[~chosen])
    assert bool(((masked >= 0) & (masked < vocab)).all())
    allowed = torch.ones_like(chosen) if special is None else ~special
    assert not chosen[~allowed].any()
    # every row chooses exactly its budget, round(prob * n) half up of its n allowed tokens
    budget = (prob * allowed.sum(1).double() + 0.5).floor().long()
    assert torch.equal(chosen.sum(1), budget)
    if mr == 1.0:
        assert bool((masked[chosen] == mask_id).all())
    if mr == 0.0 and rr == 0.0:
        assert torch.equal(masked, ids)
    again = ops.span_mask(ids, **kw, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(again[0], masked) and torch.equal(again[1], labels)


@given(st.data())
def test_span_sampler_invariants_and_reference(data):
    b, t = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 80))
    seed = data.draw(st.integers(0, 2**63 - 1))
    g = np.random.default_rng(seed)
    allowed = g.random((b, t)) >= data.draw(st.floats(0.0, 1.0))
    prob = data.draw(_probability())
    p = data.draw(st.one_of(st.just(1.0), st.floats(1e-3, 1.0)))
    max_span = data.draw(st.integers(1, 12))
    chosen, span_id = samplers.span_mask_batch(
        allowed, prob, p, max_span, np.random.default_rng(seed)
    )
    assert chosen.shape == span_id.shape == (b, t) and chosen.dtype == np.bool_
    assert np.array_equal(chosen, span_id >= 0)
    assert not chosen[~allowed].any()
    rng = np.random.default_rng(seed)
    for r in range(b):
        budget = int(prob * allowed[r].sum() + 0.5)
        assert chosen[r].sum() == budget
        ids = span_id[r][chosen[r]]
        n = int(ids.max()) + 1 if ids.size else 0
        assert np.array_equal(np.unique(ids), np.arange(n))  # numbered 0..n-1 per row
        for s in range(n):  # each span: one contiguous run of at most max_span tokens
            where = np.flatnonzero(span_id[r] == s)
            assert len(where) <= max_span and where[-1] - where[0] == len(where) - 1
        want = ref_text.span_mask(t, rng, budget=budget, p=p, max_span=max_span, allowed=allowed[r])
        assert np.array_equal(want[0], chosen[r]) and np.array_equal(want[1], span_id[r])


@given(st.data())
def test_time_mask_matches_wav2vec2_and_respects_lengths(data):
    b, t = data.draw(st.integers(0, 4)), data.draw(st.integers(1, 100))
    mask_length = data.draw(st.integers(1, t))
    mask_prob = data.draw(_probability())
    min_masks = data.draw(st.integers(0, t // mask_length + 2))
    lengths = None
    if data.draw(st.booleans()):
        lengths = np.array(data.draw(st.lists(st.integers(0, t), min_size=b, max_size=b)))
    seed = data.draw(st.integers(0, 2**63 - 1))
    got = ops.time_mask((b, t), mask_prob, mask_length, min_masks, lengths, rng=seed)
    want = ref_text.compute_mask_indices(
        (b, t), mask_prob, mask_length, np.random.default_rng(seed), lengths, min_masks
    )
    assert got.shape == (b, t) and got.dtype == np.bool_
    assert np.array_equal(got, want)
    lens = np.full(b, t) if lengths is None else lengths
    for r in range(b):
        assert not got[r, lens[r] :].any()  # nothing at or beyond the row's length
        most = max(min(int(mask_prob * lens[r] / mask_length + 1), t // mask_length), min_masks)
        most = min(most, t // mask_length, max(lens[r] - mask_length + 1, 0))
        assert got[r].sum() <= most * mask_length
        if got[r].any():
            assert got[r].sum() >= mask_length


def _allclose(out: torch.Tensor, ref: torch.Tensor, rtol: float, atol: float) -> None:
    out, ref = out.double(), ref.double()
    assert not out.isnan().any(), "NaN in the output"
    err = (out - ref).abs()
    bound = atol + rtol * ref.abs()
    assert (err <= bound).all(), f"max error {err.max().item():.3g} (atol {atol:.3g})"


def _low_precision(out: torch.Tensor, eager: torch.Tensor, exact: torch.Tensor) -> None:
    """Flash-attention's rule (tests/helpers.py): the error against float64 at most twice the
    same-dtype eager reference's, plus a slack of one rounding of the output dtype at the
    largest magnitude (results the eager reference happens to hit exactly)."""
    exact = exact.double()
    err = (out.double() - exact).abs().max().item()
    ref_err = (eager.double() - exact).abs().max().item()
    slack = 2.0**-8 * exact.abs().max().item() + 1e-6
    assert err <= 2 * ref_err + slack, f"error {err:.3g} vs eager reference's {ref_err:.3g}"


def _lm_grads(fn, inputs, labels, **kw):
    """Value of ``fn(hidden, weight, labels, bias)`` and the gradients of its sum to the
    inputs that require one."""
    leaves = [x.detach().clone().requires_grad_(x.requires_grad) if x is not None else None
              for x in inputs]  # fmt: skip
    out = fn(leaves[0], leaves[1], labels, leaves[2], **kw)
    wanted = [x for x in leaves if x is not None and x.requires_grad]
    grads = torch.autograd.grad(out.sum(), wanted) if wanted else ()
    return out.detach(), grads


@given(st.data())
def test_lm_losses_match_reference_with_gradients(data):
    causal = data.draw(st.booleans())
    dtype = data.draw(st.sampled_from([torch.float64, torch.float32, torch.bfloat16]))
    lead = data.draw(
        st.one_of(
            st.tuples(st.integers(1, 30)),
            st.tuples(st.integers(1, 3), st.integers(1, 9)),
        )
    )
    h = data.draw(st.integers(1, 24))
    v = data.draw(st.one_of(st.integers(1, 40), st.integers(1000, 1100)))  # across a chunk
    mag = (-3, 2) if dtype == torch.float64 else (-1, 0)
    hidden = data.draw(tensors((*lead, h), torch.float64, mag)).to(dtype)
    weight = (data.draw(tensors((v, h), torch.float64, (0, 0))) / math.sqrt(h)).to(dtype)
    bias = data.draw(st.one_of(st.none(), tensors((v,), torch.float64, (-1, 0), layout=False)))
    bias = bias.to(dtype) if bias is not None else None
    ignore_index = data.draw(st.sampled_from([-100, -1, 0, v + 7]))
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31 - 1)))
    labels = torch.randint(0, v, lead, generator=g)
    labels[torch.rand(lead, generator=g) >= data.draw(st.floats(0.0, 1.0))] = ignore_index
    labels = labels.to(data.draw(st.sampled_from([torch.int64, torch.int32])))
    reduction = data.draw(st.sampled_from(["mean", "sum", "none"]))
    # which inputs take a gradient decides the path (fused forward+backward or not)
    for x in (hidden, weight, bias):
        if x is not None:
            x.requires_grad_(data.draw(st.booleans()))
    kw = dict(ignore_index=ignore_index, reduction=reduction)
    op = ops.causal_lm_loss if causal else ops.masked_lm_loss
    ref_fn = ref_text.causal_lm_loss if causal else ref_text.masked_lm_loss
    out, g_out = _lm_grads(
        lambda a, b, lab, c, **k: op(a, b, lab, bias=c, **k), (hidden, weight, bias), labels, **kw
    )
    shape = (*lead[:-1], lead[-1] - 1) if causal else lead
    assert out.dtype == dtype and out.shape == (shape if reduction == "none" else ())
    exact_in = [x.double().requires_grad_(x.requires_grad) if x is not None else None
                for x in (hidden, weight, bias)]  # fmt: skip
    with one_thread():
        exact, g_exact = _lm_grads(ref_fn, exact_in, labels.long(), **kw)
    if reduction == "mean" and bool(exact.isnan()):  # no labelled position: NaN, as torch
        assert bool(out.isnan())
        return
    if exact.numel() == 0:  # causal with T = 1, "none": no position predicts anything
        assert all(bool((a == 0).all()) for a in g_out)
        return
    logits = 1.0 + (hidden.double() @ weight.double().T).abs().max().item() if out.numel() else 1.0
    if dtype == torch.float64:
        _allclose(out, exact, 1e-9, 1e-9 * logits)
        for a, r in zip(g_out, g_exact):
            _allclose(a, r, 1e-9, 1e-9 * (1 + r.abs().max().item()))
    elif dtype == torch.float32:  # tests/ops/test_text.py's tolerances, at the logits' scale
        _allclose(out, exact, 1e-5, 1e-5 * logits)
        for a, r in zip(g_out, g_exact):
            _allclose(a, r, 1e-4, 1e-6 * (1 + r.abs().max().item()))
    else:
        with one_thread():
            eager, g_eager = _lm_grads(ref_fn, (hidden, weight, bias), labels.long(), **kw)
        _low_precision(out, eager, exact)
        for a, e, r in zip(g_out, g_eager, g_exact):
            assert a.dtype == dtype
            _low_precision(a, e, r)


TEXT_BAD = [
    "ids_range",
    "ids_dtype",
    "ids_dim",
    "prob",
    "replace",
    "mask_id",
    "vocab",
    "special",
    "word_ids",
    "span_p",
    "span_max",
    "time_len",
    "time_prob",
    "time_lengths",
    "time_min",
    "labels",
    "hidden_dtype",
    "weight",
    "bias",
    "reduction",
    "causal_t",
]


@given(st.sampled_from(TEXT_BAD), st.data())
def test_invalid_text_arguments_raise(case, data):
    pick = lambda *options: data.draw(st.sampled_from(options))  # noqa: E731
    ids = torch.randint(0, 50, (2, 6))
    kw: dict = dict(vocab_size=50, mask_token_id=4)
    bad_prob = pick(-0.1, 1.0001, 2.0, math.nan, math.inf)
    h, w, lab = torch.randn(2, 6, 8), torch.randn(30, 8), torch.randint(0, 30, (2, 6))
    op, args = ops.mask_tokens, (ids,)
    if case == "ids_range":
        ids[data.draw(st.integers(0, 1)), 0] = pick(-1, 50, 2**40)
        op = pick(ops.mask_tokens, ops.span_mask)
    elif case == "ids_dtype":
        args = (ids.to(pick(torch.float32, torch.int16, torch.bool)),)
    elif case == "ids_dim":
        args = (ids.view(pick((12,), (2, 3, 2))),)
    elif case == "prob":
        kw[pick("mlm_probability", "mask_replace_prob", "random_replace_prob")] = bad_prob
        op = pick(ops.mask_tokens, ops.span_mask)
    elif case == "replace":  # mask_replace_prob + random_replace_prob > 1
        kw["mask_replace_prob"] = mr = data.draw(st.floats(0.01, 1.0))
        kw["random_replace_prob"] = data.draw(st.floats(min(1.0 - mr + 1e-6, 1.0), 1.0))
        assume(mr + kw["random_replace_prob"] > 1.0 + 1e-9)
        op = pick(ops.mask_tokens, ops.span_mask)
    elif case == "mask_id":
        kw["mask_token_id"] = pick(-1, 50, 1000)
        op = pick(ops.mask_tokens, ops.span_mask)
    elif case == "vocab":
        kw.update(vocab_size=pick(0, -5, 2**32, 7.0), mask_token_id=0)
    elif case == "special":
        kw["special_tokens_mask"] = torch.zeros(pick((2, 5), (6, 2), (12,)), dtype=torch.bool)
        op = pick(ops.mask_tokens, ops.span_mask)
    elif case == "word_ids":
        kw["word_ids"] = pick(
            torch.full((2, 6), 6), torch.full((2, 6), -2), torch.zeros(2, 5, dtype=torch.int64)
        )
    elif case == "span_p":
        op, kw["p"] = ops.span_mask, pick(0.0, -0.5, 1.5, math.nan)
    elif case == "span_max":
        op, kw["max_span"] = ops.span_mask, pick(0, -3, 2.5)
    elif case.startswith("time"):
        t = data.draw(st.integers(1, 20))
        op, args, kw = ops.time_mask, ((2, t), 0.5, 2 if t >= 2 else 1), {}
        if case == "time_len":
            args = ((2, t), 0.5, pick(0, -1, t + 1, 2.0))
        elif case == "time_prob":
            args = ((2, t), bad_prob, 1)
        elif case == "time_lengths":
            kw["lengths"] = pick(np.array([t + 1, 0]), np.array([-1, 0]), np.array([t]))
        else:
            kw["min_masks"] = -1
    else:  # the losses
        op, args, kw = ops.masked_lm_loss, (h, w, lab), {}
        if case == "labels":  # (causal_lm_loss never reads position 0's label)
            lab[0, 1] = pick(-5, 30, 2**40)
        elif case == "hidden_dtype":
            args = (h.to(pick(torch.int64, torch.float64)), w, lab)
        elif case == "weight":
            args = (h, pick(torch.randn(30, 7), torch.randn(0, 8), torch.randn(30, 8, 1)), lab)
        elif case == "bias":
            kw["bias"] = pick(torch.randn(29), torch.randn(30, 1), torch.randn(30).double())
        elif case == "reduction":
            kw["reduction"] = pick("max", "", None)
        else:  # causal: hidden must be [..., T, H] with T >= 1
            op = ops.causal_lm_loss
            args = pick((h[:, :0], w, lab[:, :0]), (h[0, 0], w, lab[0, 0]))
        if case != "causal_t" and data.draw(st.booleans()):
            op = ops.causal_lm_loss
    _raises(lambda: op(*args, **kw), case)


def _ranges(lo: float, hi: float):
    return st.tuples(st.floats(lo, hi), st.floats(lo, hi)).map(sorted).map(tuple)


@given(st.sampled_from(["beit", "simmim", "tube", "ijepa", "data2vec"]), st.data())
def test_image_mask_samplers_counts_and_shapes(which, data):
    batch = data.draw(st.integers(0 if which != "ijepa" else 1, 3))
    seed = data.draw(st.integers(0, 2**63 - 1))
    if which == "beit":
        h, w = data.draw(st.integers(1, 12)), data.draw(st.integers(1, 12))
        n = data.draw(st.integers(0, h * w))
        kw = dict(
            num_masking_patches=n,
            min_num_patches=data.draw(st.integers(0, n + 2)),
            max_num_patches=data.draw(st.one_of(st.none(), st.integers(1, h * w))),
            min_aspect=data.draw(st.floats(0.1, 3.0)),
        )
        # max_aspect=None means 1 / min_aspect (BEiT's default), refused below min_aspect
        kw["max_aspect"] = data.draw(st.floats(kw["min_aspect"], 10.0))
        if kw["min_aspect"] <= 1.0 and data.draw(st.booleans()):
            kw["max_aspect"] = None
        exact = data.draw(st.booleans())
        m = samplers.beit_masks(batch, (h, w), **kw, exact=exact, rng=seed)
        assert m.shape == (batch, h, w) and m.dtype == np.bool_
        counts = m.reshape(batch, h * w).sum(1)
        assert (counts == n).all() if exact else (counts <= n).all()
        rng = np.random.default_rng(seed)
        want = [ref_samplers.beit_mask(rng, h, w, **kw, exact=exact) for _ in range(batch)]
        assert np.array_equal(m, np.array(want, dtype=bool).reshape(batch, h, w))
    elif which == "simmim":
        r, s, mop = (
            data.draw(st.integers(1, 6)),
            data.draw(st.integers(1, 4)),
            data.draw(st.integers(1, 3)),
        )
        ratio = data.draw(_probability())
        m = samplers.simmim_masks(batch, r * s * mop, s * mop, mop, ratio, rng=seed)
        assert m.shape == (batch, r * s, r * s) and m.dtype == np.bool_
        cells = m.reshape(batch, r, s, r, s)
        assert (cells.all(axis=(2, 4)) == cells.any(axis=(2, 4))).all()  # whole coarse cells
        assert (
            cells.all(axis=(2, 4)).reshape(batch, r * r).sum(1) == math.ceil(r * r * ratio)
        ).all()
    elif which == "tube":
        f, h, w = (data.draw(st.integers(1, 6)) for _ in range(3))
        ratio = data.draw(_probability())
        m = samplers.tube_masks(batch, (f, h, w), ratio, rng=seed)
        assert m.shape == (batch, f, h, w) and m.dtype == np.bool_
        assert (m == m[:, :1]).all()  # the same mask in every frame
        assert (m[:, 0].reshape(batch, h * w).sum(1) == int(ratio * h * w)).all()
    elif which == "ijepa":
        h, w = data.draw(st.integers(2, 10)), data.draw(st.integers(2, 10))
        min_keep = data.draw(st.integers(0, 4))
        kw = dict(
            enc_mask_scale=data.draw(_ranges(0.05, 1.0)),
            pred_mask_scale=data.draw(_ranges(0.05, 1.0)),
            aspect_ratio=data.draw(_ranges(0.2, 5.0)),
            nenc=data.draw(st.integers(1, 2)),
            npred=data.draw(st.integers(1, 4)),
            min_keep=min_keep,
            allow_overlap=data.draw(st.booleans()),
        )
        try:
            enc, pred = samplers.ijepa_masks(batch, (h, w), **kw, rng=seed)
        except ValueError as e:  # documented: no block of the drawn sizes keeps min_keep
            assert "min_keep" in str(e)
            return
        assert enc.shape[:2] == (batch, kw["nenc"]) and pred.shape[:2] == (batch, kw["npred"])
        assert enc.dtype == pred.dtype == np.int64
        for idx in (enc, pred):
            assert idx.shape[2] > min_keep
            assert ((idx >= 0) & (idx < h * w)).all()
            assert (np.diff(idx, axis=2) > 0).all()  # row-major, no repeats
        for block in pred.reshape(-1, pred.shape[2]):  # every target block: a full rectangle
            rows, cols = np.unique(block // w), np.unique(block % w)
            assert len(block) == len(rows) * len(cols)
            assert (np.diff(rows) == 1).all() and (np.diff(cols) == 1).all()
    else:
        side = data.draw(st.integers(1, 10))
        mask_prob = data.draw(_probability())
        kw = dict(
            mask_length=data.draw(st.integers(2, 4)), mask_prob_adjust=data.draw(_probability())
        )
        m = samplers.data2vec_masks(batch, side * side, mask_prob, **kw, rng=seed)
        length = side * side
        assert m.shape == (batch, length) and m.dtype == np.bool_
        assert (m.sum(1) == length - int(length * (1 - mask_prob))).all()


SAMPLER_BAD = [
    (samplers.beit_masks, dict(num_masking_patches=197)),
    (samplers.beit_masks, dict(input_size=0)),
    (samplers.beit_masks, dict(min_aspect=0.0)),
    (samplers.beit_masks, dict(min_aspect=-1.0)),
    (samplers.beit_masks, dict(min_aspect=2.0, max_aspect=1.0)),
    (samplers.beit_masks, dict(num_masking_patches=-1)),
    (samplers.simmim_masks, dict(mask_ratio=1.5)),
    (samplers.simmim_masks, dict(mask_ratio=math.nan)),
    (samplers.simmim_masks, dict(input_size=200)),
    (samplers.simmim_masks, dict(model_patch_size=5)),
    (samplers.simmim_masks, dict(mask_patch_size=0)),
    (samplers.tube_masks, dict(mask_ratio=-0.1)),
    (samplers.tube_masks, dict(input_size=(8, 14))),
    (samplers.tube_masks, dict(input_size=(8, 0, 14))),
    (samplers.ijepa_masks, dict(min_keep=200)),
    (samplers.ijepa_masks, dict(input_size=1)),
    (samplers.ijepa_masks, dict(pred_mask_scale=(0.3, 0.2))),
    (samplers.ijepa_masks, dict(enc_mask_scale=(0.0, 1.0))),
    (samplers.ijepa_masks, dict(aspect_ratio=(0.0, 1.0))),
    (samplers.ijepa_masks, dict(npred=0)),
    (samplers.data2vec_masks, dict(num_patches=195)),
    (samplers.data2vec_masks, dict(mask_prob=1.2)),
    (samplers.data2vec_masks, dict(mask_length=1)),
]


@given(st.sampled_from(SAMPLER_BAD), st.integers(-3, 3))
def test_invalid_sampler_arguments_raise(bad, batch):
    fn, kw = bad
    with pytest.raises(ValueError, match=r"\w"):
        fn(batch, **kw, rng=0)
    if batch < (1 if fn is samplers.ijepa_masks else 0):  # a negative batch alone
        with pytest.raises(ValueError, match="batch"):
            fn(batch, rng=0)
