"""A tiny run of the label-efficiency demo (pyssl.demo.label_efficiency_demo, what `pyssl demo`
runs): a fifth of an epoch of SimCLR (one step), two small label fractions (the probes' cost
grows with the labels), a few supervised steps, two seeds; checks what it writes into the run
folder, not the accuracy it reaches."""

from __future__ import annotations

import json

import pytest
import torch

from pyssl.demo import DemoConfig, label_efficiency_demo
from pyssl.train import checkpoint
from pyssl.train.report import KEYS

MODELS = {
    ("simclr", "linear"),
    ("simclr", "knn"),
    ("random-init", "linear"),
    ("raw-pixels", "linear"),
    ("supervised", "from-scratch"),
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # a few tiny steps: on a shared 2-core machine a second thread costs more than it computes
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_tiny_demo_writes_report_json_markdown_and_plot(tmp_path):
    cfg = DemoConfig(epochs=0.2, width=8, supervised_steps=2, fractions=(0.05, 0.2))
    lines: list[str] = []
    records = label_efficiency_demo(
        str(tmp_path), seeds=2, cfg=cfg, progress=False, log=lines.append
    )
    saved = json.loads((tmp_path / "report.json").read_text())
    assert len(saved) == len(records) == 2 * 2 * len(MODELS)  # seeds x fractions x models
    assert all(set(r) == set(KEYS) for r in saved)
    assert {(r["model"], r["protocol"]) for r in saved} == MODELS
    assert {r["label_fraction"] for r in saved} == {0.05, 0.2}
    assert {r["seed"] for r in saved} == {0, 1}
    assert all(0.0 <= r["test_accuracy"] <= 1.0 for r in saved)
    # raw-pixel logistic regression is far above chance on digits even with 5% of the labels
    assert min(r["test_accuracy"] for r in saved if r["model"] == "raw-pixels") > 0.5
    md = (tmp_path / "report.md").read_text()
    assert "| simclr | linear | 2 |" in md and " ± " in md
    assert "| 5% labels | 20% labels |" in md
    png = (tmp_path / "accuracy.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 1000
    for seed in (0, 1):
        ck = checkpoint.load(str(tmp_path / f"seed{seed}" / "checkpoint.pt"))
        assert ck["method"] == "simclr" and ck["config"]["seed"] == seed
        assert (tmp_path / f"seed{seed}" / "metrics.jsonl").stat().st_size > 0
    assert any("report.json, report.md" in line for line in lines)


def test_demo_epochs_default_follows_the_precision(monkeypatch):
    from pyssl.train import loop

    assert DemoConfig(epochs=7).resolved_epochs() == 7
    for native, epochs in ((True, 320), (False, 160)):
        monkeypatch.setattr(loop, "cpu_has_native_bf16", lambda native=native: native)
        assert DemoConfig().resolved_epochs() == epochs
    assert DemoConfig(precision="fp32").resolved_epochs() == 160
