"""The Triton augmentation kernels against :mod:`pyssl.reference.augment` (float64, from
torchvision's functional definitions) and the C++ kernel.

With no GPU the launcher runs under ``TRITON_INTERPRET=1`` on CPU tensors; images and views are
tiny because the interpreter runs one Python loop per program. Outputs are poisoned (NaN) before
a launch so an unwritten element fails. Tolerance: one level on the 0-255 scale against the
float64 reference (the issue's bar); bfloat16/float16 outputs follow flash-attention's rule.
"""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch
from helpers import compile_triton_kernels, triton_test_device

DEVICE = triton_test_device("augment")

from pyssl import augment as A  # noqa: E402
from pyssl.kernels.triton import augment as tk  # noqa: E402
from pyssl.ops import augment as ops  # noqa: E402
from pyssl.reference import augment as ref  # noqa: E402


def _photo_crops() -> list[torch.Tensor]:
    from sklearn.datasets import load_sample_images

    a, b = load_sample_images().images
    return [
        torch.from_numpy(np.ascontiguousarray(a[100:127, 200:241])),
        torch.from_numpy(np.ascontiguousarray(b[200:219, 250:266])),
    ]


def _run(images, packed, cfg, dtype=torch.float32):
    batch = ops.as_image_batch([t.to(DEVICE) for t in images])
    base, table = ops._device_buffer(batch)
    out = torch.full((len(images), 3, cfg.size, cfg.size), float("nan"), dtype=dtype, device=DEVICE)
    tk.augment_view(
        base,
        table,
        packed,
        cfg.size,
        ops.INTERPOLATIONS.index(cfg.interpolation),
        cfg.kernel_size,
        cfg.solarize_threshold,
        list(cfg.mean),
        list(cfg.std),
        out,
    )
    return out.cpu()


def _reference(images, packed, cfg):
    out = []
    for t, row in zip(images, packed.tolist()):
        out.append(
            ref.apply_one(
                t.permute(2, 0, 1),
                **ops.unpack_row(row),
                size=cfg.size,
                interpolation=cfg.interpolation,
                blur_kernel_size=cfg.kernel_size,
                solarize_threshold=cfg.solarize_threshold,
                mean=cfg.mean,
                std=cfg.std,
            )
        )
    return torch.stack(out)


def _levels(out, exact, cfg):
    std = torch.tensor(cfg.std, dtype=torch.float64).view(1, 3, 1, 1)
    return ((out.double() - exact) * std * 255).abs().max().item()


CASES = [
    ("photos", dict(size=9, jitter_p=1.0, blur_p=0.5, solarize_p=0.5, blur_kernel_size=5), 0),
    (
        "photos",
        dict(
            size=12, interpolation="bicubic", jitter_p=1.0, blur_p=1.0, hue=0.5, blur_kernel_size=3
        ),
        1,
    ),
    (
        "random",
        dict(
            size=7,
            scale=(0.01, 1.0),
            ratio=(0.3, 3.0),
            grayscale_p=0.5,
            blur_p=1.0,
            blur_kernel_size=13,
        ),
        2,
    ),
    ("one", dict(size=5, jitter_p=1.0, solarize_p=1.0), 3),
]


@pytest.mark.parametrize("kind,kw,seed", CASES)
def test_triton_view_matches_reference_and_cpu(kind, kw, seed):
    g = torch.Generator().manual_seed(seed)
    if kind == "photos":
        images = _photo_crops()
    elif kind == "random":
        images = [
            torch.randint(0, 256, s, dtype=torch.uint8, generator=g)
            for s in ((11, 30, 3), (1, 9, 3), (20, 4, 3))
        ]
    else:
        images = [torch.randint(0, 256, (6, 8, 3), dtype=torch.uint8, generator=g)]
    cfg = A.ViewConfig(**kw)
    p = A.sample_view(cfg, images, g).pack()
    out = _run(images, p, cfg)
    assert not out.isnan().any()
    assert _levels(out, _reference(images, p, cfg), cfg) <= 1.0
    cpu = ops.augment_view(
        images, p, size=cfg.size, interpolation=cfg.interpolation, blur_kernel_size=cfg.kernel_size
    )
    assert (out - cpu).abs().max().item() < 1e-3


def _fixed(**cols: float) -> torch.Tensor:
    """One params row: identity steps except those given."""
    row = dict(zip(ops.PARAM_COLUMNS, [0, 0, 1, 1, 0, 1, 1, 1, 0, 0, 1, 2, 3, 0, 0, 0]))
    row.update(cols)
    return torch.tensor([list(row.values())], dtype=torch.float64)


def _step_images() -> list[torch.Tensor]:
    """Two 17x23 images: a cut of a photograph and random pixels."""
    from sklearn.datasets import load_sample_images

    photo = load_sample_images().images[0][120:137, 210:233]
    noise = torch.randint(
        0, 256, (17, 23, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(7)
    )
    return [torch.from_numpy(np.ascontiguousarray(photo)), noise]


_BOX = dict(top=2, left=3, height=14, width=17)  # downscaled to 12 on both axes
# (params columns, ViewConfig arguments): one step each, fixed parameters, S = 12.
STEPS = {
    "flip": (dict(_BOX, flip=1), {}),
    "grayscale": (dict(_BOX, grayscale=1), {}),
    "brightness": (dict(_BOX, brightness=1.35), {}),
    "contrast": (dict(_BOX, contrast=0.55), {}),
    "saturation": (dict(_BOX, saturation=1.7), {}),
    "hue": (dict(_BOX, hue=-0.31), {}),
    "hue_wrap": (dict(_BOX, hue=0.5), {}),
    "blur": (dict(_BOX, sigma=1.3), dict(blur_kernel_size=5)),
    "solarize": (dict(_BOX, solarize=1), {}),
    # An identity view (a 12x12 crop at 12): every pixel is a source level, none near 100.5.
    "solarize_threshold": (
        dict(top=4, left=9, height=12, width=12, solarize=1),
        dict(solarize_threshold=100.5),
    ),
    "bicubic": (dict(_BOX, flip=1), dict(interpolation="bicubic")),
}


@pytest.mark.parametrize("step", list(STEPS))
def test_triton_each_step_matches_reference(step):
    cols, kw = STEPS[step]
    images = _step_images()
    cfg = A.ViewConfig(size=12, **kw)
    p = _fixed(**cols).repeat(len(images), 1)
    out = _run(images, p, cfg)
    assert not out.isnan().any()
    exact = _reference(images, p, cfg)
    assert _levels(out, exact, cfg) <= 1.0
    if step == "solarize_threshold":  # the threshold itself, not 128, reached the kernel
        assert _levels(_reference(images, p, A.ViewConfig(size=12)), exact, cfg) > 1.0
    cpu = ops.augment_view(
        images,
        p,
        size=12,
        interpolation=cfg.interpolation,
        blur_kernel_size=cfg.kernel_size,
        solarize_threshold=cfg.solarize_threshold,
    )
    assert (out - cpu).abs().max().item() < 1e-3


def test_triton_reads_channels_first_and_strided_batches():
    g = torch.Generator().manual_seed(4)
    imgs = torch.randint(0, 256, (2, 3, 10, 13), dtype=torch.uint8, generator=g)
    cfg = A.ViewConfig(size=6, jitter_p=1.0)
    p = A.sample_view(cfg, [(10, 13)] * 2, g).pack()
    batch = ops.as_image_batch(imgs.to(DEVICE))
    base, table = ops._device_buffer(batch)
    out = torch.full((2, 3, 6, 6), float("nan"), device=DEVICE)
    tk.augment_view(
        base, table, p, 6, 0, cfg.kernel_size, 128.0, list(cfg.mean), list(cfg.std), out
    )
    hwc = [t.permute(1, 2, 0) for t in imgs]
    assert _levels(out.cpu(), _reference(hwc, p, cfg), cfg) <= 1.0


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_triton_low_precision_output(dtype):
    images = _photo_crops()
    cfg = A.ViewConfig(size=8, jitter_p=1.0, blur_p=1.0, blur_kernel_size=3)
    p = A.sample_view(cfg, images, torch.Generator().manual_seed(5)).pack()
    out = _run(images, p, cfg, dtype=dtype)
    exact = _reference(images, p, cfg)
    # Flash-attention's rule plus one ulp of the output dtype: the interpreter truncates to
    # bfloat16 where compiled Triton rounds to nearest (see the masking tests).
    ulp = exact.abs().max().item() * (2**-8 if dtype == torch.bfloat16 else 2**-11)
    err = (out.double() - exact).abs().max().item()
    ref_err = (exact.to(dtype).double() - exact).abs().max().item()
    assert err <= 2 * ref_err + ulp + 1e-6


def test_aa_tables_match_the_core_weights():
    # The launcher's weight tables against torch's own antialiased interpolate: resampling a
    # one-hot row with them must give interpolate's weights.
    for bicubic in (False, True):
        for n, s in ((37, 9), (9, 37), (16, 16), (1, 5)):
            K = tk._max_taps([float(n)], s, bicubic)
            first, w = tk._aa_tables(
                torch.tensor([0]), torch.tensor([n]), s, bicubic, torch.tensor([False]), K
            )
            dense = torch.zeros(s, n, dtype=torch.float64)
            for i in range(s):
                for k in range(K):
                    if w[0, i, k] != 0:
                        dense[i, first[0, i] + k] += w[0, i, k].item()
            eye = torch.eye(n, dtype=torch.float64).view(n, 1, 1, n)
            mode = "bicubic" if bicubic else "bilinear"
            expect = torch.nn.functional.interpolate(
                eye, size=(1, s), mode=mode, antialias=True, align_corners=False
            )
            assert torch.allclose(dense.T, expect.view(n, s), atol=1e-6)


_COMPILE_SCRIPT = textwrap.dedent(
    """
    import warnings
    warnings.filterwarnings("ignore")
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from pyssl.kernels.triton import augment as M

    def compile_(kernel, ptrs, consts, scalars={"threshold": "fp32"}):
        sig = {n: "constexpr" if n in consts else ("*" + ptrs[n] if n in ptrs else
                                                   scalars.get(n, "i32"))
               for n in kernel.arg_names}
        src = ASTSource(fn=kernel, signature=sig, constexprs=consts)
        assert triton.compile(src, target=GPUTarget("cuda", 90, 32)).asm["cubin"]

    compile_(M._resample_kernel,
             dict(src_ptr="u8", table_ptr="i64", params_ptr="fp64", wx_ptr="fp32",
                  fx_ptr="i64", wy_ptr="fp32", fy_ptr="i64", scratch_ptr="fp32",
                  partial_ptr="fp32"), dict(BLOCK=1024))
    for dt in ("fp32", "bf16", "fp16"):
        compile_(M._colour_kernel,
                 dict(scratch_ptr="fp32", partial_ptr="fp32", params_ptr="fp64", out_ptr=dt,
                      scale_ptr="fp32", shift_ptr="fp32"), dict(BLOCK=1024, NBLK_P2=64))
        for vertical in (False, True):
            compile_(M._blur_kernel,
                     dict(in_ptr="fp32", dst_ptr=dt if vertical else "fp32", gk_ptr="fp32",
                          params_ptr="fp64", scale_ptr="fp32", shift_ptr="fp32"),
                     dict(BLOCK=1024, VERTICAL=vertical))
    print("compiled")
    """
)


def test_kernels_compile_for_sm90():
    compile_triton_kernels(_COMPILE_SCRIPT)
