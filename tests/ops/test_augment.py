"""pyssl.augment and pyssl.ops.augment_view (C++ CPU kernel) against the float64 reference
written from torchvision's functional definitions (:mod:`pyssl.reference.augment`).

Tolerance: one level on the 0-255 scale (the issue's bar); the kernel computes in float32, so
its error against the float64 reference is a few thousandths of a level in practice, except
where a pixel lies within float32 rounding of the solarize threshold (a flip there costs one
level: 128 -> 127). Sampling laws are checked against the reference samplers, which follow
torchvision's ``get_params`` one draw at a time.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from helpers import low_precision_tol
from scipy import stats

from pyssl import augment as A
from pyssl.ops import _backend
from pyssl.ops import augment as ops
from pyssl.reference import augment as ref

LEVEL = 1.0  # tolerance in levels of the 0-255 scale


@pytest.fixture(scope="module")
def photos() -> list[torch.Tensor]:
    """scikit-learn's two photographs (427x640 RGB), cut to keep the tests fast."""
    from sklearn.datasets import load_sample_images

    imgs = load_sample_images().images
    return [
        torch.from_numpy(np.ascontiguousarray(imgs[0][40:240, 100:400])),
        torch.from_numpy(np.ascontiguousarray(imgs[1][150:330, 200:360])),
    ]


def _rand_images(seed: int, sizes: list[tuple[int, int]]) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (h, w, 3), dtype=torch.uint8, generator=g) for h, w in sizes]


def _reference(images, packed: torch.Tensor, cfg: A.ViewConfig) -> torch.Tensor:
    """The float64 reference, one image at a time, as [B, 3, S, S] on the 0-1 scale
    normalised."""
    batch = ops.as_image_batch(images)
    out = []
    for t, row in zip(batch.images, packed.tolist()):
        img = t.permute(2, 0, 1) if t.shape[-1] == 3 else t
        out.append(
            ref.apply_one(
                img,
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


def _levels(out: torch.Tensor, exact: torch.Tensor, cfg: A.ViewConfig) -> float:
    """Largest difference in levels of the 0-255 scale (undoing the normalisation)."""
    std = torch.tensor(cfg.std, dtype=torch.float64).view(1, 3, 1, 1)
    return ((out.double() - exact) * std * 255).abs().max().item()


def _run(images, packed, cfg, dtype=torch.float32):
    return ops.augment_view(
        images,
        packed,
        size=cfg.size,
        interpolation=cfg.interpolation,
        blur_kernel_size=cfg.kernel_size,
        solarize_threshold=cfg.solarize_threshold,
        mean=cfg.mean,
        std=cfg.std,
        dtype=dtype,
    )


def _fixed(n: int, **cols: object) -> torch.Tensor:
    """A params table of n identical rows: identity steps except those given."""
    row = dict(zip(ops.PARAM_COLUMNS, [0, 0, 1, 1, 0, 1, 1, 1, 0, 0, 1, 2, 3, 0, 0, 0]))
    row.update(cols)  # type: ignore[arg-type]
    return torch.tensor([list(row.values())] * n, dtype=torch.float64)


# ------------------------------------------------------------------- each step, fixed params

STEPS = {
    "crop_down": dict(top=10, left=7, height=150, width=131),
    "crop_up": dict(top=3, left=5, height=20, width=17),
    "flip": dict(top=0, left=0, height=120, width=90, flip=1),
    "brightness": dict(height=100, width=100, brightness=1.35),
    "contrast": dict(height=100, width=100, contrast=0.55),
    "saturation": dict(height=100, width=100, saturation=1.7),
    "hue": dict(height=100, width=100, hue=-0.31),
    "hue_wrap": dict(height=100, width=100, hue=0.5),
    "grayscale": dict(height=100, width=100, grayscale=1),
    "blur": dict(height=100, width=100, sigma=1.3),
    "solarize": dict(height=100, width=100, solarize=1),
}


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
@pytest.mark.parametrize("step", list(STEPS))
def test_each_step_matches_reference(photos, step, interpolation):
    cfg = A.ViewConfig(size=45, interpolation=interpolation, blur_kernel_size=7)
    packed = _fixed(2, **STEPS[step])
    out = _run(photos, packed, cfg)
    assert out.shape == (2, 3, 45, 45) and out.dtype == torch.float32
    assert _levels(out, _reference(photos, packed, cfg), cfg) <= LEVEL


@pytest.mark.parametrize("order", list(itertools.permutations(range(4)))[::5])
def test_jitter_order_matches_reference(photos, order):
    cfg = A.ViewConfig(size=32)
    packed = _fixed(
        2,
        height=150,
        width=150,
        brightness=1.3,
        contrast=0.6,
        saturation=1.5,
        hue=0.2,
        order0=order[0],
        order1=order[1],
        order2=order[2],
        order3=order[3],
    )
    out = _run(photos, packed, cfg)
    assert _levels(out, _reference(photos, packed, cfg), cfg) <= LEVEL


CASES = [
    # (config kwargs, image sizes, seed)
    (dict(size=33, blur_p=0.5, solarize_p=0.5, jitter_p=1.0, blur_kernel_size=5), [(57, 41)], 0),
    (dict(size=24, interpolation="bicubic", blur_p=1.0, blur_kernel_size=9), [(30, 30)] * 3, 1),
    (dict(size=40, scale=(0.01, 1.0), hue=0.5, jitter_p=1.0), [(13, 70), (64, 9), (40, 40)], 2),
    (dict(size=1, blur_kernel_size=1), [(5, 4), (1, 1)], 3),
    (
        dict(size=17, ratio=(0.2, 5.0), blur_p=1.0, grayscale_p=0.5, blur_kernel_size=31),
        [(1, 50), (50, 1), (16, 16)],
        4,
    ),
]


@pytest.mark.parametrize("kw,sizes,seed", CASES)
def test_fused_random_params_match_reference(kw, sizes, seed):
    cfg = A.ViewConfig(**kw)
    images = _rand_images(seed, sizes)
    p = A.sample_view(cfg, images, torch.Generator().manual_seed(seed))
    out = _run(images, p.pack(), cfg)
    assert _levels(out, _reference(images, p.pack(), cfg), cfg) <= LEVEL


@pytest.mark.parametrize("recipe", [A.SimCLRAugment, A.BYOLAugment, A.MAEAugment])
def test_recipes_on_photos_match_reference(photos, recipe):
    aug = recipe(size=64)
    params = aug.sample(photos, torch.Generator().manual_seed(5))
    views = aug.apply(photos, params)
    assert len(views) == len(aug.views)
    for cfg, p, v in zip(aug.views, params, views):
        assert v.shape == (2, 3, 64, 64)
        assert _levels(v, _reference(photos, p.pack(), cfg), cfg) <= LEVEL


def test_dino_multicrop_shapes_and_reference(photos):
    aug = A.DINOAugment(global_size=48, local_size=24, local_crops_number=3)
    params = aug.sample(photos, torch.Generator().manual_seed(6))
    views = aug.apply(photos, params)
    assert [v.shape[-1] for v in views] == [48, 48, 24, 24, 24]
    assert aug.views[0].interpolation == "bicubic" and aug.views[2].scale == (0.05, 0.4)
    for cfg, p, v in zip(aug.views, params, views):
        assert _levels(v, _reference(photos, p.pack(), cfg), cfg) <= LEVEL


@pytest.mark.parametrize("layout", ["hwc", "chw", "numpy", "numpy_flipped", "list_chw", "strided"])
def test_input_layouts_agree(layout):
    imgs = torch.stack(_rand_images(7, [(29, 35)] * 2))
    cfg = A.ViewConfig(size=20, jitter_p=1.0, blur_p=1.0, blur_kernel_size=5)
    p = A.sample_view(cfg, imgs, torch.Generator().manual_seed(7)).pack()
    expect = _run(imgs, p, cfg)
    if layout == "hwc":
        x = imgs
    elif layout == "chw":
        x = imgs.permute(0, 3, 1, 2).contiguous()
    elif layout == "numpy":
        x = imgs.numpy()
    elif layout == "numpy_flipped":  # negative strides: read through a copy
        x = np.flip(imgs.numpy()[:, ::-1], axis=1)
    elif layout == "list_chw":
        x = [t.permute(2, 0, 1) for t in imgs]
    else:  # a non-contiguous view: every other column of a wider image
        wide = torch.zeros(2, 29, 70, 3, dtype=torch.uint8)
        wide[:, :, ::2] = imgs
        x = wide[:, :, ::2]
    assert torch.equal(_run(x, p, cfg), expect)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_output(photos, dtype):
    cfg = A.ViewConfig(size=32, jitter_p=1.0, blur_p=1.0, blur_kernel_size=5)
    p = A.sample_view(cfg, photos, torch.Generator().manual_seed(8)).pack()
    out = _run(photos, p, cfg, dtype=dtype)
    assert out.dtype == dtype
    exact = _reference(photos, p, cfg)
    low_precision_tol(out, exact.to(dtype), exact)


def test_kernel_writes_every_output_element():
    # Through the launcher with a NaN-poisoned output, so an unwritten element shows.
    images = _rand_images(9, [(31, 22), (8, 40)])
    cfg = A.ViewConfig(size=19, blur_p=0.5, jitter_p=1.0, blur_kernel_size=5)
    for seed in range(3):
        p = A.sample_view(cfg, images, torch.Generator().manual_seed(seed)).pack()
        out = torch.full((2, 3, 19, 19), float("nan"))
        batch = ops.as_image_batch(images)
        _backend.launch(
            "augment",
            "augment_view",
            "cpu",
            0,
            batch.table(0),
            p,
            19,
            0,
            5,
            128.0,
            list(cfg.mean),
            list(cfg.std),
            out,
        )
        assert not out.isnan().any()
        assert _levels(out, _reference(images, p, cfg), cfg) <= LEVEL


def test_zero_probabilities_turn_steps_off():
    images = _rand_images(10, [(32, 32)] * 4)
    aug = A.SimCLRAugment(size=32, hflip_p=0.0, jitter_p=0.0, grayscale_p=0.0, blur_p=0.0)
    (p,) = aug.sample(images, torch.Generator().manual_seed(0))[:1]
    assert not p.flip.any() and not p.jitter.any() and not p.grayscale.any()
    assert (p.sigma == 0).all() and not p.solarize.any()
    assert torch.equal(p.factors, torch.tensor([[1.0, 1.0, 1.0, 0.0]] * 4, dtype=torch.float64))


def test_small_images_and_default_blur_kernel():
    assert A.default_blur_kernel(224) == 23 and A.default_blur_kernel(96) == 9
    assert A.default_blur_kernel(32) == 3 and A.default_blur_kernel(8) == 1
    digits = torch.randint(0, 256, (5, 32, 32, 3), dtype=torch.uint8)
    views = A.SimCLRAugment(size=32)(digits, seed=0)
    assert len(views) == 2 and all(v.shape == (5, 3, 32, 32) for v in views)
    assert all(torch.isfinite(v).all() for v in views)


# ------------------------------------------------------------------------------ sampling


def test_crop_law_matches_torchvision_algorithm():
    """KS tests of the crop's area fraction and log aspect ratio, and of the top-left position,
    against torchvision's get_params run one draw at a time (reference.crop_params)."""
    n, (h, w) = 3000, (64, 80)
    cfg = A.ViewConfig(size=8)
    p = A.sample_view(cfg, [(h, w)] * n, torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    tv = torch.tensor([ref.crop_params(h, w, cfg.scale, cfg.ratio, g) for _ in range(n)])
    for col in (p.boxes, tv):
        assert bool((col[:, 0] + col[:, 2] <= h).all() and (col[:, 1] + col[:, 3] <= w).all())
    area = lambda b: (b[:, 2] * b[:, 3]).double() / (h * w)  # noqa: E731
    logr = lambda b: torch.log(b[:, 3].double() / b[:, 2])  # noqa: E731
    for f in (area, logr, lambda b: b[:, 0].double(), lambda b: b[:, 1].double()):
        assert stats.ks_2samp(f(p.boxes).numpy(), f(tv).numpy()).pvalue > 1e-3


def test_crop_fallback_matches_torchvision():
    # No attempt fits a 1-pixel-high strip at ratio (3/4, 4/3): the centre crop fallback.
    p = A.sample_view(
        A.ViewConfig(size=4), [(1, 50), (50, 1), (7, 7)] * 20, torch.Generator().manual_seed(0)
    )
    assert p.boxes[0].tolist() == list(ref.crop_params(1, 50, (0.08, 1.0), (3 / 4, 4 / 3)))
    assert p.boxes[1].tolist() == list(ref.crop_params(50, 1, (0.08, 1.0), (3 / 4, 4 / 3)))


def test_jitter_order_uniform_over_24_permutations():
    n = 4800
    p = A.sample_view(A.ViewConfig(size=4), [(8, 8)] * n, torch.Generator().manual_seed(0))
    perms = {perm: i for i, perm in enumerate(itertools.permutations(range(4)))}
    counts = np.bincount([perms[tuple(r)] for r in p.order.tolist()], minlength=24)
    assert stats.chisquare(counts).pvalue > 1e-3


def test_bernoulli_and_factor_laws():
    n = 4000
    cfg = A.ViewConfig(
        size=4, hflip_p=0.5, jitter_p=0.8, grayscale_p=0.2, blur_p=0.3, solarize_p=0.1
    )
    p = A.sample_view(cfg, [(8, 8)] * n, torch.Generator().manual_seed(0))
    for flags, q in (
        (p.flip, 0.5),
        (p.jitter, 0.8),
        (p.grayscale, 0.2),
        (p.sigma > 0, 0.3),
        (p.solarize, 0.1),
    ):
        k = int(flags.sum())
        assert stats.binomtest(k, n, q).pvalue > 1e-3
    j = p.jitter
    for col, (lo, hi) in enumerate(((0.6, 1.4), (0.6, 1.4), (0.8, 1.2), (-0.1, 0.1))):
        f = p.factors[j, col].numpy()
        assert stats.kstest(f, stats.uniform(lo, hi - lo).cdf).pvalue > 1e-3
    s = p.sigma[p.sigma > 0].numpy()
    assert stats.kstest(s, stats.uniform(0.1, 1.9).cdf).pvalue > 1e-3


def test_same_seed_same_views_whatever_the_thread_count(photos):
    aug = A.BYOLAugment(size=40)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = aug(photos + photos, seed=3)
        torch.set_num_threads(2)
        two = aug(photos + photos, seed=3)
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for a, b in zip(one, two))
    other = aug(photos + photos, seed=4)
    assert not torch.equal(one[0], other[0])


def test_params_replay_and_log():
    images = _rand_images(11, [(20, 30)] * 3)
    aug = A.SimCLRAugment(size=16)
    params = aug.sample(images, torch.Generator().manual_seed(0))
    logged = [p.to_dict() for p in params]
    replay = [A.ViewParams(**{k: torch.tensor(v) for k, v in d.items()}) for d in logged]
    assert all(
        torch.equal(a, b) for a, b in zip(aug.apply(images, params), aug.apply(images, replay))
    )
    assert len(params[0][1:]) == 2


# ----------------------------------------------------------------------------- data loading


def test_view_collator_with_a_dataloader():
    images = _rand_images(12, [(20, 24), (20, 24), (31, 17), (16, 16)])
    data = [(img, i) for i, img in enumerate(images)]
    aug = A.SimCLRAugment(size=12, blur_p=0.0)
    loader = torch.utils.data.DataLoader(data, batch_size=2, collate_fn=A.collate_views(aug))
    (imgs0, t0), (imgs1, t1) = list(loader)
    assert isinstance(imgs1, list) and imgs0.dtype == torch.uint8 and t0.tolist() == [0, 1]
    v = A.ViewCollator(aug).views(imgs1, "cpu", torch.Generator().manual_seed(0))
    assert len(v) == 2 and v[0].shape == (2, 3, 12, 12)
    worker = A.ViewCollator(aug, make_views=True, seed=1)
    views, _ = worker(data[:2])
    assert views[0].shape == (2, 3, 12, 12)
    again, _ = A.ViewCollator(aug, make_views=True, seed=1)(data[:2])
    assert torch.equal(views[0], again[0])


# ------------------------------------------------------------------------------ bad input


def test_bad_images():
    p = _fixed(1)
    kw = dict(size=4)
    with pytest.raises(TypeError, match="uint8"):
        ops.augment_view(torch.zeros(1, 4, 4, 3), p, **kw)
    with pytest.raises(TypeError, match="uint8"):
        ops.augment_view(np.zeros((1, 4, 4, 3), np.float32), p, **kw)
    with pytest.raises(ValueError, match="channels"):
        ops.augment_view(torch.zeros(1, 4, 4, 4, dtype=torch.uint8), p, **kw)
    with pytest.raises(ValueError, match="at least 1x1"):
        ops.augment_view([torch.zeros(0, 4, 3, dtype=torch.uint8)], p, **kw)
    with pytest.raises(ValueError, match="empty batch"):
        ops.augment_view([], p, **kw)
    with pytest.raises(TypeError, match="images"):
        ops.augment_view("img.png", p, **kw)


def test_bad_params():
    img = torch.zeros(2, 10, 12, 3, dtype=torch.uint8)
    with pytest.raises(ValueError, match="2 images"):
        ops.augment_view(img, _fixed(3), size=4)
    with pytest.raises(ValueError, match="outside"):
        ops.augment_view(img, _fixed(2, top=5, height=6), size=4)
    with pytest.raises(ValueError, match="outside"):
        ops.augment_view(img, _fixed(2, left=-1), size=4)
    with pytest.raises(ValueError, match="hue"):
        ops.augment_view(img, _fixed(2, hue=0.7), size=4)
    with pytest.raises(ValueError, match="permutation"):
        ops.augment_view(img, _fixed(2, order0=1), size=4)
    with pytest.raises(ValueError, match="float64"):
        ops.augment_view(img, _fixed(2).float(), size=4)
    with pytest.raises(ValueError, match="size"):
        ops.augment_view(img, _fixed(2), size=0)
    with pytest.raises(ValueError, match="blur_kernel_size"):
        ops.augment_view(img, _fixed(2), size=4, blur_kernel_size=9)
    with pytest.raises(TypeError, match="dtype"):
        ops.augment_view(img, _fixed(2), size=4, dtype=torch.float64)
    aug = A.SimCLRAugment(size=4)
    params = aug.sample([(np.int64(10), 12)] * 3)
    with pytest.raises(ValueError, match="3 samples for a batch of 2"):
        aug.apply(img, params)
    with pytest.raises(ValueError, match="1 views"):
        aug.apply(img, params[:1])


def test_core_rejects_bad_tables_on_its_own():
    img = torch.zeros(1, 10, 12, 3, dtype=torch.uint8)
    table = ops.as_image_batch(img).table(0)
    out = torch.empty(1, 3, 4, 4)
    bad = _fixed(1, top=8, height=5)
    with pytest.raises(ValueError, match="outside the image"):
        _backend._C.augment_cpu.augment_view(
            0,
            _backend.view(table),
            _backend.view(bad),
            4,
            0,
            1,
            128.0,
            [0.0] * 3,
            [1.0] * 3,
            _backend.view(out),
        )
    good = _backend.view(_fixed(1))
    for threshold in (-1.0, 255.5, float("nan")):
        with pytest.raises(ValueError, match="solarize_threshold"):
            _backend._C.augment_cpu.augment_view(
                0, _backend.view(table), good, 4, 0, 1, threshold, [0.0] * 3, [1.0] * 3,
                _backend.view(out),
            )  # fmt: skip


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(size=0), "size"),
        (dict(hflip_p=1.5), "hflip_p"),
        (dict(jitter_p=-0.1), "jitter_p"),
        (dict(scale=(1.0, 0.5)), "scale"),
        (dict(ratio=(2.0, 0.5)), "ratio"),
        (dict(hue=0.7), "hue"),
        (dict(hue=(-0.6, 0.2)), "hue"),
        (dict(brightness=-1.0), "brightness"),
        (dict(blur_sigma=(2.0, 0.1)), "blur_sigma"),
        (dict(blur_kernel_size=4), "blur_kernel_size"),
        (dict(size=8, blur_kernel_size=17), "blur_kernel_size"),
        (dict(std=(1.0, 0.0, 1.0)), "std"),
        (dict(interpolation="nearest"), "interpolation"),
        (dict(solarize_threshold=-1.0), "solarize_threshold"),
        (dict(solarize_threshold=256), "solarize_threshold"),
        (dict(solarize_threshold=float("nan")), "solarize_threshold"),
        (dict(solarize_threshold=True), "solarize_threshold"),
        (dict(solarize_threshold="128"), "solarize_threshold"),
        (dict(solarize_p=np.bool_(True)), "solarize_p"),
    ],
)
def test_bad_config(kw, match):
    with pytest.raises((ValueError, TypeError), match=match):
        A.ViewConfig(**kw)


def test_bad_recipe_arguments():
    with pytest.raises(ValueError, match="n_views"):
        A.SimCLRAugment(n_views=0)
    with pytest.raises(ValueError, match="blur_p"):
        A.BYOLAugment(blur_p=(1.0, 0.1, 0.5))
    with pytest.raises(ValueError, match="local_crops_number"):
        A.DINOAugment(local_crops_number=-1)
    with pytest.raises(TypeError, match="dtype"):
        A.MAEAugment(dtype=torch.int32)
    with pytest.raises(ValueError, match="generator, seed"):
        A.MAEAugment(size=4)(
            torch.zeros(1, 4, 4, 3, dtype=torch.uint8), generator=torch.Generator(), seed=1
        )
    with pytest.raises(ValueError, match="sizes"):
        A.MAEAugment(size=4).sample([(0, 3)])


def test_crop_box_math_is_whole_pixels():
    p = A.sample_view(A.ViewConfig(size=4), [(9, 13)] * 50, torch.Generator().manual_seed(0))
    assert p.boxes.dtype == torch.int64
    assert all(math.isclose(x, round(x)) for x in p.pack()[:, :4].flatten().tolist())


@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device: the GPU backends run on CUDA tensors"
)
@pytest.mark.parametrize("backend", ["triton", "cuda"])
def test_gpu_backends_match_cpu(photos, backend):
    if backend == "cuda" and not _backend._C.cuda:
        pytest.skip("pyssl was built without CUDA (-DPYSSL_CUDA=ON builds the CUDA C++ kernel)")
    cfg = A.ViewConfig(size=64, jitter_p=1.0, blur_p=0.5, solarize_p=0.5, blur_kernel_size=7)
    p = A.sample_view(cfg, photos, torch.Generator().manual_seed(0)).pack()
    gpu = ops.augment_view(
        [t.cuda() for t in photos], p, size=64, blur_kernel_size=7, backend=backend
    )
    assert gpu.device.type == "cuda"
    assert _levels(gpu.cpu(), _reference(photos, p, cfg), cfg) <= LEVEL


def test_opcheck_batch_path():
    imgs = torch.stack(_rand_images(13, [(12, 10)] * 2))
    p = _fixed(2, height=8, width=9, brightness=1.2, sigma=0.7)
    args = (imgs, p, 6, 0, 3, 100.0, [0.5] * 3, [0.25] * 3, torch.float32, "cpu")
    torch.library.opcheck(ops._augment_view_op, args)


def test_solarize_threshold_is_inclusive():
    # torchvision inverts pixels >= threshold: 128 -> 127 and 127 stays (one level apart, so the
    # one-level tolerance elsewhere cannot see this; compare exactly on an identity view).
    img = torch.tensor([[[128, 127, 255]]], dtype=torch.uint8)  # [1, 1, 3]: r, g, b
    out = ops.augment_view(img[None], _fixed(1, solarize=1), size=1, mean=(0, 0, 0), std=(1, 1, 1))
    assert torch.allclose(out.flatten() * 255, torch.tensor([127.0, 127.0, 0.0]), atol=1e-3)


@pytest.mark.parametrize("threshold", [0.0, 64.0, 100.5, 200.0, 255.0])
def test_solarize_threshold_matches_reference(photos, threshold):
    # A non-default threshold through the fused kernel, against the reference's F.solarize at
    # threshold / 255; on an identity view (a 100x100 crop at 100) every pixel is a source
    # level, so none lies within float rounding of a threshold that is not a whole level.
    cfg = A.ViewConfig(size=100, solarize_threshold=threshold)
    assert cfg.solarize_threshold == threshold
    packed = _fixed(2, height=100, width=100, solarize=1)
    out = _run(photos, packed, cfg)
    exact = _reference(photos, packed, cfg)
    assert _levels(out, exact, cfg) <= 1e-3
    default = _reference(photos, packed, A.ViewConfig(size=100))
    assert threshold == 128.0 or _levels(default, exact, cfg) > 1.0  # the threshold is used


def test_solarize_threshold_is_per_view_and_on_the_recipes():
    img = torch.tensor([[[100, 150, 250]]], dtype=torch.uint8)[None]  # [1, 1, 1, 3]
    p = _fixed(1, solarize=1)
    kw = dict(size=1, mean=(0, 0, 0), std=(1, 1, 1))
    for threshold, expect in ((128, [100, 105, 5]), (100, [155, 105, 5]), (251, [100, 150, 250])):
        out = ops.augment_view(img, p, solarize_threshold=threshold, **kw)
        assert torch.allclose(out.flatten() * 255, torch.tensor(expect, dtype=torch.float32))
    for recipe in (A.SimCLRAugment(), A.BYOLAugment(), A.DINOAugment(local_crops_number=2)):
        assert all(v.solarize_threshold == 128.0 for v in recipe.views)
    byol = A.BYOLAugment(size=8, solarize_threshold=np.float32(64), solarize_p=1.0, blur_p=0.0)
    dino = A.DINOAugment(32, 16, local_crops_number=1, solarize_threshold=200)
    simclr = A.SimCLRAugment(size=8, solarize_threshold=10, solarize_p=np.float32(0.5))
    assert [v.solarize_threshold for v in byol.views] == [64.0, 64.0]
    assert [v.solarize_threshold for v in dino.views] == [200.0] * 3
    assert simclr.views[0].solarize_threshold == 10.0 and simclr.views[0].solarize_p == 0.5
    # Through Augment.apply: each view's own threshold reaches the kernel.
    images = _rand_images(14, [(12, 12)] * 2)
    params = byol.sample(images, torch.Generator().manual_seed(0))
    for cfg, prm, v in zip(byol.views, params, byol.apply(images, params)):
        assert _levels(v, _reference(images, prm.pack(), cfg), cfg) <= LEVEL
    with pytest.raises(ValueError, match="solarize_threshold"):
        ops.augment_view(img, p, solarize_threshold=300, **kw)
    with pytest.raises(ValueError, match="solarize_threshold"):
        A.DINOAugment(solarize_threshold=-5)


def test_probabilities_accept_numpy_scalars():
    cfg = A.ViewConfig(
        size=4, hflip_p=np.float32(0.25), blur_p=np.float64(0.5), jitter_p=np.int64(1)
    )
    assert (cfg.hflip_p, cfg.blur_p, cfg.jitter_p) == (0.25, 0.5, 1.0)
    assert all(type(v) is float for v in (cfg.hflip_p, cfg.blur_p, cfg.jitter_p))
    with pytest.raises(ValueError, match="hflip_p"):
        A.ViewConfig(size=4, hflip_p=np.float32(1.5))
