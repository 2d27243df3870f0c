"""Image datasets: scikit-learn's ``digits`` and sample photos, and image folders, held in memory
as uint8."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")


@dataclass
class ImageData:
    """Images ``uint8 [N, C, H, W]`` with optional labels ``int64 [N]`` (``None``: unlabeled)
    and the class names the labels index."""

    images: Tensor
    labels: Tensor | None
    classes: list[str]
    name: str

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, index: Tensor) -> ImageData:
        """The rows ``index`` (an int64 tensor), as a new ImageData."""
        labels = None if self.labels is None else self.labels[index]
        return ImageData(self.images[index], labels, self.classes, self.name)


def to_float(
    images: Tensor, mean: float | tuple[float, ...] = 0.5, std: float | tuple = 0.5
) -> Tensor:
    """uint8 ``[N, C, H, W]`` to float32 ``(x / 255 - mean) / std`` per channel (the evaluation
    transform that matches the normalisation of the training views)."""
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(
            f"images: expected uint8 [N, C, H, W], got {images.dtype} {list(images.shape)}"
        )
    c = images.shape[1]
    m = torch.as_tensor(mean, dtype=torch.float32).reshape(-1, 1, 1).expand(c, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32).reshape(-1, 1, 1).expand(c, 1, 1)
    return (images.float() / 255.0 - m) / s


def _stratified_split(
    labels: np.ndarray, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    # per class, a seeded permutation; the first round(n * test_fraction) go to test
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        k = int(round(len(idx) * test_fraction))
        test.append(idx[:k])
        train.append(idx[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def load_digits(
    split: str = "train",
    *,
    image_size: int = 32,
    channels: int = 3,
    test_fraction: float = 0.25,
    seed: int = 0,
) -> ImageData:
    """scikit-learn's ``digits``: 1,797 real handwritten digits (8x8, 17 grey levels), upsampled
    bilinearly to ``image_size`` and scaled to 0..255, as ``uint8 [N, channels, S, S]``
    (``channels=3`` replicates the grey level, which colour augmentations expect).

    ``split``: ``"train"``, ``"test"`` or ``"all"``. The split is stratified by class, fixed by
    ``seed`` and ``test_fraction`` (default: 1,347 train and 450 test images)."""
    if split not in ("train", "test", "all"):
        raise ValueError(f"split: expected 'train', 'test' or 'all', got {split!r}")
    if channels not in (1, 3):
        raise ValueError(f"channels: expected 1 or 3, got {channels}")
    if image_size < 8:
        raise ValueError(f"image_size: expected >= 8, got {image_size}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction: expected in (0, 1), got {test_fraction}")
    try:
        from sklearn.datasets import load_digits as sk_digits
    except ImportError as exc:  # pragma: no cover - scikit-learn is in the demo and test extras
        raise RuntimeError(
            "the digits data needs scikit-learn: pip install 'pyssl-kernels[demo]'"
        ) from exc
    raw = sk_digits()
    target = raw.target.astype(np.int64)
    if split == "all":
        rows = np.arange(len(target))
    else:
        train, test = _stratified_split(target, test_fraction, seed)
        rows = train if split == "train" else test
    x = torch.from_numpy(raw.images[rows].astype(np.float32) / 16.0)[:, None]
    x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    x = (x.clamp(0, 1) * 255.0).round().to(torch.uint8).expand(-1, channels, -1, -1).contiguous()
    classes = [str(i) for i in range(10)]
    return ImageData(x, torch.from_numpy(target[rows]), classes, f"digits-{split}")


def _read_image(path: str, image_size: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as f:
            im = f.convert("RGB")
            # centre square crop, then resize: every image gets the same shape
            w, h = im.size
            s = min(w, h)
            im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
            im = im.resize((image_size, image_size), Image.Resampling.BILINEAR)
            return np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"{path}: not a readable image ({exc})") from None


def _image_files(folder: str) -> list[str]:
    return sorted(
        os.path.join(folder, f)
        for f in os.listdir(folder)
        if f.lower().endswith(IMAGE_SUFFIXES) and os.path.isfile(os.path.join(folder, f))
    )


def image_folder(path: str, *, image_size: int = 32) -> ImageData:
    """Images of a folder, centre-cropped square and resized to ``image_size``, as
    ``uint8 [N, 3, S, S]``. Labeled when the images sit in subfolders (one per class, named
    by the subfolder, as torchvision's ``ImageFolder``); unlabeled when they sit in ``path``
    itself. Raises ``FileNotFoundError`` for a missing folder and ``ValueError`` for one with
    no images."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such folder")
    if not os.path.isdir(path):
        raise ValueError(f"{path}: not a folder")
    if image_size < 1:
        raise ValueError(f"image_size: expected >= 1, got {image_size}")
    classes = sorted(
        d
        for d in os.listdir(path)
        if os.path.isdir(os.path.join(path, d)) and _image_files(os.path.join(path, d))
    )
    files: list[str] = []
    labels: list[int] = []
    for c, name in enumerate(classes):
        found = _image_files(os.path.join(path, name))
        files += found
        labels += [c] * len(found)
    if not files:
        files = _image_files(path)
    if not files:
        raise ValueError(f"{path}: no images found (looked for {', '.join(IMAGE_SUFFIXES)} files)")
    arr = np.stack([_read_image(f, image_size) for f in files])
    images = torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()
    y = torch.tensor(labels, dtype=torch.int64) if classes else None
    return ImageData(images, y, classes, os.path.basename(os.path.normpath(path)))


#: the photos' test region: the rightmost quarter of each (downscaled) photo's columns
PHOTOS_TEST_FRACTION = 0.25


def load_photos(
    split: str = "train",
    *,
    image_size: int = 32,
    n_train: int = 2048,
    downscale: int = 2,
    seed: int = 0,
) -> ImageData:
    """Square crops of scikit-learn's two colour sample photos (``load_sample_images()``:
    ``china.jpg`` and ``flower.jpg``, 427x640 RGB each), as ``uint8 [N, 3, S, S]`` with
    ``S = image_size``; the label is the photo (0 china, 1 flower).

    Each photo is first shrunk by ``downscale`` (PIL's antialiased bilinear resize; 2 gives
    213x320) so that a 32-pixel crop holds a recognisable piece of the scene. The split is by
    region, so no test crop overlaps a train crop: the rightmost ``PHOTOS_TEST_FRACTION`` of
    each photo's columns are the test region, the rest the train region.

    ``split``: ``"train"``: ``n_train`` crops at seeded random positions in the train regions
    (half from each photo); ``"test"``: every crop of a grid with stride ``S // 2`` over the
    test regions (96 crops at the defaults); ``"all"``: both."""
    if split not in ("train", "test", "all"):
        raise ValueError(f"split: expected 'train', 'test' or 'all', got {split!r}")
    if not isinstance(downscale, int) or downscale < 1:
        raise ValueError(f"downscale: expected a positive int, got {downscale!r}")
    if not isinstance(n_train, int) or n_train < 2:
        raise ValueError(f"n_train: expected an int >= 2, got {n_train!r}")
    try:
        from sklearn.datasets import load_sample_images
    except ImportError as exc:  # pragma: no cover - scikit-learn is in the demo and test extras
        raise RuntimeError(
            "the photos data needs scikit-learn: pip install 'pyssl-kernels[demo]'"
        ) from exc
    from PIL import Image

    photos = []
    for arr in load_sample_images().images:
        im = Image.fromarray(arr)
        w, h = im.size
        im = im.resize((w // downscale, h // downscale), Image.Resampling.BILINEAR)
        photos.append(torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1))
    s = image_size
    h, w = photos[0].shape[1:]
    cut = int(round(w * (1.0 - PHOTOS_TEST_FRACTION)))
    if not isinstance(s, int) or s < 4 or s > min(h, w - cut):
        raise ValueError(
            f"image_size: expected an int in [4, {min(h, w - cut)}] (the test region is "
            f"{h}x{w - cut} pixels), got {image_size!r}"
        )
    crops: list[Tensor] = []
    labels: list[int] = []
    if split in ("train", "all"):
        rng = np.random.default_rng(seed)
        for k, ph in enumerate(photos):
            count = n_train // 2 + (n_train % 2 if k == 0 else 0)
            ys = rng.integers(0, h - s + 1, count)
            xs = rng.integers(0, cut - s + 1, count)
            crops += [ph[:, y : y + s, x : x + s] for y, x in zip(ys, xs, strict=True)]
            labels += [k] * count
    if split in ("test", "all"):
        step = max(1, s // 2)
        for k, ph in enumerate(photos):
            for y in range(0, h - s + 1, step):
                for x in range(cut, w - s + 1, step):
                    crops.append(ph[:, y : y + s, x : x + s])
                    labels.append(k)
    images = torch.stack(crops).contiguous()
    return ImageData(images, torch.tensor(labels), ["china", "flower"], f"photos-{split}")


def load_images(
    data: str, *, split: str = "train", image_size: int = 32, seed: int = 0
) -> ImageData:
    """``"digits"`` (the split ``split`` of :func:`load_digits`), ``"photos"`` (the split
    ``split`` of :func:`load_photos`: crops of scikit-learn's colour sample photos) or an image
    folder path (all its images, whatever ``split``)."""
    if data == "digits":
        return load_digits(split, image_size=image_size, seed=seed)
    if data == "photos":
        return load_photos(split, image_size=image_size, seed=seed)
    return image_folder(data, image_size=image_size)
