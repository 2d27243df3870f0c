"""Benchmarks of the masked-patch family: pyssl against the eager reference (MAE's code,
``pyssl/reference/masking.py``) and ``torch.compile`` of that reference, on 2 threads.

Run from the repository root (40-80 s on 2 cores, a cold torch.compile cache included; up to
$PYSSL_BENCH_QUIET_WAIT = 60 s more waiting for a quiet CPU):

    source /root/dev/bin/activate
    python bench/bench_masking.py            # = the pytest line below, JSON into bench/.results/
    python bench/report.py                   # bench/.results/*.json -> bench/RESULTS.md

    python -m pytest bench/bench_masking.py -p no:cacheprovider --benchmark-disable-gc \
        --benchmark-warmup=off --benchmark-min-rounds=7 --benchmark-max-time=1.0 \
        --benchmark-group-by=group --benchmark-sort=name \
        --benchmark-json=bench/.results/masking-$(date +%Y%m%d-%H%M%S).json

The normal test run never collects this file: pyproject sets ``testpaths = ["tests"]`` and the
name ``bench_*.py`` does not match pytest's ``test_*.py``; pytest collects a path given on its
command line whatever the name.

What is timed: one call of a function that returns nothing, so that everything it allocates is
also freed inside the timed region (as in a training step). ``fwd+bwd`` = the forward with
autograd recording, then ``torch.autograd.grad`` of the output against a fixed random upstream
gradient (a fresh gradient tensor each call, never accumulated); ``fwd`` = the forward under
``torch.no_grad()``. Every entry is warmed up (at least 3 calls and 1 s; compiled entries
compile there) before pytest-benchmark times it. Before timing, each entry waits (up to a budget of
$PYSSL_BENCH_QUIET_WAIT seconds per run, default 60) for other processes to leave the CPU, and
records how many cores of foreign CPU time its timing overlapped (``foreign_cpu_cores``;
report.py prefers runs where it stayed low). Each entry's ``extra_info`` holds the case's
compulsory bytes and
FLOPs (the floor ``report.py`` shows) and, for ``fwd+bwd``, the peak bytes allocated through
torch's allocator during one call (torch.profiler, ``profile_memory=True``).
"""

from __future__ import annotations

import json
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
    sys.path.insert(0, _HERE)  # for `import ceilings`

import ceilings  # noqa: E402

ceilings.use_working_tree_if_built()

import pyssl  # noqa: E402
from pyssl.reference import masking as ref  # noqa: E402

torch.set_num_threads(2)

RESULTS = os.path.join(_HERE, ".results")

# ------------------------------------------------------------------------------- shapes

B, L, D = 64, 196, 768  # random_masking tokens
C, HW, P = 3, 224, 16  # images and patch size
RATIO = 0.75
K = int(L * (1 - RATIO))  # 49 kept patches
N = P * P * C  # 768 values per patch
F32, I64 = 4, 8
# Warm-up: at least 3 calls and 1 s. The CPU kernels advise huge pages for large fresh outputs;
# on this VM the first 5-10 such calls of a process take 50-70 ms before the guest recycles its
# huge pages (random_masking fwd+bwd: ~52 ms, then 6-7 ms). A 3-call warm-up left some runs
# timing only that transient. The first call's time is kept in extra_info.
WARMUP = 3
WARMUP_S = 1.0


def _perm_ids(gen: torch.Generator) -> torch.Tensor:
    """[B, L] random per-row permutations."""
    return torch.argsort(torch.rand(B, L, generator=gen), dim=1)


@cache
def inputs(case: str) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    if case == "random_masking":
        return {
            "x": torch.randn(B, L, D, generator=gen).requires_grad_(True),
            "noise": torch.rand(B, L, generator=gen),
            "grad": torch.randn(B, K, D, generator=gen),
        }
    if case == "gather_patches":
        return {
            "imgs": torch.randn(B, C, HW, HW, generator=gen).requires_grad_(True),
            "ids_keep": _perm_ids(gen)[:, :K].contiguous(),
            "grad": torch.randn(B, K, N, generator=gen),
        }
    if case == "masked_patch_loss":
        mask = torch.ones(B, L)
        mask.scatter_(1, _perm_ids(gen)[:, :K], 0.0)  # 1 = removed, 147 per row
        return {
            "pred": torch.randn(B, L, N, generator=gen).requires_grad_(True),
            "imgs": torch.randn(B, C, HW, HW, generator=gen),
            "mask": mask,
        }
    if case == "patchify":
        return {"imgs": torch.randn(B, C, HW, HW, generator=gen)}
    raise KeyError(case)


# ------------------------------------------------------------------- compulsory bytes, FLOPs


def counts(case: str, mode: str) -> tuple[int, int, str]:
    """(compulsory bytes, FLOPs, how the bytes were counted) of one call."""
    kept_rows = B * K * D * F32  # 9.63 MB: visible tokens / kept patches / their gradients
    full = B * L * D * F32  # 38.5 MB: all tokens / all pixels
    if case == "random_masking":
        fwd = B * L * F32 + kept_rows + kept_rows + B * L * F32 + B * K * I64 + B * L * I64
        fwd_s = "fwd: read noise + kept rows of x; write visible, mask, ids_keep, ids_restore"
        bwd = kept_rows + B * K * I64 + full
        bwd_s = "bwd: read grad_visible + ids_keep; write grad_x (all of it, zeros included)"
        flops = 0  # a 196-element sort per row: FLOPs do not matter
    elif case == "gather_patches":
        fwd = B * K * I64 + kept_rows + kept_rows
        fwd_s = "fwd: read ids_keep + kept pixels; write [B,K,p*p*C]"
        bwd = B * K * I64 + kept_rows + full
        bwd_s = "bwd: read ids_keep + upstream grad; write grad_imgs (all of it, zeros included)"
        flops = 0
    elif case == "masked_patch_loss":
        removed = B * (L - K) * N * F32  # 28.9 MB: only patches with mask != 0 count
        fwd = B * L * F32 + 2 * removed + F32
        fwd_s = "fwd: read mask + pred and imgs of the removed patches; write the scalar"
        bwd = B * L * F32 + 2 * removed + full
        bwd_s = "bwd: read mask + pred and imgs of the removed patches; write grad_pred (all)"
        # per removed value: stats 4 (sum; sub, mul, add), normalise 2, diff+square+add 3 in
        # the forward; stats 4, normalise 2, diff+scale 2 in the backward
        fwd_flops, bwd_flops = 9 * B * (L - K) * N, 8 * B * (L - K) * N
        flops = fwd_flops + (bwd_flops if mode == "fwd+bwd" else 0)
    elif case == "patchify":
        fwd, fwd_s = 2 * full, "fwd: read imgs; write [B,L,p*p*C]"
        bwd, bwd_s, flops = 0, "", 0
    else:
        raise KeyError(case)
    if mode == "fwd":
        return fwd, flops, fwd_s
    return fwd + bwd, flops, f"{fwd_s}; {bwd_s}"


# ------------------------------------------------------------------------------ functions


@cache
def compiled(case: str) -> Callable[..., Any]:
    fn = {
        "random_masking": ref.random_masking,
        "gather_patches": ref.gather_patches,
        "masked_patch_loss": ref.masked_patch_loss,
        "patchify": ref.patchify,
    }[case]
    return torch.compile(fn, dynamic=False)


def forward(case: str, impl: str) -> Callable[[], torch.Tensor]:
    """The op's differentiable output, for one implementation."""
    t = inputs(case)
    if case == "random_masking":
        x, noise = t["x"], t["noise"]
        if impl == "pyssl":
            return lambda: pyssl.ops.random_masking(x, RATIO, noise=noise).visible
        f = ref.random_masking if impl == "eager" else compiled(case)
        return lambda: f(x, RATIO, noise)[0]
    if case == "gather_patches":
        imgs, ids = t["imgs"], t["ids_keep"]
        f = {"pyssl": pyssl.ops.gather_patches, "eager": ref.gather_patches}.get(impl)
        f = f or compiled(case)
        return lambda: f(imgs, ids, P)
    if case == "masked_patch_loss":
        pred, imgs, mask = t["pred"], t["imgs"], t["mask"]
        f = {"pyssl": pyssl.ops.masked_patch_loss, "eager": ref.masked_patch_loss}.get(impl)
        f = f or compiled(case)
        return lambda: f(pred, imgs, mask, P)
    if case == "patchify":
        imgs = t["imgs"]
        f = {"pyssl": pyssl.ops.patchify, "eager": ref.patchify}.get(impl) or compiled(case)
        return lambda: f(imgs, P)
    raise KeyError(case)


def step(case: str, mode: str, impl: str) -> Callable[[], None]:
    """One timed call; returns nothing so that its allocations are freed inside the timing."""
    fwd = forward(case, impl)
    if mode == "fwd":

        def run_fwd() -> None:
            with torch.no_grad():
                fwd()

        return run_fwd
    t = inputs(case)
    leaf = (
        t["x"] if case == "random_masking" else t["pred" if case == "masked_patch_loss" else "imgs"]
    )
    upstream = t.get("grad")  # None for the scalar loss: autograd uses ones

    def run_fwd_bwd() -> None:
        out = fwd()
        torch.autograd.grad(out, leaf, upstream)

    return run_fwd_bwd


# ------------------------------------------------------------------------- memory accounting


def allocations(fn: Callable[[], None]) -> list[int]:
    """Signed sizes of the allocations (+) and frees (-) through torch's allocator during one
    call of ``fn``, in time order (torch.profiler with profile_memory=True). The C++ core's own
    std::vector scratch is not seen; it is O(B*L) (below 0.2 MB here)."""
    import torch._C._profiler as _P
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events: list[tuple[int, int]] = []

    def walk(node: Any) -> None:
        if node.typed[0] == _P._EventType.Allocation:
            events.append((node.start_time_ns, node.typed[1].alloc_size))
        for child in node.children:
            walk(child)

    for root in prof.profiler.kineto_results.experimental_event_tree():
        walk(root)
    events.sort()
    return [n for _, n in events]


def memory_info(fn: Callable[[], None]) -> dict[str, Any]:
    sizes = allocations(fn)
    cur = peak = 0
    for n in sizes:
        cur += n
        peak = max(peak, cur)
    big = sorted((n for n in sizes if n >= 2**20), reverse=True)
    return {"peak_alloc_bytes": peak, "end_alloc_bytes": cur, "allocs_over_1MiB": big}


# ------------------------------------------------------------------------------ contention


class ForeignCpu:
    """CPU time other processes used during a span, in cores (0 = the machine was ours; on 2
    cores with 2 threads, anything near 1 means the timing shared a core). From /proc/stat
    (all busy jiffies) minus this process's own CPU time."""

    def __enter__(self) -> ForeignCpu:
        self.t0, self.busy0, self.own0 = time.perf_counter(), _busy_seconds(), _own_seconds()
        return self

    def __exit__(self, *exc: object) -> None:
        wall = time.perf_counter() - self.t0
        foreign = (_busy_seconds() - self.busy0) - (_own_seconds() - self.own0)
        self.cores = max(0.0, foreign / wall) if wall > 0 else float("nan")


def _busy_seconds() -> float:
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return float("nan")
    # user nice system idle iowait irq softirq steal ...: busy = all but idle and iowait
    return (sum(v[:8]) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    t = os.times()
    return t.user + t.system


# How long, in all, one run may wait for other processes to leave the CPU before its entries
# (each entry waits until a 0.3 s sample shows under QUIET_CORES of foreign CPU, or the budget
# is spent; the timing then proceeds and records its foreign CPU either way).
QUIET_BUDGET_S = float(os.environ.get("PYSSL_BENCH_QUIET_WAIT", "60"))
QUIET_CORES = 0.2
_quiet_left = [QUIET_BUDGET_S]


def wait_for_quiet() -> float:
    """Seconds waited for the CPU to be ours (bounded by the run's remaining budget)."""
    waited = 0.0
    while _quiet_left[0] > 0:
        with ForeignCpu() as other:
            time.sleep(0.3)
        if other.cores < QUIET_CORES:
            break
        waited += 0.3
        _quiet_left[0] -= 0.3
    return waited


# ---------------------------------------------------------------------------------- entries

CASES = [
    ("random_masking", "fwd+bwd"),
    ("random_masking", "fwd"),
    ("gather_patches", "fwd+bwd"),
    ("gather_patches", "fwd"),
    ("masked_patch_loss", "fwd+bwd"),
    ("masked_patch_loss", "fwd"),
    ("patchify", "fwd"),
]
IMPLS = ["pyssl", "eager", "compiled"]
SKIPS = os.path.join(RESULTS, "skips.json")


def _record_skip(name: str, reason: str) -> None:
    os.makedirs(RESULTS, exist_ok=True)
    skips = {}
    if os.path.exists(SKIPS):
        with open(SKIPS) as f:
            skips = json.load(f)
    skips[name] = {"reason": reason, "when": time.strftime("%Y-%m-%d %H:%M:%S")}
    with open(SKIPS, "w") as f:
        json.dump(skips, f, indent=2)


def time_entry(
    benchmark: Any, group: str, impl: str, fn: Callable[[], None], info: dict[str, Any]
) -> None:
    """The shared shape of a timed entry (the pretext and colour benchmarks): a first call
    outside the timing (compiled entries compile there; only they may fail, the reason
    recorded and the entry skipped), 3 warm calls, ``info`` plus the first call's time and, for
    fwd+bwd, the allocator's peak, then the timing with the foreign CPU it overlapped."""
    benchmark.group = group
    try:
        t0 = time.perf_counter()
        fn()
        first_ms = (time.perf_counter() - t0) * 1e3
    except Exception as exc:
        if impl != "compiled":
            raise
        reason = f"torch.compile failed: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
        _record_skip(f"{group} / {impl}", reason)
        pytest.skip(reason)
    for _ in range(3):
        fn()
    info = {**info, "impl": impl, "warmup_first_ms": first_ms, "threads": torch.get_num_threads()}
    if info.get("mode") == "fwd+bwd":
        info.update(memory_info(fn))
    info["waited_for_quiet_s"] = wait_for_quiet()
    benchmark.extra_info.update(info)
    with ForeignCpu() as other:
        benchmark(fn)
    benchmark.extra_info["foreign_cpu_cores"] = other.cores


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(("case", "mode"), CASES, ids=[f"{c}-{m}" for c, m in CASES])
def test_masking(benchmark: Any, case: str, mode: str, impl: str) -> None:
    group = f"{case} {mode}"
    benchmark.group = group
    fn = step(case, mode, impl)
    warm_ms: list[float] = []

    def warm_call() -> None:
        t0 = time.perf_counter()
        fn()
        warm_ms.append((time.perf_counter() - t0) * 1e3)

    try:  # the first call: compiled entries compile here, outside the timing
        warm_call()
    except Exception as exc:  # only torch.compile is allowed to fail, with its reason recorded
        if impl != "compiled":
            raise
        reason = f"torch.compile failed: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
        _record_skip(f"{group} / {impl}", reason)
        pytest.skip(reason)
    nbytes, flops, how = counts(case, mode)
    info: dict[str, Any] = {
        "case": case,
        "mode": mode,
        "impl": impl,
        "bytes": nbytes,
        "flops": flops,
        "bytes_counted": how,
        "threads": torch.get_num_threads(),
    }
    if mode == "fwd+bwd":
        info.update(memory_info(fn))
    info["loadavg_before"] = os.getloadavg()[0]
    info["waited_for_quiet_s"] = wait_for_quiet()
    start = time.perf_counter()  # then warm up right before the timing
    while len(warm_ms) < 1 + WARMUP or time.perf_counter() - start < WARMUP_S:
        warm_call()
    info.update(warmup_calls=len(warm_ms), warmup_first_ms=warm_ms[0], warmup_last_ms=warm_ms[-1])
    benchmark.extra_info.update(info)
    with ForeignCpu() as other:
        benchmark(fn)
    benchmark.extra_info["foreign_cpu_cores"] = other.cores


# ------------------------------------------------------------------------- machine ceilings


def test_ceiling_copy(benchmark: Any) -> None:
    benchmark.group = "ceiling"
    fn, nbytes = ceilings.copy_case()
    fn()
    wait_for_quiet()
    benchmark.extra_info.update(
        {"ceiling": "copy", "bytes": nbytes, "threads": torch.get_num_threads()}
    )
    with ForeignCpu() as other:
        benchmark(fn)
    benchmark.extra_info["foreign_cpu_cores"] = other.cores


def test_ceiling_cached_copy(benchmark: Any) -> None:
    benchmark.group = "ceiling"
    fn, nbytes = ceilings.copy_case(ceilings.CACHED_COPY_BYTES)
    fn()
    wait_for_quiet()
    benchmark.extra_info.update(
        {"ceiling": "cached_copy", "bytes": nbytes, "threads": torch.get_num_threads()}
    )
    with ForeignCpu() as other:
        benchmark(fn)
    benchmark.extra_info["foreign_cpu_cores"] = other.cores


def test_ceiling_matmul(benchmark: Any) -> None:
    benchmark.group = "ceiling"
    fn, flops = ceilings.mm_case()
    fn()
    wait_for_quiet()
    benchmark.extra_info.update(
        {"ceiling": "matmul", "flops": flops, "threads": torch.get_num_threads()}
    )
    with ForeignCpu() as other:
        benchmark(fn)
    benchmark.extra_info["foreign_cpu_cores"] = other.cores


@pytest.mark.parametrize("name", list(ceilings.touch_cases()))
def test_first_touch(benchmark: Any, name: str) -> None:
    benchmark.group = "first touch (torch.empty + fill vs fill of a warm buffer)"
    fn, nbytes = ceilings.touch_cases()[name]
    fn()
    wait_for_quiet()
    benchmark.extra_info.update({"touch": name, "bytes": nbytes})
    with ForeignCpu() as other:
        benchmark(fn)
    benchmark.extra_info["foreign_cpu_cores"] = other.cores


if __name__ == "__main__":
    os.makedirs(RESULTS, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    args = [
        os.path.abspath(__file__),
        "-p",
        "no:cacheprovider",
        "--benchmark-disable-gc",
        "--benchmark-warmup=off",
        "--benchmark-min-rounds=7",
        "--benchmark-max-time=1.0",
        "--benchmark-group-by=group",
        "--benchmark-sort=name",
        f"--benchmark-json={os.path.join(RESULTS, f'masking-{stamp}.json')}",
        *sys.argv[1:],
    ]
    print("pytest", " ".join(args[1:]))
    sys.exit(pytest.main(args))
