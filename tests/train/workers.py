"""Processes started by the tests: a pretraining run in a subprocess (killed and resumed by
test_resume.py) and the DDP workers of test_ddp.py. Importable by name (tests/train is on
sys.path in the parent, and spawned children inherit it)."""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist

from pyssl.data import load_digits
from pyssl.train import PretrainConfig, pretrain

RESUME_STEPS = 10
RESUME_CHECKPOINT_EVERY = 4


def small_digits(n: int = 200):
    d = load_digits("train", image_size=16)
    return d.subset(torch.arange(n))


def resume_run(out: str, resume: bool, delay: float) -> None:
    """10 steps of batch 64 over 200 images (3 steps an epoch), a checkpoint every 4 steps."""
    from standin import TinySimCLR

    torch.set_num_threads(1)
    torch.manual_seed(0)
    method = TinySimCLR(delay=delay)
    cfg = PretrainConfig(
        steps=RESUME_STEPS,
        batch_size=64,
        checkpoint_every=RESUME_CHECKPOINT_EVERY,
        log_every=1,
        warmup_steps=3,
        progress=False,
        seed=7,
    )
    pretrain(method, small_digits(), cfg, out, resume=resume)


DDP_WORLD = 2


def ddp_config() -> PretrainConfig:
    # fp32: the comparison with one process is at fp32 tolerance (bf16 autocast rounds the
    # two halves of the batch differently from the whole)
    return PretrainConfig(
        steps=4,
        batch_size=32,
        warmup_steps=2,
        progress=False,
        seed=3,
        log_every=1,
        precision="fp32",
    )


def ddp_method():
    from standin import TinySimCLR

    torch.manual_seed(0)
    return TinySimCLR(batch_norm=False, gather=True, dropout=0.0)


def ddp_worker(rank: int, init: str, out: str) -> None:
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=DDP_WORLD)
    try:
        method = ddp_method()
        pretrain(method, small_digits(64), ddp_config(), os.path.join(out, "run"))
        dist.barrier()  # every process is past its last collective
        torch.save(method.state_dict(), os.path.join(out, f"weights.{rank}"))
    except BaseException:
        dist.destroy_process_group()
        raise
    os._exit(0)  # skips gloo's teardown: see tests/distributed_worker.py


if __name__ == "__main__":
    resume_run(sys.argv[1], sys.argv[2] == "resume", float(sys.argv[3]))
