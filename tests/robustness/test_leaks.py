"""No leaks: 10,000 calls of each op (forward and backward) leave resident memory flat.

Resident memory is read from /proc/self/statm after a warm-up (allocator pools, lazily built
dispatch tables, the kernels' first touch); the bound, 8 MiB over 10,000 calls, is far below
what one leaked output per call would add (each call's outputs are 1-30 KiB, 10-300 MiB in all).
"""

from __future__ import annotations

import gc
import os

import pytest
from robustness.cases import CASES

CALLS = 10_000
WARMUP = 300
BOUND = 8 << 20


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc")
@pytest.mark.parametrize("name", sorted(CASES))
def test_resident_memory_stays_flat_over_10000_calls(name):
    case = CASES[name]
    for i in range(WARMUP):
        case(i % 7)
    gc.collect()
    before = rss()
    for i in range(CALLS):
        case(i % 7)
    gc.collect()
    grown = rss() - before
    assert grown < BOUND, f"{name}: resident memory grew {grown / 2**20:.1f} MiB over {CALLS} calls"
