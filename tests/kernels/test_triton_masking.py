"""The Triton masking kernels against :mod:`pyssl.reference.masking`.

With no GPU the launchers run under ``TRITON_INTERPRET=1`` on CPU tensors (``tests/conftest.py``
sets the variable before torch or triton is imported); with a GPU and no interpreter they run on
CUDA tensors. Shapes are small because the interpreter runs one Python loop per program. Every
output is poisoned (NaN, or an impossible id) before a launch, so an unwritten element fails.

Tolerances: copies (gathers, unshuffles, scatters with unique ids) must be exact in every dtype;
float32/float64 sums are compared with an fp64 reference at about float32 rounding; float16 and
bfloat16 follow flash-attention's rule: the kernel's error against an fp64 reference computed from
the same (rounded) inputs may be at most twice the error of the eager same-dtype reference, plus
a few float32 ulps of the result's magnitude (the kernels accumulate in float32), plus, under the
interpreter only, one bfloat16 ulp (see ``assert_matches``).
"""

from __future__ import annotations

import textwrap

import pytest
import torch
from helpers import compile_triton_kernels, triton_test_device

DEVICE = triton_test_device("masking")
INTERPRET = DEVICE == "cpu"

from pyssl.kernels.triton import masking as tk  # noqa: E402
from pyssl.reference import masking as ref  # noqa: E402

NAN = float("nan")
BAD_ID = -(2**62)  # poison for int64 outputs: no kernel can legitimately write it
FLOAT_DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
LOW_PRECISION = (torch.bfloat16, torch.float16)
SEEDS = (0, 1, 2)

# (B, C, H, W, p): a batch of one, H != W, C = 1 and 3, p = 1, 2, 4; p = 16 gives L = 1, and
# p = 32 a patch of 3072 values, wider than every block, so the patch loops run several times.
PATCH_CASES = [
    (1, 3, 8, 12, 4),
    (2, 1, 6, 4, 2),
    (2, 3, 3, 2, 1),
    (2, 3, 16, 16, 16),
    (1, 3, 32, 64, 32),
]


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(*shape: int, dtype: torch.dtype = torch.float32, g: torch.Generator) -> torch.Tensor:
    return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype).to(DEVICE)


def poison(*shape: int, dtype: torch.dtype) -> torch.Tensor:
    fill = BAD_ID if dtype == torch.int64 else NAN
    return torch.full(shape, fill, dtype=dtype, device=DEVICE)


def rand_perm_rows(b: int, n: int, g: torch.Generator) -> torch.Tensor:
    return torch.stack([torch.randperm(n, generator=g) for _ in range(b)]).to(DEVICE)


def assert_matches(
    out: torch.Tensor, ref64: torch.Tensor, eager: torch.Tensor | None = None, rtol: float = 1e-6
) -> None:
    """out (any float dtype) against the fp64 reference; ``eager`` is the same-dtype eager
    reference, needed for float16/bfloat16 (flash-attention's 2x rule)."""
    assert out.shape == ref64.shape
    if out.numel() == 0:
        return
    out64 = out.double().cpu()
    ref64 = ref64.double().cpu()
    scale = max(1.0, ref64.abs().max().item())
    if out.dtype in LOW_PRECISION:
        assert eager is not None and eager.dtype == out.dtype
        err = (out64 - ref64).abs().max().item()
        err_eager = (eager.double().cpu() - ref64).abs().max().item()
        slack = 4 * torch.finfo(torch.float32).eps * scale
        if INTERPRET and out.dtype == torch.bfloat16:
            # triton's interpreter converts float32 to bfloat16 by truncation (its _convert_float
            # gets no rounding mode), compiled Triton rounds to nearest even: up to one more
            # bfloat16 ulp here. The strict rule holds on the GPU.
            slack += torch.finfo(torch.bfloat16).eps * scale
        assert err <= 2 * err_eager + slack, (err, err_eager)
    else:  # float32 / float64 rounding of the result (sums of a few hundred terms at most)
        rtol = rtol if out.dtype == torch.float32 else 1e-12
        torch.testing.assert_close(out64, ref64, rtol=rtol, atol=rtol * scale)


def assert_equal(out: torch.Tensor, expected: torch.Tensor) -> None:
    assert out.dtype == expected.dtype and out.shape == expected.shape
    if out.is_floating_point():
        assert not torch.isnan(out).any()
    assert torch.equal(out.cpu(), expected.cpu())


# --------------------------------------------------------------------------------------------
# gather_patches / scatter_patches


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("case", PATCH_CASES)
def test_gather_patches_matches_reference(case, dtype):
    b, c, h, w, p = case
    length = (h // p) * (w // p)
    for seed in SEEDS:
        g = gen(seed)
        imgs = randn(b, c, h, w, dtype=dtype, g=g)
        # repeated ids are a valid gather too, and K > L here when L is small
        ids = torch.randint(0, length, (b, length // 2 + 1), generator=g).to(DEVICE)
        out = poison(b, ids.shape[1], p * p * c, dtype=dtype)
        tk.gather_patches(imgs, ids, p, out)
        assert_equal(out, ref.gather_patches(imgs, ids, p))
        # ids=None: a plain patchify
        out = poison(b, length, p * p * c, dtype=dtype)
        tk.gather_patches(imgs, None, p, out)
        assert_equal(out, ref.patchify(imgs, p))


def gather_adjoint64(patches: torch.Tensor, ids: torch.Tensor, p: int, image_shape) -> torch.Tensor:
    """The reference scatter: autograd of the reference gather, in fp64 (exact sums here)."""
    imgs = torch.zeros(image_shape, dtype=torch.float64, device=patches.device, requires_grad=True)
    (grad,) = torch.autograd.grad(ref.gather_patches(imgs, ids, p), imgs, patches.double())
    return grad


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("case", PATCH_CASES)
def test_scatter_patches_unique_ids_is_an_exact_copy(case, dtype):
    b, c, h, w, p = case
    length = (h // p) * (w // p)
    n = p * p * c
    for seed in SEEDS:
        g = gen(seed)
        k = max(1, length * 3 // 4)
        ids = rand_perm_rows(b, length, g)[:, :k].contiguous()
        patches = randn(b, k, n, dtype=dtype, g=g)
        out = poison(b, c, h, w, dtype=dtype)
        tk.scatter_patches(patches, ids, p, out)
        assert_equal(out, gather_adjoint64(patches, ids, p, (b, c, h, w)).to(dtype))
        # ids=None: a plain unpatchify (MAE's, with a non-square grid)
        patches = randn(b, length, n, dtype=dtype, g=g)
        out = poison(b, c, h, w, dtype=dtype)
        tk.scatter_patches(patches, None, p, out)
        assert_equal(out, ref.unpatchify(patches, p, c, grid=(h // p, w // p)))


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_scatter_patches_repeated_ids_sum(dtype):
    b, c, h, w, p = 2, 3, 8, 12, 4
    length, n = 6, p * p * c
    g = gen(7)
    k = 70  # > L: every position is hit many times; > 64 (BLOCK_K here): several id tiles
    ids = torch.randint(0, length, (b, k), generator=g)
    ids[1] = 3  # one row sends every patch to the same place
    ids = ids.to(DEVICE)
    patches = randn(b, k, n, dtype=dtype, g=g)
    out = poison(b, c, h, w, dtype=dtype)
    tk.scatter_patches(patches, ids, p, out)
    eager = None
    if dtype in LOW_PRECISION:
        z = torch.zeros(b, c, h, w, dtype=dtype, device=DEVICE, requires_grad=True)
        (eager,) = torch.autograd.grad(ref.gather_patches(z, ids, p), z, patches)
    assert_matches(out, gather_adjoint64(patches, ids, p, (b, c, h, w)), eager)
    # fixed summation order: a second run is bitwise identical (poisoned differently)
    again = torch.full_like(out, float("inf"))
    tk.scatter_patches(patches, ids, p, again)
    assert torch.equal(out, again)


# --------------------------------------------------------------------------------------------
# random_masking


def stable_order(noise_row: list[float]) -> list[int]:
    """torch.sort(stable=True)'s order, written out: numbers ascending, NaN last, ties (NaNs
    among themselves) by index."""
    key = [(v != v, 0.0 if v != v else v, i) for i, v in enumerate(noise_row)]
    return [i for *_, i in sorted(key)]


def run_random_masking(x: torch.Tensor, noise: torch.Tensor, keep: int):
    b, length, d = x.shape
    visible = poison(b, keep, d, dtype=x.dtype)
    mask = poison(b, length, dtype=x.dtype)
    ids_keep = poison(b, keep, dtype=torch.int64)
    ids_restore = poison(b, length, dtype=torch.int64)
    tk.random_masking(x, noise, keep, visible, mask, ids_keep, ids_restore)
    return visible, mask, ids_keep, ids_restore


# (B, L, D, mask_ratio): L = 1 with keep 0 and keep 1, D = 33, L > 64 (the rank kernel's tile),
# D > 1024 (the row copy's block), keep == L
MASKING_CASES = [
    (1, 1, 33, 0.75),
    (1, 1, 33, 0.0),
    (2, 16, 33, 0.75),
    (3, 49, 8, 0.5),
    (2, 70, 5, 0.75),
    (2, 10, 1100, 0.3),
]


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("case", MASKING_CASES)
def test_random_masking_matches_reference(case, dtype):
    b, length, d, ratio = case
    keep = int(length * (1 - ratio))  # MAE's len_keep
    for seed in SEEDS:
        g = gen(seed)
        x = randn(b, length, d, dtype=dtype, g=g)
        noise = torch.rand(b, length, generator=g).to(DEVICE)
        got = run_random_masking(x, noise, keep)
        for out, expected in zip(got, ref.random_masking(x, ratio, noise), strict=True):
            assert_equal(out, expected)


@pytest.mark.parametrize("noise_dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_random_masking_ties_and_nan_follow_stable_argsort(noise_dtype):
    b, length, d = 3, 37, 4
    g = gen(11)
    x = randn(b, length, d, g=g)
    noise = torch.randint(0, 4, (b, length), generator=g).to(torch.float64)  # many ties
    noise[0, ::5] = NAN
    noise[1, 3:9] = -0.0  # -0.0 == +0.0 is a tie
    noise[1, 10:14] = float("inf")
    noise[1, 20:22] = float("-inf")
    noise[2] = NAN  # all NaN: the identity order
    noise = noise.to(noise_dtype).to(DEVICE)
    keep = 11
    visible, mask, ids_keep, ids_restore = run_random_masking(x, noise, keep)
    for out, expected in zip(
        (visible, mask, ids_keep, ids_restore),
        ref.random_masking(x, 1 - keep / length, noise),
        strict=True,
    ):
        assert_equal(out, expected)
    for row in range(b):  # and the reference's order is the one written out by hand
        order = stable_order(noise[row].double().tolist())
        assert ids_keep[row].tolist() == order[:keep]
        assert ids_restore[row].tolist() == [order.index(i) for i in range(length)]


# --------------------------------------------------------------------------------------------
# restore_masked and its backward

# (B, K, L, D): K = 0 (all mask tokens), D = 33, L > 32 and D > 256 (the backward's l tiles and
# d blocks), a batch of one
RESTORE_CASES = [(1, 0, 3, 33), (3, 4, 13, 33), (1, 9, 37, 260)]


@pytest.mark.parametrize("with_token", [True, False])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("case", RESTORE_CASES)
def test_restore_masked_matches_reference(case, dtype, with_token):
    b, k, length, d = case
    for seed in SEEDS:
        g = gen(seed)
        visible = randn(b, k, d, dtype=dtype, g=g)
        token = randn(d, dtype=dtype, g=g)
        ids_restore = rand_perm_rows(b, length, g)
        out = poison(b, length, d, dtype=dtype)
        tk.restore_masked(visible, token if with_token else None, ids_restore, out)
        expected_token = token if with_token else torch.zeros_like(token)
        assert_equal(out, ref.restore_masked(visible, expected_token, ids_restore))


def restore_grads(visible, token, ids_restore, grad_out):
    """Autograd of the reference unshuffle."""
    visible = visible.detach().requires_grad_()
    token = token.detach().requires_grad_()
    out = ref.restore_masked(visible, token, ids_restore)
    return torch.autograd.grad(out, (visible, token), grad_out)


@pytest.mark.parametrize("permutation", [True, False], ids=["perm", "repeated"])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("case", RESTORE_CASES)
def test_restore_masked_backward_matches_autograd(case, dtype, permutation):
    b, k, length, d = case
    for seed in SEEDS[:2]:
        g = gen(seed)
        visible = randn(b, k, d, dtype=dtype, g=g)
        token = randn(d, dtype=dtype, g=g)
        if permutation:  # MAE's ids_restore
            ids_restore = rand_perm_rows(b, length, g)
        else:  # any ids in [0, L): visible rows used several times or not at all
            ids_restore = torch.randint(0, length, (b, length), generator=g).to(DEVICE)
        grad_out = randn(b, length, d, dtype=dtype, g=g)
        grad_visible = poison(b, k, d, dtype=dtype)
        grad_token = poison(d, dtype=dtype)
        tk.restore_masked_backward(grad_out, ids_restore, grad_visible, grad_token)
        ref_v, ref_t = restore_grads(visible.double(), token.double(), ids_restore, grad_out)
        eager_v, eager_t = restore_grads(visible, token, ids_restore, grad_out)
        assert_matches(grad_visible, ref_v, eager_v)
        assert_matches(grad_token, ref_t, eager_t)
        if permutation:  # every visible row receives exactly one grad_out row: a copy
            assert_equal(grad_visible, ref_v.to(dtype))
        if dtype == torch.float32:  # grad_token=None: grad_visible alone, unchanged
            alone = poison(b, k, d, dtype=dtype)
            tk.restore_masked_backward(grad_out, ids_restore, alone, None)
            assert torch.equal(alone, grad_visible)


# --------------------------------------------------------------------------------------------
# masked_patch_loss and its backward


def loss_inputs(case, dtype, seed, binary_mask=True):
    b, c, h, w, p = case
    length = (h // p) * (w // p)
    g = gen(seed)
    imgs = randn(b, c, h, w, dtype=dtype, g=g)
    pred = randn(b, length, p * p * c, dtype=dtype, g=g)
    if binary_mask:
        mask = (torch.rand(b, length, generator=g) < 0.75).float()
        mask.view(-1)[0] = 1.0  # at least one removed patch: sum(mask) > 0
    else:  # MAE's mask is 0/1, but any float32 weights are allowed
        mask = torch.rand(b, length, generator=g) * (torch.rand(b, length, generator=g) < 0.7)
        mask.view(-1)[0] = 0.5
    return pred, imgs, mask.to(DEVICE)


def reference_loss_and_grad(pred, imgs, mask, p, norm_pix, grad_loss):
    pred = pred.detach().requires_grad_()
    loss = ref.masked_patch_loss(pred, imgs, mask, p, norm_pix, 1e-6)
    (grad,) = torch.autograd.grad(loss, pred, grad_loss.to(loss.dtype))
    return loss.detach(), grad


@pytest.mark.parametrize("norm_pix", [True, False], ids=["norm_pix", "raw"])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("case", PATCH_CASES)
def test_masked_patch_loss_and_backward_match_autograd(case, dtype, norm_pix):
    b, c, h, w, p = case
    if norm_pix and p * p * c == 1:
        pytest.skip("one pixel per patch: the unbiased variance is undefined")
    for seed in SEEDS[:2]:
        pred, imgs, mask = loss_inputs(case, dtype, seed, binary_mask=seed == 0)
        grad_loss = torch.tensor(1.0 + seed, dtype=dtype, device=DEVICE)
        loss = poison(dtype=dtype)
        tk.masked_patch_loss(pred, imgs, mask, p, norm_pix, 1e-6, loss)
        grad_pred = poison(*pred.shape, dtype=dtype)
        tk.masked_patch_loss_backward(grad_loss, pred, imgs, mask, p, norm_pix, 1e-6, grad_pred)

        ref_loss, ref_grad = reference_loss_and_grad(
            pred.double(), imgs.double(), mask.double(), p, norm_pix, grad_loss.double()
        )
        eager_loss, eager_grad = reference_loss_and_grad(pred, imgs, mask, p, norm_pix, grad_loss)
        assert loss.dtype == dtype and grad_pred.dtype == dtype
        assert_matches(loss, ref_loss, eager_loss.to(dtype))
        assert_matches(grad_pred, ref_grad, eager_grad)
        # kept patches (mask == 0) get exact zeros
        assert (grad_pred[mask == 0] == 0).all()


def test_masked_patch_loss_does_not_read_kept_patches():
    """The documented difference from the reference: a NaN in a patch with mask == 0 does not
    reach the loss (the reference's ``loss * mask`` gives 0 * NaN = NaN)."""
    case = (2, 3, 8, 12, 4)
    pred, imgs, mask = loss_inputs(case, torch.float32, seed=3)
    mask[1, 2] = 0.0
    clean = poison(dtype=torch.float32)
    tk.masked_patch_loss(pred, imgs, mask, 4, True, 1e-6, clean)
    pred[1, 2] = NAN
    loss = poison(dtype=torch.float32)
    tk.masked_patch_loss(pred, imgs, mask, 4, True, 1e-6, loss)
    assert torch.isnan(ref.masked_patch_loss(pred, imgs, mask, 4)).item()
    assert torch.equal(loss, clean)
    grad = poison(*pred.shape, dtype=torch.float32)
    tk.masked_patch_loss_backward(torch.tensor(1.0), pred, imgs, mask, 4, True, 1e-6, grad)
    assert (grad[1, 2] == 0).all() and not torch.isnan(grad).any()


# --------------------------------------------------------------------------------------------
# every loop of every kernel taken more than once: blocks capped at 4 elements


def test_all_launchers_with_tiny_blocks(monkeypatch):
    """The shapes above fit most kernels in one tile; with every block capped at 4 the tile
    loops (patch chunks, id scans, rank tiles, token tiles, the per-sample and the loss
    reductions) all run several iterations, on the same small inputs."""
    real_block = tk._block
    monkeypatch.setattr(tk, "_block", lambda n, cap: min(real_block(n, cap), 4))
    g = gen(21)
    b, c, h, w, p = 2, 3, 4, 6, 2  # L = 6, N = 12
    length, n = 6, 12
    imgs = randn(b, c, h, w, g=g)
    ids = torch.randint(0, length, (b, 9), generator=g).to(DEVICE)
    out = poison(b, 9, n, dtype=torch.float32)
    tk.gather_patches(imgs, ids, p, out)
    assert_equal(out, ref.gather_patches(imgs, ids, p))
    img_out = poison(b, c, h, w, dtype=torch.float32)
    tk.scatter_patches(out, ids, p, img_out)
    assert_matches(img_out, gather_adjoint64(out, ids, p, (b, c, h, w)))

    b = 5  # > 4: the grad_token sum over samples takes two tiles
    x = randn(b, 11, 9, g=g)
    noise = torch.randint(0, 5, (b, 11), generator=g).float().to(DEVICE)
    got = run_random_masking(x, noise, 3)
    for o, expected in zip(got, ref.random_masking(x, 1 - 3 / 11, noise), strict=True):
        assert_equal(o, expected)
    visible, _, _, ids_restore = got
    token = randn(9, g=g)
    restored = poison(b, 11, 9, dtype=torch.float32)
    tk.restore_masked(visible, token, ids_restore, restored)
    assert_equal(restored, ref.restore_masked(visible, token, ids_restore))
    grad_out = randn(b, 11, 9, g=g)
    grad_visible, grad_token = poison(b, 3, 9, dtype=torch.float32), poison(9, dtype=torch.float32)
    tk.restore_masked_backward(grad_out, ids_restore, grad_visible, grad_token)
    ref_v, ref_t = restore_grads(visible.double(), token.double(), ids_restore, grad_out)
    assert_matches(grad_visible, ref_v)
    assert_matches(grad_token, ref_t)

    pred, imgs, mask = loss_inputs((2, c, h, w, p), torch.float32, seed=4, binary_mask=False)
    loss = poison(dtype=torch.float32)
    tk.masked_patch_loss(pred, imgs, mask, p, True, 1e-6, loss)
    grad_pred = poison(*pred.shape, dtype=torch.float32)
    grad_loss = torch.tensor(0.5, device=DEVICE)
    tk.masked_patch_loss_backward(grad_loss, pred, imgs, mask, p, True, 1e-6, grad_pred)
    ref_loss, ref_grad = reference_loss_and_grad(
        pred.double(), imgs.double(), mask.double(), p, True, grad_loss.double()
    )
    assert_matches(loss, ref_loss)
    assert_matches(grad_pred, ref_grad)


# --------------------------------------------------------------------------------------------
# invalid ids: NaN where the result would have gone, no crash, no stray memory access

HUGE = 2**40  # far outside any tensor: an unguarded kernel would fault or read garbage


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_gather_patches_invalid_ids_give_nan_rows(dtype):
    b, c, h, w, p = 2, 3, 8, 12, 4
    imgs = randn(b, c, h, w, dtype=dtype, g=gen(5))
    ids = torch.tensor([[0, -1, 5, 6], [HUGE, 2, -HUGE, 1]], device=DEVICE)
    out = poison(b, 4, p * p * c, dtype=dtype)
    out[:] = 0.0  # stale data that must be overwritten with NaN
    tk.gather_patches(imgs, ids, p, out)
    bad = (ids < 0) | (ids >= 6)
    assert torch.isnan(out[bad]).all()
    assert_equal(out[~bad], ref.gather_patches(imgs, ids.clamp(0, 5), p)[~bad])


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_scatter_patches_invalid_id_poisons_its_image(dtype):
    b, c, h, w, p = 2, 3, 8, 12, 4
    patches = randn(b, 3, p * p * c, dtype=dtype, g=gen(6))
    ids = torch.tensor([[0, 1, 2], [3, HUGE, 4]], device=DEVICE)
    out = poison(b, c, h, w, dtype=dtype)
    out[1] = 0.0
    tk.scatter_patches(patches, ids, p, out)
    assert torch.isnan(out[1]).all()
    expected = gather_adjoint64(patches[:1], ids[:1], p, (1, c, h, w)).to(dtype)
    assert_equal(out[:1], expected)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_restore_masked_invalid_ids_give_nan_rows(dtype):
    b, k, length, d = 2, 3, 6, 33
    g = gen(8)
    visible = randn(b, k, d, dtype=dtype, g=g)
    token = randn(d, dtype=dtype, g=g)
    ids_restore = torch.tensor([[0, 1, 2, 3, 4, -1], [6, 2, HUGE, 0, 1, 5]], device=DEVICE)
    out = poison(b, length, d, dtype=dtype)
    out[:] = 0.0
    tk.restore_masked(visible, token, ids_restore, out)
    bad = (ids_restore < 0) | (ids_restore >= length)
    assert torch.isnan(out[bad]).all()
    expected = ref.restore_masked(visible, token, ids_restore.clamp(0, length - 1))
    assert_equal(out[~bad], expected[~bad])


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_restore_masked_backward_invalid_id_poisons_sample_and_token(dtype):
    b, k, length, d = 2, 3, 6, 33
    grad_out = randn(b, length, d, dtype=dtype, g=gen(9))
    ids_restore = torch.tensor([[5, 1, 2, 3, 4, 0], [0, 1, 2, -HUGE, 4, 5]], device=DEVICE)
    grad_visible = torch.zeros(b, k, d, dtype=dtype, device=DEVICE)
    grad_token = torch.zeros(d, dtype=dtype, device=DEVICE)
    tk.restore_masked_backward(grad_out, ids_restore, grad_visible, grad_token)
    assert torch.isnan(grad_visible[1]).all() and torch.isnan(grad_token).all()
    z = torch.zeros(1, k, d, dtype=dtype, device=DEVICE)
    expected, _ = restore_grads(z, z[0, 0], ids_restore[:1], grad_out[:1])
    assert_equal(grad_visible[:1], expected)


def test_launchers_reject_mismatched_shapes():
    imgs = torch.zeros(1, 3, 8, 8, device=DEVICE)
    with pytest.raises(ValueError, match="out"):
        tk.gather_patches(imgs, None, 4, poison(1, 4, 47, dtype=torch.float32))
    with pytest.raises(ValueError, match="multiples of p"):
        tk.gather_patches(imgs, None, 3, poison(1, 4, 27, dtype=torch.float32))
    with pytest.raises(ValueError, match="ids"):
        ids = torch.zeros(1, 2, dtype=torch.int32, device=DEVICE)
        tk.gather_patches(imgs, ids, 4, poison(1, 2, 48, dtype=torch.float32))
    x = torch.zeros(1, 4, 2, device=DEVICE)
    with pytest.raises(ValueError, match="keep"):
        tk.random_masking(x, x[..., 0], 5, x, x[..., 0], x[..., 0].long(), x[..., 0].long())


# --------------------------------------------------------------------------------------------
# the compiled path: the interpreter accepts code that the compiler rejects (mismatched types
# across constexpr branches, for one), so compile every kernel for an sm_90 target. This needs
# no GPU: triton's NVIDIA backend ships ptxas.

_COMPILE_SCRIPT = textwrap.dedent(
    """
    import warnings
    warnings.filterwarnings("ignore")
    import triton
    import triton.language as tl
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from pyssl.kernels.triton import masking as M

    def compile_(kernel, ptrs, consts):
        sig = {}
        for name in kernel.arg_names:
            if name in consts:
                sig[name] = "constexpr"
            elif name in ptrs:
                sig[name] = "*" + ptrs[name]
            else:
                sig[name] = "fp32" if name == "eps" else "i32"
        src = ASTSource(fn=kernel, signature=sig, constexprs=consts)
        assert triton.compile(src, target=GPUTarget("cuda", 90, 32)).asm["cubin"]

    for dt in ("bf16", "fp64"):
        acc, a = (tl.float64, "fp64") if dt == "fp64" else (tl.float32, "fp32")
        for flag in (True, False):
            compile_(M._gather_patches_kernel, dict(imgs_ptr=dt, ids_ptr="i64", out_ptr=dt),
                     dict(C=3, P=16, HAS_IDS=flag, BLOCK_N=1024))
            compile_(M._scatter_patches_kernel,
                     dict(patches_ptr=dt, ids_ptr="i64", out_ptr=dt),
                     dict(C=3, P=16, HAS_IDS=flag, ACC=acc, BLOCK_K=16, BLOCK_N=256))
            compile_(M._gather_rows_kernel,
                     dict(src_ptr=dt, idx_ptr="i64", token_ptr=dt, out_ptr=dt),
                     dict(HAS_TOKEN=flag, BLOCK_D=1024))
            compile_(M._patch_loss_kernel,
                     dict(pred_ptr=dt, imgs_ptr=dt, mask_ptr="fp32", per_patch_ptr=a),
                     dict(C=3, P=16, NORM_PIX=flag, ACC=acc, BLOCK_N=1024))
            compile_(M._patch_loss_backward_kernel,
                     dict(pred_ptr=dt, imgs_ptr=dt, mask_ptr="fp32", scale_ptr=a,
                          grad_pred_ptr=dt),
                     dict(C=3, P=16, NORM_PIX=flag, ACC=acc, BLOCK_N=1024))
        compile_(M._stable_rank_kernel,
                 dict(noise_ptr=dt, ids_restore_ptr="i64", ids_keep_ptr="i64", mask_ptr=dt),
                 dict(CMP=acc, BLOCK_I=64, BLOCK_J=64))
        compile_(M._restore_masked_backward_kernel,
                 dict(grad_out_ptr=dt, ids_ptr="i64", grad_visible_ptr=dt,
                      token_partial_ptr=a),
                 dict(ACC=acc, BLOCK_L=32, BLOCK_D=256))
        compile_(M._sum_rows_kernel, dict(part_ptr=a, out_ptr=dt), dict(BLOCK_B=16, BLOCK_D=256))
        compile_(M._masked_mean_kernel, dict(per_patch_ptr=a, mask_ptr="fp32", loss_ptr=dt),
                 dict(BLOCK=1024))
        compile_(M._loss_grad_scale_kernel, dict(grad_loss_ptr=dt, mask_ptr="fp32", scale_ptr=a),
                 dict(BLOCK=1024))
    print("compiled")
    """
)


def test_kernels_compile_for_sm90():
    compile_triton_kernels(_COMPILE_SCRIPT)
