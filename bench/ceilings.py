"""The machine's two ceilings, and the cost of first touch.

* copy bandwidth: ``dst.copy_(src)`` of a 256 MiB fp32 tensor into a preallocated, already
  written ``dst``, counting read + write bytes (2 x 256 MiB). Both buffers are touched before
  timing, so no page fault is timed: a steady-state number. The floor uses it. A 32 MiB copy
  (L3-resident here) is measured too, as the rate a loop over cache-resident tensors can see.
* matmul rate: ``torch.mm(a, b, out=c)`` on 2048 x 2048 fp32 (2 * 2048**3 FLOPs).
* first touch: ``torch.empty(n).fill_(1)`` (fresh memory each call) against ``buf.fill_(1)`` of a
  warm buffer, for the byte counts of the masking ops' outputs. Allocations above glibc's mmap
  threshold (at most 32 MiB) are fresh ``mmap`` pages on every call and fault on first write.

``bench_masking.py`` times these through pytest-benchmark in the same run as the ops (so ceilings
and ops are measured under the same load); ``python bench/ceilings.py`` measures them alone and
prints them, as ``report.py`` does when a run holds no ceiling entries.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections.abc import Callable

import torch

THREADS = 2
COPY_BYTES = 256 * 2**20  # per buffer: 512 MiB in all, twice this machine's 260 MiB L3
# A copy whose buffers stay in the L3 (as the masking ops' 10-100 MB working sets do when they
# are called in a loop): a second, higher rate, shown beside the floor, not used for it.
CACHED_COPY_BYTES = 32 * 2**20
MM_N = 2048
# fp32 sizes of the masking outputs at the benchmark shapes: [64, 49, 768] and [64, 3, 224, 224]
TOUCH_SIZES = {"9.6MB": 64 * 49 * 768, "38.5MB": 64 * 3 * 224 * 224}


def copy_case(nbytes: int = COPY_BYTES) -> tuple[Callable[[], object], int]:
    """The timed callable and the bytes it moves (read + write)."""
    n = nbytes // 4
    src = torch.randn(n)
    dst = torch.empty(n)
    dst.copy_(src)  # first touch of dst here, not in the timed calls
    return (lambda: dst.copy_(src)), 2 * nbytes


def mm_case() -> tuple[Callable[[], object], int]:
    """The timed callable and the FLOPs it does."""
    a, b = torch.randn(MM_N, MM_N), torch.randn(MM_N, MM_N)
    c = torch.empty(MM_N, MM_N)
    torch.mm(a, b, out=c)
    return (lambda: torch.mm(a, b, out=c)), 2 * MM_N**3


def touch_cases() -> dict[str, tuple[Callable[[], object], int]]:
    """'fresh <size>': torch.empty + fill each call; 'warm <size>': fill of a reused buffer."""
    cases: dict[str, tuple[Callable[[], object], int]] = {}
    for label, n in TOUCH_SIZES.items():
        buf = torch.empty(n)
        buf.fill_(0.0)
        cases[f"fresh {label}"] = ((lambda n=n: torch.empty(n).fill_(1.0)), 4 * n)
        cases[f"warm {label}"] = ((lambda buf=buf: buf.fill_(1.0)), 4 * n)
    return cases


def median_time(fn: Callable[[], object], repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure() -> dict[str, float]:
    """Standalone measurement: GB/s, GFLOP/s and first-touch times (medians)."""
    torch.set_num_threads(THREADS)
    fn, nbytes = copy_case()
    copy_s = median_time(fn, 11)
    fn, cached_bytes = copy_case(CACHED_COPY_BYTES)
    cached_s = median_time(fn, 21)
    fn, flops = mm_case()
    mm_s = median_time(fn, 7)
    out = {
        "copy_GBps": nbytes / copy_s / 1e9,
        "copy_median_ms": copy_s * 1e3,
        "cached_copy_GBps": cached_bytes / cached_s / 1e9,
        "matmul_GFLOPps": flops / mm_s / 1e9,
        "matmul_median_ms": mm_s * 1e3,
    }
    for name, (fn, _) in touch_cases().items():
        out[f"{name}_ms"] = median_time(fn, 15) * 1e3
    out["loadavg_1min"] = os.getloadavg()[0]
    return out


if __name__ == "__main__":
    result = measure()
    json.dump(result, sys.stdout, indent=2)
    print()


def use_working_tree_if_built() -> None:
    """Puts the repository root first on sys.path when its core is built there (development:
    pyssl/_C*.so); otherwise the installed pyssl is benchmarked."""
    import glob
    import os
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if glob.glob(os.path.join(root, "pyssl", "_C*.so")) and root not in sys.path:
        sys.path.insert(0, root)
