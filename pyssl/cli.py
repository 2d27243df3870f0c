"""The ``pyssl`` command (also ``python -m pyssl``).

pyssl demo                     SimCLR on digits, then the label-efficiency study
pyssl demo --method rotnet     the same study for RotNet (or jigsaw)
pyssl pretrain --method simclr --data digits --out runs/simclr
pyssl finetune --checkpoint runs/simclr/checkpoint.pt --protocol linear --label-fraction 0.1
pyssl report runs/simclr runs/byol
pyssl word2vec --compare-gensim  skip-gram with negative sampling on the pydoc corpus
pyssl bench | info | mae-picture
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

METHOD_NAMES = (
    "simclr",
    "mocov2",
    "mocov3",
    "byol",
    "simsiam",
    "barlow",
    "vicreg",
    "dino",
    "mae",
    "mlm",
    "rotnet",
    "jigsaw",
    "ts2vec",
    "colorization",
)
_DEMO_OUT = os.path.join("runs", "demo")
BENCH_FAMILIES = ("masking", "contrastive", "augment", "text", "pretext", "colour", "word2vec")


class UsageError(Exception):
    """A bad command line or input: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    # argparse prints the usage block and the error; one line names the problem
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


def info() -> str:
    """Version, compiled backends, threads and Triton availability, as text."""
    import torch

    import pyssl
    from pyssl.ops import _backend

    lines = [
        f"pyssl {pyssl.__version__} (distribution pyssl-kernels)",
        f"torch {torch.__version__}",
    ]
    core = _backend._C
    if core is None:
        lines.append(f"compiled core: MISSING ({_backend.CORE_ERROR})")
    else:
        lines.append("compiled core: pyssl._C")
        lines.append(
            f"  CPU kernels: yes (OpenMP {'on' if core.openmp else 'off'}, "
            f"{core.num_threads()} threads; torch uses {torch.get_num_threads()})"
        )
        archs = core.cuda_archs or "-"
        lines.append(
            f"  CUDA kernels: {'yes, architectures ' + archs if core.cuda else 'not built'}"
        )
    why = _backend.triton_error()
    if why is None:
        import triton

        lines.append(f"triton: {triton.__version__} importable")
    else:
        lines.append(f"triton: no ({why})")
    gpu = torch.cuda.is_available()
    lines.append(f"CUDA device: {torch.cuda.get_device_name(0) if gpu else 'none'}")
    return "\n".join(lines)


def _fraction(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}") from None
    if not 0.0 < v <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}")
    return v


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return v


def _parser() -> _Parser:
    p = _Parser(
        prog="pyssl",
        description="Fast self-supervised learning: pretrain, evaluate, report and benchmark.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--debug",
        action="store_true",
        help="on an error, show the full traceback instead of one line (as PYSSL_DEBUG=1 does)",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    d = sub.add_parser(
        "demo",
        help="SimCLR on digits and the label-efficiency study (the main job)",
        description="Pretrains SimCLR on the digits training images without their "
        "labels, then measures test accuracy at 1, 5, 10, 20 and 100%% of the labels "
        "for: a linear probe (and kNN) of the SSL encoder, the same encoder randomly "
        "initialised, a supervised network of the same architecture trained from "
        "scratch, logistic regression on raw pixels. Writes report.json, report.md, "
        "accuracy.png and each seed's checkpoint and metrics into --out.",
    )
    d.add_argument(
        "--out",
        default=_DEMO_OUT,
        help="folder to write the report, plot and checkpoints into, created if missing "
        "(default: %(default)s; runs/demo-<method> for the other methods)",
    )
    d.add_argument(
        "--method",
        choices=("simclr", "rotnet", "jigsaw"),
        default="simclr",
        help="the pretext task: SimCLR (default), RotNet's rotation prediction or jigsaw "
        "puzzles; the study is the same",
    )
    d.add_argument(
        "--seeds",
        type=_positive_int,
        default=1,
        help="seeds 0..N-1, each pretraining anew; the table gives mean ± std (default: 1)",
    )
    d.add_argument(
        "--epochs",
        type=_positive_float,
        default=None,
        help="passes of pretraining over the digits training images "
        "(default for SimCLR and Jigsaw: 320 where training runs in bf16, on CPUs with bf16 "
        "instructions, 160 in fp32; RotNet half that: about 5 minutes on 2 cores)",
    )
    d.add_argument(
        "--no-progress", action="store_true", help="hide the progress bar (e.g. in log files)"
    )

    mp = sub.add_parser("mae-picture", help="MAE masking of a real photograph, saved as a PNG")
    mp.add_argument(
        "--out", default="mae_demo.png", help="the PNG file to write (default: %(default)s)"
    )
    mp.add_argument(
        "--mask-ratio",
        type=float,
        default=0.75,
        help="fraction of the patches hidden from the encoder (default: %(default)s)",
    )
    mp.add_argument(
        "--patch-size",
        type=_positive_int,
        default=16,
        help="side of the square patches in pixels (default: %(default)s)",
    )
    mp.add_argument(
        "--seed", type=int, default=0, help="seed of the random mask (default: %(default)s)"
    )
    mp.add_argument(
        "--image",
        default="china.jpg",
        help="a scikit-learn sample image name (china.jpg, flower.jpg) or a path to an "
        "image file (default: %(default)s)",
    )

    sub.add_parser("info", help="version, compiled backends, threads, Triton")

    t = sub.add_parser(
        "pretrain",
        help="pretrain an SSL method on images or text",
        description="Pretrains a self-supervised method without labels. Writes "
        "checkpoint.pt (every --checkpoint-every steps and at the end), "
        "metrics.jsonl and run.json into --out. Under torchrun the run is "
        "data-parallel (gloo on CPU, NCCL on GPU).",
    )
    t.add_argument(
        "--method",
        required=True,
        choices=METHOD_NAMES,
        metavar="METHOD",
        help=f"the self-supervised method: one of {', '.join(METHOD_NAMES)}",
    )
    t.add_argument(
        "--data",
        default=None,
        help="images: 'digits' (default), 'photos' (crops of scikit-learn's two colour "
        "photographs, for colorization) or a folder (labels from subfolders, if any); "
        "text (mlm): 'pydoc' (default) or a .txt file or folder; series (ts2vec): 'mnist1d' "
        "(the default, generated locally)",
    )
    t.add_argument(
        "--out",
        default=None,
        help="folder for checkpoint.pt, metrics.jsonl and run.json, created if missing "
        "(default: runs/<method>)",
    )
    t.add_argument(
        "--epochs",
        type=_positive_float,
        default=20.0,
        help="passes over the data; fractions allowed (default: %(default)s)",
    )
    t.add_argument(
        "--steps",
        type=_positive_int,
        default=None,
        help="total optimiser steps (overrides --epochs)",
    )
    t.add_argument(
        "--batch-size",
        type=_positive_int,
        default=256,
        help="samples per step over all processes; capped at the data size (default: %(default)s)",
    )
    t.add_argument(
        "--optimizer",
        choices=("adamw", "lars"),
        default="adamw",
        help="adamw: Adam with decoupled weight decay; lars: SGD with momentum and a "
        "per-layer trust ratio (SimCLR's and BYOL's large-batch optimiser). Biases and norm "
        "parameters get no weight decay with either (default: %(default)s)",
    )
    t.add_argument(
        "--lr",
        type=_positive_float,
        default=None,
        help="peak learning rate, reached after the warm-up and decayed by a cosine schedule "
        "(default: 2e-3 for adamw; 0.3 x batch-size/256 for lars, SimCLR's scaling rule)",
    )
    t.add_argument(
        "--weight-decay",
        type=float,
        default=1e-4,
        help="L2 penalty pulling the weight matrices towards zero at each step, decoupled "
        "from the gradient for adamw, added to it for lars (default: %(default)s)",
    )
    t.add_argument(
        "--warmup-steps",
        type=int,
        default=10,
        help="steps over which the learning rate rises linearly to --lr (default: %(default)s)",
    )
    t.add_argument(
        "--clip-grad",
        type=float,
        default=3.0,
        help="rescale the gradients when their global L2 norm exceeds this; 0 = no clipping "
        "(default: %(default)s)",
    )
    t.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16"),
        default="auto",
        help="bf16: forward and loss under bfloat16 autocast (weights and optimiser stay "
        "float32); fp32: no autocast; auto: bf16 on a CUDA GPU with bf16 support and on a "
        "CPU with bf16 instructions (AVX512-BF16 or AMX), fp32 elsewhere, where bf16 is "
        "emulated and slower (default: %(default)s)",
    )
    t.add_argument(
        "--image-size",
        type=_positive_int,
        default=32,
        help="side in pixels the images are resized to (default: %(default)s)",
    )
    t.add_argument(
        "--seq-len",
        type=_positive_int,
        default=64,
        help="mlm: tokens per sequence (default: %(default)s)",
    )
    t.add_argument(
        "--seed", type=int, default=0, help="seed of init, data order, augmentation (default: 0)"
    )
    t.add_argument(
        "--checkpoint-every",
        type=int,
        default=0,
        help="write checkpoint.pt every this many steps; 0 = only at the end (default: 0)",
    )
    t.add_argument(
        "--resume",
        action="store_true",
        help="continue from --out/checkpoint.pt if present (model, optimiser, schedule, RNG "
        "states and step), else start afresh",
    )
    t.add_argument(
        "--device",
        default=None,
        help="cpu, cuda or cuda:N; under torchrun each process takes the GPU of its "
        "LOCAL_RANK (default: cuda when available)",
    )
    t.add_argument(
        "--no-progress", action="store_true", help="hide the progress bar (e.g. in log files)"
    )

    f = sub.add_parser(
        "finetune",
        help="evaluate a pretrained encoder on a label fraction",
        description="Loads a pretraining checkpoint and measures test accuracy with "
        "a protocol at a label fraction; adds the record to report.json beside the "
        "checkpoint (or in --out).",
    )
    f.add_argument(
        "--checkpoint",
        required=True,
        help="the checkpoint.pt written by pyssl pretrain whose encoder is evaluated",
    )
    f.add_argument(
        "--protocol",
        choices=("linear", "knn", "finetune"),
        default="linear",
        help="linear probe, weighted kNN (cosine, k=20) or full fine-tuning (default: %(default)s)",
    )
    f.add_argument(
        "--label-fraction",
        type=_fraction,
        default=0.1,
        help="fraction of the training labels used: a stratified subset drawn with --seed, "
        "at least one per class (default: %(default)s)",
    )
    f.add_argument(
        "--data",
        default=None,
        help="labeled images: 'digits' or a folder with class subfolders "
        "(default: the checkpoint's data)",
    )
    f.add_argument(
        "--seed", type=int, default=0, help="seed of the label subset and fine-tuning (default: 0)"
    )
    f.add_argument(
        "--steps",
        type=_positive_int,
        default=300,
        help="--protocol finetune: AdamW steps of training encoder and head (default: %(default)s)",
    )
    f.add_argument(
        "--out",
        default=None,
        help="folder of the report.json to update (default: the checkpoint's)",
    )

    r = sub.add_parser(
        "report",
        help="markdown table and PNG plot over run folders",
        description="Merges the report.json of each run folder, prints the "
        "markdown table and writes report.md and accuracy.png into --out.",
    )
    r.add_argument(
        "runs",
        nargs="+",
        metavar="RUN_DIR",
        help="run folders (or report.json files) whose records are merged",
    )
    r.add_argument(
        "--out",
        default=os.path.join("runs", "report"),
        help="folder to write report.md and accuracy.png into, created if missing "
        "(default: %(default)s)",
    )

    from pyssl import word2vec as _word2vec

    _word2vec.add_parser(sub)

    b = sub.add_parser(
        "bench",
        help="run the benchmark suite (source checkout) and print its table",
        description="Runs bench/bench_<family>.py (pytest-benchmark) for the chosen op "
        "families, then bench/report.py, and prints bench/RESULTS.md. Needs a clone of the "
        "repository: the wheel does not ship bench/.",
    )
    b.add_argument(
        "--family",
        choices=(*BENCH_FAMILIES, "all"),
        default="all",
        help="the op family to benchmark: one of "
        f"{', '.join(BENCH_FAMILIES)}, or all of them "
        "(default: %(default)s)",
    )
    return p


# ------------------------------------------------------------------------------ commands


def _device(name: str | None) -> str:
    import torch

    if name is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise UsageError(f"pyssl pretrain: --device: expected cpu or cuda, got {name!r}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("pyssl pretrain: --device cuda, but no CUDA device is available")
    return name


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name, str(default))
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"pyssl pretrain: {name}={text!r} is not an integer") from None


def _init_distributed(device: str) -> str:
    """Joins the torchrun process group when ``WORLD_SIZE`` > 1 (gloo on CPU, NCCL on GPU) and
    returns the device this process trains on: on GPUs, ``cuda:LOCAL_RANK``, made the current
    device before the process group starts (NCCL binds each rank to the current device)."""
    import torch
    import torch.distributed as dist

    if _env_int("WORLD_SIZE", 1) <= 1:
        return device
    cuda = device.startswith("cuda") and torch.cuda.is_available()
    if cuda:
        local = _env_int("LOCAL_RANK", 0)
        count = torch.cuda.device_count()
        if not 0 <= local < count:
            raise UsageError(
                f"pyssl pretrain: LOCAL_RANK={local}, but this machine has {count} CUDA "
                "device(s); start at most that many processes per node"
            )
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return device


def _pretrain(a: argparse.Namespace) -> None:
    import torch

    from pyssl.data import load_images, load_text
    from pyssl.methods import build
    from pyssl.train import PretrainConfig, pretrain

    out = a.out or os.path.join("runs", a.method)
    device = _init_distributed(_device(a.device))
    args: dict[str, Any]
    torch.manual_seed(a.seed)
    cfg = PretrainConfig(
        epochs=a.epochs,
        steps=a.steps,
        batch_size=a.batch_size,
        optimizer=a.optimizer,
        lr=a.lr,
        weight_decay=a.weight_decay,
        warmup_steps=a.warmup_steps,
        clip_grad=a.clip_grad,
        precision=a.precision,
        seed=a.seed,
        checkpoint_every=a.checkpoint_every,
        progress=not a.no_progress,
    )
    if (a.method == "ts2vec") != (a.data == "mnist1d") and a.data is not None:
        kind = "series (--data mnist1d)" if a.method == "ts2vec" else "images or text"
        raise UsageError(f"pyssl pretrain: {a.method} trains on {kind}, not --data {a.data}")
    if a.method == "ts2vec":
        from pyssl.train.series_study import mnist1d_splits

        data_name = "mnist1d"
        train_series, _ = mnist1d_splits()
        args = {"in_channels": 1}
        method = build("ts2vec", **args)
        summary = pretrain(
            method, train_series, cfg, out, resume=a.resume, method_args=args, device=device
        )
        extra: dict[str, Any] = {}
    elif a.method == "mlm":
        data_name = a.data or "pydoc"
        train, test = load_text(data_name, seq_len=a.seq_len, seed=0)
        tok = train.tokenizer
        args = {
            "vocab_size": len(tok),
            "max_len": a.seq_len,
            "pad_token_id": tok.PAD,
            "mask_token_id": tok.MASK,
            "special_token_ids": [tok.UNK],
        }
        method = build("mlm", **args)
        summary = pretrain(
            method, train, cfg, out, resume=a.resume, method_args=args, device=device
        )
        extra = _mlm_eval(method, train, test)
    else:
        data_name = a.data or "digits"
        images = load_images(data_name, split="train", image_size=a.image_size)
        args = {"image_size": a.image_size, "in_channels": 3}
        method = build(a.method, **args)
        summary = pretrain(
            method, images, cfg, out, resume=a.resume, method_args=args, device=device
        )
        extra = {}
    from pyssl import distributed

    if distributed.rank() == 0:
        run = {
            "method": a.method,
            "data": data_name,
            "method_args": args,
            "summary": summary,
            **extra,
        }
        with open(os.path.join(out, "run.json"), "w") as fh:
            json.dump(run, fh, indent=1)
        print(
            f"{a.method}: {summary['steps']} steps, final loss {summary['final_loss']:.4f}, "
            f"{summary['samples_per_s']:.0f} samples/s (lr {summary['lr']:g}, "
            f"{summary['precision']})"
        )
        for k, v in extra.items():
            print(f"  {k}: {v:.4f}" if isinstance(v, float) else f"  {k}: {v}")
        print(f"wrote {out}/: checkpoint.pt, metrics.jsonl, run.json")


def _mlm_eval(method: Any, train: Any, test: Any) -> dict[str, Any]:
    """Held-out masked-token accuracy (the masks drawn from a fixed seed) and the baseline that
    always predicts the most frequent training token at the masked positions."""
    import torch

    method.eval()
    g = torch.Generator().manual_seed(1234)
    correct, total = method.masked_accuracy(test.tokens, generator=g)
    g = torch.Generator().manual_seed(1234)
    _, labels = method.mask(test.tokens, generator=g)
    counts = torch.bincount(train.tokens.flatten(), minlength=len(train.tokenizer))
    for special in (train.tokenizer.PAD, train.tokenizer.UNK, train.tokenizer.MASK):
        counts[special] = 0
    top = int(counts.argmax())
    chosen = labels != -100
    base = float((labels[chosen] == top).float().mean()) if bool(chosen.any()) else float("nan")
    return {
        "heldout_masked_token_accuracy": correct / max(total, 1),
        "masked_positions": total,
        "most_frequent_token_baseline": base,
        "most_frequent_token": train.tokenizer.vocab[top],
    }


def _rebuild(ckpt: dict[str, Any], path: str) -> Any:
    from pyssl.demo import digits_encoder
    from pyssl.methods import METHODS, build
    from pyssl.train.checkpoint import CheckpointError, load_model_state

    name = ckpt.get("method")
    if name not in METHODS:
        raise CheckpointError(f"{path}: unknown method {name!r} in the checkpoint")
    try:
        args = dict(ckpt.get("method_args") or {})
        if args.get("backbone") == "digits_encoder":
            width = int(args.pop("width"))
            args.pop("backbone")
            method = build(name, backbone=digits_encoder(width), **args)
        else:
            method = build(name, **args)
    except (TypeError, ValueError, KeyError) as exc:
        raise CheckpointError(
            f"{path}: cannot rebuild {name!r} from its arguments ({exc})"
        ) from None
    load_model_state(method, ckpt["model"], path)
    return method


def _finetune(a: argparse.Namespace) -> None:
    from pyssl.data import load_images
    from pyssl.train import (
        checkpoint,
        features,
        knn_accuracy,
        label_subset,
        logistic_regression,
        train_classifier,
    )
    from pyssl.train.report import REPORT, add_records

    ckpt = checkpoint.load(a.checkpoint, require=checkpoint.MODEL_KEYS)
    method = _rebuild(ckpt, a.checkpoint)
    if getattr(method, "modality", "image") == "series":
        _finetune_series(a, method)
        return
    if getattr(method, "modality", "image") != "image":
        raise UsageError(
            f"pyssl finetune: {a.checkpoint} holds a {method.name!r} text model; "
            "finetune evaluates image encoders"
        )
    data = a.data or str(ckpt.get("data") or "digits").removesuffix("-train")
    size = int((ckpt.get("method_args") or {}).get("image_size", 32))
    train = load_images(data, split="train", image_size=size)
    test = (
        load_images(data, split="test", image_size=size) if data in ("digits", "photos") else None
    )
    if train.labels is None:
        raise UsageError(
            f"pyssl finetune: {data}: no labels (put each class's images in a subfolder)"
        )
    if test is None:  # a folder: a fixed stratified quarter of it is the test split
        from pyssl.train.evaluate import label_subset as split

        held = split(train.labels, 0.25, 12345)
        keep = sorted(set(range(len(train))) - set(held.tolist()))
        import torch

        train, test = train.subset(torch.tensor(keep)), train.subset(held)
    aug = method.default_augment(size, 3)
    mean, std = _normalisation(aug)
    assert train.labels is not None and test.labels is not None
    idx = label_subset(train.labels, a.label_fraction, a.seed)
    enc = method.encoder
    if a.protocol == "finetune":
        one_view = _one_view(aug)
        acc = train_classifier(
            enc,
            int(enc.out_dim),
            train.subset(idx),
            test,
            augment=one_view,
            mean=mean,
            std=std,
            steps=a.steps,
            seed=a.seed,
        )
    else:
        ftr = features(enc, train.images, mean=mean, std=std)
        fte = features(enc, test.images, mean=mean, std=std)
        if a.protocol == "linear":
            acc = logistic_regression(
                ftr[idx], train.labels[idx], fte, test.labels, num_classes=len(train.classes)
            )
        else:
            acc = knn_accuracy(
                ftr[idx], train.labels[idx], fte, test.labels, num_classes=len(train.classes)
            )
    out = a.out or os.path.dirname(os.path.abspath(a.checkpoint))
    os.makedirs(out, exist_ok=True)
    rec = {
        "model": method.name,
        "protocol": a.protocol,
        "label_fraction": a.label_fraction,
        "seed": a.seed,
        "test_accuracy": acc,
    }
    add_records(os.path.join(out, REPORT), [rec])
    print(
        f"{method.name} {a.protocol} at {a.label_fraction:g} of the labels: test accuracy "
        f"{100 * acc:.2f}% ({len(idx)} labels, {len(test)} test images); added to {out}/{REPORT}"
    )


def _finetune_series(a: argparse.Namespace, method: Any) -> None:
    """A TS2Vec checkpoint: linear probe of its (averaged) encoder's full-series features on
    MNIST-1D at --label-fraction (the L2 weight chosen on a held-out quarter of those labels)."""
    from pyssl.train import label_subset
    from pyssl.train.report import REPORT, add_records
    from pyssl.train.series_study import mnist1d_splits, probe, series_features

    if a.protocol != "linear":
        raise UsageError(
            f"pyssl finetune: a series checkpoint takes --protocol linear, not {a.protocol}"
        )
    if a.data not in (None, "mnist1d"):
        raise UsageError(f"pyssl finetune: a series checkpoint evaluates on mnist1d, not {a.data}")
    train, test = mnist1d_splits()
    idx = label_subset(train.labels, a.label_fraction, a.seed)
    enc = method.probe_encoder()
    acc, _ = probe(
        series_features(enc, train.x[idx]), train.labels[idx],
        series_features(enc, test.x), test.labels, seed=a.seed,
    )  # fmt: skip
    out = a.out or os.path.dirname(os.path.abspath(a.checkpoint))
    os.makedirs(out, exist_ok=True)
    rec = {"model": method.name, "protocol": "linear", "label_fraction": a.label_fraction,
           "seed": a.seed, "test_accuracy": acc}  # fmt: skip
    add_records(os.path.join(out, REPORT), [rec])
    print(
        f"{method.name} linear at {a.label_fraction:g} of the labels: test accuracy "
        f"{100 * acc:.2f}% ({len(idx)} labels, {len(test)} test series); added to {out}/{REPORT}"
    )


def _normalisation(aug: Any) -> tuple[Any, Any]:
    recipe = getattr(aug, "recipe", aug)
    views = getattr(recipe, "views", None)
    if views:
        return views[0].mean, views[0].std
    return 0.5, 0.5


def _one_view(aug: Any) -> Any:
    def first(images: Any, generator: Any = None) -> list[Any]:
        return aug(images, generator=generator)[:1]

    return first


def _report(a: argparse.Namespace) -> None:
    from pyssl.train.report import markdown_table, plot, read_records

    records: list[dict[str, Any]] = []
    for run in a.runs:
        records += read_records(run)
    if not records:
        raise UsageError("pyssl report: the reports hold no records")
    os.makedirs(a.out, exist_ok=True)
    table = markdown_table(records)
    with open(os.path.join(a.out, "report.md"), "w") as fh:
        fh.write(f"# Test accuracy (%) over {', '.join(a.runs)}\n\n{table}\n")
    plot(records, os.path.join(a.out, "accuracy.png"))
    print(table)
    print(f"\nwrote {a.out}/report.md and {a.out}/accuracy.png")


def _bench(a: argparse.Namespace) -> int:
    import subprocess

    import pyssl

    # an editable install finds its checkout beside the package; a regular install (the wheel
    # does not ship bench/) uses the checkout it is run from
    here = os.path.dirname(os.path.dirname(os.path.abspath(pyssl.__file__)))
    roots = [r for r in (here, os.getcwd()) if os.path.isfile(os.path.join(r, "bench/report.py"))]
    if not roots:
        raise UsageError(
            "pyssl bench: the benchmarks live in the source checkout's bench/ folder, "
            "which an installed wheel does not ship; run it from a clone of the repository"
        )
    root = roots[0]
    bench = os.path.join(root, "bench")
    families = BENCH_FAMILIES if a.family == "all" else (a.family,)
    for fam in families:
        rc = subprocess.call([sys.executable, os.path.join(bench, f"bench_{fam}.py")], cwd=root)
        if rc:
            return rc
    rc = subprocess.call([sys.executable, os.path.join(bench, "report.py")], cwd=root)
    if rc == 0:
        with open(os.path.join(bench, "RESULTS.md")) as fh:
            print(fh.read())
    return rc


# optional packages whose absence is a setup problem, not a bug: (import name, what needs it)
OPTIONAL_PACKAGES = {
    "sklearn": "scikit-learn",
    "matplotlib": "matplotlib",
    "PIL": "pillow",
    "scipy": "scipy",
    "tqdm": "tqdm",
}


def _missing_dependency(exc: BaseException) -> str | None:
    """The one-line message for a missing optional package: a ``ModuleNotFoundError`` for one of
    :data:`OPTIONAL_PACKAGES`, or a ``RuntimeError`` raised from an ``ImportError`` (how pyssl
    names the extra to install); ``None`` for anything else."""
    if isinstance(exc, ModuleNotFoundError):
        top = (exc.name or "").split(".")[0]
        if top in OPTIONAL_PACKAGES:
            return (
                f"this command needs {OPTIONAL_PACKAGES[top]}, which is not installed: "
                "pip install 'pyssl-kernels[demo]'"
            )
        return None
    if isinstance(exc, RuntimeError) and isinstance(exc.__cause__, ImportError):
        return str(exc)
    return None


def _os_error(exc: OSError) -> str:
    # "PATH: reason" rather than "[Errno 17] File exists: 'PATH'"
    if exc.filename is None or not exc.strerror:
        return str(exc)
    where: str = str(exc.filename)
    if exc.filename2 is not None:
        where += f" -> {exc.filename2}"
    return f"{where}: {exc.strerror}"


def _debug(argv: Sequence[str] | None) -> bool:
    args = sys.argv[1:] if argv is None else list(argv)
    # the top-level flag stands before the command; later arguments belong to the subcommand
    top = args[: next((i for i, x in enumerate(args) if not x.startswith("-")), len(args))]
    return os.environ.get("PYSSL_DEBUG", "") not in ("", "0") or "--debug" in top


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command. An expected failure prints one line ``pyssl: error: ...`` to stderr,
    no traceback, and returns non-zero: 2 for usage and input errors (bad options, a missing
    path, an empty folder, a corrupt or mismatched checkpoint), 1 for failures while running
    (a loss that became NaN or infinite, a file that cannot be written, a missing optional
    package). ``PYSSL_DEBUG=1`` or ``pyssl --debug COMMAND`` re-raises them with the traceback;
    any other exception is a bug and always shows its traceback."""
    from pyssl.train.checkpoint import CheckpointError

    debug = _debug(argv)
    try:
        return _run(_parser().parse_args(argv))
    except UsageError as exc:
        if debug:
            raise
        print(exc, file=sys.stderr)
        return 2
    except (FileNotFoundError, NotADirectoryError, CheckpointError, ValueError, TypeError) as exc:
        if debug:
            raise
        msg = _os_error(exc) if isinstance(exc, OSError) else str(exc)
        print(f"pyssl: error: {msg}", file=sys.stderr)
        return 2
    except FloatingPointError as exc:
        if debug:
            raise
        print(f"pyssl: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        if debug:
            raise
        print(f"pyssl: error: {_os_error(exc)}", file=sys.stderr)
        return 1
    except (RuntimeError, ImportError) as exc:
        why = _missing_dependency(exc)
        if why is None or debug:
            raise
        print(f"pyssl: error: {why}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("pyssl: interrupted", file=sys.stderr)
        return 130


def _run(a: argparse.Namespace) -> int:
    if a.command == "info":
        print(info())
    elif a.command == "mae-picture":
        from pyssl.demo import mae_demo

        print(
            mae_demo(
                a.out,
                image=a.image,
                mask_ratio=a.mask_ratio,
                patch_size=a.patch_size,
                seed=a.seed,
            )
        )
    elif a.command == "demo":
        from pyssl.demo import DemoConfig, label_efficiency_demo

        cfg = DemoConfig() if a.epochs is None else DemoConfig(epochs=a.epochs)
        out = a.out if a.method == "simclr" or a.out != _DEMO_OUT else f"{a.out}-{a.method}"
        label_efficiency_demo(
            out, method=a.method, seeds=a.seeds, cfg=cfg, progress=not a.no_progress
        )
    elif a.command == "word2vec":
        from pyssl import word2vec

        word2vec.run(a)
    elif a.command == "pretrain":
        _pretrain(a)
    elif a.command == "finetune":
        _finetune(a)
    elif a.command == "report":
        _report(a)
    elif a.command == "bench":
        return _bench(a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
