"""Benchmarks of the text family and the mask samplers: CPU, 2 threads, one run. Conventions as
``bench_masking.py`` / ``bench_contrastive.py``.

    PYTHONPATH=$PWD /root/dev/bin/python bench/bench_text.py    # ~3-5 min, JSON -> bench/.results/
    python bench/report.py

Cases (the issue's item 7):

* ``lm_loss fwd+bwd``: BERT's MLM head loss at B=8, T=512, H=768, V=30522 with 15% of the
  positions labelled (M = 614), bias included, fp32; the loss, then ``torch.autograd.grad``
  against hidden, weight and bias. ``pyssl`` = ``pyssl.ops.masked_lm_loss``; ``eager`` =
  ``F.linear`` + ``F.cross_entropy`` over all 4096 positions (Hugging Face's BertForMaskedLM);
  ``gathered`` = the labelled rows gathered first, then linear + cross-entropy; ``compiled`` =
  ``torch.compile`` of ``gathered``. FLOPs = 6*M*V*H (logits, dhidden, dweight: what pyssl and
  ``gathered`` compute; eager computes 6*B*T*V*H). Memory: peak bytes through torch's allocator
  during one call and the resident-set growth of a fresh process over one call (which also sees
  the C++ core's scratch: pyssl's [V, 128] block of logits).
* ``mask_tokens fwd``: B=256, T=512, vocab 30522, 2 special tokens per row; ``pyssl`` =
  ``pyssl.ops.mask_tokens``; ``eager`` = Hugging Face's ``torch_mask_tokens``
  (``pyssl.reference.text.mask_tokens_hf``).
* ``<sampler> fwd``: each numba sampler against its pure-Python definition
  (``pyssl.reference.samplers``, ``pyssl.reference.text``), same batch and generator.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from functools import cache
from typing import Any

import numpy as np
import pytest
import torch

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
import ceilings  # noqa: E402

ceilings.use_working_tree_if_built()

from bench_masking import (  # noqa: E402, F401  (the ceiling tests run here too)
    ForeignCpu,
    memory_info,
    test_ceiling_copy,
    test_ceiling_matmul,
    wait_for_quiet,
)

import pyssl  # noqa: E402
from pyssl import samplers  # noqa: E402
from pyssl.reference import samplers as ref_s  # noqa: E402
from pyssl.reference import text as ref  # noqa: E402

torch.set_num_threads(2)
RESULTS = os.path.join(_HERE, ".results")
B, T, H, V, FRAC = 8, 512, 768, 30522, 0.15
MASK_B, MASK_T = 256, 512


# ------------------------------------------------------------------------------- LM loss


def lm_inputs(b: int = B, t: int = T, h: int = H, v: int = V) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    labels = torch.full((b, t), -100, dtype=torch.int64)
    pos = torch.randperm(b * t, generator=g)[: int(FRAC * b * t)]
    labels.view(-1)[pos] = torch.randint(0, v, (len(pos),), generator=g)
    return {
        "hidden": torch.randn(b, t, h, generator=g).requires_grad_(),
        "weight": (torch.randn(v, h, generator=g) * 0.02).requires_grad_(),
        "bias": torch.zeros(v).requires_grad_(),
        "labels": labels,
    }


@cache
def _compiled_gathered() -> Callable[..., torch.Tensor]:
    return torch.compile(ref.masked_lm_loss_gathered, dynamic=False)


def lm_step(impl: str, t: dict[str, torch.Tensor]) -> Callable[[], None]:
    h, w, b, y = t["hidden"], t["weight"], t["bias"], t["labels"]
    fn: Callable[[], torch.Tensor] = {
        "pyssl": lambda: pyssl.ops.masked_lm_loss(h, w, y, bias=b),
        "eager": lambda: ref.masked_lm_loss(h, w, y, b),
        "gathered": lambda: ref.masked_lm_loss_gathered(h, w, y, b),
        "compiled": lambda: _compiled_gathered()(h, w, y, b),
    }[impl]

    def run() -> None:
        torch.autograd.grad(fn(), (h, w, b))

    return run


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        line = next(ln for ln in f if ln.startswith(key + ":"))
    return int(line.split()[1]) * 1024


def rss_growth(impl: str) -> dict[str, Any]:
    """In this (fresh) process: one small warm call, then VmHWM growth over one full call."""
    lm_step(impl, lm_inputs(2, 16, 32, 100))()
    t = lm_inputs()
    run = lm_step(impl, t)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS
    base = _status("VmRSS")
    run()
    return {"rss_growth_bytes": _status("VmHWM") - base, "rss_base_bytes": base}


def rss_in_subprocess(impl: str) -> dict[str, Any]:
    cmd = [sys.executable, os.path.abspath(__file__), "--rss", impl]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=600)
    return json.loads(out.stdout.strip().splitlines()[-1])


@cache
def lm_tensors() -> dict[str, torch.Tensor]:
    return lm_inputs()


@pytest.mark.parametrize("impl", ["pyssl", "eager", "gathered", "compiled"])
def test_lm_loss(benchmark: Any, impl: str) -> None:
    benchmark.group = "lm_loss fwd+bwd"
    t = lm_tensors()
    fn = lm_step(impl, t)
    t0 = time.perf_counter()
    fn()  # the compiled entry compiles here
    first_ms = (time.perf_counter() - t0) * 1e3
    m = int((t["labels"] != -100).sum())
    info: dict[str, Any] = {
        "case": "lm_loss", "mode": "fwd+bwd", "impl": impl, "m": m, "b": B, "t": T, "h": H,
        "v": V, "flops": 6 * m * V * H, "bytes": 2 * 4 * (B * T * H + V * H + V),
        "warmup_first_ms": first_ms, "threads": torch.get_num_threads(),
    }  # fmt: skip
    info.update(memory_info(fn))
    if impl != "compiled":
        info.update(rss_in_subprocess(impl))
    info["waited_for_quiet_s"] = wait_for_quiet()
    benchmark.extra_info.update(info)
    with ForeignCpu() as other:
        benchmark(fn)
    benchmark.extra_info["foreign_cpu_cores"] = other.cores


# --------------------------------------------------------------------------- mask_tokens


@cache
def mask_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(999, V, (MASK_B, MASK_T), generator=g)
    special = torch.zeros(MASK_B, MASK_T, dtype=torch.bool)
    special[:, 0] = special[:, -1] = True
    return ids, special


@pytest.mark.parametrize("impl", ["pyssl", "eager"])
def test_mask_tokens(benchmark: Any, impl: str) -> None:
    benchmark.group = "mask_tokens fwd"
    ids, special = mask_inputs()
    fn = pyssl.ops.mask_tokens if impl == "pyssl" else ref.mask_tokens_hf
    g = torch.Generator().manual_seed(2)

    def run() -> None:
        fn(ids, vocab_size=V, mask_token_id=103, special_tokens_mask=special, generator=g)

    run()
    benchmark.extra_info.update(
        {
            "case": "mask_tokens",
            "mode": "fwd",
            "impl": impl,
            "b": MASK_B,
            "t": MASK_T,
            "bytes": ids.numel() * (8 + 1 + 8 + 8),
            "flops": 0,
            "waited_for_quiet_s": wait_for_quiet(),
        }  # fmt: skip
    )
    with ForeignCpu() as other:
        benchmark(run)
    benchmark.extra_info["foreign_cpu_cores"] = other.cores


# ------------------------------------------------------------------------------ samplers

SAMPLER_BATCH = 64


def _sampler_fns(name: str) -> tuple[Callable[[int], Any], Callable[[int], Any]]:
    """(numba, pure Python) callables of a seed for one batch."""
    n = SAMPLER_BATCH
    rng = np.random.default_rng
    if name == "beit":
        return (lambda s: samplers.beit_masks(n, rng=s),
                lambda s: [ref_s.beit_mask(g) for g in [rng(s)] for _ in range(n)])  # fmt: skip
    if name == "simmim":
        return (lambda s: samplers.simmim_masks(n, rng=s),
                lambda s: [ref_s.simmim_mask(g) for g in [rng(s)] for _ in range(n)])  # fmt: skip
    if name == "tube":
        return (lambda s: samplers.tube_masks(n, rng=s),
                lambda s: [ref_s.tube_mask(g) for g in [rng(s)] for _ in range(n)])  # fmt: skip
    if name == "ijepa":
        return lambda s: samplers.ijepa_masks(n, rng=s), lambda s: ref_s.ijepa_masks(rng(s), n)
    if name == "data2vec":
        return (lambda s: samplers.data2vec_masks(n, rng=s),
                lambda s: [ref_s.data2vec_mask(g) for g in [rng(s)] for _ in range(n)])  # fmt: skip
    if name == "span":
        allowed = np.ones((n, 512), dtype=np.bool_)
        budget = int(0.15 * 512 + 0.5)
        return (lambda s: samplers.span_mask_batch(allowed, 0.15, 0.2, 10, rng(s)),
                lambda s: [ref.span_mask(512, g, budget=budget) for g in [rng(s)]
                           for _ in range(n)])  # fmt: skip
    if name == "time":
        shape = (n, 1000)
        return (lambda s: pyssl.ops.time_mask(shape, 0.65, 10, 2, rng=s),
                lambda s: ref.compute_mask_indices(shape, 0.65, 10, rng(s), None, 2))  # fmt: skip
    raise KeyError(name)


SAMPLERS = ["beit", "simmim", "tube", "ijepa", "data2vec", "span", "time"]


@pytest.mark.parametrize("impl", ["pyssl", "eager"])
@pytest.mark.parametrize("name", SAMPLERS)
def test_sampler(benchmark: Any, name: str, impl: str) -> None:
    benchmark.group = f"{name} sampler fwd"
    fast, slow = _sampler_fns(name)
    fn = fast if impl == "pyssl" else slow
    seed = [0]

    def run() -> None:
        seed[0] += 1
        fn(seed[0])

    run()  # numba compiles (or loads its cache) here
    benchmark.extra_info.update(
        {
            "case": f"{name} sampler",
            "mode": "fwd",
            "impl": impl,
            "batch": SAMPLER_BATCH,
            "bytes": 0,
            "flops": 0,
            "waited_for_quiet_s": wait_for_quiet(),
        }  # fmt: skip
    )
    with ForeignCpu() as other:
        benchmark(run)
    benchmark.extra_info["foreign_cpu_cores"] = other.cores


if __name__ == "__main__":
    if sys.argv[1:2] == ["--rss"]:
        print(json.dumps(rss_growth(sys.argv[2])))
        sys.exit(0)
    os.makedirs(RESULTS, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    args = [os.path.abspath(__file__), "-p", "no:cacheprovider", "--benchmark-disable-gc",
            "--benchmark-warmup=off", "--benchmark-min-rounds=3", "--benchmark-max-time=1.0",
            "--benchmark-group-by=group", "--benchmark-sort=name",
            f"--benchmark-json={os.path.join(RESULTS, f'text-{stamp}.json')}",
            *sys.argv[1:]]  # fmt: skip
    print("pytest", " ".join(args[1:]))
    sys.exit(pytest.main(args))
