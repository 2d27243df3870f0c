"""The Triton colour kernels against the float64 CIE formulas of :mod:`pyssl.reference.colour`.

With no GPU the launchers run under ``TRITON_INTERPRET=1`` on CPU tensors (``tests/conftest.py``
sets it); with a GPU they run on CUDA tensors. Every output is NaN-poisoned before a launch, so
an unwritten element fails. Tolerances: float64 at 1e-10 of the result's magnitude; float32,
float16 and bfloat16 by flash-attention's rule (the kernel's error against float64 from the same
rounded inputs at most twice the same-dtype eager reference's, plus 4 float32 ulps of the
result's magnitude), plus, under the interpreter only, one bfloat16 ulp (it rounds float32 to
bfloat16 by truncation). float32 gets the rule rather than a fixed ulp count because lab_to_rgb
amplifies the rounding of L ~ 100 into the [0, 1] result (eager float32 itself errs by ~2e-6).
"""

from __future__ import annotations

import textwrap

import pytest
import torch
from helpers import compile_triton_kernels, triton_test_device

DEVICE = triton_test_device("colour")
INTERPRET = DEVICE == "cpu"

from pyssl.kernels.triton import colour as tk  # noqa: E402
from pyssl.reference import colour as ref  # noqa: E402

DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
LOW = (torch.bfloat16, torch.float16)
# (N, P): a batch of one, a single pixel, odd sizes, P > BLOCK (two programs per image)
CASES = [(1, 1), (2, 35), (3, 1100)]


def planes(x: torch.Tensor) -> torch.Tensor:
    """[N, 3, P] -> [N, 3, 1, P] for the reference (which takes [..., 3, H, W])."""
    return x.unsqueeze(2)


def rand_rgb(n: int, p: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, p, generator=g, dtype=torch.float64)


def rand_lab(n: int, p: int, seed: int) -> torch.Tensor:
    """Half in-gamut (from random sRGB), half anywhere in L [0,100] x a,b [-128,128]."""
    g = torch.Generator().manual_seed(seed)
    lab = ref.rgb_to_lab(planes(rand_rgb(n, p, seed))).squeeze(2)
    wild = torch.rand(n, 3, p, generator=g, dtype=torch.float64)
    wild = wild * torch.tensor([100.0, 256.0, 256.0]).view(1, 3, 1) - torch.tensor(
        [0.0, 128.0, 128.0]
    ).view(1, 3, 1)
    pick = torch.rand(n, 1, p, generator=g) < 0.5
    return torch.where(pick, wild, lab)


def check(out: torch.Tensor, exact: torch.Tensor, eager: torch.Tensor, terms: float) -> None:
    """``terms``: the magnitude of the intermediate terms that cancel into the result (500 f
    for rgb_to_lab's a = 500 (fx - fy); ~4 for lab_to_rgb's matrix rows), whose float32
    rounding the result inherits whatever the order of operations."""
    assert not torch.isnan(out).any(), "unwritten (NaN-poisoned) outputs"
    out64 = out.double().cpu()
    scale = max(1.0, exact.abs().max().item())
    err = (out64 - exact).abs().max().item()
    if out.dtype != torch.float64:
        err_eager = (eager.double() - exact).abs().max().item()
        slack = 4 * torch.finfo(torch.float32).eps * max(scale, terms)
        if INTERPRET and out.dtype == torch.bfloat16:
            slack += torch.finfo(torch.bfloat16).eps * scale
        assert err <= 2 * err_eager + slack, (err, err_eager)
    else:
        assert err <= 1e-10 * scale, err


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES)
def test_rgb_to_lab_matches_cie(case, dtype):
    n, p = case
    for seed in (0, 1):
        x = rand_rgb(n, p, seed).to(dtype)
        out = torch.full((n, 3, p), float("nan"), dtype=dtype, device=DEVICE)
        tk.rgb_to_lab(x.to(DEVICE), out)
        exact = ref.rgb_to_lab(planes(x.double())).squeeze(2)
        eager = ref.rgb_to_lab(planes(x)).squeeze(2)
        check(out, exact, eager, terms=500.0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("clip", [True, False])
def test_lab_to_rgb_matches_cie(case, dtype, clip):
    n, p = case
    for seed in (0, 1):
        lab = rand_lab(n, p, seed).to(dtype)
        out = torch.full((n, 3, p), float("nan"), dtype=dtype, device=DEVICE)
        tk.lab_to_rgb(lab.to(DEVICE), clip, out)
        exact = ref.lab_to_rgb(planes(lab.double()), clip).squeeze(2)
        eager = ref.lab_to_rgb(planes(lab), clip).squeeze(2)
        check(out, exact, eager, terms=4.0)
        if clip:
            assert out.min() >= 0 and out.max() <= 1


def test_edge_values():
    # 0, 1, both sides of the 0.04045 threshold, the grey whose Y sits at (6/29)^3
    c_delta = float(ref.linear_to_srgb(torch.tensor(ref.DELTA3, dtype=torch.float64)))
    vals = [0.0, 1.0, 0.04045, 0.04045 - 1e-6, 0.04045 + 1e-6, c_delta, c_delta * (1 - 1e-6)]
    vals += [c_delta * (1 + 1e-6)]
    x = torch.tensor(vals, dtype=torch.float64).view(1, 1, -1).expand(1, 3, -1).contiguous()
    out = torch.full_like(x, float("nan"), device=DEVICE)
    tk.rgb_to_lab(x.to(DEVICE), out)
    exact = ref.rgb_to_lab(planes(x)).squeeze(2)
    torch.testing.assert_close(out.cpu(), exact, rtol=0, atol=1e-9)
    assert abs(out[0, 0, 0].item()) < 1e-9 and abs(out[0, 0, 1].item() - 100.0) < 1e-9
    # and back, unclipped, through the inverse thresholds (f = 6/29, linear = 0.0031308)
    back = torch.full_like(x, float("nan"), device=DEVICE)
    tk.lab_to_rgb(out, False, back)
    torch.testing.assert_close(
        back.cpu(), ref.lab_to_rgb(planes(exact), False).squeeze(2), rtol=0, atol=1e-9
    )
    # the roundtrip itself is exact only up to the sRGB curve's own seam: its two pieces miss
    # each other by ~3e-9 in linear light at 0.0031308, ~4e-8 after the inverse's slope
    torch.testing.assert_close(back.cpu(), x, rtol=0, atol=1e-7)


def test_launchers_reject_bad_input():
    x = torch.rand(2, 3, 5, device=DEVICE)
    with pytest.raises(ValueError, match="img"):
        tk.rgb_to_lab(torch.rand(2, 4, 5, device=DEVICE), torch.empty(2, 4, 5, device=DEVICE))
    with pytest.raises(ValueError, match="out"):
        tk.rgb_to_lab(x, torch.empty(2, 3, 6, device=DEVICE))
    with pytest.raises(ValueError, match="out"):
        tk.lab_to_rgb(x, True, torch.empty(2, 3, 5, dtype=torch.float64, device=DEVICE))
    with pytest.raises(ValueError, match="lab"):
        tk.lab_to_rgb(x.int(), True, x.int())
    with pytest.raises(ValueError, match="contiguous"):
        tk.lab_to_rgb(x.transpose(0, 2).contiguous().transpose(0, 2), True, torch.empty_like(x))


_COMPILE_SCRIPT = textwrap.dedent(
    """
    import warnings
    warnings.filterwarnings("ignore")
    import triton
    import triton.language as tl
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from pyssl.kernels.triton import colour as M

    def compile_(kernel, dt, consts):
        sig = {n: ("constexpr" if n in consts else "*" + dt if n in ("src", "dst") else "i32")
               for n in kernel.arg_names}
        src = ASTSource(fn=kernel, signature=sig, constexprs=consts)
        assert triton.compile(src, target=GPUTarget("cuda", 90, 32)).asm["cubin"]

    for dt in ("fp32", "bf16", "fp16", "fp64"):
        acc = tl.float64 if dt == "fp64" else tl.float32
        compile_(M._rgb_to_lab_kernel, dt, dict(BLOCK=M.BLOCK, ACC=acc))
        for clip in (True, False):
            compile_(M._lab_to_rgb_kernel, dt, dict(CLIP=clip, BLOCK=M.BLOCK, ACC=acc))
    print("compiled")
    """
)


def test_kernels_compile_for_sm90():
    # the interpreter accepts code the compiler rejects: compile for an sm_90 target (no GPU
    # needed; triton's NVIDIA backend ships ptxas)
    compile_triton_kernels(_COMPILE_SCRIPT)
