"""The Triton pretext kernels (RotNet's rotations and their gradient) against
:mod:`pyssl.reference.pretext`.

With no GPU the launchers run under ``TRITON_INTERPRET=1`` on CPU tensors (small shapes: the
interpreter runs one Python loop per program). Outputs are poisoned before a launch so an
unwritten element fails. Rotations are copies, so every dtype must match exactly; the gradient
sums four terms in float32 (float64 for float64) in the order k = 0..3 and rounds once.
"""

from __future__ import annotations

import textwrap

import pytest
import torch
from helpers import compile_triton_kernels, triton_test_device

DEVICE = triton_test_device("pretext")

from pyssl.kernels.triton import pretext as tk  # noqa: E402
from pyssl.reference import pretext as ref  # noqa: E402

DTYPES = [torch.uint8, torch.float32, torch.float64, torch.bfloat16, torch.float16]
CASES = [(2, 3, 7), (1, 1, 1), (1, 2, 40)]  # odd side, a single pixel, more than one block


def poison(*shape: int, dtype: torch.dtype) -> torch.Tensor:
    fill = 77 if dtype == torch.uint8 else float("nan")
    return torch.full(shape, fill, dtype=dtype, device=DEVICE)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES)
def test_rotations(dtype, case):
    b, c, s = case
    g = torch.Generator().manual_seed(s)
    x = (torch.rand(b, c, s, s, generator=g) * 250).to(dtype).to(DEVICE)
    out = poison(b, 4, c, s, s, dtype=dtype)
    tk.rotations(x, out)
    assert torch.equal(out, ref.rotations(x))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("case", CASES)
def test_rotations_backward(dtype, case):
    b, c, s = case
    g = torch.Generator().manual_seed(10 + s)
    grad = torch.randn(b, 4, c, s, s, generator=g).to(dtype).to(DEVICE)
    dx = poison(b, c, s, s, dtype=dtype)
    tk.rotations_backward(grad, dx)
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    expect = ref.rotations_backward(grad.to(acc)).to(dtype)
    if dtype == torch.bfloat16:  # the interpreter rounds float32 -> bfloat16 by truncation
        torch.testing.assert_close(dx, expect, rtol=2**-7, atol=0)
    else:
        assert torch.equal(dx, expect)


def test_launchers_check_shapes():
    x = torch.zeros(1, 3, 4, 4, device=DEVICE)
    with pytest.raises(ValueError, match="out"):
        tk.rotations(x, torch.zeros(1, 4, 3, 4, 5, device=DEVICE))
    with pytest.raises(ValueError, match="dtype"):
        tk.rotations(x, torch.zeros(1, 4, 3, 4, 4, dtype=torch.float64, device=DEVICE))
    with pytest.raises(ValueError, match="imgs"):
        tk.rotations(torch.zeros(1, 3, 4, 5, device=DEVICE), torch.zeros(1, 4, 3, 4, 5))


_COMPILE_SCRIPT = textwrap.dedent(
    """
    import warnings
    warnings.filterwarnings("ignore")
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from pyssl.kernels.triton import pretext as P

    for dt in ("u8", "bf16", "fp32", "fp64"):
        sig = dict(src_ptr="*" + dt, out_ptr="*" + dt, C="i32", S="i32", BLOCK="constexpr")
        src = ASTSource(fn=P._rotations_kernel, signature=sig, constexprs=dict(BLOCK=1024))
        assert triton.compile(src, target=GPUTarget("cuda", 90, 32)).asm["cubin"]
    for dt in ("bf16", "fp32", "fp64"):
        sig = dict(g_ptr="*" + dt, dx_ptr="*" + dt, C="i32", S="i32", F64="constexpr",
                   BLOCK="constexpr")
        consts = dict(F64=dt == "fp64", BLOCK=1024)
        src = ASTSource(fn=P._rotations_backward_kernel, signature=sig, constexprs=consts)
        assert triton.compile(src, target=GPUTarget("cuda", 80, 32)).asm["cubin"]
    print("compiled")
    """
)


def test_kernels_compile_for_sm80_and_sm90():
    compile_triton_kernels(_COMPILE_SCRIPT)
