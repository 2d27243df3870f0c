"""The pyssl command: help, the pretrain -> finetune -> report chain on tiny runs, and one-line
errors (exit status 2, no traceback) for bad options, missing paths, empty folders, corrupt
and mismatched checkpoints."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import pyssl
from pyssl.cli import main
from pyssl.train import checkpoint


def run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def one_line_error(capsys, *argv: str, match: str) -> None:
    rc, _, err = run(capsys, *argv)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert match in lines[0], lines[0]


@pytest.mark.parametrize(
    "command", ["pretrain", "finetune", "report", "bench", "demo", "mae-picture"]
)
def test_every_subcommand_has_help(capsys, command):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert f"pyssl {command}" in text and "--" in text


def test_top_level_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for c in ("demo", "pretrain", "finetune", "report", "bench", "info"):
        assert c in text


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (root / c).mkdir()
        for i in range(8):
            arr = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
            if c == "b":
                arr[:, :16] = 255
            Image.fromarray(arr).save(root / c / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def pretrained(folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "simclr"
    rc = main(["pretrain", "--method", "simclr", "--data", str(folder), "--steps", "2",
               "--batch-size", "8", "--out", str(out), "--no-progress"])  # fmt: skip
    assert rc == 0
    return out


def test_pretrain_finetune_report_chain(capsys, pretrained, folder, tmp_path):
    assert sorted(os.listdir(pretrained)) == ["checkpoint.pt", "metrics.jsonl", "run.json"]
    ckpt = str(pretrained / "checkpoint.pt")
    for protocol in ("linear", "knn", "finetune"):
        argv = ["--protocol", protocol, "--label-fraction", "0.5", "--data", str(folder)]
        rc, out, _ = run(capsys, "finetune", "--checkpoint", ckpt, *argv, "--steps", "2")
        assert rc == 0 and "test accuracy" in out
    recs = json.loads((pretrained / "report.json").read_text())
    assert {r["protocol"] for r in recs} == {"linear", "knn", "finetune"}
    assert all(
        set(r) == {"model", "protocol", "label_fraction", "seed", "test_accuracy"} for r in recs
    )
    assert all(0.0 <= r["test_accuracy"] <= 1.0 for r in recs)
    rc, out, _ = run(capsys, "report", str(pretrained), "--out", str(tmp_path / "rep"))
    assert rc == 0 and "| simclr | linear |" in out
    assert (tmp_path / "rep" / "accuracy.png").stat().st_size > 1000
    assert (tmp_path / "rep" / "report.md").read_text().count("| simclr |") == 3


def test_bad_options_are_one_line_errors(capsys):
    one_line_error(capsys, "pretrain", "--method", "nope", match="--method")
    one_line_error(capsys, "pretrain", "--method", "simclr", "--epochs", "-1", match="--epochs")
    one_line_error(capsys, "finetune", "--checkpoint", "x", "--label-fraction", "1.5",
                   match="--label-fraction")  # fmt: skip
    one_line_error(capsys, "frobnicate", match="invalid choice")
    one_line_error(capsys, "finetune", match="--checkpoint")


def test_missing_and_empty_paths_are_one_line_errors(capsys, tmp_path):
    one_line_error(capsys, "pretrain", "--method", "simclr", "--data", str(tmp_path / "nope"),
                   match="no such folder")  # fmt: skip
    (tmp_path / "empty").mkdir()
    one_line_error(capsys, "pretrain", "--method", "simclr", "--data", str(tmp_path / "empty"),
                   match="no images found")  # fmt: skip
    one_line_error(
        capsys, "finetune", "--checkpoint", str(tmp_path / "none.pt"), match="no such checkpoint"
    )
    one_line_error(capsys, "report", str(tmp_path / "empty"), match="no such report")


def test_corrupt_and_mismatched_checkpoints_are_one_line_errors(capsys, pretrained, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00garbage")
    one_line_error(capsys, "finetune", "--checkpoint", str(bad), match="not a readable checkpoint")
    state = checkpoint.load(str(pretrained / "checkpoint.pt"))
    key = next(k for k, v in state["model"].items() if v.dim() == 4)
    state["model"][key] = torch.zeros(1, 1, 1, 1)
    checkpoint.save(
        str(tmp_path / "shape.pt"),
        {k: v for k, v in state.items() if k not in ("format", "version")},
    )
    one_line_error(
        capsys, "finetune", "--checkpoint", str(tmp_path / "shape.pt"), match="has shape"
    )
    state = checkpoint.load(str(pretrained / "checkpoint.pt"))
    state["method"] = "byol"
    checkpoint.save(
        str(tmp_path / "other.pt"),
        {k: v for k, v in state.items() if k not in ("format", "version")},
    )
    one_line_error(
        capsys, "finetune", "--checkpoint", str(tmp_path / "other.pt"), match="projector"
    )


def test_unlabeled_folder_cannot_be_finetuned(capsys, pretrained, tmp_path):
    for i in range(4):
        Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / f"{i}.png")
    one_line_error(capsys, "finetune", "--checkpoint", str(pretrained / "checkpoint.pt"),
                   "--data", str(tmp_path), match="no labels")  # fmt: skip


def test_bench_without_the_benchmark_folder_says_so(capsys, monkeypatch, tmp_path):
    fake = tmp_path / "site" / "pyssl" / "__init__.py"
    fake.parent.mkdir(parents=True)
    monkeypatch.setattr(pyssl, "__file__", str(fake))
    one_line_error(capsys, "bench", match="does not ship")


def test_mlm_pretraining_reports_heldout_accuracy_and_baseline(capsys, tmp_path):
    rc, out, _ = run(capsys, "pretrain", "--method", "mlm", "--steps", "2", "--batch-size", "8",
                     "--seq-len", "16", "--out", str(tmp_path), "--no-progress")  # fmt: skip
    assert rc == 0 and "heldout_masked_token_accuracy" in out
    result = json.loads((tmp_path / "run.json").read_text())
    assert 0.0 <= result["heldout_masked_token_accuracy"] <= 1.0
    assert 0.0 < result["most_frequent_token_baseline"] < 1.0
    assert result["masked_positions"] > 100


def test_python_dash_m_prints_no_traceback(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(pyssl.__file__)))
    env = {**os.environ, "PYTHONPATH": root}
    cmd = [sys.executable, "-m", "pyssl", "finetune", "--checkpoint", str(tmp_path / "x.pt")]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(tmp_path))
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.strip().splitlines() == [
        f"pyssl: error: {tmp_path / 'x.pt'}: no such checkpoint"
    ]
