"""Benchmarks of the pretext family: pyssl's rotations (RotNet) and jigsaw shuffles against the
eager reference (``pyssl/reference/pretext.py``: ``torch.rot90`` four times and ``torch.stack``;
reshape/permute/index for the jigsaw) and ``torch.compile`` of that reference, on 2 threads, in
one run. B = 64 images of 3x224x224 (float32 and uint8) for the rotations; 3x222x222 (3x3 tiles
of 74) for the jigsaw.

    python bench/bench_pretext.py    # ~1-2 min quiet (a cold torch.compile included), JSON ->
    python bench/report.py           # bench/.results/pretext-*.json

Compulsory bytes (the floor report.py shows; no FLOPs, these are copies): rotations fwd reads
the images once and writes four rotated copies (5 x the image bytes); fwd+bwd adds the
backward's read of the four upstream gradients and write of one input gradient (5 x more).
jigsaw fwd: read once, write once (2 x); pyssl runs it as two kernels (gather the tiles in
permuted order, then lay them out), so it moves 4 x. Timed calls return nothing, so their
allocations are freed inside the timing, as in a training step.
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

from pyssl.ops.pretext import jigsaw_permutations, jigsaw_shuffle, rotations  # noqa: E402
from pyssl.reference import pretext as ref  # noqa: E402

torch.set_num_threads(2)
RESULTS = os.path.join(_HERE, ".results")
B, C, HW, JIG = 64, 3, 224, 222
CASES = [
    ("rotations", "fwd"),
    ("rotations-uint8", "fwd"),
    ("rotations", "fwd+bwd"),
    ("jigsaw", "fwd"),
    ("jigsaw", "fwd+bwd"),
]
IMPLS = ["pyssl", "eager", "compiled"]


@cache
def inputs(case: str) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    if case == "jigsaw":
        x = torch.rand(B, C, JIG, JIG, generator=g)
        perms = jigsaw_permutations(100, 3)[torch.randint(100, (B,), generator=g)]
        return {"x": x.requires_grad_(True), "perms": perms, "grad": torch.randn_like(x)}
    if case == "rotations-uint8":
        return {"x": torch.randint(0, 256, (B, C, HW, HW), generator=g, dtype=torch.uint8)}
    x = torch.rand(B, C, HW, HW, generator=g)
    return {"x": x.requires_grad_(True), "grad": torch.randn(B, 4, C, HW, HW, generator=g)}


def counts(case: str, mode: str) -> tuple[int, str]:
    if case == "jigsaw":
        image = C * JIG * JIG * 4 * B
        if mode == "fwd":
            return 2 * image, "read the images once, write once (2 x image bytes)"
        return 4 * image, "fwd 2 x; bwd reads the upstream gradient and writes grad_in (2 x)"
    image = C * HW * HW * B * (1 if case == "rotations-uint8" else 4)
    if mode == "fwd":
        return 5 * image, "read the images once, write 4 rotations (5 x image bytes)"
    return 10 * image, "fwd 5 x; bwd reads 4 upstream gradients, writes grad_in (5 x)"


def _eager(case: str) -> Callable[..., torch.Tensor]:
    if case == "jigsaw":
        return lambda x, p: ref.jigsaw_shuffle(x, p, 3)
    return ref.rotations


@cache
def compiled(case: str) -> Callable[..., Any]:
    return torch.compile(_eager(case), dynamic=False)


def step(case: str, mode: str, impl: str) -> Callable[[], None]:
    t = inputs(case)
    if impl == "pyssl":
        f: Callable[..., Any] = (
            (lambda x, p: jigsaw_shuffle(x, p, 3))
            if case == "jigsaw"
            else (lambda x: rotations(x)[0])
        )
    else:
        f = _eager(case) if impl == "eager" else compiled(case)
    args = (t["x"], t["perms"]) if case == "jigsaw" else (t["x"],)
    if mode == "fwd":

        def run_fwd() -> None:
            with torch.no_grad():
                f(*args)

        return run_fwd
    x, upstream = t["x"], t["grad"]
    if case != "jigsaw" and impl == "pyssl":
        upstream = upstream.view(-1, C, HW, HW)  # pyssl returns the [4B, C, S, S] view

    def run_fwd_bwd() -> None:
        torch.autograd.grad(f(*args), x, upstream)

    return run_fwd_bwd


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(("case", "mode"), CASES, ids=[f"{c}-{m}" for c, m in CASES])
def test_pretext(benchmark: Any, case: str, mode: str, impl: str) -> None:
    nbytes, how = counts(case, mode)
    info = {"case": case, "mode": mode, "bytes": nbytes, "flops": 0, "bytes_counted": how}
    time_entry(benchmark, f"{case} {mode}", impl, step(case, mode, impl), info)


if __name__ == "__main__":
    os.makedirs(RESULTS, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    args = [os.path.abspath(__file__), "-p", "no:cacheprovider", "--benchmark-disable-gc",
            "--benchmark-warmup=off", "--benchmark-min-rounds=5", "--benchmark-max-time=1.0",
            "--benchmark-group-by=group", "--benchmark-sort=name",
            f"--benchmark-json={os.path.join(RESULTS, f'pretext-{stamp}.json')}",
            *sys.argv[1:]]  # fmt: skip
    print("pytest", " ".join(args[1:]))
    sys.exit(pytest.main(args))
