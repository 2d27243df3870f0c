"""The pyssl command: help, the pretrain -> finetune -> report chain on tiny runs, a smoke run of
every method, and one-line errors (no traceback; exit status 2 for bad options, missing paths,
empty folders, corrupt, incomplete and mismatched checkpoints; 1 for a NaN loss, an unwritable
output and a missing optional package), with PYSSL_DEBUG / --debug showing the traceback."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import pyssl
from pyssl import cli
from pyssl.cli import METHOD_NAMES, main
from pyssl.methods import METHODS
from pyssl.train import checkpoint, resolve_precision


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # tiny runs: thread start-up and contention on a shared 2-core machine cost more than the
    # arithmetic (measured: one BYOL step 10 s with 2 threads under load, 0.4 s with one)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def one_line_error(capsys, *argv: str, match: str, status: int = 2) -> None:
    rc, _, err = run(capsys, *argv)
    assert rc == status, err
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
    monkeypatch.chdir(tmp_path)
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


# ------------------------------------------------------------------------------ help texts


def _subparsers() -> dict[str, cli.argparse.ArgumentParser]:
    parser = cli._parser()
    (sub,) = [a for a in parser._actions if isinstance(a, cli.argparse._SubParsersAction)]
    return {"pyssl": parser, **sub.choices}


def test_every_option_of_every_command_says_what_it_does():
    for name, parser in _subparsers().items():
        for action in parser._actions:
            if isinstance(action, (cli.argparse._HelpAction, cli.argparse._SubParsersAction)):
                continue
            text = re.sub(r"\(default: [^)]*\)\s*$|^default: .*$", "", action.help or "")
            words = text.split()
            flag = action.option_strings[-1] if action.option_strings else action.dest
            assert len(words) >= 4, f"pyssl {name} {flag}: help {action.help!r} says too little"


def test_optimizer_lr_and_precision_help_name_their_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["pretrain", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "lars: SGD with momentum" in text and "L2 penalty" in text
    assert "0.3 x batch-size/256 for lars" in text and "2e-3 for adamw" in text
    assert "auto: bf16 on a CUDA GPU" in text and "CPU with bf16 instructions" in text


AUTO = resolve_precision("auto", "cpu")  # what --precision auto gives here: bf16 where native


# ------------------------------------------------------------------------------ every method


def test_method_names_are_the_methods_registry():
    assert METHOD_NAMES == tuple(METHODS)


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_every_method_pretrains_from_the_command_line(capsys, folder, tmp_path, method):
    data = ["--data", str(folder), "--image-size", "16"]
    if method in ("mlm", "ts2vec"):
        data = ["--seq-len", "16"] if method == "mlm" else ["--data", "mnist1d"]
    rc, out, err = run(capsys, "pretrain", "--method", method, *data, "--steps", "2",
                       "--batch-size", "4", "--out", str(tmp_path), "--no-progress")  # fmt: skip
    assert rc == 0, err
    assert f"{method}: 2 steps" in out and f"(lr 0.002, {AUTO})" in out
    result = json.loads((tmp_path / "run.json").read_text())
    assert result["method"] == method and np.isfinite(result["summary"]["final_loss"])
    ck = checkpoint.load(str(tmp_path / "checkpoint.pt"), require=checkpoint.RESUME_KEYS)
    assert ck["method"] == method and ck["step"] == 2
    assert ck["config"]["precision"] == AUTO and ck["config"]["lr"] == 2e-3


def test_lars_takes_its_own_default_learning_rate(capsys, folder, tmp_path):
    lars = ("--optimizer", "lars")
    rc, out, _ = run(capsys, *tiny(folder, tmp_path / "a", *lars, "--batch-size", "8"))
    assert rc == 0 and f"(lr {0.3 * 8 / 256:g}, {AUTO})" in out
    ck = checkpoint.load(str(tmp_path / "a" / "checkpoint.pt"))
    assert ck["config"]["lr"] == pytest.approx(0.3 * 8 / 256)
    assert ck["config"]["optimizer"] == "lars"
    # the data holds 16 images: a larger batch is capped, and so is the rate scaled from it
    rc, out, _ = run(capsys, *tiny(folder, tmp_path / "b", *lars, "--batch-size", "256"))
    assert rc == 0 and f"(lr {0.3 * 16 / 256:g}, {AUTO})" in out
    rc, out, _ = run(capsys, *tiny(folder, tmp_path / "c", *lars, "--lr", "0.5"))
    assert rc == 0 and f"(lr 0.5, {AUTO})" in out


# ------------------------------------------------------------------------------ bench


def test_bench_runs_every_family_then_the_report(capsys, monkeypatch, tmp_path):
    import subprocess

    # a regular install (package outside the checkout) run from the checkout
    monkeypatch.setattr(pyssl, "__file__", str(tmp_path / "site" / "pyssl" / "__init__.py"))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    monkeypatch.chdir(root)
    calls: list[str] = []
    monkeypatch.setattr(subprocess, "call", lambda cmd, cwd=None: calls.append(cmd[-1]) or 0)
    rc, out, _ = run(capsys, "bench")
    assert rc == 0 and "|" in out  # bench/RESULTS.md printed
    names = [os.path.basename(c) for c in calls]
    assert names == ["bench_masking.py", "bench_contrastive.py", "bench_augment.py",
                     "bench_text.py", "bench_pretext.py", "bench_colour.py", "bench_word2vec.py",
                     "report.py"]  # fmt: skip
    assert all(os.path.isfile(c) for c in calls)
    assert all(os.path.dirname(c) == os.path.join(root, "bench") for c in calls)
    for family in ("augment", "text"):
        calls.clear()
        assert run(capsys, "bench", "--family", family)[0] == 0
        assert [os.path.basename(c) for c in calls] == [f"bench_{family}.py", "report.py"]


def test_a_failing_benchmark_stops_the_run(capsys, monkeypatch):
    import subprocess

    monkeypatch.chdir(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    calls: list[str] = []
    monkeypatch.setattr(subprocess, "call", lambda cmd, cwd=None: calls.append(cmd[-1]) or 3)
    assert run(capsys, "bench")[0] == 3 and len(calls) == 1


# ------------------------------------------------------------------------------ run-time errors


def tiny(folder, out, *extra: str) -> list[str]:
    """A 1-step SimCLR run on the 16-image folder at 16x16."""
    return ["pretrain", "--method", "simclr", "--data", str(folder), "--image-size", "16",
            "--steps", "1", "--batch-size", "4", "--out", str(out), "--no-progress",
            *extra]  # fmt: skip


def _nan_loss(monkeypatch):
    cls = METHODS["simclr"]
    loss = cls.loss
    monkeypatch.setattr(cls, "loss", lambda self, views: loss(self, views) * float("nan"))


def test_nan_loss_is_a_one_line_error(capsys, monkeypatch, folder, tmp_path):
    _nan_loss(monkeypatch)
    one_line_error(
        capsys, *tiny(folder, tmp_path), match="pyssl: error: loss is nan at step 0", status=1
    )


def test_pyssl_debug_and_the_debug_flag_show_the_traceback(capsys, monkeypatch, folder, tmp_path):
    _nan_loss(monkeypatch)
    argv = tiny(folder, tmp_path)
    with pytest.raises(FloatingPointError, match="loss is nan"):
        main(["--debug", *argv])
    monkeypatch.setenv("PYSSL_DEBUG", "1")
    with pytest.raises(FloatingPointError):
        main(argv)
    with pytest.raises(FileNotFoundError):
        main(["finetune", "--checkpoint", str(tmp_path / "none.pt")])
    monkeypatch.setenv("PYSSL_DEBUG", "0")  # off again
    one_line_error(capsys, "finetune", "--checkpoint", str(tmp_path / "none.pt"),
                   match="no such checkpoint")  # fmt: skip


def test_a_genuine_bug_keeps_its_traceback(monkeypatch, folder, tmp_path):
    def broken(self, views):
        raise RuntimeError("a bug, not a user error")

    monkeypatch.setattr(METHODS["simclr"], "loss", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        main(tiny(folder, tmp_path))


def test_out_is_an_existing_file(capsys, folder, pretrained, tmp_path):
    taken = tmp_path / "taken"
    taken.write_text("not a folder")
    one_line_error(
        capsys, *tiny(folder, taken), match=f"pyssl: error: {taken}: File exists", status=1
    )
    one_line_error(capsys, "report", str(pretrained), "--out", str(taken),
                   match=f"{taken}: File exists", status=1)  # fmt: skip
    assert taken.read_text() == "not a folder"


def test_unwritable_output_is_a_one_line_error(capsys, monkeypatch, folder, tmp_path):
    import tempfile

    def denied(*args, dir=None, **kw):
        raise PermissionError(13, "Permission denied", os.path.join(str(dir), ".tmp-x.pt"))

    monkeypatch.setattr(tempfile, "mkstemp", denied)  # as in a read-only folder, even for root
    one_line_error(capsys, *tiny(folder, tmp_path / "run"), match="Permission denied", status=1)


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes into read-only folders"
)
def test_read_only_folder_is_a_one_line_error(capsys, pretrained, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        one_line_error(capsys, "report", str(pretrained), "--out", str(ro / "rep"),
                       match="Permission denied", status=1)  # fmt: skip
    finally:
        ro.chmod(0o700)


def test_missing_scikit_learn_is_a_one_line_error(capsys, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)  # import fails
    one_line_error(capsys, "pretrain", "--method", "simclr", "--steps", "1",
                   "--out", str(tmp_path), "--no-progress",
                   match="needs scikit-learn: pip install", status=1)  # fmt: skip


def test_missing_matplotlib_is_a_one_line_error(capsys, monkeypatch, pretrained, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    one_line_error(capsys, "report", str(pretrained), "--out", str(tmp_path),
                   match="needs matplotlib, which is not installed", status=1)  # fmt: skip


def test_checkpoint_without_its_keys_is_a_one_line_error(capsys, folder, pretrained, tmp_path):
    state = checkpoint.load(str(pretrained / "checkpoint.pt"))
    for key in ("model", "method"):
        kept = {k: v for k, v in state.items() if k not in ("format", "version", key)}
        checkpoint.save(str(tmp_path / f"no-{key}.pt"), kept)
        one_line_error(capsys, "finetune", "--checkpoint", str(tmp_path / f"no-{key}.pt"),
                       match=f"the checkpoint lacks '{key}'")  # fmt: skip
    resume = tmp_path / "resume"
    argv = tiny(folder, resume, "--image-size", "32", "--resume")
    kept = {k: v for k, v in state.items() if k not in ("format", "version", "optimizer")}
    checkpoint.save(str(resume / "checkpoint.pt"), kept)
    one_line_error(capsys, *argv, match="the checkpoint lacks 'optimizer'")
    kept = {k: v for k, v in state.items() if k not in ("format", "version")}
    checkpoint.save(str(resume / "checkpoint.pt"), {**kept, "rng": {"torch": 0}})
    one_line_error(capsys, *argv, match="malformed RNG state")
    checkpoint.save(str(resume / "checkpoint.pt"), {**kept, "optimizer": {"state": {}}})
    one_line_error(capsys, *argv, match="the optimiser state does not fit")


# ------------------------------------------------------------------------------ DDP on GPUs


def test_each_process_takes_the_gpu_of_its_local_rank(monkeypatch):
    import torch.distributed as dist

    calls: list[tuple] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "set_device", lambda i: calls.append(("set_device", i)))
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda b: calls.append(("init", b)))
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "2")
    assert cli._init_distributed("cuda") == "cuda:2"
    assert calls == [("set_device", 2), ("init", "nccl")]  # the device first
    calls.clear()
    assert cli._init_distributed("cpu") == "cpu"
    assert calls == [("init", "gloo")]
    calls.clear()
    monkeypatch.setenv("LOCAL_RANK", "4")
    with pytest.raises(cli.UsageError, match="LOCAL_RANK=4, but this machine has 4"):
        cli._init_distributed("cuda")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert cli._init_distributed("cuda") == "cuda" and calls == []


def test_without_cuda_torchrun_uses_gloo(monkeypatch):
    import torch.distributed as dist

    calls: list[tuple] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "set_device", lambda i: calls.append(("set_device", i)))
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda b: calls.append(("init", b)))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert cli._init_distributed("cpu") == "cpu" and calls == [("init", "gloo")]


def test_series_pretrain_then_finetune_and_data_kind_errors(capsys, folder, tmp_path):
    rc, out, err = run(capsys, "pretrain", "--method", "ts2vec", "--steps", "3",
                       "--batch-size", "8", "--out", str(tmp_path), "--no-progress")  # fmt: skip
    assert rc == 0, err
    ck = str(tmp_path / "checkpoint.pt")
    rc, out, err = run(capsys, "finetune", "--checkpoint", ck, "--label-fraction", "0.1")
    assert rc == 0, err
    assert "ts2vec linear at 0.1 of the labels: test accuracy" in out and "399 labels" in out
    rec = json.loads((tmp_path / "report.json").read_text())[0]
    assert rec["model"] == "ts2vec" and 0.1 < rec["test_accuracy"] <= 1.0  # 10 classes
    rc, _, err = run(capsys, "finetune", "--checkpoint", ck, "--protocol", "knn")
    assert rc == 2 and "--protocol linear" in err
    rc, _, err = run(capsys, "pretrain", "--method", "ts2vec", "--data", str(folder))
    assert rc == 2 and "ts2vec trains on series" in err
    rc, _, err = run(capsys, "pretrain", "--method", "simclr", "--data", "mnist1d")
    assert rc == 2 and "simclr trains on images or text" in err


def test_word2vec_command_through_main(capsys, tmp_path):
    text = ["the cat sat on the mat", "a dog sat on a log", "the cat and the dog"] * 30
    (tmp_path / "c.txt").write_text("\n\n".join(text))
    rc, out, err = run(capsys, "word2vec", "--data", str(tmp_path / "c.txt"), "--min-count", "1",
                       "--epochs", "2", "--words", "cat,zebra", "--no-progress")  # fmt: skip
    assert rc == 0, err
    assert "words/s" in out and "cat: " in out and "zebra: not in the vocabulary" in out
    rc, _, err = run(capsys, "word2vec", "--data", str(tmp_path / "missing.txt"))
    assert rc != 0 and "missing.txt" in err
    rc, _, err = run(capsys, "word2vec", "--vector-size", "0")
    assert rc == 2 and "vector" in err
