"""Where the time of pyssl's masking fwd+bwd goes (no profiler needed): the full op against
its C++ launchers alone (``pyssl.ops._backend.launch`` into preallocated, already-touched
outputs), the launchers writing into fresh ``torch.empty`` outputs (kernel + first touch), the
fresh allocation + first touch alone, and the fixed per-call cost (the op at a tiny size).

    python bench/profile_masking.py              # 2 threads, markdown table on stdout
    python bench/profile_masking.py --threads 1
    THP_MEM_ALLOC_ENABLE=1 python bench/profile_masking.py   # torch's huge-page CPU allocations

Timings are medians of at least 15 calls (and 0.3 s) after a warm-up of 3 calls and 1 s; each
line waits for a quiet CPU first and shows the foreign CPU (cores used by other processes) during
its timing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE]

import bench_masking as bm  # noqa: E402
import torch  # noqa: E402

import pyssl  # noqa: E402
from pyssl.ops._backend import launch  # noqa: E402


def timed(fn: Callable[[], object], n: int = 15) -> tuple[float, float]:
    bm.wait_for_quiet()
    start = time.perf_counter()  # warm-up: 3 calls and 1 s (see bench_masking.WARMUP_S)
    for i in range(1_000_000):
        fn()
        if i >= 2 and time.perf_counter() - start >= bm.WARMUP_S:
            break
    times: list[float] = []
    start = time.perf_counter()
    with bm.ForeignCpu() as other:  # at least 0.3 s, so the /proc/stat sample means something
        while len(times) < n or time.perf_counter() - start < 0.3:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3, other.cores


def rows_random_masking() -> list[tuple[str, Callable[[], object]]]:
    t = bm.inputs("random_masking")
    x, noise, g = t["x"].detach(), t["noise"], t["grad"]
    B, L, D, K = bm.B, bm.L, bm.D, bm.K
    vis, mask = torch.empty(B, K, D), torch.empty(B, L)
    ids_keep, ids_restore = (
        torch.empty(B, K, dtype=torch.int64),
        torch.empty(B, L, dtype=torch.int64),
    )
    full = torch.empty(B, L, D)
    launch("masking", "random_masking", "cpu", x, noise, K, vis, mask, ids_keep, ids_restore)
    xs = torch.randn(1, 4, 4, requires_grad=True)
    ns, gs = torch.rand(1, 4), torch.randn(1, 1, 4)
    return [
        ("full op fwd+bwd", bm.step("random_masking", "fwd+bwd", "pyssl")),
        ("full op fwd (autograd recording)", bm.forward("random_masking", "pyssl")),
        (
            "launcher fwd, warm outputs",
            lambda: launch(
                "masking", "random_masking", "cpu", x, noise, K, vis, mask, ids_keep, ids_restore
            ),
        ),
        (
            "launcher bwd (restore_masked, zero token), warm output",
            lambda: launch("masking", "restore_masked", "cpu", g, None, ids_restore, full),
        ),
        (
            "launcher bwd into fresh torch.empty [B,L,D]",
            lambda: launch(
                "masking", "restore_masked", "cpu", g, None, ids_restore, torch.empty(B, L, D)
            ),
        ),
        ("torch.empty [B,L,D] 38.5 MB + fill (fresh)", lambda: torch.empty(B, L, D).fill_(0)),
        ("torch.empty [B,K,D] 9.6 MB + fill (fresh)", lambda: torch.empty(B, K, D).fill_(0)),
        (
            "op fwd+bwd at [1,4,4] (fixed per-call cost)",
            lambda: torch.autograd.grad(
                pyssl.ops.random_masking(xs, 0.75, noise=ns).visible, xs, gs
            ),
        ),
    ]


def rows_gather_patches() -> list[tuple[str, Callable[[], object]]]:
    t = bm.inputs("gather_patches")
    imgs, ids, g = t["imgs"].detach(), t["ids_keep"], t["grad"]
    B, K, N, C, HW, P = bm.B, bm.K, bm.N, bm.C, bm.HW, bm.P
    out, gimgs = torch.empty(B, K, N), torch.empty(B, C, HW, HW)
    launch("masking", "gather_patches", "cpu", imgs, ids, P, out)
    launch("masking", "scatter_patches", "cpu", g, ids, P, gimgs)
    ims = torch.randn(1, 3, 16, 32, requires_grad=True)
    ids_s, gs = torch.tensor([[1]]), torch.randn(1, 1, 768)
    return [
        ("full op fwd+bwd", bm.step("gather_patches", "fwd+bwd", "pyssl")),
        ("full op fwd (autograd recording)", bm.forward("gather_patches", "pyssl")),
        (
            "launcher fwd (gather_patches), warm output",
            lambda: launch("masking", "gather_patches", "cpu", imgs, ids, P, out),
        ),
        (
            "launcher fwd into fresh torch.empty [B,K,n]",
            lambda: launch("masking", "gather_patches", "cpu", imgs, ids, P, torch.empty(B, K, N)),
        ),
        (
            "launcher bwd (scatter_patches), warm output",
            lambda: launch("masking", "scatter_patches", "cpu", g, ids, P, gimgs),
        ),
        (
            "launcher bwd into fresh torch.empty [B,C,H,W]",
            lambda: launch(
                "masking", "scatter_patches", "cpu", g, ids, P, torch.empty(B, C, HW, HW)
            ),
        ),
        (
            "torch.empty [B,C,H,W] 38.5 MB + fill (fresh)",
            lambda: torch.empty(B, C, HW, HW).fill_(0),
        ),
        (
            "op fwd+bwd at [1,3,16,32] (fixed per-call cost)",
            lambda: torch.autograd.grad(pyssl.ops.gather_patches(ims, ids_s, 16), ims, gs),
        ),
    ]


def rows_masked_patch_loss() -> list[tuple[str, Callable[[], object]]]:
    t = bm.inputs("masked_patch_loss")
    pred, imgs, mask = t["pred"].detach(), t["imgs"], t["mask"]
    P = bm.P
    loss, gpred, one = torch.empty(()), torch.empty_like(pred), torch.ones(())
    launch(
        "masking", "masked_patch_loss_backward", "cpu", one, pred, imgs, mask, P, True, 1e-6, gpred
    )
    ps = torch.randn(1, 2, 768, requires_grad=True)
    ims, ms = torch.randn(1, 3, 16, 32), torch.ones(1, 2)
    return [
        ("full op fwd+bwd", bm.step("masked_patch_loss", "fwd+bwd", "pyssl")),
        ("full op fwd (autograd recording)", bm.forward("masked_patch_loss", "pyssl")),
        (
            "launcher fwd, warm output",
            lambda: launch(
                "masking", "masked_patch_loss", "cpu", pred, imgs, mask, P, True, 1e-6, loss
            ),
        ),
        (
            "launcher bwd, warm output",
            lambda: launch(
                "masking",
                "masked_patch_loss_backward",
                "cpu",
                one,
                pred,
                imgs,
                mask,
                P,
                True,
                1e-6,
                gpred,
            ),
        ),
        (
            "launcher bwd into fresh torch.empty_like(pred)",
            lambda: launch(
                "masking",
                "masked_patch_loss_backward",
                "cpu",
                one,
                pred,
                imgs,
                mask,
                P,
                True,
                1e-6,
                torch.empty_like(pred),
            ),
        ),
        ("torch.empty_like(pred) 38.5 MB + fill (fresh)", lambda: torch.empty_like(pred).fill_(0)),
        (
            "op fwd+bwd at [1,2,768] (fixed per-call cost)",
            lambda: torch.autograd.grad(pyssl.ops.masked_patch_loss(ps, ims, ms, 16), ps),
        ),
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    thp = os.environ.get("THP_MEM_ALLOC_ENABLE", "0")
    print(f"threads {args.threads}, THP_MEM_ALLOC_ENABLE={thp}, torch {torch.__version__}\n")
    print("| case | what | median ms | other CPU (cores) |")
    print("|---|---|---:|---:|")
    for case, rows in [
        ("random_masking", rows_random_masking),
        ("gather_patches", rows_gather_patches),
        ("masked_patch_loss", rows_masked_patch_loss),
    ]:
        for what, fn in rows():
            t, other = timed(fn)
            print(f"| {case} | {what} | {t:.2f} | {other:.2f} |", flush=True)


if __name__ == "__main__":
    main()
