"""Two gloo processes with half the batch each reproduce one process with the whole batch: the
methods' cross-process paths (gathered negatives and keys, gathered batch statistics, the MoCo
queue's gathered keys, DINO's averaged centre)."""

from __future__ import annotations

import os
import tempfile

import torch
import torch.multiprocessing as mp
from ddp_worker import NAMES, WORLD, make, step, views, worker


def test_two_processes_equal_one_with_the_whole_batch() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        init = "file://" + os.path.join(tmp, "rendezvous")
        out = os.path.join(tmp, "result")
        mp.start_processes(worker, args=(init, out), nprocs=WORLD, join=True, start_method="spawn")
        parts = [torch.load(f"{out}.{r}") for r in range(WORLD)]
    for name in NAMES:
        want = step(make(name), views(name, slice(None)))
        for rank, part in enumerate(parts):
            got = part[name]
            assert set(got) == set(want), name
            for key in want:
                torch.testing.assert_close(got[key], want[key], msg=f"{name} {key} rank {rank}")
