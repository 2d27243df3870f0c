"""A run killed with SIGKILL mid-epoch and resumed from its last checkpoint ends with exactly
the weights and optimiser state of an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import torch
from workers import RESUME_CHECKPOINT_EVERY, RESUME_STEPS

import pyssl
from pyssl.train import checkpoint

HERE = os.path.dirname(os.path.abspath(__file__))


def _cmd(out: str, mode: str, delay: float) -> list[str]:
    return [sys.executable, os.path.join(HERE, "workers.py"), out, mode, str(delay)]


def _env() -> dict[str, str]:
    # the subprocess imports the same pyssl as this test, and the stand-in method
    root = os.path.dirname(os.path.dirname(os.path.abspath(pyssl.__file__)))
    path = os.pathsep.join([root, HERE, os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}


def test_sigkill_mid_epoch_then_resume_gives_the_uninterrupted_weights(tmp_path):
    straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
    subprocess.run(_cmd(straight, "fresh", 0.0), env=_env(), check=True, timeout=300)

    proc = subprocess.Popen(_cmd(killed, "fresh", 0.4), env=_env())
    ckpt = os.path.join(killed, "checkpoint.pt")
    deadline = time.monotonic() + 240
    while not os.path.exists(ckpt):
        assert proc.poll() is None, "the run ended before its first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint within the time limit"
        time.sleep(0.05)
    time.sleep(0.5)  # into the next step (each step sleeps 0.4 s)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    at_kill = checkpoint.load(ckpt)
    # killed mid-epoch (3 steps an epoch), before the end
    assert at_kill["step"] == RESUME_CHECKPOINT_EVERY and at_kill["step"] % 3 != 0
    assert at_kill["step"] < RESUME_STEPS
    assert not [f for f in os.listdir(killed) if f.startswith(".tmp-")]

    subprocess.run(_cmd(killed, "resume", 0.0), env=_env(), check=True, timeout=300)
    a, b = checkpoint.load(os.path.join(straight, "checkpoint.pt")), checkpoint.load(ckpt)
    assert a["step"] == b["step"] == RESUME_STEPS
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for i, s in a["optimizer"]["state"].items():
        for name in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(s[name], b["optimizer"]["state"][i][name]), (i, name)
    # the resumed run's metrics hold each step once, the same losses as the straight run
    read = lambda d: [line for line in open(os.path.join(d, "metrics.jsonl")) if line.strip()]  # noqa: E731
    import json

    la = [json.loads(x) for x in read(straight)]
    lb = [json.loads(x) for x in read(killed)]
    assert [r["step"] for r in lb] == list(range(1, RESUME_STEPS + 1))
    assert [r["loss"] for r in la] == [r["loss"] for r in lb]
