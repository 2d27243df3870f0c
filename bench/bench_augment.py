"""Benchmarks of the fused augmentation: pyssl's recipes (parameters sampled and views made for
a batch) against the per-image eager pipeline that DataLoader workers run today, one image and
one op at a time: ``pyssl.reference.augment`` in float32 (torchvision's functional definitions)
and, where it imports, torchvision's own v1 transforms on uint8 tensors (converted to float
first, the float path pyssl follows). CPU, 2 threads, B = 32 uint8 images of 256x256 (HWC).

    PYTHONPATH=$PWD /root/peers/bin/python bench/bench_augment.py    # ~5 min quiet, JSON ->
    python bench/report.py                                          # bench/.results/

Cases: SimCLR two views at 224 (``SimCLRAugment()``: crop scale (0.08, 1), jitter p=0.8,
grayscale p=0.2, blur p=0.5 with kernel 23); DINO multi-crop, 2 x 224 + 8 x 96 (bicubic,
``DINOAugment()``). Every timed call draws the same parameters (the generator is reseeded), so
the compulsory bytes are exact: for every view, the uint8 source pixels of its crop box read
once plus the float32 output written once. Floor = bytes / copy bandwidth (the ceiling entries of
the same run). There are no FLOPs in the floor: the per-pixel work (antialiased resampling,
HSV round trips, a 23-tap blur) is what the kernel spends its time on, so the fraction of the
bytes floor is low by nature and is reported as measured. ``torch.compile`` of the reference is
not timed: crop boxes change the shapes on every image, so it would recompile per image.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest
import torch

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
import ceilings  # noqa: E402

ceilings.use_working_tree_if_built()

from bench_masking import (  # noqa: E402, F401  (the ceiling tests run here too)
    ForeignCpu,
    _record_skip,
    test_ceiling_copy,
    test_ceiling_matmul,
    wait_for_quiet,
)

from pyssl import augment as A  # noqa: E402
from pyssl.reference import augment as ref  # noqa: E402

torch.set_num_threads(2)
RESULTS = os.path.join(_HERE, ".results")
B, SIDE = 32, 256
CASES = {"simclr 2x224": A.SimCLRAugment, "dino 2x224+8x96": A.DINOAugment}
IMPLS = ["pyssl", "eager", "torchvision"]


def images() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    # Smooth colour fields plus noise, closer to photographs than pure noise (the work does not
    # depend on content except through clamping).
    low = torch.rand(B, 3, 8, 8, generator=g)
    img = torch.nn.functional.interpolate(low, size=(SIDE, SIDE), mode="bilinear")
    img = (img * 200 + torch.rand(B, 3, SIDE, SIDE, generator=g) * 55).clamp(0, 255)
    return img.to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def compulsory_bytes(aug: A.Augment, x: torch.Tensor) -> int:
    params = aug.sample(x, torch.Generator().manual_seed(0))
    total = 0
    for cfg, p in zip(aug.views, params):
        total += int((p.boxes[:, 2] * p.boxes[:, 3]).sum()) * 3  # uint8 source of the crops
        total += len(p) * 3 * cfg.size * cfg.size * 4  # float32 output
    return total


def eager_pipeline(aug: A.Augment) -> Callable[[torch.Tensor], list[torch.Tensor]]:
    """The reference, one image and one op at a time, sampling as torchvision does."""

    def run(x: torch.Tensor) -> list[torch.Tensor]:
        views = []
        for cfg in aug.views:
            outs = []
            for img in x:
                chw = img.permute(2, 0, 1)
                box = ref.crop_params(chw.shape[1], chw.shape[2], cfg.scale, cfg.ratio)
                flip = bool(torch.rand(1) < cfg.hflip_p)
                factors, order = ref.IDENTITY, (0, 1, 2, 3)
                if cfg.jitter_p > 0 and torch.rand(1) < cfg.jitter_p:
                    order, factors = ref.jitter_params(cfg.jitter_ranges)
                gray = bool(torch.rand(1) < cfg.grayscale_p)
                sigma = 0.0
                if cfg.blur_p > 0 and torch.rand(1) < cfg.blur_p:
                    sigma = float(torch.empty(1).uniform_(*cfg.blur_sigma))
                sol = bool(torch.rand(1) < cfg.solarize_p)
                outs.append(ref.apply_one(
                    chw, box=box, flip=flip, factors=tuple(factors), order=tuple(order),
                    grayscale=gray, sigma=sigma, solarize_=sol, size=cfg.size,
                    interpolation=cfg.interpolation, blur_kernel_size=cfg.kernel_size,
                    mean=cfg.mean, std=cfg.std, dtype=torch.float32))  # fmt: skip
            views.append(torch.stack(outs))
        return views

    return run


def torchvision_pipeline(aug: A.Augment) -> Callable[[torch.Tensor], list[torch.Tensor]] | None:
    """torchvision's own transforms per image (uint8 tensor -> float, then the recipe)."""
    try:
        import torchvision.transforms as T
    except ImportError:
        return None
    pipes = []
    for cfg in aug.views:
        mode = getattr(T.InterpolationMode, cfg.interpolation.upper())
        steps: list[Any] = [
            T.ConvertImageDtype(torch.float32),
            T.RandomResizedCrop(cfg.size, cfg.scale, cfg.ratio, mode, antialias=True),
            T.RandomHorizontalFlip(cfg.hflip_p),
            T.RandomApply([T.ColorJitter(cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue)],
                          cfg.jitter_p),
            T.RandomGrayscale(cfg.grayscale_p),
            T.RandomApply([T.GaussianBlur(cfg.kernel_size, cfg.blur_sigma)], cfg.blur_p),
            T.RandomSolarize(128 / 255, cfg.solarize_p),
            T.Normalize(cfg.mean, cfg.std),
        ]  # fmt: skip
        pipes.append(T.Compose(steps))

    def run(x: torch.Tensor) -> list[torch.Tensor]:
        chw = x.permute(0, 3, 1, 2)
        return [torch.stack([p(img) for img in chw]) for p in pipes]

    return run


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", list(CASES))
def test_augment(benchmark: Any, case: str, impl: str) -> None:
    benchmark.group = case
    aug = CASES[case]()
    x = images()
    if impl == "pyssl":

        def fn() -> object:
            return aug(x, generator=torch.Generator().manual_seed(0))

    elif impl == "eager":
        run = eager_pipeline(aug)

        def fn() -> object:
            torch.manual_seed(0)
            return run(x)

    else:
        tv = torchvision_pipeline(aug)
        if tv is None:
            reason = f"torchvision not importable under torch {torch.__version__}"
            _record_skip(f"{case} / {impl}", reason)
            pytest.skip(reason)

        def fn() -> object:
            torch.manual_seed(0)
            return tv(x)

    t0 = time.perf_counter()
    fn()
    first_ms = (time.perf_counter() - t0) * 1e3
    info: dict[str, Any] = {"case": case, "impl": impl, "images": B, "side": SIDE,
                            "views": len(aug.views), "bytes": compulsory_bytes(aug, x),
                            "flops": 0, "warmup_first_ms": first_ms,
                            "threads": torch.get_num_threads()}  # fmt: skip
    info["waited_for_quiet_s"] = wait_for_quiet()
    benchmark.extra_info.update(info)
    with ForeignCpu() as other:
        benchmark(fn)
    benchmark.extra_info["foreign_cpu_cores"] = other.cores


if __name__ == "__main__":
    os.makedirs(RESULTS, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    args = [os.path.abspath(__file__), "-p", "no:cacheprovider", "--benchmark-disable-gc",
            "--benchmark-warmup=off", "--benchmark-min-rounds=3", "--benchmark-max-time=1.0",
            "--benchmark-group-by=group", "--benchmark-sort=name",
            f"--benchmark-json={os.path.join(RESULTS, f'augment-{stamp}.json')}",
            *sys.argv[1:]]  # fmt: skip
    print("pytest", " ".join(args[1:]))
    sys.exit(pytest.main(args))
