"""Fused augmentation: one SSL view of a batch of uint8 images in one pass.

Anchor: torchvision's ``RandomResizedCrop`` (antialias=True), ``RandomHorizontalFlip``,
``ColorJitter``, ``RandomGrayscale``, ``GaussianBlur``, ``RandomSolarize`` and ``Normalize``,
applied per sample with per-sample parameters (see :mod:`pyssl.augment` for the samplers and the
recipes). :func:`augment_view` takes the parameters as a table (:data:`PARAM_COLUMNS`) and runs
the C++ kernel for CPU images, Triton for CUDA images (``backend="cuda"`` picks the CUDA C++
kernel); :func:`pyssl.ops.explain` says which.

Semantics are those of torchvision's float-tensor path (the image converted to ``[0, 1]`` first,
then every op in float); deliberate differences:

* no rounding to 8 bits between steps (torchvision's uint8 path rounds after each op; the two
  differ by about one level on the 0-255 scale);
* bicubic overshoot is clamped to ``[0, 255]`` as torchvision clamps it for uint8 images (its
  float path leaves it unclamped);
* arithmetic is float32 throughout (the tests compare with a float64 reference within one level);
* a jitter op whose factor is the identity (1, 1, 1, 0) is skipped, exactly as ``ColorJitter``
  skips an unset op; any other factor runs even when torchvision's uint8 rounding would hide it;
* the solarize threshold is given on the 0-255 scale, as to torchvision's ``RandomSolarize`` on
  uint8 images (its float path takes it on the ``[0, 1]`` scale), and must lie in ``[0, 255]``;
* Gaussian blur taps below ``1e-30`` (after normalising the kernel to sum 1) are flushed to zero:
  they are subnormal in float32 and cost ~100 cycles per multiply on x86, and each changes the
  result by less than ``1e-30`` of a pixel's value;
* the crop is always resized with antialiasing when it is downscaled (``antialias=True``,
  torchvision's default since 0.17): there is no ``antialias=False`` (the aliased resize of
  torchvision's older defaults);
* the GPU kernels (Triton and CUDA) keep one float32 scratch of the *output* size,
  ``[B, 3, S, S]``, besides the blur's second separable pass (which item 5 of the design
  allows): contrast blends every pixel with the mean grayscale level of the whole view as it
  enters contrast, so no output pixel can be finished before every pixel of its image has been
  resampled and run through the jitter ops ordered before contrast. The resampled pixels are
  therefore written once to the scratch (with per-block partial sums of the mean), and a second
  kernel finishes them; the alternative, resampling every pixel twice, reads the source twice
  and costs more than the scratch's ``12 S^2`` bytes per image. The CPU kernel keeps the same
  ``[3, S, S]`` image per thread, one image at a time. No float copy of the (larger) source
  image is made anywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pyssl.ops._backend import check_backend_arg, launch, resolve
from pyssl.reference import augment as ref

PARAM_COLUMNS = (
    "top",
    "left",
    "height",
    "width",
    "flip",
    "brightness",
    "contrast",
    "saturation",
    "hue",
    "order0",
    "order1",
    "order2",
    "order3",
    "grayscale",
    "sigma",
    "solarize",
)
INTERPOLATIONS = ("bilinear", "bicubic")
OUT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)

ImageInput = Any  # Tensor | np.ndarray | Sequence[Tensor | np.ndarray]


@dataclass
class ImageBatch:
    """uint8 RGB images as the kernels read them: one tensor per image (``[H, W, 3]`` or
    ``[3, H, W]`` views, no copy) and a table ``[B, 6]`` int64 of (byte offset from the base,
    H, W, row stride, column stride, channel stride)."""

    images: list[Tensor]
    batch: Tensor | None  # the stacked input when there was one (its storage is the base)
    device: torch.device

    def __len__(self) -> int:
        return len(self.images)

    @property
    def sizes(self) -> Tensor:
        """``[B, 2]`` int64 (height, width) of every image."""
        return torch.tensor([_hw(t) for t in self.images], dtype=torch.int64).view(-1, 2)

    def table(self, base: int) -> Tensor:
        rows = []
        for t in self.images:
            h, w = _hw(t)
            ch = 0 if t.shape[0] == 3 and t.shape[-1] != 3 else 2
            s = t.stride()
            sy, sx, sc = (s[1], s[2], s[0]) if ch == 0 else (s[0], s[1], s[2])
            rows.append([t.data_ptr() - base, h, w, sy, sx, sc])
        return torch.tensor(rows, dtype=torch.int64).view(-1, 6)


def _hw(t: Tensor) -> tuple[int, int]:
    if t.shape[-1] == 3:
        return int(t.shape[0]), int(t.shape[1])
    return int(t.shape[1]), int(t.shape[2])


def _as_tensor(x: object, name: str) -> Tensor:
    if isinstance(x, np.ndarray):
        if x.dtype != np.uint8:
            raise TypeError(f"{name}: expected uint8 pixels, got numpy {x.dtype}")
        if any(st < 0 for st in x.strides):  # torch cannot view negative strides (np.flip)
            x = np.ascontiguousarray(x)
        return torch.from_numpy(x)
    if isinstance(x, Tensor):
        if x.dtype != torch.uint8:
            raise TypeError(f"{name}: expected uint8 pixels, got {x.dtype}")
        return x
    raise TypeError(f"{name}: expected a torch.Tensor or numpy array, got {type(x).__name__}")


def _check_image(t: Tensor, name: str) -> Tensor:
    if t.dim() != 3:
        raise ValueError(f"{name}: expected [H, W, 3] or [3, H, W], got shape {tuple(t.shape)}")
    if t.shape[-1] != 3 and t.shape[0] != 3:
        raise ValueError(
            f"{name}: expected 3 (RGB) channels first or last, got shape {tuple(t.shape)}"
        )
    h, w = _hw(t)
    if h < 1 or w < 1:
        raise ValueError(f"{name}: images must be at least 1x1, got {h}x{w}")
    return t


def as_image_batch(images: ImageInput) -> ImageBatch:
    """Validates uint8 RGB images: a tensor or numpy array ``[B, H, W, 3]`` or ``[B, 3, H, W]``
    (channels last is read when the last dimension is 3), or a sequence of ``[H, W, 3]`` /
    ``[3, H, W]`` images of any sizes on one device. No pixel is copied."""
    if isinstance(images, ImageBatch):
        return images
    if isinstance(images, (Tensor, np.ndarray)):
        t = _as_tensor(images, "images")
        if t.dim() != 4:
            raise ValueError(
                f"images: expected [B, H, W, 3] or [B, 3, H, W], got shape {tuple(t.shape)}"
            )
        if t.shape[0] == 0:
            raise ValueError("images: empty batch")
        items = [_check_image(t[b], "images") for b in range(t.shape[0])]
        return ImageBatch(items, t, t.device)
    if not isinstance(images, Sequence) or isinstance(images, (str, bytes)):
        raise TypeError(
            f"images: expected a uint8 tensor, numpy array or a sequence of images, "
            f"got {type(images).__name__}"
        )
    if len(images) == 0:
        raise ValueError("images: empty batch")
    items = [
        _check_image(_as_tensor(x, f"images[{i}]"), f"images[{i}]") for i, x in enumerate(images)
    ]
    device = items[0].device
    for i, t in enumerate(items):
        if t.device != device:
            raise ValueError(f"images[{i}]: on {t.device}, but images[0] is on {device}")
    return ImageBatch(items, None, device)


def _check_params(params: object, batch: ImageBatch) -> Tensor:
    if not isinstance(params, Tensor):
        raise TypeError(f"params: expected a float64 tensor, got {type(params).__name__}")
    if params.dtype != torch.float64 or params.dim() != 2 or params.shape[1] != len(PARAM_COLUMNS):
        raise ValueError(
            f"params: expected float64 [B, {len(PARAM_COLUMNS)}], got {params.dtype} "
            f"{tuple(params.shape)}"
        )
    if params.shape[0] != len(batch):
        raise ValueError(f"params: {params.shape[0]} rows for a batch of {len(batch)} images")
    p = params.detach().cpu()
    sizes = batch.sizes.double()
    top, left, h, w = p[:, 0], p[:, 1], p[:, 2], p[:, 3]
    inside = (top >= 0) & (left >= 0) & (h >= 1) & (w >= 1)
    inside &= (top + h <= sizes[:, 0]) & (left + w <= sizes[:, 1])
    inside &= (p[:, :4] == p[:, :4].floor()).all(1)
    if not bool(inside.all()):
        b = int((~inside).nonzero()[0])
        raise ValueError(
            f"params: crop box {p[b, :4].tolist()} of image {b} lies outside its "
            f"{int(sizes[b, 0])}x{int(sizes[b, 1])} pixels"
        )
    if bool((p[:, 5:8] < 0).any()) or not bool(torch.isfinite(p).all()):
        raise ValueError("params: jitter factors must be finite and >= 0")
    if bool((p[:, 8].abs() > 0.5).any()):
        raise ValueError("params: hue factors must lie in [-0.5, 0.5]")
    order = p[:, 9:13]
    if not torch.equal(order.sort(1).values, torch.arange(4.0).expand_as(order)):
        raise ValueError("params: order columns must hold a permutation of 0..3 per row")
    if bool((p[:, 14] < 0).any()):
        raise ValueError("params: sigma must be >= 0")
    return p.contiguous()  # on the host: the launchers move it (no device sync to read it)


def _check_config(
    size: object,
    interpolation: object,
    blur_kernel_size: object,
    mean: Sequence[float],
    std: Sequence[float],
    dtype: object,
    solarize_threshold: object = 128.0,
) -> None:
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ValueError(f"size: expected a positive int, got {size!r}")
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation: expected one of {INTERPOLATIONS}, got {interpolation!r}")
    k = blur_kernel_size
    if not isinstance(k, int) or isinstance(k, bool) or k < 1 or k % 2 == 0:
        raise ValueError(f"blur_kernel_size: expected an odd positive int, got {k!r}")
    if k // 2 >= size:
        raise ValueError(
            f"blur_kernel_size: reflect padding needs kernel_size // 2 < size, got {k} for {size}"
        )
    if len(mean) != 3 or len(std) != 3:
        raise ValueError("mean, std: expected three values each")
    if any(s <= 0 for s in std):
        raise ValueError(f"std: expected positive values, got {tuple(std)}")
    if dtype not in OUT_DTYPES:
        raise TypeError(f"dtype: expected one of {OUT_DTYPES}, got {dtype}")
    check_solarize_threshold(solarize_threshold)


def check_solarize_threshold(threshold: object) -> float:
    """The solarize threshold as a float on the 0-255 scale; a ``ValueError`` unless it is a
    real number in ``[0, 255]`` (torchvision refuses thresholds above the image's maximum
    value; below 0 every pixel is inverted, as at 0)."""
    ok = isinstance(threshold, (int, float, np.integer, np.floating)) and not isinstance(
        threshold, (bool, np.bool_)
    )
    if not ok or not 0.0 <= float(threshold) <= 255.0:  # type: ignore[arg-type]
        raise ValueError(
            f"solarize_threshold: expected a number in [0, 255] (the 0-255 scale), got "
            f"{threshold!r}"
        )
    return float(threshold)  # type: ignore[arg-type]


def augment_view(
    images: ImageInput,
    params: Tensor,
    *,
    size: int,
    interpolation: str = "bilinear",
    blur_kernel_size: int = 1,
    solarize_threshold: float = 128.0,
    mean: Sequence[float] = (0.485, 0.456, 0.406),
    std: Sequence[float] = (0.229, 0.224, 0.225),
    dtype: torch.dtype = torch.float32,
    backend: str | None = None,
) -> Tensor:
    """One augmented view of every image, with fixed per-sample parameters.

    Args:
        images: uint8 RGB, ``[B, H, W, 3]`` or ``[B, 3, H, W]`` (tensor or numpy array), or a
            sequence of ``[H, W, 3]`` / ``[3, H, W]`` images of different sizes.
        params: float64 ``[B, 16]``, columns :data:`PARAM_COLUMNS`: the crop box (top, left,
            height, width, whole pixels inside the image), flip (0/1), the jitter factors
            (brightness, contrast, saturation, hue; 1, 1, 1, 0 = unchanged), the order in which
            the four jitter ops run (0 brightness, 1 contrast, 2 saturation, 3 hue), grayscale
            (0/1), the blur sigma (0 = no blur) and solarize (0/1; the threshold is
            ``solarize_threshold``, one per view).
            :meth:`pyssl.augment.ViewParams.pack` builds it.
        size: side ``S`` of the square output.
        interpolation: ``"bilinear"`` or ``"bicubic"`` (both antialiased when downscaling).
        blur_kernel_size: odd Gaussian kernel size (``kernel_size // 2 < size``).
        solarize_threshold: on the 0-255 scale, in ``[0, 255]``: where solarize is on, pixels
            ``>= solarize_threshold`` become ``255 - pixel`` (torchvision's ``solarize``).
        mean, std: per-channel normalisation of the ``[0, 1]`` image.
        dtype: float32, bfloat16 or float16 output.

    Returns:
        ``[B, 3, S, S]`` in ``dtype`` on the images' device:
        ``normalize(solarize(blur(grayscale(jitter(flip(resized_crop(img / 255)))))))``.
    """
    check_backend_arg(backend)
    batch = as_image_batch(images)
    _check_config(size, interpolation, blur_kernel_size, mean, std, dtype, solarize_threshold)
    p = _check_params(params, batch)
    chosen = resolve("augment_view", batch.device, backend)
    m, s = [float(v) for v in mean], [float(v) for v in std]
    interp = INTERPOLATIONS.index(interpolation)
    k, th = blur_kernel_size, float(solarize_threshold)
    if batch.batch is not None:  # one tensor: through the custom op (opcheck, torch.compile)
        return _augment_view_op(batch.batch, p, size, interp, k, th, m, s, dtype, chosen)
    return _run(batch, p, size, interp, k, th, m, s, dtype, chosen)


def _run(
    batch: ImageBatch,
    p: Tensor,
    size: int,
    interp: int,
    kernel: int,
    threshold: float,
    m: list[float],
    s: list[float],
    dtype: torch.dtype,
    backend: str,
) -> Tensor:
    out = torch.empty(len(batch), 3, size, size, dtype=dtype, device=batch.device)
    if backend == "reference":
        return _reference_view(batch, p, size, INTERPOLATIONS[interp], kernel, threshold, m, s, out)
    args = (size, interp, kernel, threshold, m, s, out)  # every launcher's order, after params
    if backend == "cpu":
        launch("augment", "augment_view", "cpu", 0, batch.table(0), p, *args)
        return out
    base, table = _device_buffer(batch)
    if backend == "triton":
        launch("augment", "augment_view", "triton", base, table, p, *args)
    else:
        dev = base.device
        launch("augment", "augment_view", "cuda", base.data_ptr(), table.to(dev), p.to(dev), *args)
    return out


@torch.library.custom_op("pyssl::augment_view", mutates_args=())
def _augment_view_op(
    images: Tensor,
    params: Tensor,
    size: int,
    interpolation: int,
    blur_kernel_size: int,
    solarize_threshold: float,
    mean: list[float],
    std: list[float],
    dtype: torch.dtype,
    backend: str,
) -> Tensor:
    batch = as_image_batch(images)
    return _run(
        batch,
        params,
        size,
        interpolation,
        blur_kernel_size,
        solarize_threshold,
        mean,
        std,
        dtype,
        backend,
    )


@_augment_view_op.register_fake
def _augment_view_fake(
    images: Tensor,
    params: Tensor,
    size: int,
    interpolation: int,
    blur_kernel_size: int,
    solarize_threshold: float,
    mean: list[float],
    std: list[float],
    dtype: torch.dtype,
    backend: str,
) -> Tensor:
    return images.new_empty((images.shape[0], 3, size, size), dtype=dtype)


def _device_buffer(batch: ImageBatch) -> tuple[Tensor, Tensor]:
    """A uint8 base tensor and the table of offsets into it: the input's own storage for a
    batch tensor, or the images packed into one flat buffer (uint8, no float copy)."""
    if batch.batch is not None:
        t = batch.batch
        base = t.as_strided((t.untyped_storage().nbytes(),), (1,), 0)
        return base, batch.table(base.data_ptr())
    flat = torch.cat([t.contiguous().reshape(-1) for t in batch.images])
    packed, offset = [], 0
    for t in batch.images:
        c = t.contiguous()
        packed.append(flat[offset : offset + c.numel()].view(c.shape))
        offset += c.numel()
    return flat, ImageBatch(packed, None, batch.device).table(flat.data_ptr())


def _reference_view(
    batch: ImageBatch,
    p: Tensor,
    size: int,
    interpolation: str,
    kernel: int,
    threshold: float,
    mean: Sequence[float],
    std: Sequence[float],
    out: Tensor,
) -> Tensor:
    rows = p.cpu().tolist()
    for b, t in enumerate(batch.images):
        img = t.permute(2, 0, 1) if t.shape[-1] == 3 else t
        out[b] = ref.apply_one(
            img,
            **unpack_row(rows[b]),
            size=size,
            interpolation=interpolation,
            blur_kernel_size=kernel,
            solarize_threshold=threshold,
            mean=tuple(mean),
            std=tuple(std),
            dtype=torch.float32,
        ).to(out.dtype)
    return out


def unpack_row(row: Sequence[float]) -> dict[str, Any]:
    """The keyword arguments of :func:`pyssl.reference.augment.apply_one` for one params row."""
    return {
        "box": tuple(int(v) for v in row[0:4]),
        "flip": bool(row[4]),
        "factors": tuple(row[5:9]),
        "order": tuple(int(v) for v in row[9:13]),
        "grayscale": bool(row[13]),
        "sigma": float(row[14]),
        "solarize_": bool(row[15]),
    }
