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
    default_lr,
    loop,
    pretrain,
    resolve_precision,
)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # tiny models: on a shared 2-core machine a second thread costs more than it computes
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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


def test_a_save_that_fails_midway_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    checkpoint.save(str(path), {"step": 1, "w": torch.ones(3)})
    before = path.read_bytes()
    real_save = torch.save

    def fails_midway(obj, f, *args, **kw):
        f.write(b"the first half of a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", fails_midway)
    with pytest.raises(OSError, match="No space left"):
        checkpoint.save(str(path), {"step": 2, "w": torch.zeros(3)})
    monkeypatch.setattr(torch, "save", real_save)
    assert path.read_bytes() == before
    assert checkpoint.load(str(path))["step"] == 1
    assert os.listdir(tmp_path) == ["checkpoint.pt"]  # the temporary file is removed


def test_a_run_whose_checkpoint_write_fails_resumes_from_the_last_good_one(tmp_path, monkeypatch):
    torch.manual_seed(0)
    straight = TinySimCLR()
    pretrain(straight, small_digits(), cfg(), str(tmp_path / "straight"))
    real_save, calls = torch.save, []

    def second_save_fails(obj, f, *args, **kw):
        calls.append(obj["step"])
        if len(calls) == 2:  # step 4: half written, then the disk is full
            f.write(b"torn")
            raise OSError(28, "No space left on device")
        real_save(obj, f, *args, **kw)

    monkeypatch.setattr(torch, "save", second_save_fails)
    out = tmp_path / "run"
    torch.manual_seed(0)
    with pytest.raises(OSError):
        pretrain(TinySimCLR(), small_digits(), cfg(checkpoint_every=2), str(out))
    monkeypatch.setattr(torch, "save", real_save)
    assert calls == [2, 4] and sorted(os.listdir(out)) == ["checkpoint.pt", "metrics.jsonl"]
    assert checkpoint.load(str(out / "checkpoint.pt"))["step"] == 2
    torch.manual_seed(99)
    resumed = TinySimCLR()
    pretrain(resumed, small_digits(), cfg(checkpoint_every=2), str(out), resume=True)
    for k, v in straight.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k


def test_resume_from_a_checkpoint_missing_keys_names_them(tmp_path):
    torch.manual_seed(0)
    pretrain(TinySimCLR(), small_digits(), cfg(steps=2), str(tmp_path))
    path = str(tmp_path / "checkpoint.pt")
    state = checkpoint.load(path)
    del state["rng"], state["step"]
    checkpoint.save(path, {k: v for k, v in state.items() if k not in ("format", "version")})
    with pytest.raises(CheckpointError, match="lacks 'step', 'rng'"):
        pretrain(TinySimCLR(), small_digits(), cfg(steps=2), str(tmp_path), resume=True)
    with pytest.raises(CheckpointError, match="lacks 'rng'"):
        checkpoint.load(path, require=("model", "rng"))
    assert checkpoint.load(path, require=checkpoint.MODEL_KEYS)["method"] == "tinysimclr"


def test_learning_rate_defaults_per_optimiser(tmp_path):
    assert default_lr("adamw", 64) == default_lr("adamw", 4096) == 2e-3
    assert default_lr("lars", 256) == pytest.approx(0.3)
    assert default_lr("lars", 4096) == pytest.approx(4.8)  # SimCLR: 0.3 x batch / 256
    with pytest.raises(ValueError, match="optimizer"):
        default_lr("sgd", 256)
    assert PretrainConfig().lr is None
    torch.manual_seed(0)
    s = pretrain(TinySimCLR(), small_digits(), cfg(optimizer="lars", steps=2), str(tmp_path))
    assert s["lr"] == pytest.approx(0.3 * 32 / 256)
    ck = checkpoint.load(str(tmp_path / "checkpoint.pt"))
    assert ck["config"]["lr"] == pytest.approx(0.3 * 32 / 256)  # the resolved rate is recorded
    recs = [json.loads(x) for x in open(tmp_path / "metrics.jsonl")]
    assert recs[0]["lr"] == pytest.approx(0.3 * 32 / 256 / 2)  # warm-up step 1 of 2


def test_lars_default_rate_moves_the_weights_where_adamws_barely_does(tmp_path):
    moved = {}
    for name, lr in (("adamw-rate", 2e-3), ("lars-default", None)):
        torch.manual_seed(0)
        m = TinySimCLR()
        w0 = m.head[1].weight.detach().clone()
        c = cfg(optimizer="lars", lr=lr, steps=3, warmup_steps=0)
        pretrain(m, small_digits(), c, str(tmp_path / name))
        moved[name] = float((m.head[1].weight.detach() - w0).norm() / w0.norm())
    assert moved["lars-default"] > 10 * moved["adamw-rate"]


def test_precision_auto_is_bf16_only_where_bf16_is_native(monkeypatch):
    assert PretrainConfig().precision == "auto"
    for native in (False, True):
        monkeypatch.setattr(loop, "cpu_has_native_bf16", lambda native=native: native)
        assert resolve_precision("auto", "cpu") == ("bf16" if native else "fp32")
    monkeypatch.setattr(loop, "cpu_has_native_bf16", lambda: False)
    assert resolve_precision("bf16", "cpu") == "bf16" and resolve_precision("fp32", "cpu") == "fp32"
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("fp16", "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert resolve_precision("auto", "cuda:0") == "bf16"
    assert resolve_precision("auto", "cpu") == "fp32"
    monkeypatch.setattr(
        torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation
    )  # a pre-Ampere GPU: bf16 only emulated
    assert resolve_precision("auto", "cuda") == "fp32"


@pytest.mark.parametrize("native", [False, True])
def test_pretraining_on_cpu_records_the_precision_auto_resolves_to(tmp_path, monkeypatch, native):
    monkeypatch.setattr(loop, "cpu_has_native_bf16", lambda: native)
    want = "bf16" if native else "fp32"
    torch.manual_seed(0)
    s = pretrain(TinySimCLR(), small_digits(), cfg(steps=1), str(tmp_path))
    assert s["precision"] == want
    assert checkpoint.load(str(tmp_path / "checkpoint.pt"))["config"]["precision"] == want
