"""Thread safety: every op called from 4 Python threads at once (each call runs OpenMP inside,
the GIL released around the kernels) gives bit-for-bit what sequential calls give."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from robustness.cases import CASES


@pytest.mark.parametrize("name", sorted(CASES))
def test_concurrent_calls_match_sequential_calls(name):
    case = CASES[name]
    seeds = list(range(16))  # 4 threads x 4 calls each, every call on its own inputs
    sequential = [case(s) for s in seeds]
    with ThreadPoolExecutor(max_workers=4) as pool:
        concurrent = list(pool.map(case, seeds))
    for seed, seq, con in zip(seeds, sequential, concurrent):
        assert len(seq) == len(con)
        for a, b in zip(seq, con):
            assert torch.equal(a, b), f"{name}, seed {seed}: a concurrent call differs"


def test_all_ops_interleaved_from_threads():
    # different ops at once: no shared scratch state between op families
    work = [(name, s) for s in range(3) for name in sorted(CASES)]
    expected = {(n, s): CASES[n](s) for n, s in work}
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(lambda w: CASES[w[0]](w[1]), work))
    for w, out in zip(work, got):
        for a, b in zip(expected[w], out):
            assert torch.equal(a, b), w
