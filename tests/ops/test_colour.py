"""sRGB <-> CIELAB ops (C++ CPU backend) against the float64 CIE formulas: values, edge values,
out-of-gamut handling, gradients, registration, bad input.

Tolerances: float64 at 1e-10 of the result's magnitude; float32, bfloat16 and float16 by
flash-attention's rule (error against float64 from the same rounded inputs at most twice the
same-dtype eager reference's), plus 4 float32 ulps of the intermediate terms that cancel into
the result (``500 f`` for rgb_to_lab's ``a = 500 (fx - fy)``, ~4 for lab_to_rgb's matrix rows).
"""

from __future__ import annotations

import pytest
import torch
from helpers import poisoned

from pyssl.ops import _backend
from pyssl.ops.colour import lab_to_rgb, rgb_to_lab
from pyssl.reference import colour as ref

FLOATS = [torch.float32, torch.bfloat16, torch.float16, torch.float64]
# a batch of one, a single pixel, odd sizes, no batch dim, two leading dims, > one 4096 chunk
SHAPES = [(1, 3, 5, 7), (2, 3, 1, 1), (3, 3, 17, 33), (3, 9, 11), (2, 2, 3, 4, 6), (1, 3, 70, 61)]
SEEDS = (0, 1, 2)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def rand_lab(shape: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
    """Half in-gamut (from random sRGB), half anywhere in L [0,100] x a,b [-128,128]."""
    inside = ref.rgb_to_lab(torch.rand(shape, generator=g, dtype=torch.float64))
    lo = torch.tensor([0.0, -128.0, -128.0], dtype=torch.float64).view(3, 1, 1)
    span = torch.tensor([100.0, 256.0, 256.0], dtype=torch.float64).view(3, 1, 1)
    wild = lo + span * torch.rand(shape, generator=g, dtype=torch.float64)
    pick = torch.rand(shape[:-3] + (1,) + shape[-2:], generator=g) < 0.5
    return torch.where(pick, wild, inside)


def check(out: torch.Tensor, exact: torch.Tensor, eager: torch.Tensor, terms: float) -> None:
    assert out.dtype == eager.dtype and out.shape == exact.shape
    assert not torch.isnan(out).any()
    scale = max(1.0, exact.abs().max().item())
    err = (out.double() - exact).abs().max().item()
    if out.dtype == torch.float64:
        assert err <= 1e-10 * scale, err
        return
    err_eager = (eager.double() - exact).abs().max().item()
    slack = 4 * torch.finfo(torch.float32).eps * max(scale, terms)
    assert err <= 2 * err_eager + slack, (err, err_eager)


# --------------------------------------------------------------------------- forward values


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape", SHAPES)
def test_rgb_to_lab_matches_cie(shape, dtype):
    for seed in SEEDS:
        x = torch.rand(shape, generator=gen(seed), dtype=torch.float64).to(dtype)
        check(rgb_to_lab(x), ref.rgb_to_lab(x.double()), ref.rgb_to_lab(x), terms=500.0)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("clip", [True, False])
def test_lab_to_rgb_matches_cie(shape, dtype, clip):
    for seed in SEEDS:
        lab = rand_lab(shape, gen(seed)).to(dtype)
        out = lab_to_rgb(lab, clip=clip)
        check(out, ref.lab_to_rgb(lab.double(), clip), ref.lab_to_rgb(lab, clip), terms=4.0)
        if clip:
            assert out.min() >= 0 and out.max() <= 1


def test_known_colours():
    # sRGB primaries and white in CIELAB (D65): the values every converter prints
    # (e.g. kornia, scikit-image, colormine: red 53.24 80.09 67.20)
    rgb = torch.tensor(
        [[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1], [0, 0, 0], [0.5, 0.5, 0.5]],
        dtype=torch.float32,
    )
    lab = rgb_to_lab(rgb.T.reshape(3, 6, 1)).reshape(3, 6).T
    want = torch.tensor(
        [
            [53.2408, 80.0925, 67.2032],
            [87.7347, -86.1827, 83.1793],
            [32.2970, 79.1875, -107.8602],
            [100.0, 0.0, 0.0],
            [0.0, 0.0, 0.0],
            [53.3889, 0.0, 0.0],
        ]
    )
    torch.testing.assert_close(lab, want, rtol=0, atol=0.01)


def test_threshold_and_edge_values():
    # 0, 1, both sides of 0.04045, and the greys whose Y sits at and around (6/29)^3
    c_delta = float(ref.linear_to_srgb(torch.tensor(ref.DELTA3, dtype=torch.float64)))
    vals = [0.0, 1.0, 0.04045, 0.04045 - 1e-7, 0.04045 + 1e-7, c_delta]
    vals += [c_delta * (1 - 1e-7), c_delta * (1 + 1e-7), 1e-30, 0.999999]
    x = torch.tensor(vals, dtype=torch.float64).view(1, -1).expand(3, -1).reshape(3, 1, -1)
    for dtype in (torch.float64, torch.float32):
        xd = x.to(dtype)
        lab = rgb_to_lab(xd)
        exact = ref.rgb_to_lab(xd.double())
        atol = 1e-10 if dtype == torch.float64 else 3e-5
        torch.testing.assert_close(lab.double(), exact, rtol=0, atol=atol)
        back = lab_to_rgb(lab, clip=False)
        torch.testing.assert_close(
            back.double(), ref.lab_to_rgb(lab.double(), False), rtol=0, atol=atol / 100
        )
    # the grey at the f threshold: L = 116 * 6/29 - 16 = 8 exactly, on both branches
    lab = rgb_to_lab(torch.full((3, 1, 1), c_delta, dtype=torch.float64))
    assert abs(lab[0].item() - 8.0) < 1e-10


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_roundtrip(dtype):
    x = torch.rand(2, 3, 19, 23, generator=gen(5), dtype=dtype)
    back = lab_to_rgb(rgb_to_lab(x))
    # float64: the sRGB curve's seam at 0.04045 (~4e-8); float32: rounding amplified by ~13x
    torch.testing.assert_close(back, x, rtol=0, atol=1e-7 if dtype == torch.float64 else 2e-5)


def test_out_of_gamut_is_clamped_or_not():
    # a = 200 is outside sRGB; L = 0, b = 200 gives f(Z) < 0 (Z clamped at 0 first)
    lab = torch.tensor([[50.0, 200.0, 0.0], [0.0, 0.0, 200.0], [50.0, 0.0, -200.0]]).T
    lab = lab.reshape(3, 3, 1)
    clipped = lab_to_rgb(lab)
    raw = lab_to_rgb(lab, clip=False)
    assert clipped.min() >= 0 and clipped.max() <= 1
    assert raw.min() < 0 and raw.max() > 1
    torch.testing.assert_close(clipped, raw.clamp(0, 1))
    torch.testing.assert_close(raw.double(), ref.lab_to_rgb(lab.double(), False), atol=2e-5, rtol=0)


def test_core_writes_every_output():
    # call the C++ kernel on NaN-poisoned outputs: an unwritten element stays NaN
    from pyssl import _C

    for n, p in [(1, 1), (2, 4097), (3, 35)]:
        x = torch.rand(n, 3, p, generator=gen(n))
        out = poisoned(n, 3, p)
        _C.colour_cpu.rgb_to_lab(_backend.view(x), _backend.view(out))
        assert not out.isnan().any()
        back = poisoned(n, 3, p)
        _C.colour_cpu.lab_to_rgb(_backend.view(out), True, _backend.view(back))
        assert not back.isnan().any()
        torch.testing.assert_close(back, x, atol=2e-5, rtol=0)


def test_core_rejects_bad_views():
    from pyssl import _C

    x = torch.rand(2, 3, 5)
    with pytest.raises(ValueError, match="img: expected 3 channels"):
        _C.colour_cpu.rgb_to_lab(_backend.view(torch.rand(2, 4, 5)), _backend.view(x))
    with pytest.raises(ValueError, match="out"):
        _C.colour_cpu.rgb_to_lab(_backend.view(x), _backend.view(torch.rand(2, 3, 6)))
    with pytest.raises(ValueError, match="out"):
        _C.colour_cpu.lab_to_rgb(_backend.view(x), True, _backend.view(x.double()))


def test_noncontiguous_empty_and_threads():
    x = torch.rand(2, 8, 9, 3, generator=gen(3)).permute(0, 3, 1, 2)  # channels-last view
    torch.testing.assert_close(rgb_to_lab(x), rgb_to_lab(x.contiguous()), rtol=0, atol=0)
    assert rgb_to_lab(torch.rand(0, 3, 4, 4)).shape == (0, 3, 4, 4)
    assert lab_to_rgb(torch.rand(2, 3, 0, 4)).shape == (2, 3, 0, 4)
    big = torch.rand(2, 3, 90, 91, generator=gen(4))
    n = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = rgb_to_lab(big)
        torch.set_num_threads(2)
        assert torch.equal(one, rgb_to_lab(big))
    finally:
        torch.set_num_threads(n)


@pytest.mark.parametrize("dtype", FLOATS)
def test_reference_backend_and_dtypes(dtype):
    x = torch.rand(2, 3, 4, 5, generator=gen(6)).to(dtype)
    lab = rgb_to_lab(x)
    assert lab.dtype == dtype
    r = rgb_to_lab(x, backend="reference")
    assert r.dtype == dtype
    check(lab, ref.rgb_to_lab(x.double()), ref.rgb_to_lab(x), terms=500.0)


# -------------------------------------------------------------------------------- gradients


def test_gradcheck_rgb_to_lab():
    # values on both sides of the 0.04045 threshold, away from it by more than gradcheck's eps
    x = torch.rand(1, 3, 4, 5, generator=gen(7), dtype=torch.float64) * 0.9 + 0.05
    x[0, :, 0, :2] = torch.tensor([0.01, 0.03])
    x.requires_grad_()
    assert torch.autograd.gradcheck(rgb_to_lab, (x,))
    # a dark pixel puts X/Y/Z on f's linear segment
    d = torch.full((1, 3, 2, 2), 0.02, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(rgb_to_lab, (d,))


@pytest.mark.parametrize("clip", [True, False])
def test_gradcheck_lab_to_rgb(clip):
    lab = ref.rgb_to_lab(torch.rand(2, 3, 3, 4, generator=gen(8), dtype=torch.float64) * 0.9 + 0.05)
    lab[0, :, 0, 0] = torch.tensor([60.0, 90.0, -30.0])  # out of gamut: the clamp's zero gradient
    lab[0, :, 0, 1] = torch.tensor([5.0, 3.0, 2.0])  # f(Y) on the linear segment
    lab[0, :, 0, 2] = torch.tensor([10.0, 0.0, 90.0])  # f(Z) < 0: clamped
    lab.requires_grad_()
    assert torch.autograd.gradcheck(lambda t: lab_to_rgb(t, clip=clip), (lab,))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gradients_match_autograd_of_reference(dtype):
    x = torch.rand(2, 3, 6, 7, generator=gen(9), dtype=torch.float64)
    gout = torch.randn(2, 3, 6, 7, generator=gen(10), dtype=torch.float64)
    for f, fr, inp in [
        (rgb_to_lab, ref.rgb_to_lab, x),
        (lab_to_rgb, ref.lab_to_rgb, rand_lab((2, 3, 6, 7), gen(11))),
    ]:
        a = inp.to(dtype).requires_grad_()
        (ga,) = torch.autograd.grad(f(a), a, gout.to(dtype))
        assert ga.dtype == dtype
        b = inp.to(dtype).double().requires_grad_()
        (gb,) = torch.autograd.grad(fr(b), b, gout)
        tol = 1e-4 if dtype == torch.float32 else 2e-2
        torch.testing.assert_close(ga.double(), gb, rtol=tol, atol=tol * gb.abs().max().item())


# ---------------------------------------------------------------------------- registration


def test_opcheck():
    x = torch.rand(2, 3, 5, 6, generator=gen(12), requires_grad=True)
    torch.library.opcheck(torch.ops.pyssl.rgb_to_lab.default, (x, "cpu"))
    lab = (ref.rgb_to_lab(x.detach()) + 1.0).requires_grad_()
    for clip in (True, False):
        torch.library.opcheck(torch.ops.pyssl.lab_to_rgb.default, (lab, clip, "cpu"))


def test_compile_fullgraph_no_break():
    def f(x):
        lab = rgb_to_lab(x)
        return lab_to_rgb(lab * torch.tensor([1.0, 0.5, 0.5]).view(3, 1, 1)).sum()

    x = torch.rand(2, 3, 8, 8, generator=gen(13), requires_grad=True)
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    got = compiled(x)
    (g1,) = torch.autograd.grad(got, x)
    want = f(x)
    (g2,) = torch.autograd.grad(want, x)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(g1, g2)


# ------------------------------------------------------------------------------- bad input


def test_bad_input():
    with pytest.raises(TypeError, match="img"):
        rgb_to_lab([[0.0]])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="img.*int64"):
        rgb_to_lab(torch.zeros(1, 3, 2, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match="img.*3 channels"):
        rgb_to_lab(torch.zeros(1, 4, 2, 2))
    with pytest.raises(ValueError, match="img.*H, W"):
        rgb_to_lab(torch.zeros(3, 2))
    with pytest.raises(ValueError, match="lab.*3 channels"):
        lab_to_rgb(torch.zeros(2, 1, 2, 2))
    with pytest.raises(TypeError, match="lab"):
        lab_to_rgb(torch.zeros(1, 3, 2, 2, dtype=torch.uint8))
    with pytest.raises(TypeError, match="clip"):
        lab_to_rgb(torch.zeros(1, 3, 2, 2), clip=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="backend"):
        rgb_to_lab(torch.zeros(1, 3, 2, 2), backend="gpu")
    with pytest.raises(ValueError, match="cuda"):
        rgb_to_lab(torch.zeros(1, 3, 2, 2), backend="cuda")


def test_triton_backend_through_the_op():
    # under the interpreter the op-level dispatch accepts CPU tensors for backend="triton"
    if not _backend._interpreting():
        with pytest.raises(ValueError, match="triton"):
            rgb_to_lab(torch.zeros(1, 3, 2, 2), backend="triton")
        return
    x = torch.rand(2, 3, 5, 7, generator=gen(14))
    lab = rgb_to_lab(x, backend="triton")
    torch.testing.assert_close(lab, rgb_to_lab(x), rtol=0, atol=1e-4)
    back = lab_to_rgb(lab, backend="triton")
    torch.testing.assert_close(back, x, rtol=0, atol=2e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_nan_propagates(dtype):
    # the float32 kernel's polynomial powers must not turn a NaN into a finite number
    x = torch.rand(1, 3, 2, 3, dtype=torch.float64).to(dtype)
    x[0, 1, 0, 0] = float("nan")
    lab = rgb_to_lab(x)
    assert lab[0, :, 0, 0].isnan().all() and not lab[0, :, 1].isnan().any()
    lab = torch.nan_to_num(lab, nan=50.0)
    lab[0, 0, 1, 2] = float("nan")
    rgb = lab_to_rgb(lab)
    assert rgb[0, :, 1, 2].isnan().all() and rgb[0, :, 0, 0].isfinite().all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_backward_kernels_against_closed_form(dtype):
    # the C++ VJP kernels on NaN-poisoned outputs against the reference's closed forms
    from pyssl import _C

    for seed, (n, p) in enumerate([(1, 1), (2, 4099), (3, 35)]):
        g = gen(seed)
        x = torch.rand(n, 3, 1, p, generator=g, dtype=torch.float64)
        lab = rand_lab((n, 3, 1, p), g)
        up = torch.randn(n, 3, 1, p, generator=g, dtype=torch.float64)
        cases = [("rgb_to_lab_backward", x, (), ref.rgb_to_lab_backward(x, up))]
        for clip in (True, False):
            want = ref.lab_to_rgb_backward(lab, up, clip)
            cases.append(("lab_to_rgb_backward", lab, (clip,), want))
        for fn, inp, extra, want in cases:
            out = poisoned(n, 3, p, dtype=dtype)
            args = [_backend.view(inp.to(dtype).reshape(n, 3, p))]
            args += [_backend.view(up.to(dtype).reshape(n, 3, p)), *extra, _backend.view(out)]
            getattr(_C.colour_cpu, fn)(*args)
            assert not out.isnan().any()
            want = want.reshape(n, 3, p)
            tol = 1e-10 if dtype == torch.float64 else 2e-5
            torch.testing.assert_close(
                out.double(), want, rtol=tol, atol=tol * max(1.0, want.abs().max().item())
            )


def test_opcheck_backward_ops():
    g = gen(15)
    x = torch.rand(2, 3, 4, 5, generator=g)
    up = torch.randn(2, 3, 4, 5, generator=g)
    torch.library.opcheck(torch.ops.pyssl.rgb_to_lab_backward.default, (x, up, "cpu"))
    lab = ref.rgb_to_lab(x)
    torch.library.opcheck(torch.ops.pyssl.lab_to_rgb_backward.default, (lab, up, True, "cpu"))
    # the reference backend's gradient is the same closed form
    a = x.clone().requires_grad_()
    (g1,) = torch.autograd.grad(rgb_to_lab(a), a, up)
    (g2,) = torch.autograd.grad(rgb_to_lab(a, backend="reference"), a, up)
    torch.testing.assert_close(g1, g2, rtol=1e-4, atol=1e-4)
