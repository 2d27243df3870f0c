"""Two CPU processes (gloo) with gather=True give the loss and gradients of one process that
holds the whole batch."""

from __future__ import annotations

import os
import tempfile

import torch
import torch.multiprocessing as mp
from distributed_worker import WORLD, full_batch, losses, worker

from pyssl import distributed


def test_two_gloo_processes_equal_one_process_with_the_whole_batch():
    with tempfile.TemporaryDirectory() as tmp:
        init = "file://" + os.path.join(tmp, "rendezvous")
        out = os.path.join(tmp, "result")
        mp.start_processes(worker, args=(init, out), nprocs=WORLD, join=True, start_method="spawn")
        parts = [torch.load(f"{out}.{r}") for r in range(WORLD)]
    data = full_batch()
    for name in ("info_nce", "nt_xent", "clip", "siglip"):
        a = data["a"].clone().requires_grad_(True)
        b = data["b"].clone().requires_grad_(True)
        scale = data["scale"].clone().requires_grad_(True)
        bias = data["bias"].clone().requires_grad_(True)
        want = losses(a, b, scale, bias, gather=False)[name]
        want.backward()
        got_loss = parts[0][name]["loss"]
        torch.testing.assert_close(got_loss, want.detach(), msg=name)
        # each process's input gradient sums every process's loss; DDP's average divides by WORLD
        got_a = torch.cat([p[name]["a"] for p in parts]) / WORLD
        got_b = torch.cat([p[name]["b"] for p in parts]) / WORLD
        torch.testing.assert_close(got_a, a.grad, msg=name)
        torch.testing.assert_close(got_b, b.grad, msg=name)
        want_scale = scale.grad if scale.grad is not None else torch.zeros((), dtype=a.dtype)
        torch.testing.assert_close(parts[0][name]["scale"], want_scale, msg=name)


def test_outside_a_process_group_all_gather_is_the_identity():
    x = torch.randn(3, 2)
    assert distributed.all_gather(x) is x
    assert distributed.rank() == 0 and distributed.world_size() == 1
