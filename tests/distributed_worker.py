"""The worker processes of tests/test_distributed.py. A module of its own, importable by name
(tests/ is on sys.path through conftest.py), because spawned processes import the worker
function by its module's name."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from pyssl import distributed, ops
from pyssl.losses import MoCoLoss

WORLD = 2
N, D = 6, 10  # rows per process
K = 16  # MoCo queue length
NAMES = ("info_nce", "nt_xent", "clip", "siglip", "moco", "moco_v3")


def full_batch(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)

    def f(rows: int) -> torch.Tensor:
        x = torch.randn(rows, D, generator=g, dtype=torch.float64)
        return torch.nn.functional.normalize(x, dim=1)

    return {
        "a": f(WORLD * N),
        "b": f(WORLD * N),
        "queue": f(K),  # the same on every process, as MoCo keeps it
        "scale": torch.tensor(4.0, dtype=torch.float64),
        "bias": torch.tensor(-2.0, dtype=torch.float64),
    }


def losses(a, b, scale, bias, queue, gather):
    return {
        "info_nce": ops.info_nce(a, b, logit_scale=scale, gather=gather),
        "nt_xent": ops.nt_xent(a, b, temperature=0.3, gather=gather),
        "clip": ops.clip_loss(a, b, scale, gather=gather),
        "siglip": ops.siglip_loss(a, b, scale, bias, gather=gather),
        "moco": ops.moco_loss(a, b, queue, temperature=0.3, gather=gather),
        "moco_v3": ops.moco_loss(a, b, None, temperature=0.3, gather=gather),
    }


def moco_module(queue: torch.Tensor, gather: bool) -> MoCoLoss:
    """A MoCoLoss owning a queue of K rows, filled with ``queue``."""
    m = MoCoLoss(0.3, queue_size=K, dim=D, gather=gather).double()
    m.queue.push(queue)  # type: ignore[union-attr]
    return m


def _zero_if_none(g: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    return g if g is not None else torch.zeros((), dtype=like.dtype)


def worker(rank: int, init: str, out: str) -> None:
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=WORLD)
    try:
        data = full_batch()
        rows = slice(rank * N, (rank + 1) * N)
        result: dict[str, dict[str, torch.Tensor]] = {}
        for name in NAMES:
            a = data["a"][rows].clone().requires_grad_(True)
            b = data["b"][rows].clone().requires_grad_(True)
            scale = data["scale"].clone().requires_grad_(True)
            bias = data["bias"].clone().requires_grad_(True)
            loss = losses(a, b, scale, bias, data["queue"], gather=True)[name]
            loss.backward()
            # what DDP would do: average the per-process loss and the parameter gradients
            total = loss.detach().clone()
            scale_grad = _zero_if_none(scale.grad, a)
            bias_grad = _zero_if_none(bias.grad, a)
            for t in (total, scale_grad, bias_grad):
                dist.all_reduce(t)
            result[name] = {
                "loss": total / WORLD,
                "a": a.grad,
                "b": b.grad,
                "scale": scale_grad / WORLD,
                "bias": bias_grad / WORLD,
            }
        # MoCoLoss owning the queue: the loss, then every process's keys enqueued in rank order
        module = moco_module(data["queue"], gather=True)
        a = data["a"][rows].clone().requires_grad_(True)
        loss = module(a, data["b"][rows])
        loss.backward()  # after the push: the loss scored a copy of the queue
        total = loss.detach().clone()
        dist.all_reduce(total)
        result["moco_module"] = {
            "loss": total / WORLD,
            "a": a.grad,
            "queue": module.queue.features().clone(),  # type: ignore[union-attr]
        }
        all_grad = distributed.all_gather(torch.ones(2, 1))
        assert all_grad.shape == (2 * WORLD, 1)
        dist.barrier()  # every process is past its last collective
        torch.save(result, f"{out}.{rank}")
    except BaseException:
        dist.destroy_process_group()
        raise
    # gloo's teardown (destroy_process_group, or its threads' destructors at exit) aborted both
    # ranks with "terminate called without an active exception" in about one CI run in ten on
    # this VM, after all the work was done and saved, even with the barrier; nothing is left to
    # check, so the process ends here without running it
    os._exit(0)
