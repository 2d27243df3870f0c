"""Pretext-task ops (rotations, jigsaw shuffles, the permutation set) against the references:
values, gradients, registration, bad input."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import poisoned

from pyssl import ops
from pyssl.ops import _backend
from pyssl.reference import pretext as ref

FLOATS = [torch.float32, torch.bfloat16, torch.float16, torch.float64]
# (B, C, S): a batch of one, one channel, odd sides, S = 1, a side past the 32-pixel tile
ROT_CASES = [(2, 3, 32), (1, 1, 7), (3, 2, 33), (2, 3, 1), (1, 3, 70)]


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("dtype", [torch.uint8, *FLOATS])
@pytest.mark.parametrize("case", ROT_CASES)
@pytest.mark.parametrize("seed", [0, 1])
def test_rotations_match_rot90(dtype, case, seed):
    b, c, s = case
    x = (torch.rand(b, c, s, s, generator=gen(seed)) * 255).to(dtype)
    views, labels = ops.rotations(x)
    assert views.shape == (4 * b, c, s, s) and views.dtype == dtype
    assert torch.equal(views.view(b, 4, c, s, s), ref.rotations(x))  # copies: exact
    assert torch.equal(labels, torch.arange(4).repeat(b))
    # each image's four rotations are adjacent, label k = k quarter turns counter-clockwise
    assert torch.equal(views[4 * (b - 1) + 1], torch.rot90(x[b - 1], 1, (1, 2)))


def test_rotations_kernel_writes_every_element():
    x = torch.randn(2, 3, 9, 9, generator=gen(3))
    out = poisoned(2, 4, 3, 9, 9)
    _backend.launch("pretext", "rotations", "cpu", x, out)
    assert torch.equal(out, ref.rotations(x))
    g = torch.randn(2, 4, 3, 9, 9, generator=gen(4))
    dx = poisoned(2, 3, 9, 9)
    _backend.launch("pretext", "rotations_backward", "cpu", g, dx)
    torch.testing.assert_close(dx, ref.rotations_backward(g), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("case", [(2, 2, 5), (1, 1, 1), (1, 3, 6)])
def test_rotations_gradcheck_fp64(case):
    x = torch.randn(*case[:2], case[2], case[2], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: ops.rotations(a)[0], (x,))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_rotations_backward_sums_in_fp32_then_rounds_once(dtype):
    x = torch.randn(2, 3, 11, 11, generator=gen(5)).to(dtype).requires_grad_()
    g = torch.randn(8, 3, 11, 11, generator=gen(6)).to(dtype)
    (grad,) = torch.autograd.grad(ops.rotations(x)[0], x, g)
    in_fp32 = ref.rotations_backward(g.float().view(2, 4, 3, 11, 11))  # k = 0..3, in order
    assert grad.dtype == dtype
    assert torch.equal(grad, in_fp32.to(dtype))  # four terms in fp32, one rounding


def test_jigsaw_shuffle_matches_reference_and_inverts():
    for seed, (b, c, s, grid) in enumerate(
        [(3, 3, 30, 3), (1, 1, 8, 2), (2, 2, 9, 3), (2, 1, 4, 1)]
    ):
        g = gen(seed)
        x = torch.randn(b, c, s, s, generator=g)
        perms = torch.stack([torch.randperm(grid * grid, generator=g) for _ in range(b)])
        out = ops.jigsaw_shuffle(x, perms, grid)
        assert torch.equal(out, ref.jigsaw_shuffle(x, perms, grid))
        assert torch.equal(ops.jigsaw_shuffle(out, perms.argsort(1), grid), x)
        # tile position j holds input tile perms[b, j]
        t = s // grid
        j = grid * grid - 1
        src = int(perms[0, j])
        r, q = divmod(src, grid)
        tile = x[0, :, r * t : (r + 1) * t, q * t : (q + 1) * t]
        assert torch.equal(out[0, :, (grid - 1) * t :, (grid - 1) * t :], tile)


@pytest.mark.parametrize("dtype", FLOATS)
def test_jigsaw_shuffle_dtypes_and_gradient(dtype):
    x = torch.randn(2, 3, 12, 12, generator=gen(7)).to(dtype)
    perms = ops.jigsaw_permutations(10, 3)[torch.tensor([3, 7])]
    assert torch.equal(ops.jigsaw_shuffle(x, perms), ref.jigsaw_shuffle(x, perms, 3))
    x64 = torch.randn(2, 2, 6, 6, dtype=torch.float64, requires_grad=True)
    p = torch.stack([torch.randperm(9, generator=gen(8)) for _ in range(2)])
    assert torch.autograd.gradcheck(lambda a: ops.jigsaw_shuffle(a, p), (x64,))


def test_permutation_set_equals_the_plain_algorithm_and_is_far_apart():
    for num, grid, seed in ((24, 2, 0), (10, 2, 3), (3, 3, 1)):
        assert torch.equal(
            ops.jigsaw_permutations(num, grid, seed), ref.jigsaw_permutations(num, grid, seed)
        )
    p = ops.jigsaw_permutations(100, 3, 0)
    assert p.shape == (100, 9) and p.dtype == torch.int64
    assert torch.equal(p.sort(1).values, torch.arange(9).expand(100, 9))  # permutations
    assert len({tuple(r) for r in p.tolist()}) == 100  # distinct
    d = (p[:, None] != p[None]).sum(-1).double()
    mean = d.sum() / (100 * 99)
    # a random set of 9-tile permutations averages 9 - 1 = 8 (one fixed point expected); the
    # greedy set must beat that, and no two classes may coincide
    assert mean > 8.05, mean
    assert (d + 9 * torch.eye(100)).min() >= 2
    assert math.factorial(4) == len(ops.jigsaw_permutations(24, 2))


def test_bad_inputs_name_the_argument():
    x = torch.randn(2, 3, 9, 9)
    with pytest.raises(TypeError, match="imgs"):
        ops.rotations(x.numpy())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="square"):
        ops.rotations(torch.randn(2, 3, 8, 9))
    with pytest.raises(ValueError, match="imgs"):
        ops.rotations(torch.randn(3, 8, 8))
    with pytest.raises(TypeError, match="imgs"):
        ops.rotations(torch.zeros(1, 1, 4, 4, dtype=torch.int32))
    with pytest.raises(ValueError, match="empty"):
        ops.rotations(torch.randn(0, 3, 4, 4))
    with pytest.raises(ValueError, match="backend"):
        ops.rotations(x, backend="tpu")
    perms = torch.stack([torch.randperm(9) for _ in range(2)])
    with pytest.raises(ValueError, match="permutation"):
        ops.jigsaw_shuffle(x, torch.zeros(2, 9, dtype=torch.int64))
    with pytest.raises(TypeError, match="perms"):
        ops.jigsaw_shuffle(x, perms.int())
    with pytest.raises(ValueError, match="perms"):
        ops.jigsaw_shuffle(x, perms[:1])
    with pytest.raises(ValueError, match="divisible"):
        ops.jigsaw_shuffle(torch.randn(2, 3, 10, 10), perms)
    with pytest.raises(ValueError, match="grid"):
        ops.jigsaw_shuffle(x, perms, 0)
    with pytest.raises(TypeError, match="imgs"):
        ops.jigsaw_shuffle(x.to(torch.uint8), perms)
    with pytest.raises(ValueError, match="grid"):
        ops.jigsaw_permutations(10, 4)
    with pytest.raises(ValueError, match="num"):
        ops.jigsaw_permutations(25, 2)
    with pytest.raises(ValueError, match="num"):
        ops.jigsaw_permutations(0, 3)
    with pytest.raises(TypeError, match="seed"):
        ops.jigsaw_permutations(5, 3, seed=1.5)  # type: ignore[arg-type]
    # the C++ side re-checks what it relies on
    with pytest.raises(ValueError, match="out"):
        _backend.launch("pretext", "rotations", "cpu", x, torch.empty(2, 4, 3, 9, 8))


def test_opcheck_and_compile():
    from torch.library import opcheck

    x = torch.randn(2, 3, 6, 6, requires_grad=True)
    opcheck(torch.ops.pyssl.rotations.default, (x, "cpu"))
    opcheck(torch.ops.pyssl.rotations_backward.default, (torch.randn(2, 4, 3, 6, 6), "cpu"))
    f = torch.compile(lambda a: ops.rotations(a)[0].square().sum(), fullgraph=True, backend="eager")
    y = f(x)
    y.backward()
    # d/dx sum_k |rot_k(x)|^2 = 4 * 2x
    torch.testing.assert_close(x.grad, 8 * x.detach())
    assert ops.explain("rotations", x).backend == "cpu"
