"""The worker processes of tests/test_distributed.py. A module of its own, importable by name
(tests/ is on sys.path through conftest.py), because spawned processes import the worker
function by its module's name."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

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


def worker(rank: int, init: str, out: str) -> None:
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
