"""Test helpers shared by the op families."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch


def low_precision_tol(out: torch.Tensor, eager: torch.Tensor, exact: torch.Tensor) -> None:
    """Flash-attention's rule: the kernel's error against an fp64 result may be at most about
    twice the error of the same-dtype eager reference against it (plus a tiny slack for
    results the eager reference happens to hit exactly)."""
    exact = exact.double()
    err = (out.double() - exact).abs().max().item()
    ref_err = (eager.double() - exact).abs().max().item()
    slack = 1e-6 * max(1.0, exact.abs().max().item())
    assert err <= 2 * ref_err + slack, f"error {err:.3g} vs eager reference's {ref_err:.3g}"


def poisoned(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """An output buffer filled with NaN (or -1 for integers) so an unwritten element shows."""
    if dtype.is_floating_point:
        return torch.full(shape, float("nan"), dtype=dtype)
    return torch.full(shape, -1, dtype=dtype)


def compile_triton_kernels(script: str) -> None:
    """Runs ``script`` (which compiles Triton kernels for NVIDIA targets and prints
    "compiled") in a subprocess without the interpreter, with the same pyssl as this process;
    skips when Triton's NVIDIA backend or its ptxas is missing."""
    import triton

    import pyssl

    nvidia = Path(triton.__file__).parent / "backends" / "nvidia"
    if not (nvidia / "bin" / "ptxas").exists() and not os.environ.get("TRITON_PTXAS_PATH"):
        pytest.skip("triton's NVIDIA backend or its ptxas is not installed")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    root = str(Path(pyssl.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0 and "compiled" in proc.stdout, proc.stderr[-4000:]


def triton_test_device(family: str) -> str:
    """Where a Triton test module runs its launchers: "cpu" under TRITON_INTERPRET=1, else
    "cuda". Skips the calling module when Triton is missing or neither is possible."""
    pytest.importorskip(
        "triton", reason=f"triton is not installed: the Triton {family} kernels cannot be tested"
    )
    if os.environ.get("TRITON_INTERPRET") == "1":
        return "cpu"
    if not torch.cuda.is_available():
        pytest.skip(
            "no CUDA device and TRITON_INTERPRET is not 1 (set it before importing torch/triton)",
            allow_module_level=True,
        )
    return "cuda"
