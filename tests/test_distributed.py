"""Two CPU processes (gloo) with gather=True give the loss and gradients of one process that
holds the whole batch."""

from __future__ import annotations

import os
import tempfile

import pytest
import torch
import torch.multiprocessing as mp
from distributed_worker import NAMES, WORLD, full_batch, losses, moco_module, worker

from pyssl import distributed, ops


def _zero_if_none(g, like):
    return g if g is not None else torch.zeros((), dtype=like.dtype)


@pytest.fixture(scope="module")
def parts():
    """What each of the two processes computed (one launch for the tests of this module)."""
    with tempfile.TemporaryDirectory() as tmp:
        init = "file://" + os.path.join(tmp, "rendezvous")
        out = os.path.join(tmp, "result")
        mp.start_processes(worker, args=(init, out), nprocs=WORLD, join=True, start_method="spawn")
        return [torch.load(f"{out}.{r}") for r in range(WORLD)]


def test_two_gloo_processes_equal_one_process_with_the_whole_batch(parts):
    data = full_batch()
    for name in NAMES:
        a = data["a"].clone().requires_grad_(True)
        b = data["b"].clone().requires_grad_(True)
        scale = data["scale"].clone().requires_grad_(True)
        bias = data["bias"].clone().requires_grad_(True)
        want = losses(a, b, scale, bias, data["queue"], gather=False)[name]
        want.backward()
        if name == "siglip":  # the bias gradient exists and is compared
            assert bias.grad is not None and float(bias.grad) != 0
        for p in parts:  # every process holds the same averaged loss and scalar gradients
            torch.testing.assert_close(p[name]["loss"], want.detach(), msg=name)
            torch.testing.assert_close(p[name]["scale"], _zero_if_none(scale.grad, a), msg=name)
            torch.testing.assert_close(p[name]["bias"], _zero_if_none(bias.grad, a), msg=name)
        # each process's input gradient sums every process's loss; DDP's average divides by WORLD
        got_a = torch.cat([p[name]["a"] for p in parts]) / WORLD
        got_b = torch.cat([p[name]["b"] for p in parts]) / WORLD
        torch.testing.assert_close(got_a, a.grad, msg=name)
        torch.testing.assert_close(got_b, b.grad, msg=name)


def test_two_gloo_processes_moco_module_enqueues_every_process_keys(parts):
    # One process with the whole batch: the loss against the queue, then all keys enqueued.
    parts = [p["moco_module"] for p in parts]
    data = full_batch()
    module = moco_module(data["queue"], gather=False)
    a = data["a"].clone().requires_grad_(True)
    want = module(a, data["b"])
    want.backward()
    torch.testing.assert_close(
        want, ops.moco_loss(a, data["b"], data["queue"], temperature=0.3), rtol=0, atol=0
    )
    want_queue = torch.cat([data["queue"], data["b"]])[-data["queue"].shape[0] :]
    torch.testing.assert_close(module.queue.features(), want_queue)
    for p in parts:
        torch.testing.assert_close(p["loss"], want.detach())
        torch.testing.assert_close(p["queue"], want_queue)  # identical on every process
    torch.testing.assert_close(torch.cat([p["a"] for p in parts]) / WORLD, a.grad)


def test_outside_a_process_group_all_gather_is_the_identity():
    x = torch.randn(3, 2)
    assert distributed.all_gather(x) is x
    assert distributed.rank() == 0 and distributed.world_size() == 1
