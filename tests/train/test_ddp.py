"""Two CPU processes (gloo, DDP, nt_xent with gather=True) train to the weights of one process
holding the whole global batch."""

from __future__ import annotations

import os

import torch
import torch.multiprocessing as mp
from workers import DDP_WORLD, ddp_config, ddp_method, ddp_worker, small_digits

from pyssl.train import pretrain


def test_two_gloo_processes_train_like_one_process_with_the_whole_batch(tmp_path):
    init = "file://" + str(tmp_path / "rendezvous")
    mp.start_processes(
        ddp_worker, args=(init, str(tmp_path)), nprocs=DDP_WORLD, join=True, start_method="spawn"
    )
    w0 = torch.load(tmp_path / "weights.0")
    w1 = torch.load(tmp_path / "weights.1")
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k  # DDP keeps the replicas identical

    torch.set_num_threads(1)
    method = ddp_method()
    start = {k: v.clone() for k, v in method.state_dict().items()}
    pretrain(method, small_digits(64), ddp_config(), str(tmp_path / "single"))
    single = method.state_dict()
    for k in single:
        assert not torch.equal(single[k], start[k]), k  # training moved every tensor
        torch.testing.assert_close(w0[k], single[k], rtol=1e-4, atol=1e-5, msg=k)
    # only rank 0 wrote the run folder
    assert sorted(os.listdir(tmp_path / "run")) == ["checkpoint.pt", "metrics.jsonl"]
