"""SSL augmentation recipes: SimCLR, BYOL, DINO multi-crop and MAE views, made batched in one
fused pass per view (:func:`pyssl.ops.augment.augment_view`).

Every recipe is a list of :class:`ViewConfig` (torchvision's argument names). Parameters are
drawn per sample on the host from a ``torch.Generator`` (:meth:`Augment.sample`), held in a small
inspectable :class:`ViewParams` per view, and applied by :meth:`Augment.apply`; ``aug(images,
generator=g)`` does both::

    aug = SimCLRAugment(size=224)
    v1, v2 = aug(images_uint8, generator=torch.Generator().manual_seed(0))  # [B, 3, 224, 224] each

Sampling follows torchvision's laws per sample: ``RandomResizedCrop.get_params`` (area uniform in
``scale``, log-uniform ``ratio``, 10 attempts, then the centre-crop fallback), flips and
``RandomApply``/``RandomGrayscale``/``RandomSolarize`` as Bernoulli draws, ``ColorJitter``'s
uniform permutation of its four ops and its uniform factors (drawn whether or not a later op
changes the image), ``GaussianBlur``'s uniform sigma. Deliberate differences: the draws are
vectorised over the batch (same laws, a different random stream from torchvision's one-at-a-time
draws), and a step with probability ``p`` runs when ``u < p`` (torchvision's ``RandomApply`` runs
when ``u <= p``; they differ only on the measure-zero event ``u == p``, which makes ``p = 0``
exactly off). The same generator state gives the same views on any thread count and device.
Pixel semantics: see :mod:`pyssl.ops.augment`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pyssl.ops import augment as ops

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

__all__ = [
    "Augment",
    "BYOLAugment",
    "DINOAugment",
    "MAEAugment",
    "SimCLRAugment",
    "ViewCollator",
    "ViewConfig",
    "ViewParams",
    "collate_views",
    "default_blur_kernel",
    "sample_view",
]


def default_blur_kernel(size: int) -> int:
    """SimCLR's rule: about 10% of the crop side, made odd, and small enough for reflect
    padding (``kernel_size // 2 < size``). 23 at 224, 9 at 96, 3 at 32."""
    k = int(0.1 * size)
    k += 1 - k % 2
    return max(1, min(k, 2 * (size - 1) + 1 if size > 1 else 1))


def _range(
    value: float | Sequence[float], name: str, center: float, lo: float
) -> tuple[float, float] | None:
    """torchvision's ColorJitter._check_input: a number v gives [center - v, center + v]
    (clipped at lo), a pair is taken as is; the identity range means the op is off."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"{name}: a single value must be non-negative, got {value}")
        rng = (max(center - float(value), lo), center + float(value))
    elif isinstance(value, Sequence) and len(value) == 2:
        rng = (float(value[0]), float(value[1]))
        if not lo <= rng[0] <= rng[1]:
            raise ValueError(f"{name}: expected {lo} <= min <= max, got {tuple(value)}")
    else:
        raise TypeError(f"{name}: expected a number or a (min, max) pair, got {value!r}")
    if name == "hue" and not -0.5 <= rng[0] <= rng[1] <= 0.5:
        raise ValueError(f"hue: expected values in [-0.5, 0.5], got {value!r}")
    return None if rng == (center, center) else rng


def _prob(p: object, name: str) -> float:
    """A probability in [0, 1] as a float (Python or numpy numbers, not booleans)."""
    number = isinstance(p, (int, float, np.integer, np.floating)) and not isinstance(
        p, (bool, np.bool_)
    )
    if not number or not 0.0 <= float(p) <= 1.0:  # type: ignore[arg-type]
        raise ValueError(f"{name}: expected a probability in [0, 1], got {p!r}")
    return float(p)  # type: ignore[arg-type]


def _pair(v: object, name: str, positive: bool = True) -> tuple[float, float]:
    if not isinstance(v, Sequence) or len(v) != 2:
        raise TypeError(f"{name}: expected a (min, max) pair, got {v!r}")
    a, b = float(v[0]), float(v[1])
    if a > b:
        raise ValueError(f"{name}: range is reversed ({a} > {b})")
    if positive and a <= 0:
        raise ValueError(f"{name}: expected positive values, got {tuple(v)}")
    return a, b


@dataclass(frozen=True)
class ViewConfig:
    """The steps of one view, with torchvision's argument names.

    RandomResizedCrop(size, scale, ratio, interpolation) -> RandomHorizontalFlip(hflip_p) ->
    RandomApply([ColorJitter(brightness, contrast, saturation, hue)], jitter_p) ->
    RandomGrayscale(grayscale_p) -> RandomApply([GaussianBlur(blur_kernel_size, blur_sigma)],
    blur_p) -> RandomSolarize(solarize_threshold, solarize_p) -> Normalize(mean, std). A
    probability of 0 turns its step off; ``blur_kernel_size=None`` picks
    :func:`default_blur_kernel`. ``solarize_threshold`` is on the 0-255 scale, as for
    torchvision's ``RandomSolarize`` on uint8 images (pixels ``>=`` it are inverted), in
    ``[0, 255]``.
    """

    size: int = 224
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    interpolation: str = "bilinear"
    hflip_p: float = 0.5
    jitter_p: float = 0.8
    brightness: float | tuple[float, float] = 0.4
    contrast: float | tuple[float, float] = 0.4
    saturation: float | tuple[float, float] = 0.2
    hue: float | tuple[float, float] = 0.1
    grayscale_p: float = 0.2
    blur_p: float = 0.0
    blur_kernel_size: int | None = None
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    solarize_p: float = 0.0
    solarize_threshold: float = 128.0
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    jitter_ranges: tuple[tuple[float, float] | None, ...] = field(init=False, repr=False)
    kernel_size: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.size, int) or isinstance(self.size, bool) or self.size < 1:
            raise ValueError(f"size: expected a positive int, got {self.size!r}")
        scale = _pair(self.scale, "scale", positive=False)
        if scale[0] < 0:
            raise ValueError(f"scale: expected non-negative values, got {self.scale}")
        object.__setattr__(self, "scale", scale)
        object.__setattr__(self, "ratio", _pair(self.ratio, "ratio"))
        if self.interpolation not in ops.INTERPOLATIONS:
            raise ValueError(
                f"interpolation: expected one of {ops.INTERPOLATIONS}, got {self.interpolation!r}"
            )
        for name in ("hflip_p", "jitter_p", "grayscale_p", "blur_p", "solarize_p"):
            object.__setattr__(self, name, _prob(getattr(self, name), name))
        threshold = ops.check_solarize_threshold(self.solarize_threshold)
        object.__setattr__(self, "solarize_threshold", threshold)
        ranges = (
            _range(self.brightness, "brightness", 1.0, 0.0),
            _range(self.contrast, "contrast", 1.0, 0.0),
            _range(self.saturation, "saturation", 1.0, 0.0),
            _range(self.hue, "hue", 0.0, -0.5),
        )
        object.__setattr__(self, "jitter_ranges", ranges)
        object.__setattr__(self, "blur_sigma", _pair(self.blur_sigma, "blur_sigma"))
        k = self.blur_kernel_size
        k = default_blur_kernel(self.size) if k is None else k
        if not isinstance(k, int) or isinstance(k, bool) or k < 1 or k % 2 == 0:
            raise ValueError(f"blur_kernel_size: expected an odd positive int, got {k!r}")
        if k // 2 >= self.size:
            raise ValueError(
                f"blur_kernel_size: reflect padding needs kernel_size // 2 < size, "
                f"got {k} for size {self.size}"
            )
        object.__setattr__(self, "kernel_size", k)
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError("mean, std: expected three values each")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std: expected positive values, got {self.std}")


@dataclass
class ViewParams:
    """The random parameters of one view for a batch of B images (all on the CPU).

    boxes: int64 ``[B, 4]`` crop (top, left, height, width); flip: bool ``[B]``; jitter: bool
    ``[B]`` whether ColorJitter ran; factors: float64 ``[B, 4]`` brightness, contrast,
    saturation, hue (1, 1, 1, 0 where jitter did not run or an op is off); order: int64
    ``[B, 4]`` the jitter ops in application order (0 brightness, 1 contrast, 2 saturation,
    3 hue); grayscale: bool ``[B]``; sigma: float64 ``[B]`` the blur sigma (0 = no blur);
    solarize: bool ``[B]``.
    """

    boxes: Tensor
    flip: Tensor
    jitter: Tensor
    factors: Tensor
    order: Tensor
    grayscale: Tensor
    sigma: Tensor
    solarize: Tensor

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def pack(self) -> Tensor:
        """The float64 ``[B, 16]`` table :func:`pyssl.ops.augment.augment_view` reads."""
        cols = [
            self.boxes.double(),
            self.flip.double()[:, None],
            self.factors.double(),
            self.order.double(),
            self.grayscale.double()[:, None],
            self.sigma.double()[:, None],
            self.solarize.double()[:, None],
        ]
        return torch.cat(cols, dim=1).contiguous()

    def to_dict(self) -> dict[str, list[Any]]:
        """Plain lists, for logging (``ViewParams(**{k: torch.tensor(v)})`` replays them)."""
        return {f.name: getattr(self, f.name).tolist() for f in fields(self)}

    def __getitem__(self, index: slice | Tensor | list[int]) -> ViewParams:
        return ViewParams(*(getattr(self, f.name)[index] for f in fields(self)))


def _sizes(sizes: object) -> Tensor:
    """``[B, 2]`` int64 (height, width) from size pairs, or from the images themselves."""
    if isinstance(sizes, ops.ImageBatch):
        return sizes.sizes
    is_table = isinstance(sizes, Tensor) and sizes.dtype in (torch.int64, torch.int32)
    is_pairs = (
        isinstance(sizes, Sequence)
        and len(sizes) > 0
        and all(
            isinstance(s, Sequence)
            and len(s) == 2
            and all(isinstance(v, (int, np.integer)) for v in s)
            for s in sizes
        )
    )
    if not (is_table or is_pairs):
        return ops.as_image_batch(sizes).sizes
    t = torch.as_tensor(sizes, dtype=torch.int64).cpu()
    if t.dim() != 2 or t.shape[1] != 2 or t.shape[0] == 0:
        raise ValueError(
            f"sizes: expected [B, 2] (height, width) pairs, got shape {tuple(t.shape)}"
        )
    if bool((t < 1).any()):
        raise ValueError("sizes: images must be at least 1x1")
    return t


def _crop_boxes(
    sizes: Tensor, scale: tuple[float, float], ratio: tuple[float, float], g: torch.Generator | None
) -> Tensor:
    """RandomResizedCrop.get_params for every image at once (10 attempts each, then the
    centre-crop fallback). One deliberate difference: the fallback box is at least one pixel
    on each side (torchvision's rounds to an empty box on a one-pixel-wide image when
    ``min(ratio) >= 2``, or a one-pixel-high one when ``max(ratio) <= 0.5``)."""
    b = sizes.shape[0]
    height, width = sizes[:, 0:1].double(), sizes[:, 1:2].double()
    area = height * width
    target = area * torch.empty(b, 10, dtype=torch.float64).uniform_(*scale, generator=g)
    log_r = (math.log(ratio[0]), math.log(ratio[1]))
    aspect = torch.exp(torch.empty(b, 10, dtype=torch.float64).uniform_(*log_r, generator=g))
    w = torch.round(torch.sqrt(target * aspect))
    h = torch.round(torch.sqrt(target / aspect))
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = ok.to(torch.int8).argmax(1, keepdim=True)
    found = ok.any(1)
    w = w.gather(1, first)[:, 0]
    h = h.gather(1, first)[:, 0]
    u = torch.rand(b, 2, dtype=torch.float64, generator=g)
    hh, ww = height[:, 0], width[:, 0]
    top = torch.minimum(torch.floor(u[:, 0] * (hh - h + 1)), hh - h)
    left = torch.minimum(torch.floor(u[:, 1] * (ww - w + 1)), ww - w)
    # Fallback: the whole image, cut to the nearest allowed ratio.
    in_ratio = ww / hh
    fw = torch.where(in_ratio > ratio[1], torch.round(hh * ratio[1]), ww)
    fh = torch.where(in_ratio < ratio[0], torch.round(ww / ratio[0]), hh)
    fw = torch.where(in_ratio < ratio[0], ww, fw)
    fh = torch.where(in_ratio > ratio[1], hh, fh)
    fw, fh = fw.clamp(min=1), fh.clamp(min=1)
    ftop, fleft = (
        torch.div(hh - fh, 2, rounding_mode="floor"),
        torch.div(ww - fw, 2, rounding_mode="floor"),
    )
    box = torch.stack(
        [
            torch.where(found, top, ftop),
            torch.where(found, left, fleft),
            torch.where(found, h, fh),
            torch.where(found, w, fw),
        ],
        dim=1,
    )
    return box.to(torch.int64)


def sample_view(
    config: ViewConfig, sizes: object, generator: torch.Generator | None = None
) -> ViewParams:
    """Draws one view's parameters for images of the given sizes (``[B, 2]`` height, width, or
    the images themselves). The number of draws depends only on B, so a generator state gives
    the same parameters however they are later applied."""
    hw = _sizes(sizes)
    b = hw.shape[0]
    g = generator
    boxes = _crop_boxes(hw, config.scale, config.ratio, g)
    u = torch.rand(b, 5, dtype=torch.float64, generator=g)
    flip = u[:, 0] < config.hflip_p
    jitter = u[:, 1] < config.jitter_p
    order = torch.rand(b, 4, generator=g).argsort(dim=1)
    factors = torch.tensor(ops.ref.IDENTITY, dtype=torch.float64).repeat(b, 1)
    draws = torch.rand(b, 4, dtype=torch.float64, generator=g)
    for k, rng in enumerate(config.jitter_ranges):
        if rng is not None:
            f = rng[0] + (rng[1] - rng[0]) * draws[:, k]
            factors[:, k] = torch.where(jitter, f, factors[:, k])
    grayscale = u[:, 2] < config.grayscale_p
    s0, s1 = config.blur_sigma
    sigma_draw = s0 + (s1 - s0) * torch.rand(b, dtype=torch.float64, generator=g)
    sigma = torch.where(u[:, 3] < config.blur_p, sigma_draw, torch.zeros_like(sigma_draw))
    solarize = u[:, 4] < config.solarize_p
    return ViewParams(boxes, flip, jitter, factors, order, grayscale, sigma, solarize)


class Augment:
    """A list of views. ``sample`` draws their parameters, ``apply`` makes them,
    ``__call__`` does both. Outputs: one ``[B, 3, S, S]`` tensor per view, normalised, in
    ``dtype``, on the images' device."""

    def __init__(
        self,
        views: Sequence[ViewConfig],
        *,
        dtype: torch.dtype = torch.float32,
        backend: str | None = None,
    ) -> None:
        if len(views) == 0:
            raise ValueError("views: expected at least one view")
        if dtype not in ops.OUT_DTYPES:
            raise TypeError(f"dtype: expected one of {ops.OUT_DTYPES}, got {dtype}")
        self.views = tuple(views)
        self.dtype = dtype
        self.backend = backend

    def __repr__(self) -> str:
        return f"{type(self).__name__}(views={list(self.views)!r}, dtype={self.dtype})"

    def sample(self, sizes: object, generator: torch.Generator | None = None) -> list[ViewParams]:
        """Parameters of every view for images of ``sizes`` (``[B, 2]`` height, width pairs, or
        the images)."""
        hw = _sizes(sizes)
        return [sample_view(v, hw, generator) for v in self.views]

    def apply(self, images: ops.ImageInput, params: Sequence[ViewParams]) -> list[Tensor]:
        """The views of ``images`` (uint8 RGB, see :func:`pyssl.ops.augment.as_image_batch`)
        for parameters from :meth:`sample`."""
        batch = ops.as_image_batch(images)
        if len(params) != len(self.views):
            raise ValueError(
                f"params: {len(params)} views for an augmentation of {len(self.views)}"
            )
        out = []
        for v, p in zip(self.views, params):
            if not isinstance(p, ViewParams):
                raise TypeError(f"params: expected ViewParams, got {type(p).__name__}")
            if len(p) != len(batch):
                raise ValueError(f"params: {len(p)} samples for a batch of {len(batch)} images")
            out.append(
                ops.augment_view(
                    batch,
                    p.pack(),
                    size=v.size,
                    interpolation=v.interpolation,
                    blur_kernel_size=v.kernel_size,
                    solarize_threshold=v.solarize_threshold,
                    mean=v.mean,
                    std=v.std,
                    dtype=self.dtype,
                    backend=self.backend,
                )
            )
        return out

    def __call__(
        self,
        images: ops.ImageInput,
        generator: torch.Generator | None = None,
        seed: int | None = None,
    ) -> list[Tensor]:
        if seed is not None:
            if generator is not None:
                raise ValueError("generator, seed: give one or the other")
            generator = torch.Generator().manual_seed(seed)
        batch = ops.as_image_batch(images)
        return self.apply(batch, self.sample(batch, generator))


class SimCLRAugment(Augment):
    """SimCLR (Chen et al. 2020, appendix A): ``n_views`` views of RandomResizedCrop(size,
    scale=(0.08, 1)), flip, ColorJitter(0.8s, 0.8s, 0.8s, 0.2s) with s = 1 applied with p=0.8,
    grayscale p=0.2, Gaussian blur p=0.5 (kernel 10% of the side, sigma in [0.1, 2]), ImageNet
    normalisation. Set ``blur_p=0`` for CIFAR-sized images, as the paper does."""

    def __init__(
        self,
        size: int = 224,
        *,
        n_views: int = 2,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        interpolation: str = "bilinear",
        hflip_p: float = 0.5,
        jitter_p: float = 0.8,
        brightness: float | tuple[float, float] = 0.8,
        contrast: float | tuple[float, float] = 0.8,
        saturation: float | tuple[float, float] = 0.8,
        hue: float | tuple[float, float] = 0.2,
        grayscale_p: float = 0.2,
        blur_p: float = 0.5,
        blur_kernel_size: int | None = None,
        blur_sigma: tuple[float, float] = (0.1, 2.0),
        solarize_p: float = 0.0,
        solarize_threshold: float = 128.0,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        dtype: torch.dtype = torch.float32,
        backend: str | None = None,
    ) -> None:
        if not isinstance(n_views, int) or n_views < 1:
            raise ValueError(f"n_views: expected a positive int, got {n_views!r}")
        view = ViewConfig(
            size,
            scale=scale,
            ratio=ratio,
            interpolation=interpolation,
            hflip_p=hflip_p,
            jitter_p=jitter_p,
            brightness=brightness,
            contrast=contrast,
            saturation=saturation,
            hue=hue,
            grayscale_p=grayscale_p,
            blur_p=blur_p,
            blur_kernel_size=blur_kernel_size,
            blur_sigma=blur_sigma,
            solarize_p=solarize_p,
            solarize_threshold=solarize_threshold,
            mean=mean,
            std=std,
        )
        super().__init__([view] * n_views, dtype=dtype, backend=backend)


class BYOLAugment(Augment):
    """BYOL (Grill et al. 2020, appendix B, table 6): two asymmetric views of
    RandomResizedCrop(size, scale=(0.08, 1), bicubic), flip, ColorJitter(0.4, 0.4, 0.2, 0.1)
    p=0.8, grayscale p=0.2, Gaussian blur (kernel 23 at 224, sigma in [0.1, 2]) with p =
    ``blur_p`` per view (1.0, 0.1) and solarize (``solarize_threshold`` 128 of 255) with p =
    ``solarize_p`` per view (0.0, 0.2)."""

    def __init__(
        self,
        size: int = 224,
        *,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        interpolation: str = "bicubic",
        hflip_p: float = 0.5,
        jitter_p: float = 0.8,
        brightness: float | tuple[float, float] = 0.4,
        contrast: float | tuple[float, float] = 0.4,
        saturation: float | tuple[float, float] = 0.2,
        hue: float | tuple[float, float] = 0.1,
        grayscale_p: float = 0.2,
        blur_p: tuple[float, float] = (1.0, 0.1),
        blur_kernel_size: int | None = None,
        blur_sigma: tuple[float, float] = (0.1, 2.0),
        solarize_p: tuple[float, float] = (0.0, 0.2),
        solarize_threshold: float = 128.0,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        dtype: torch.dtype = torch.float32,
        backend: str | None = None,
    ) -> None:
        blurs, sols = _per_view(blur_p, "blur_p", 2), _per_view(solarize_p, "solarize_p", 2)
        views = [
            ViewConfig(
                size,
                scale=scale,
                ratio=ratio,
                interpolation=interpolation,
                hflip_p=hflip_p,
                jitter_p=jitter_p,
                brightness=brightness,
                contrast=contrast,
                saturation=saturation,
                hue=hue,
                grayscale_p=grayscale_p,
                blur_p=blurs[i],
                blur_kernel_size=blur_kernel_size,
                blur_sigma=blur_sigma,
                solarize_p=sols[i],
                solarize_threshold=solarize_threshold,
                mean=mean,
                std=std,
            )
            for i in range(2)
        ]
        super().__init__(views, dtype=dtype, backend=backend)


def _per_view(v: object, name: str, n: int) -> tuple[float, ...]:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return (float(v),) * n
    if not isinstance(v, Sequence) or len(v) != n:
        raise ValueError(f"{name}: expected a probability or {n} of them (one per view), got {v!r}")
    return tuple(v)


class DINOAugment(Augment):
    """DINO multi-crop (Caron et al. 2021, ``DataAugmentationDINO``): two global crops at
    ``global_size`` with ``global_crops_scale`` and N = ``local_crops_number`` local crops at
    ``local_size`` with ``local_crops_scale``, all bicubic; flip, ColorJitter(0.4, 0.4, 0.2, 0.1)
    p=0.8, grayscale p=0.2; blur p = 1.0 / 0.1 on the global crops and 0.5 on the local ones;
    solarize (``solarize_threshold`` 128 of 255) p = 0 / 0.2 on the global crops. Views come out
    global first, then local.

    Difference: DINO blurs with PIL's ``GaussianBlur(radius=sigma)`` (an iterated box filter);
    pyssl uses torchvision's ``GaussianBlur`` (kernels ``blur_kernel_size`` and
    ``local_blur_kernel_size``, by default 23 at 224 and 9 at 96) with the same sigma law."""

    def __init__(
        self,
        global_size: int = 224,
        local_size: int = 96,
        *,
        global_crops_scale: tuple[float, float] = (0.4, 1.0),
        local_crops_scale: tuple[float, float] = (0.05, 0.4),
        local_crops_number: int = 8,
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        interpolation: str = "bicubic",
        hflip_p: float = 0.5,
        jitter_p: float = 0.8,
        brightness: float | tuple[float, float] = 0.4,
        contrast: float | tuple[float, float] = 0.4,
        saturation: float | tuple[float, float] = 0.2,
        hue: float | tuple[float, float] = 0.1,
        grayscale_p: float = 0.2,
        global_blur_p: tuple[float, float] = (1.0, 0.1),
        local_blur_p: float = 0.5,
        blur_kernel_size: int | None = None,
        local_blur_kernel_size: int | None = None,
        blur_sigma: tuple[float, float] = (0.1, 2.0),
        global_solarize_p: tuple[float, float] = (0.0, 0.2),
        solarize_threshold: float = 128.0,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        dtype: torch.dtype = torch.float32,
        backend: str | None = None,
    ) -> None:
        if not isinstance(local_crops_number, int) or local_crops_number < 0:
            raise ValueError(
                f"local_crops_number: expected an int >= 0, got {local_crops_number!r}"
            )
        gb = _per_view(global_blur_p, "global_blur_p", 2)
        gs = _per_view(global_solarize_p, "global_solarize_p", 2)
        common: dict[str, Any] = dict(
            ratio=ratio,
            interpolation=interpolation,
            hflip_p=hflip_p,
            jitter_p=jitter_p,
            brightness=brightness,
            contrast=contrast,
            saturation=saturation,
            hue=hue,
            grayscale_p=grayscale_p,
            blur_sigma=blur_sigma,
            solarize_threshold=solarize_threshold,
            mean=mean,
            std=std,
        )
        views = [
            ViewConfig(
                global_size,
                scale=global_crops_scale,
                blur_p=gb[i],
                solarize_p=gs[i],
                blur_kernel_size=blur_kernel_size,
                **common,
            )
            for i in range(2)
        ]
        local = ViewConfig(
            local_size,
            scale=local_crops_scale,
            blur_p=local_blur_p,
            blur_kernel_size=local_blur_kernel_size,
            **common,
        )
        super().__init__(views + [local] * local_crops_number, dtype=dtype, backend=backend)


class MAEAugment(Augment):
    """MAE pretraining (He et al. 2021, ``main_pretrain.py``): RandomResizedCrop(size,
    scale=(0.2, 1), bicubic), flip, Normalize; one view, no colour steps."""

    def __init__(
        self,
        size: int = 224,
        *,
        scale: tuple[float, float] = (0.2, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        interpolation: str = "bicubic",
        hflip_p: float = 0.5,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        dtype: torch.dtype = torch.float32,
        backend: str | None = None,
    ) -> None:
        view = ViewConfig(
            size,
            scale,
            ratio,
            interpolation,
            hflip_p,
            jitter_p=0.0,
            grayscale_p=0.0,
            blur_p=0.0,
            solarize_p=0.0,
            mean=mean,
            std=std,
        )
        super().__init__([view], dtype=dtype, backend=backend)


# ------------------------------------------------------------------------- data loading


def _as_uint8_image(x: object) -> Tensor:
    if isinstance(x, Tensor):
        t = x
    elif isinstance(x, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(x))
    else:  # a PIL image, or anything numpy can read
        t = torch.from_numpy(np.asarray(x).copy())
    if t.dtype != torch.uint8:
        raise TypeError(f"images: expected uint8 pixels, got {t.dtype}")
    if t.dim() == 2:  # grayscale: replicate, as PIL's convert("RGB") does
        t = t[..., None].expand(-1, -1, 3)
    return t


class ViewCollator:
    """A DataLoader ``collate_fn`` for SSL: samples are images (uint8 tensors, numpy arrays or
    PIL images, ``[H, W, 3]`` or ``[3, H, W]``) or ``(image, target, ...)`` tuples.

    With ``make_views=False`` (the default) it returns ``(images, targets)`` with the images
    still uint8 (one stacked tensor when all sizes match, else a list), so the loader moves
    bytes, not floats; :meth:`views` then makes the views batched on the training device.
    With ``make_views=True`` it makes them in the worker (CPU kernel) and returns
    ``(views, targets)``; each call draws from its own generator seeded with
    ``(seed, worker id, call count)`` so runs repeat."""

    def __init__(self, augment: Augment, *, make_views: bool = False, seed: int = 0) -> None:
        if not isinstance(augment, Augment):
            raise TypeError(
                f"augment: expected a pyssl.augment.Augment, got {type(augment).__name__}"
            )
        self.augment = augment
        self.make_views = make_views
        self.seed = seed
        self._calls = 0

    def __call__(self, samples: Sequence[Any]) -> tuple[Any, Tensor | None]:
        if len(samples) == 0:
            raise ValueError("samples: empty batch")
        if isinstance(samples[0], (tuple, list)):
            imgs = [_as_uint8_image(s[0]) for s in samples]
            targets = torch.utils.data.default_collate([s[1] for s in samples])
        else:
            imgs, targets = [_as_uint8_image(s) for s in samples], None
        same = all(t.shape == imgs[0].shape for t in imgs)
        images: Tensor | list[Tensor] = torch.stack(imgs) if same else imgs
        if not self.make_views:
            return images, targets
        info = torch.utils.data.get_worker_info()
        worker = info.id if info is not None else 0
        g = torch.Generator().manual_seed(hash((self.seed, worker, self._calls)) & (2**63 - 1))
        self._calls += 1
        return self.augment(images, generator=g), targets

    def views(
        self,
        images: Tensor | list[Tensor],
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
    ) -> list[Tensor]:
        """Moves uint8 ``images`` (as :meth:`__call__` returned them) to ``device`` and makes
        the views there."""
        if device is not None:
            if isinstance(images, Tensor):
                images = images.to(device, non_blocking=True)
            else:
                images = [t.to(device, non_blocking=True) for t in images]
        return self.augment(images, generator=generator)


def collate_views(augment: Augment, *, make_views: bool = False, seed: int = 0) -> ViewCollator:
    """``collate_fn=collate_views(aug)`` for a DataLoader: see :class:`ViewCollator`."""
    return ViewCollator(augment, make_views=make_views, seed=seed)
