"""Two CPU processes (gloo) with gather=True give the loss and gradients of one process that
holds the whole batch."""

from __future__ import annotations

import os
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pyssl import distributed, ops

WORLD = 2
N, D = 6, 10  # rows per process


def full_batch(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    f = lambda: torch.nn.functional.normalize(  # noqa: E731
        torch.randn(WORLD * N, D, generator=g, dtype=torch.float64), dim=1
    )
    return {
        "a": f(),
        "b": f(),
        "scale": torch.tensor(4.0, dtype=torch.float64),
        "bias": torch.tensor(-2.0, dtype=torch.float64),
    }


def losses(a, b, scale, bias, gather):
    return {
        "info_nce": ops.info_nce(a, b, logit_scale=scale, gather=gather),
        "nt_xent": ops.nt_xent(a, b, temperature=0.3, gather=gather),
        "clip": ops.clip_loss(a, b, scale, gather=gather),
        "siglip": ops.siglip_loss(a, b, scale, bias, gather=gather),
    }


def _worker(rank: int, init: str, out: str) -> None:
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=WORLD)
    try:
        data = full_batch()
        rows = slice(rank * N, (rank + 1) * N)
        result = {}
        for name in ("info_nce", "nt_xent", "clip", "siglip"):
            a = data["a"][rows].clone().requires_grad_(True)
            b = data["b"][rows].clone().requires_grad_(True)
            scale = data["scale"].clone().requires_grad_(True)
            bias = data["bias"].clone().requires_grad_(True)
            loss = losses(a, b, scale, bias, gather=True)[name]
            loss.backward()
            # what DDP would do: average the per-process loss and the parameter gradient
            total = loss.detach().clone()
            scale_grad = scale.grad if scale.grad is not None else torch.zeros((), dtype=a.dtype)
            dist.all_reduce(total)
            dist.all_reduce(scale_grad)
            result[name] = {
                "loss": total / WORLD,
                "a": a.grad,
                "b": b.grad,
                "scale": scale_grad / WORLD,
            }
        torch.save(result, f"{out}.{rank}")
        all_grad = distributed.all_gather(torch.ones(2, 1))
        assert all_grad.shape == (2 * WORLD, 1)
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_equal_one_process_with_the_whole_batch():
    with tempfile.TemporaryDirectory() as tmp:
        init = "file://" + os.path.join(tmp, "rendezvous")
        out = os.path.join(tmp, "result")
        mp.start_processes(_worker, args=(init, out), nprocs=WORLD, join=True, start_method="spawn")
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
