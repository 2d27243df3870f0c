"""Benchmarks of the contrastive losses: pyssl against the eager reference
(``pyssl/reference/contrastive.py``, written as lightly / open_clip write them), ``torch.compile``
of it, and the peer libraries' own losses where they import (lightly ``NTXentLoss``, open_clip
``ClipLoss`` / ``SigLipLoss``); CPU, fp32, 2 threads. Conventions as ``bench_masking.py``.

    PYTHONPATH=$PWD /root/peers/bin/python bench/bench_contrastive.py   # ~3-4 min, JSON ->
    PYTHONPATH=$PWD /root/peers/bin/python bench/bench_contrastive.py --large  # bench/.results/
    python bench/report.py

fwd+bwd = the loss, then ``torch.autograd.grad`` against every input that needs a gradient.
FLOPs counted = 2 per multiply-add of the similarity matrix for the forward, its recompute in
the backward, and one gradient matmul per input side with a gradient: 8*R*C*D when both sides
(nt_xent: the 2N views are both rows and columns; clip/siglip: image and text) get gradients,
6*N*K*D for moco (no gradient to the queue). The eager reference does not recompute (6*R*C*D).
Bytes = inputs + their gradients (the floor is the matmul floor throughout). Peak memory: torch's
allocator through torch.profiler (``peak_alloc_bytes``) and, in a fresh subprocess, the growth
of the process's resident set (VmHWM after one call minus VmRSS before it, after a small warm
call; ``rss_growth_bytes``), which also sees the C++ core's own scratch buffers.
``--large``: nt_xent at N = 65536 (2N = 131072), pyssl only, ONE fwd+bwd timed in this process,
with its RSS growth; written to ``bench/.results/contrastive-large-<stamp>.json``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from functools import cache
from typing import Any

import pytest
import torch
import torch.nn.functional as F

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
import ceilings  # noqa: E402

ceilings.use_working_tree_if_built()

from bench_masking import (  # noqa: E402, F401  (the ceiling tests run here too)
    ForeignCpu,
    _record_skip,
    memory_info,
    test_ceiling_copy,
    test_ceiling_matmul,
    wait_for_quiet,
)

import pyssl  # noqa: E402
from pyssl.reference import contrastive as ref  # noqa: E402

torch.set_num_threads(2)
RESULTS = os.path.join(_HERE, ".results")
D = 128
SHAPES = {"nt_xent": (4096, 0), "clip_loss": (4096, 0), "siglip_loss": (4096, 0),
          "moco_loss": (256, 65536)}  # fmt: skip
LARGE_N = 65536


def _peer(case: str) -> Callable[..., torch.Tensor] | None:
    """lightly's / open_clip's own loss module, or None when it does not import."""
    try:
        if case == "nt_xent":
            from lightly.loss import NTXentLoss

            return NTXentLoss(temperature=0.5)
        if case == "clip_loss":
            from open_clip.loss import ClipLoss

            return ClipLoss()
        if case == "siglip_loss":
            from open_clip.loss import SigLipLoss

            return SigLipLoss()
    except ImportError:
        return None
    return None


def make_inputs(case: str, n: int | None = None) -> dict[str, torch.Tensor]:
    n = n or SHAPES[case][0]
    gen = torch.Generator().manual_seed(0)
    feat = lambda m: F.normalize(torch.randn(m, D, generator=gen), dim=1)  # noqa: E731
    if case == "nt_xent":
        return {"z1": torch.randn(n, D, generator=gen).requires_grad_(),
                "z2": torch.randn(n, D, generator=gen).requires_grad_()}  # fmt: skip
    if case in ("clip_loss", "siglip_loss"):
        scale = 14.3 if case == "clip_loss" else 10.0
        t = {"image": feat(n).requires_grad_(), "text": feat(n).requires_grad_(),
             "logit_scale": torch.tensor(scale).requires_grad_()}  # fmt: skip
        if case == "siglip_loss":
            t["logit_bias"] = torch.tensor(-10.0).requires_grad_()
        return t
    if case == "moco_loss":
        return {"query": feat(n).requires_grad_(), "key": feat(n).requires_grad_(),
                "queue": feat(SHAPES[case][1])}  # fmt: skip
    raise KeyError(case)


inputs = cache(make_inputs)


def counts(case: str, n: int | None = None) -> tuple[int, int]:
    """(bytes: inputs + their gradients, FLOPs) of one fwd+bwd."""
    n = n or SHAPES[case][0]
    if case == "nt_xent":
        return 2 * (2 * n * D * 4), 8 * (2 * n) ** 2 * D
    if case in ("clip_loss", "siglip_loss"):
        return 2 * (2 * n * D * 4), 8 * n * n * D
    k = SHAPES[case][1]
    return (4 * n * D + k * D) * 4, 6 * n * k * D


@cache
def _compiled(case: str) -> Callable[..., torch.Tensor]:
    return torch.compile(getattr(ref, case), dynamic=False)


def step(case: str, impl: str, t: dict[str, torch.Tensor]) -> Callable[[], None]:
    args = list(t.values())
    kw: dict[str, Any] = {}
    if case == "nt_xent":
        kw = {"temperature": 0.5}
    fn: Callable[..., torch.Tensor] | None = {
        "pyssl": getattr(pyssl.ops, case), "eager": getattr(ref, case)}.get(impl)  # fmt: skip
    if impl == "compiled":
        fn = _compiled(case)
    elif impl == "peer":
        fn, kw = _peer(case), {}
    assert fn is not None
    leaves = [a for a in args if a.requires_grad]

    def run() -> None:
        torch.autograd.grad(fn(*args, **kw), leaves)

    return run


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        line = next(ln for ln in f if ln.startswith(key + ":"))
    return int(line.split()[1]) * 1024


def rss_growth(case: str, impl: str, n: int | None = None) -> dict[str, Any]:
    """In this (fresh) process: one small warm call, then VmHWM growth over one full call."""
    step(case, impl, make_inputs(case, 64))()
    t = make_inputs(case, n)
    run = step(case, impl, t)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS
    base = _status("VmRSS")
    t0 = time.perf_counter()
    run()
    secs = time.perf_counter() - t0
    inputs_bytes = sum(x.numel() * x.element_size() for x in t.values())
    return {"rss_growth_bytes": _status("VmHWM") - base, "rss_base_bytes": base,
            "inputs_bytes": inputs_bytes, "one_call_s": secs}  # fmt: skip


def rss_in_subprocess(case: str, impl: str) -> dict[str, Any]:
    cmd = [sys.executable, os.path.abspath(__file__), "--rss", case, impl]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1])


IMPLS = ["pyssl", "eager", "compiled", "peer"]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", list(SHAPES))
def test_contrastive(benchmark: Any, case: str, impl: str) -> None:
    group = f"{case} fwd+bwd"
    benchmark.group = group
    if impl == "peer" and case == "moco_loss":
        _record_skip(f"{group} / {impl}", "no peer library here ships a MoCo loss with a queue")
        pytest.skip("no peer library here ships a MoCo loss with a queue")
    if impl == "peer" and _peer(case) is None:
        reason = f"peer library not importable under torch {torch.__version__} ({sys.executable})"
        _record_skip(f"{group} / {impl}", reason)
        pytest.skip(reason)
    fn = step(case, impl, inputs(case))
    t0 = time.perf_counter()
    try:
        fn()  # compiled entries compile here
    except Exception as exc:
        if impl != "compiled":
            raise
        reason = f"torch.compile failed: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
        _record_skip(f"{group} / {impl}", reason)
        pytest.skip(reason)
    first_ms = (time.perf_counter() - t0) * 1e3
    nbytes, flops = counts(case)
    n, k = SHAPES[case]
    info: dict[str, Any] = {"case": case, "mode": "fwd+bwd", "impl": impl, "bytes": nbytes,
                            "flops": flops, "n": n, "k": k, "d": D, "warmup_first_ms": first_ms,
                            "threads": torch.get_num_threads()}  # fmt: skip
    info.update(memory_info(fn))
    if impl in ("pyssl", "eager"):
        info.update(rss_in_subprocess(case, impl))
    info["waited_for_quiet_s"] = wait_for_quiet()
    fn()
    benchmark.extra_info.update(info)
    with ForeignCpu() as other:
        benchmark(fn)
    benchmark.extra_info["foreign_cpu_cores"] = other.cores


def large() -> None:
    from conftest import core_build

    from pyssl.ops import _backend

    nbytes, flops = counts("nt_xent", LARGE_N)
    res = rss_growth("nt_xent", "pyssl", LARGE_N)
    mm_fn, mm_flops = ceilings.mm_case()
    mm_rate = mm_flops / ceilings.median_time(mm_fn, 7)
    res.update(case="nt_xent", impl="pyssl", n=LARGE_N, d=D, bytes=nbytes, flops=flops,
               matmul_flops_per_s=mm_rate, floor_s=flops / mm_rate, torch=torch.__version__,
               threads=torch.get_num_threads(), datetime=time.strftime("%Y-%m-%dT%H:%M:%S"),
               pyssl_core_build=core_build(getattr(_backend._C, "__file__", "?")))  # fmt: skip
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, f"contrastive-large-{time.strftime('%Y%m%d-%H%M%S')}.json")
    with open(path, "w") as f:
        json.dump(res, f, indent=2)
    print(json.dumps(res, indent=2), f"\nwrote {path}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--rss"]:
        print(json.dumps(rss_growth(sys.argv[2], sys.argv[3])))
        sys.exit(0)
    if sys.argv[1:2] == ["--large"]:
        large()
        sys.exit(0)
    os.makedirs(RESULTS, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    args = [os.path.abspath(__file__), "-p", "no:cacheprovider", "--benchmark-disable-gc",
            "--benchmark-warmup=off", "--benchmark-min-rounds=3", "--benchmark-max-time=1.0",
            "--benchmark-group-by=group", "--benchmark-sort=name",
            f"--benchmark-json={os.path.join(RESULTS, f'contrastive-{stamp}.json')}",
            *sys.argv[1:]]  # fmt: skip
    print("pytest", " ".join(args[1:]))
    sys.exit(pytest.main(args))
