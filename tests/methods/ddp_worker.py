"""The worker processes of tests/methods/test_distributed_methods.py (a module of its own so that
spawned processes can import it by name)."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn

from pyssl.methods import SSLMethod, build
from pyssl.methods.base import frozen_copy

WORLD = 2
N = 4  # images per process
NAMES = ("simclr", "mocov2", "mocov3", "barlow", "vicreg", "dino")


class LinearEncoder(nn.Module):
    """A batch-norm-free backbone: with no per-process batch statistics, two processes with
    half the batch each must reproduce one process with all of it."""

    out_dim = 8

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3 * 4 * 4, self.out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def make(name: str) -> SSLMethod:
    torch.manual_seed(0)
    kw: dict[str, object] = {
        "simclr": {"proj_dim": 6},
        "mocov2": {"proj_dim": 6, "queue_size": 16},
        "mocov3": {"proj_dim": 6, "hidden": 8},
        "barlow": {"proj_dim": 6},
        "vicreg": {"proj_dim": 6},
        "dino": {"out_dim": 12, "hidden": 8, "bottleneck": 4},
    }[name]
    m = build(name, backbone=LinearEncoder(), **kw)
    # heads without batch norm, for the same reason as the backbone
    if name in ("simclr", "barlow", "vicreg", "mocov3"):
        m.projector = nn.Linear(8, 6)
    if name == "mocov3":
        m.predictor = nn.Linear(6, 6)
        m.momentum_projector = frozen_copy(m.projector)
    return m.double()


def views(name: str, rows: slice) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    full = [torch.randn(WORLD * N, 3, 4, 4, generator=g, dtype=torch.float64) for _ in range(2)]
    if name == "dino":
        full += [v[:, :, :2, :2].repeat(1, 1, 2, 2) * 0.5 for v in full]
    return [v[rows] for v in full]


def step(m: SSLMethod, vs: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """One step's loss, the encoder's gradient, and the state on_step_end leaves."""
    loss = m.loss(vs)
    loss.backward()
    grad = m.encoder.fc.weight.grad.clone()
    loss = loss.detach().clone()
    if dist.is_initialized():  # what DDP does: average the loss we log and the gradients
        dist.all_reduce(loss)
        dist.all_reduce(grad)
        loss, grad = loss / WORLD, grad / WORLD
    m.on_step_end(0, 10)
    out = {"loss": loss, "grad": grad}
    if hasattr(m, "queue"):
        out["queue"] = m.queue.features().clone()
    if hasattr(m, "center"):
        out["center"] = m.center.clone()
    return out


def worker(rank: int, init: str, out: str) -> None:
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=WORLD)
    try:
        rows = slice(rank * N, (rank + 1) * N)
        result = {name: step(make(name), views(name, rows)) for name in NAMES}
        dist.barrier()
        torch.save(result, f"{out}.{rank}")
    except BaseException:
        dist.destroy_process_group()
        raise
    os._exit(0)  # skips gloo's teardown: see tests/distributed_worker.py
