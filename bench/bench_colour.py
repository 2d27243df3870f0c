"""Benchmarks of the colour family: pyssl's sRGB <-> CIELAB against the eager reference
(``pyssl/reference/colour.py``, kornia's formulas in plain torch) and ``torch.compile`` of that
reference, on 2 threads, in one run. B = 64 float32 images of 3x224x224 (3.2 M pixels).

    python bench/bench_colour.py     # ~1-2 min quiet (a cold torch.compile included), JSON ->
    python bench/report.py           # bench/.results/colour-*.json

Compulsory bytes: the op is one pass over the pixels, so fwd = 12 bytes read + 12 written per
pixel (24 B/pixel, 77 MB per call); fwd+bwd adds the backward's read of the input and of the
upstream gradient and the write of the input gradient (36 B/pixel more; the backward is the
eager closed-form VJP of the reference, in float32). No FLOPs enter the floor: per pixel the
work is three sRGB powers, three cube roots and two 3x3 mixes (~100 flops and ~6
transcendentals), which the matmul rate does not describe; the fraction of the bytes floor is
reported as measured. Timed calls return nothing, so their allocations are freed inside the
timing, as in a training step.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from functools import cache
from typing import Any

import pytest
import torch

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
import ceilings  # noqa: E402

ceilings.use_working_tree_if_built()

from bench_masking import (  # noqa: E402, F401  (the ceiling tests run here too)
    test_ceiling_copy,
    test_ceiling_matmul,
    time_entry,
)

from pyssl.ops.colour import lab_to_rgb, rgb_to_lab  # noqa: E402
from pyssl.reference import colour as ref  # noqa: E402

torch.set_num_threads(2)
RESULTS = os.path.join(_HERE, ".results")
B, C, HW = 64, 3, 224
PIXELS = B * HW * HW
F32 = 4
CASES = [
    ("rgb_to_lab", "fwd"),
    ("lab_to_rgb", "fwd"),
    ("rgb_to_lab", "fwd+bwd"),
]
IMPLS = ["pyssl", "eager", "compiled"]


@cache
def inputs(case: str) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    rgb = torch.rand(B, C, HW, HW, generator=g)
    x = rgb if case == "rgb_to_lab" else ref.rgb_to_lab(rgb)
    return {"x": x.requires_grad_(True), "grad": torch.randn(B, C, HW, HW, generator=g)}


def counts(mode: str) -> tuple[int, str]:
    fwd = 2 * C * F32 * PIXELS
    if mode == "fwd":
        return fwd, "fwd: read 3 fp32 planes, write 3 (24 B/pixel)"
    return fwd + 3 * C * F32 * PIXELS, "fwd 24 B/pixel; bwd: read input + grad, write grad_in"


@cache
def compiled(case: str) -> Callable[..., Any]:
    return torch.compile(ref.rgb_to_lab if case == "rgb_to_lab" else ref.lab_to_rgb, dynamic=False)


def step(case: str, mode: str, impl: str) -> Callable[[], None]:
    t = inputs(case)
    x, upstream = t["x"], t["grad"]
    if impl == "pyssl":
        f = rgb_to_lab if case == "rgb_to_lab" else lab_to_rgb
    elif impl == "eager":
        f = ref.rgb_to_lab if case == "rgb_to_lab" else ref.lab_to_rgb
    else:
        f = compiled(case)
    if mode == "fwd":

        def run_fwd() -> None:
            with torch.no_grad():
                f(x)

        return run_fwd

    def run_fwd_bwd() -> None:
        torch.autograd.grad(f(x), x, upstream)

    return run_fwd_bwd


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(("case", "mode"), CASES, ids=[f"{c}-{m}" for c, m in CASES])
def test_colour(benchmark: Any, case: str, mode: str, impl: str) -> None:
    nbytes, how = counts(mode)
    info = {"case": case, "mode": mode, "bytes": nbytes, "flops": 0, "bytes_counted": how}
    time_entry(benchmark, f"{case} {mode}", impl, step(case, mode, impl), info)


if __name__ == "__main__":
    os.makedirs(RESULTS, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    args = [os.path.abspath(__file__), "-p", "no:cacheprovider", "--benchmark-disable-gc",
            "--benchmark-warmup=off", "--benchmark-min-rounds=5", "--benchmark-max-time=1.0",
            "--benchmark-group-by=group", "--benchmark-sort=name",
            f"--benchmark-json={os.path.join(RESULTS, f'colour-{stamp}.json')}",
            *sys.argv[1:]]  # fmt: skip
    print("pytest", " ".join(args[1:]))
    sys.exit(pytest.main(args))
