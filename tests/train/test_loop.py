"""The pretraining loop: schedule, optimisers, seeded data order, checkpoints, resume, errors."""

from __future__ import annotations

import json
import math
import os

import pytest
import torch
from standin import TinySimCLR
from workers import small_digits

from pyssl.data import TextData, WordTokenizer
from pyssl.train import (
    LARS,
    CheckpointError,
    PretrainConfig,
    batch_rows,
    checkpoint,
    cosine_lr,
    pretrain,
)


def cfg(**kw) -> PretrainConfig:
    base = dict(steps=6, batch_size=32, warmup_steps=2, progress=False, log_every=1, seed=1)
    return PretrainConfig(**{**base, **kw})


def test_cosine_schedule_warms_up_then_decays_to_the_floor():
    lrs = [cosine_lr(s, 100, 1.0, 10, 0.1) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a < b for a, b in zip(lrs[:9], lrs[1:10]))
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lrs[55] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 45 / 90)))
    assert cosine_lr(100, 100, 1.0, 10, 0.1) == pytest.approx(0.1)


def test_lars_step_is_trust_ratio_scaled_sgd():
    w = torch.nn.Parameter(torch.tensor([[3.0, 4.0]]))
    b = torch.nn.Parameter(torch.tensor([1.0]))
    opt = LARS([w, b], lr=0.1, momentum=0.0, weight_decay=0.0, trust=0.01)
    w.grad = torch.tensor([[0.6, 0.8]])
    b.grad = torch.tensor([2.0])
    opt.step()
    # ||w|| = 5, ||g|| = 1: the step is lr * 0.01 * 5 * g; the bias takes a plain SGD step
    torch.testing.assert_close(
        w.detach(), torch.tensor([[3.0 - 0.1 * 0.05 * 0.6, 4.0 - 0.1 * 0.05 * 0.8]])
    )
    torch.testing.assert_close(b.detach(), torch.tensor([1.0 - 0.2]))


def test_batch_rows_permute_each_epoch_and_depend_only_on_seed_and_step():
    n, bs = 10, 3
    epoch0 = torch.cat([batch_rows(n, bs, s, 5) for s in range(3)])
    epoch1 = torch.cat([batch_rows(n, bs, s, 5) for s in range(3, 6)])
    assert len(set(epoch0.tolist())) == 9 and len(set(epoch1.tolist())) == 9
    assert not torch.equal(epoch0, epoch1)
    assert torch.equal(batch_rows(n, bs, 4, 5), batch_rows(n, bs, 4, 5))
    assert not torch.equal(batch_rows(n, bs, 4, 5), batch_rows(n, bs, 4, 6))


def test_pretrain_writes_metrics_and_an_atomic_checkpoint(tmp_path):
    torch.manual_seed(0)
    m = TinySimCLR()
    out = str(tmp_path)
    s = pretrain(m, small_digits(), cfg(checkpoint_every=2), out)
    assert s["steps"] == 6 and math.isfinite(s["final_loss"]) and m.steps_seen == 6
    recs = [json.loads(x) for x in open(tmp_path / "metrics.jsonl")]
    assert [r["step"] for r in recs] == [1, 2, 3, 4, 5, 6]
    assert recs[0]["lr"] == pytest.approx(1e-3)  # warm-up: lr * 1/2
    assert all(r["samples_per_s"] > 0 for r in recs)
    ck = checkpoint.load(os.path.join(out, "checkpoint.pt"))
    assert ck["step"] == 6 and ck["method"] == "tinysimclr"
    assert sorted(os.listdir(out)) == ["checkpoint.pt", "metrics.jsonl"]  # no temporary left


def test_stop_and_resume_in_process_equals_a_straight_run(tmp_path):
    torch.manual_seed(0)
    a = TinySimCLR()
    pretrain(a, small_digits(), cfg(), str(tmp_path / "a"))
    torch.manual_seed(0)
    b = TinySimCLR()
    pretrain(b, small_digits(), cfg(), str(tmp_path / "b"), stop_after=4)
    torch.manual_seed(123)  # global RNG moved on: the checkpoint's state must win
    c = TinySimCLR()
    pretrain(c, small_digits(), cfg(), str(tmp_path / "b"), resume=True)
    for k, v in a.state_dict().items():
        assert torch.equal(v, c.state_dict()[k]), k


def test_different_seeds_give_different_runs(tmp_path):
    ws = []
    for seed in (1, 2):
        torch.manual_seed(0)
        m = TinySimCLR(dropout=0.0)
        pretrain(m, small_digits(), cfg(seed=seed, steps=2), str(tmp_path / str(seed)))
        ws.append(m.head[1].weight.detach().clone())
    assert not torch.equal(ws[0], ws[1])


def test_resume_refuses_another_methods_checkpoint(tmp_path):
    torch.manual_seed(0)
    pretrain(TinySimCLR(), small_digits(), cfg(steps=2), str(tmp_path))
    other = TinySimCLR()
    other.name = "other"
    with pytest.raises(CheckpointError, match="'tinysimclr' checkpoint"):
        pretrain(other, small_digits(), cfg(steps=2), str(tmp_path), resume=True)
    wider = TinySimCLR(width=4)
    with pytest.raises(CheckpointError, match="shape"):
        pretrain(wider, small_digits(), cfg(steps=2), str(tmp_path), resume=True)


def test_corrupt_and_foreign_checkpoints_are_named(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        checkpoint.load(str(bad))
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": 1}, foreign)
    with pytest.raises(CheckpointError, match="not a pyssl checkpoint"):
        checkpoint.load(str(foreign))
    with pytest.raises(FileNotFoundError):
        checkpoint.load(str(tmp_path / "missing.pt"))


def test_config_and_data_errors_name_the_argument(tmp_path):
    with pytest.raises(ValueError, match="batch_size"):
        PretrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="optimizer"):
        PretrainConfig(optimizer="sgd")
    with pytest.raises(ValueError, match="precision"):
        PretrainConfig(precision="fp8")
    with pytest.raises(ValueError, match="at least 2"):
        pretrain(TinySimCLR(), small_digits(1), cfg(), str(tmp_path))


def test_bf16_autocast_and_lars_run(tmp_path):
    torch.manual_seed(0)
    s = pretrain(
        TinySimCLR(), small_digits(), cfg(precision="bf16", optimizer="lars", lr=0.5), str(tmp_path)
    )
    assert math.isfinite(s["final_loss"])


class _Counting(torch.nn.Module):
    """A text method stand-in: the loss is a learnable function of the token ids it sees."""

    name, modality = "counting", "text"

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(20, 4)
        self.seen: list[torch.Tensor] = []

    def loss(self, views):
        (ids,) = views
        self.seen.append(ids)
        return self.embed(ids).pow(2).mean()

    def on_step_end(self, step, total_steps):
        pass


def test_text_batches_are_token_rows(tmp_path):
    tok = WordTokenizer(list(WordTokenizer.SPECIALS) + [f"w{i}" for i in range(17)])
    data = TextData(torch.arange(40).reshape(10, 4) % 20, tok, "t")
    m = _Counting()
    pretrain(m, data, cfg(steps=3, batch_size=4), str(tmp_path))
    assert all(ids.shape == (4, 4) and ids.dtype == torch.int64 for ids in m.seen)
