"""MNIST-1D (Greydanus 2020, "Scaling down Deep Learning", arXiv:2011.14439), generated locally.

Anchor: ``mnist1d`` (github.com/greydanus/mnist1d, PyPI 0.0.2, Apache-2.0) ``data.py``
``get_templates`` / ``make_dataset`` and ``transform.py`` ``transform``: ten 12-point digit
templates, each sample padded with 36..60 zeros, stretched to 72 points, scaled, translated
(circularly, 0..47 steps), its padding filled with Gaussian-smoothed noise, iid noise added,
sheared and resampled to 40 points; the whole set centred and scaled to unit std, the first
``train_split`` of a seeded shuffle for training.

This port draws the same random numbers in the same order from a ``np.random.RandomState``
seeded like the package's ``set_seed`` (which seeds the global numpy state), so with the same
arguments it reproduces ``mnist1d.data.make_dataset`` bit for bit (the same float64 arithmetic:
``np.interp``'s, which the package's ``interp1d`` delegates to, and scipy's Gaussian filter).
The deterministic work (interpolations, filtering, shear) runs on the whole batch at once; only
the draws stay a per-sample loop: the default 5,000 samples take about 0.1 s instead of about
0.7 s. Deliberate differences: no global RNG state is touched, and the output is
``float32 [N, 1, 40]`` (the package: ``float64 [N, 40]``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

#: the package's ``get_dataset_args()`` defaults (its ``url`` omitted: nothing is downloaded)
DEFAULTS: dict[str, object] = {
    "num_samples": 5000,
    "train_split": 0.8,
    "template_len": 12,
    "padding": (36, 60),
    "scale_coeff": 0.4,
    "max_translation": 48,
    "corr_noise_scale": 0.25,
    "iid_noise_scale": 2e-2,
    "shear_scale": 0.75,
    "shuffle_seq": False,
    "final_seq_length": 40,
    "seed": 42,
}


@dataclass
class SeriesData:
    """Time series ``float32 [N, C, T]`` with optional labels ``int64 [N]`` and the class names
    the labels index (the third data kind of :func:`pyssl.train.pretrain`, beside ``ImageData``
    and ``TextData``). ``t``: the time (x) coordinate of each of the ``T`` points, if known."""

    x: Tensor
    labels: Tensor | None
    classes: list[str]
    name: str
    t: Tensor | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.x, Tensor) or self.x.dim() != 3 or not self.x.is_floating_point():
            raise ValueError(
                "x: expected a float [N, C, T] tensor, got "
                + (f"{self.x.dtype} {list(self.x.shape)}" if isinstance(self.x, Tensor) else "")
                + ("" if isinstance(self.x, Tensor) else type(self.x).__name__)
            )
        if self.labels is not None and (
            self.labels.dtype != torch.int64 or self.labels.shape != (self.x.shape[0],)
        ):
            raise ValueError(f"labels: expected int64 [{self.x.shape[0]}]")

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def subset(self, index: Tensor) -> SeriesData:
        """The rows ``index`` (an int64 tensor), as a new SeriesData."""
        labels = None if self.labels is None else self.labels[index]
        return SeriesData(self.x[index], labels, self.classes, self.name, self.t)


def templates() -> tuple[np.ndarray, np.ndarray]:
    """The ten digit templates ``x`` ``[10, 12]`` and their time axis ``t`` ``[12]``, as the
    package's ``get_templates``: whitened per digit, shifted to start at 0, divided by 6."""
    d = np.asarray(
        [
            [5, 6, 6.5, 6.75, 7, 7, 7, 7, 6.75, 6.5, 6, 5],
            [5, 3, 3, 3.4, 3.8, 4.2, 4.6, 5, 5.4, 5.8, 5, 5],
            [5, 6, 6.5, 6.5, 6, 5.25, 4.75, 4, 3.5, 3.5, 4, 5],
            [5, 6, 6.5, 6.5, 6, 5, 5, 6, 6.5, 6.5, 6, 5],
            [5, 4.4, 3.8, 3.2, 2.6, 2.6, 5, 5, 5, 5, 5, 5],
            [5, 3, 3, 3, 3, 5, 6, 6.5, 6.5, 6, 4.5, 5],
            [5, 4, 3.5, 3.25, 3, 3, 3, 3, 3.25, 3.5, 4, 5],
            [5, 7, 7, 6.6, 6.2, 5.8, 5.4, 5, 4.6, 4.2, 5, 5],
            [5, 4, 3.5, 3.5, 4, 5, 5, 4, 3.5, 3.5, 4, 5],
            [5, 4, 3.5, 3.5, 4, 5, 5, 5, 5, 4.7, 4.3, 5],
        ]
    )
    d -= d.mean(1, keepdims=True)
    d /= d.std(1, keepdims=True)
    d -= d[:, :1]
    return d / 6.0, np.linspace(-5, 5, d.shape[1]) / 6.0


def _interp_rows(x: np.ndarray, n_out: int) -> np.ndarray:
    """Each row of ``x`` ``[B, L]`` resampled from ``linspace(0, 1, L)`` to
    ``linspace(0, 1, n_out)``, with the arithmetic of ``np.interp`` (which the package's
    ``scipy.interpolate.interp1d(kind="linear")`` delegates to for 1-D float64 data): the left
    bracket ``j`` with ``src[j] <= t``, ``y[j]`` exactly where ``t`` is a grid point, else
    ``slope * (t - src[j]) + y[j]``."""
    length = x.shape[-1]
    src, dst = np.linspace(0, 1, length), np.linspace(0, 1, n_out)
    if length == 1:
        return np.repeat(x, n_out, axis=-1)
    j = np.clip(np.searchsorted(src, dst, side="right") - 1, 0, length - 2)
    on_grid = src[j] == dst
    last = dst == src[-1]
    y_lo, y_hi = x[..., j], x[..., j + 1]
    slope = (y_hi - y_lo) / (src[j + 1] - src[j])
    out = slope * (dst - src[j]) + y_lo
    out = np.where(on_grid, y_lo, out)
    return np.where(last, x[..., -1:], out)


def make_dataset(**overrides: object) -> dict[str, np.ndarray]:
    """MNIST-1D as the package's ``make_dataset(args)`` returns it: a dict with ``x`` ``[n, L]``,
    ``y`` ``[n]``, ``x_test``, ``y_test`` (float64 / int64) and ``t`` ``[L]``, for
    :data:`DEFAULTS` updated by ``overrides`` (e.g. ``num_samples=10000``). Raises ``TypeError`` /
    ``ValueError`` naming a bad argument."""
    unknown = sorted(set(overrides) - set(DEFAULTS))
    if unknown:
        raise TypeError(
            f"{unknown[0]}: unknown MNIST-1D argument; expected some of {list(DEFAULTS)}"
        )
    a = {**DEFAULTS, **overrides}
    for k in ("num_samples", "template_len", "max_translation", "final_seq_length", "seed"):
        v = a[k]
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"{k}: expected an int, got {type(v).__name__}")
    if int(a["num_samples"]) < 10:  # type: ignore[call-overload]
        raise ValueError(f"num_samples: expected >= 10 (one per class), got {a['num_samples']}")
    if int(a["final_seq_length"]) < 2 or int(a["max_translation"]) < 1:  # type: ignore[call-overload]
        raise ValueError("final_seq_length: expected >= 2 and max_translation >= 1")
    split: Any = a["train_split"]
    if isinstance(split, bool) or not isinstance(split, (int, float)) or not 0 < split < 1:
        raise ValueError(f"train_split: expected a float in (0, 1), got {split!r}")
    pad_lo, pad_hi = (int(p) for p in a["padding"])  # type: ignore[attr-defined]
    if not 0 <= pad_lo <= pad_hi:
        raise ValueError(f"padding: expected (low, high) with 0 <= low <= high, got {a['padding']}")
    if int(a["template_len"]) != 12:  # type: ignore[call-overload]
        raise ValueError("template_len: the digit templates have 12 points")
    for k in ("scale_coeff", "corr_noise_scale", "iid_noise_scale", "shear_scale"):
        num: Any = a[k]
        if isinstance(num, bool) or not isinstance(num, (int, float)) or num < 0:
            raise ValueError(f"{k}: expected a number >= 0, got {num!r}")

    from scipy.ndimage import gaussian_filter1d

    tx, tt = templates()
    n_cls = tx.shape[0]
    per_class = int(a["num_samples"]) // n_cls  # type: ignore[call-overload]
    n = per_class * n_cls
    width = 12 + pad_hi  # template_len + padding[-1]
    rs = np.random.RandomState(int(a["seed"]))  # type: ignore[call-overload]
    labels = np.repeat(np.arange(n_cls), per_class)
    # The draws of transform(), sample by sample in the package's order (they interleave, and
    # the Gaussian and bounded-integer samplers consume a variable amount of the stream).
    pads = np.empty(n, np.int64)
    scales = np.empty(n)
    shifts = np.empty(n, np.int64)
    corr = np.empty((n, width))
    iid = np.empty((n, width))
    shears = np.empty(n)
    span = pad_hi - pad_lo + 1
    max_translation = int(a["max_translation"])  # type: ignore[call-overload]
    for i in range(n):
        pads[i] = pad_lo + int(rs.rand() * span)
        scales[i] = rs.rand()
        shifts[i] = rs.choice(max_translation)
        corr[i] = rs.randn(width)
        iid[i] = rs.randn(width)
        shears[i] = rs.rand()
    shuffle = rs.permutation(n)

    # pad (template + eps, then zeros) and stretch to `width` points, grouped by padded length
    x = np.empty((n, width))
    for p in np.unique(pads):
        rows = np.flatnonzero(pads == p)
        padded = np.concatenate([tx[labels[rows]] + 1e-8, np.zeros((len(rows), p))], axis=1)
        x[rows] = _interp_rows(padded, width)
    x *= 1 + a["scale_coeff"] * (scales[:, None] - 0.5)  # type: ignore[operator]
    # translate: concatenate([x[-k:], x[:-k]]) is a roll by k for 0 <= k < width, and leaves
    # x as it is for k >= width (possible when max_translation exceeds the padded length)
    shifts = np.where(shifts < width, shifts, 0)
    x = x[np.arange(n)[:, None], (np.arange(width)[None, :] - shifts[:, None]) % width]
    mask = x != 0
    smooth = gaussian_filter1d(a["corr_noise_scale"] * corr, 2, axis=1)  # type: ignore[operator]
    x = mask * x + (1 - mask) * smooth
    x = x + a["iid_noise_scale"] * iid  # type: ignore[operator]
    coeff = a["shear_scale"] * (shears - 0.5)  # type: ignore[operator]
    x = x - coeff[:, None] * np.linspace(-0.5, 0.5, width)
    seq_len = int(a["final_seq_length"])  # type: ignore[call-overload]
    x = _interp_rows(x, seq_len)
    new_t = _interp_rows(_interp_rows(tt[None], width), seq_len)[0]

    x, y = x[shuffle], labels[shuffle]
    if a["shuffle_seq"]:
        x = x[:, rs.permutation(seq_len)]
    new_t = new_t / x.std()
    x = (x - x.mean()) / x.std()
    cut = int(n * split)
    return {"x": x[:cut], "x_test": x[cut:], "y": y[:cut], "y_test": y[cut:], "t": new_t}


def load_mnist1d(split: str = "train", **overrides: object) -> SeriesData:
    """MNIST-1D's ``split`` (``"train"``: the first ``train_split`` = 80% of the seeded
    shuffle, 4,000 of the default 5,000 samples; ``"test"``: the remaining 1,000) as
    ``SeriesData`` ``float32 [N, 1, 40]``, labels ``int64`` 0..9. ``overrides`` are
    :func:`make_dataset`'s (e.g. ``num_samples=10000`` for the larger variant)."""
    if split not in ("train", "test"):
        raise ValueError(f"split: expected 'train' or 'test', got {split!r}")
    d = make_dataset(**overrides)
    x, y = (d["x"], d["y"]) if split == "train" else (d["x_test"], d["y_test"])
    n_total = len(d["y"]) + len(d["y_test"])
    return SeriesData(
        torch.from_numpy(x.astype(np.float32))[:, None].contiguous(),
        torch.from_numpy(y.astype(np.int64)),
        [str(i) for i in range(10)],
        f"mnist1d-{n_total}-{split}",
        torch.from_numpy(d["t"].astype(np.float32)),
    )
