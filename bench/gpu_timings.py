"""GPU timings of pyssl's kernels against their eager references and ``torch.compile``, in one
run, on one CUDA device. A plain script (not collected by pytest-benchmark, whose timers are
host-side): CUDA events around each call, 5 warm-up calls (Triton's autotuning and
``torch.compile`` happen there), then the median of 20 timed calls; each row's peak memory is
``torch.cuda.max_memory_allocated`` over one call beyond its inputs.

    python bench/gpu_timings.py [--quick] > table.md

Prints the device's measured ceilings (device-to-device copy, bf16 matmul), then one markdown
row per case. A case that fails prints its error in its row; the others still run.
"""

from __future__ import annotations

import argparse
import statistics
import time
import traceback
from collections.abc import Callable

import torch
import torch.nn.functional as F

import pyssl.ops as O
from pyssl import augment
from pyssl.reference import colour as RC
from pyssl.reference import contrastive as R
from pyssl.reference import masking as RM
from pyssl.reference import pretext as RP

HEADER = "| case | pyssl ms | eager ms | compiled ms | x eager | x compiled | pyssl MB | eager MB |"
DEV = torch.device("cuda")  # --device cpu: a smoke run of the script itself, host timers


def timed(fn: Callable[[], object], warm: int = 5, reps: int = 20) -> tuple[float, float]:
    """(median ms, peak MB beyond what was allocated before the call)."""
    for _ in range(warm):
        fn()
    if DEV.type == "cpu":
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3, float("nan")
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    peak = (torch.cuda.max_memory_allocated() - base) / 1e6
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times), peak


def fwd_bwd(loss: Callable[..., torch.Tensor], *inputs: torch.Tensor) -> Callable[[], None]:
    """One forward and backward of ``loss(*inputs).float().sum()`` (gradients of every input
    that requires them; the grads are dropped so each call allocates as training would)."""
    leaves = [t for t in inputs if t.requires_grad]

    def step() -> None:
        out = loss(*inputs)
        out = out[0] if isinstance(out, tuple) else out
        torch.autograd.grad(out.float().sum(), leaves)

    return step


def ceilings() -> None:
    if DEV.type == "cpu":
        return
    x = torch.empty(2**30, dtype=torch.uint8, device=DEV)
    y = torch.empty_like(x)
    ms, _ = timed(lambda: y.copy_(x))
    a = torch.randn(8192, 8192, dtype=torch.bfloat16, device=DEV)
    mm, _ = timed(lambda: a @ a)
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    print(f"ceilings: copy {2 * x.numel() / ms / 1e9:.0f} TB/s (read + write), ", end="")
    print(f"bf16 matmul 8192^3 {2 * 8192**3 / mm / 1e9:.0f} TFLOP/s")
    print()


def row(name: str, mine: Callable[[], None], eager: Callable[[], None] | None,
        compiled: Callable[[], None] | None) -> None:  # fmt: skip
    try:
        t, p = timed(mine)
        te, pe = timed(eager) if eager else (float("nan"), float("nan"))
        tc, _ = timed(compiled) if compiled else (float("nan"), float("nan"))
        print(f"| {name} | {t:.3f} | {te:.3f} | {tc:.3f} | {te / t:.2f} | {tc / t:.2f} "
              f"| {p:.0f} | {pe:.0f} |")  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - one failing case must not hide the others
        print(f"| {name} | failed: {type(exc).__name__}: {str(exc)[:200]} | | | | | | |")
        traceback.print_exc()
    if DEV.type == "cuda":
        torch.cuda.empty_cache()


def feats(n: int, d: int, dtype: torch.dtype) -> torch.Tensor:
    return F.normalize(torch.randn(n, d, device=DEV), dim=1).to(dtype).requires_grad_()


def contrastive(quick: bool) -> None:
    bf = torch.bfloat16
    n = 512 if quick else 16384
    z1, z2 = feats(n, 256, bf), feats(n, 256, bf)
    nt_ref = torch.compile(R.nt_xent)
    row(f"nt_xent fwd+bwd N={n} D=256 bf16",
        fwd_bwd(lambda a, b: O.nt_xent(a, b, temperature=0.2), z1, z2),
        fwd_bwd(lambda a, b: R.nt_xent(a, b, temperature=0.2), z1, z2),
        fwd_bwd(lambda a, b: nt_ref(a, b, temperature=0.2), z1, z2))  # fmt: skip
    big = 2048 if quick else 131072
    b1, b2 = feats(big, 256, bf), feats(big, 256, bf)
    row(f"nt_xent fwd+bwd N={big} D=256 bf16 (eager: {(2 * big) ** 2 * 6 / 1e9:.0f} GB logits)",
        fwd_bwd(lambda a, b: O.nt_xent(a, b, temperature=0.2), b1, b2), None, None)  # fmt: skip
    del b1, b2
    img, txt = feats(n, 512, bf), feats(n, 512, bf)
    scale = torch.tensor(100.0, device=DEV, requires_grad=True)
    bias = torch.tensor(-10.0, device=DEV, requires_grad=True)
    clip_ref, sig_ref = torch.compile(R.clip_loss), torch.compile(R.siglip_loss)
    row(f"clip_loss fwd+bwd N={n} D=512 bf16",
        fwd_bwd(O.clip_loss, img, txt, scale), fwd_bwd(R.clip_loss, img, txt, scale),
        fwd_bwd(clip_ref, img, txt, scale))  # fmt: skip
    row(f"siglip_loss fwd+bwd N={n} D=512 bf16",
        fwd_bwd(O.siglip_loss, img, txt, scale, bias),
        fwd_bwd(R.siglip_loss, img, txt, scale, bias),
        fwd_bwd(sig_ref, img, txt, scale, bias))  # fmt: skip


def masking(quick: bool) -> None:
    b = 8 if quick else 256
    x = torch.randn(b, 196, 768, device=DEV, dtype=torch.bfloat16, requires_grad=True)
    noise = torch.rand(b, 196, device=DEV)
    rm_ref = torch.compile(RM.random_masking)
    for be in ("triton", "cuda"):
        row(f"random_masking fwd+bwd B={b} L=196 D=768 bf16 [{be}]",
            fwd_bwd(lambda t, be=be: O.random_masking(t, 0.75, noise=noise, backend=be)[0], x),
            fwd_bwd(lambda t: RM.random_masking(t, 0.75, noise)[0], x),
            fwd_bwd(lambda t: rm_ref(t, 0.75, noise)[0], x))  # fmt: skip
    imgs = torch.randn(b, 3, 224, 224, device=DEV, dtype=torch.bfloat16, requires_grad=True)
    keep = torch.argsort(torch.rand(b, 196, device=DEV), dim=1)[:, :49].contiguous()
    gp_ref = torch.compile(RM.gather_patches)
    for be in ("triton", "cuda"):
        row(f"gather_patches fwd+bwd B={b} 3x224x224 p=16 keep 49 bf16 [{be}]",
            fwd_bwd(lambda t, be=be: O.gather_patches(t, keep, 16, backend=be), imgs),
            fwd_bwd(lambda t: RM.gather_patches(t, keep, 16), imgs),
            fwd_bwd(lambda t: gp_ref(t, keep, 16), imgs))  # fmt: skip
    pred = torch.randn(b, 196, 768, device=DEV, dtype=torch.bfloat16, requires_grad=True)
    mask = (torch.rand(b, 196, device=DEV) < 0.75).to(torch.bfloat16)
    target = imgs.detach()
    mpl_ref = torch.compile(RM.masked_patch_loss)
    row(f"masked_patch_loss norm_pix fwd+bwd B={b} bf16",
        fwd_bwd(lambda p: O.masked_patch_loss(p, target, mask, 16), pred),
        fwd_bwd(lambda p: RM.masked_patch_loss(p, target, mask, 16), pred),
        fwd_bwd(lambda p: mpl_ref(p, target, mask, 16), pred))  # fmt: skip


def pretext_and_colour(quick: bool) -> None:
    b = 8 if quick else 256
    imgs = torch.rand(b, 3, 224, 224, device=DEV, requires_grad=True)
    rot_ref = torch.compile(RP.rotations)
    row(f"rotations fwd+bwd B={b} 3x224x224 fp32",
        fwd_bwd(lambda t: O.rotations(t)[0], imgs), fwd_bwd(RP.rotations, imgs),
        fwd_bwd(rot_ref, imgs))  # fmt: skip
    tiles = torch.rand(b, 3, 222, 222, device=DEV, requires_grad=True)
    perms = O.jigsaw_permutations(100, 3)[torch.randint(0, 100, (b,))].to(DEV)
    jig_ref = torch.compile(RP.jigsaw_shuffle)
    row(f"jigsaw_shuffle fwd+bwd B={b} 3x222x222 fp32",
        fwd_bwd(lambda t: O.jigsaw_shuffle(t, perms, 3), tiles),
        fwd_bwd(lambda t: RP.jigsaw_shuffle(t, perms, 3), tiles),
        fwd_bwd(lambda t: jig_ref(t, perms, 3), tiles))  # fmt: skip
    lab_ref = torch.compile(RC.rgb_to_lab)
    row(
        f"rgb_to_lab fwd+bwd B={b} 3x224x224 fp32",
        fwd_bwd(O.rgb_to_lab, imgs),
        fwd_bwd(RC.rgb_to_lab, imgs),
        fwd_bwd(lab_ref, imgs),
    )
    u8 = torch.randint(0, 256, (b, 224, 224, 3), dtype=torch.uint8, device=DEV)
    aug = augment.SimCLRAugment(224)
    row(f"SimCLRAugment 2 views B={b} uint8 224 (no eager batch equivalent)",
        lambda: aug(u8), None, None)  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    p.add_argument("--device", default="cuda", help="cuda, or cpu to smoke-test this script")
    args = p.parse_args()
    global DEV
    DEV = torch.device(args.device)
    if DEV.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_timings.py needs a CUDA device")
    torch.manual_seed(0)
    ceilings()
    print(HEADER)
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for part in (contrastive, masking, pretext_and_colour):
        part(args.quick)


if __name__ == "__main__":
    main()
