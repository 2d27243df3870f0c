"""Colourisation (Zhang, Isola and Efros 2016, "Colorful Image Colorization"; Larsson et al.
2016): predict the colour of a photo from its lightness, a pretext task whose encoder learns
from unlabeled colour images.

Each view is converted to CIELAB with :func:`pyssl.ops.rgb_to_lab` (the compiled kernel); the
encoder sees the lightness ``L`` only and a small decoder predicts the chroma ``ab`` at the
encoder's resolution, upsampled bilinearly to the image (Zhang et al. also predict at 1/4
resolution and upsample).

Loss, published -> here:

* ``loss="l2"`` (the default): regression, the mean squared error of ``ab / 110`` (Zhang et
  al.'s "L2 regression" baseline). Cheap and stable; its known flaw is desaturation: the
  conditional mean of a multimodal colour distribution is greyish.
* ``loss="classification"``: Zhang et al.'s method proper: ``ab`` quantised on a grid of step
  10 restricted to the sRGB gamut (Q bins: 313 in the paper, where the gamut was measured on
  ImageNet; here the bins the sRGB cube reaches, computed once with the same kernel), each
  pixel's target soft-encoded over its 5 nearest bins with a Gaussian (sigma 5), cross-entropy
  weighted by class rebalancing ``w ∝ ((1 - λ) p̃ + λ / Q)^-1`` (λ = 0.5, ``p̃`` the empirical
  bin distribution smoothed by a Gaussian of sigma 5; here estimated on the first batches seen
  rather than the whole dataset, then frozen), and the annealed mean (T = 0.38) as prediction.

Backbone: any network with ``out_dim`` and ``forward_map(x) -> [B, C, h, w]`` (the
:class:`~pyssl.models.ResNet` family; :func:`pyssl.methods.build`'s default
:func:`~pyssl.models.resnet_digits` works). Its input is the grey image: ``(L - 50) / 50``
replicated to its ``in_channels``. ``Colorization.encoder`` is a :class:`LabEncoder` around it
that takes sRGB in [0, 1] (``images / 255``: :class:`FlipViews` declares mean 0, std 1) and
makes that input itself, so a linear probe or fine-tuning can feed it RGB like any encoder.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pyssl.methods.base import SSLMethod, check_positive
from pyssl.ops.colour import lab_to_rgb, rgb_to_lab

AB_SCALE = 110.0  # |a|, |b| <= ~110 over the sRGB gamut
LOSSES = ("l2", "classification")


class FlipViews:
    """The colourisation views: uint8 ``[B, 3, H, W]`` -> one float32 view in [0, 1] (mean 0,
    std 1: no normalisation, since :func:`~pyssl.ops.rgb_to_lab` needs sRGB in [0, 1]) with
    seeded random horizontal flips. No colour jitter (it would change the targets) and no
    crop (the data are already random crops)."""

    #: the evaluation transform that matches these views: ``x / 255``, mean 0, std 1
    mean = (0.0, 0.0, 0.0)
    std = (1.0, 1.0, 1.0)

    @property
    def views(self) -> list[FlipViews]:
        """One view, described by this object (``mean``/``std``), as pyssl's recipes do."""
        return [self]

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> list[Tensor]:
        if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(
                f"images: expected uint8 [B, 3, H, W] colour images, got "
                f"{getattr(images, 'shape', type(images).__name__)}"
            )
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        flip = torch.rand(x.shape[0], generator=generator) < 0.5
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        return [x.contiguous()]

    def __repr__(self) -> str:
        return "FlipViews()"


def ab_bins(step: float = 10.0) -> Tensor:
    """Centres ``[Q, 2]`` (float32, a then b) of the ``step``-grid ab bins that sRGB colours
    reach (a 64^3 sample of the RGB cube through :func:`rgb_to_lab`)."""
    v = torch.linspace(0, 1, 64)
    rgb = torch.stack(torch.meshgrid(v, v, v, indexing="ij")).reshape(3, 1, -1)
    ab = rgb_to_lab(rgb)[1:].reshape(2, -1).T
    cells = torch.unique(torch.round(ab / step), dim=0)
    return (cells * step).float()


def grey_input(rgb: Tensor, channels: int) -> Tensor:
    """The colourisation encoder's input for sRGB ``[B, 3, H, W]`` in [0, 1]: the lightness
    ``(L - 50) / 50`` (about [-1, 1]) replicated to ``channels``, float32."""
    L = rgb_to_lab(rgb.float())[:, :1]
    return ((L - 50.0) / 50.0).expand(-1, channels, -1, -1)


class LabEncoder(nn.Module):
    """The colourisation encoder as probes see it: sRGB ``[B, 3, H, W]`` in [0, 1] in (the
    views of :class:`FlipViews`, or ``images / 255``), the lightness through ``backbone``,
    features ``[B, out_dim]`` out. The colour is never looked at: the backbone only ever saw
    ``L``, so a probe must feed it the same.

    Attributes:
        backbone: the wrapped network (``forward_map``, ``out_dim``, ``in_channels``).
    """

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        if not isinstance(backbone, nn.Module) or not callable(
            getattr(backbone, "forward_map", None)
        ):
            raise TypeError(
                "encoder: colourisation needs a backbone with forward_map(x) -> [B, C, h, w] "
                "(e.g. pyssl.models.resnet_digits)"
            )
        out_dim = getattr(backbone, "out_dim", None)
        if not isinstance(out_dim, int) or out_dim < 1:
            raise TypeError("encoder: expected a positive int out_dim")
        self.backbone = backbone
        self.out_dim = out_dim
        self.in_channels = int(getattr(backbone, "in_channels", 1))

    def forward_map(self, rgb: Tensor) -> Tensor:
        """The backbone's feature map ``[B, out_dim, h, w]`` of the lightness of ``rgb``."""
        return self.backbone.forward_map(grey_input(rgb, self.in_channels))  # type: ignore[operator]

    def forward(self, rgb: Tensor) -> Tensor:
        """Globally average-pooled features ``[B, out_dim]``."""
        return self.forward_map(rgb).mean((2, 3))


class Colorization(SSLMethod):
    """Colourisation: ``loss([rgb])`` with ``rgb`` float ``[B, 3, H, W]`` in [0, 1].

    Args:
        encoder: backbone with ``out_dim`` and ``forward_map`` (e.g. a
            :class:`~pyssl.models.ResNet`); its ``in_channels`` (1 or 3) take the grey image.
        loss: ``"l2"`` (regression of ab) or ``"classification"`` (Zhang et al.'s
            rebalanced cross-entropy over quantised ab).
        hidden: decoder width.
        temperature: the annealed-mean temperature of the classification head (0.38).
        rebalance: the λ of the class rebalancing (0.5); 1 turns rebalancing off.
    """

    name = "colorization"
    num_views = 1
    bins: Tensor  # [Q, 2] ab bin centres (classification)
    class_weights: Tensor  # [Q] rebalancing weights, E_prior[w] = 1
    prior: Tensor  # [Q] empirical bin distribution of the batches seen
    prior_seen: Tensor  # batches the prior was estimated on

    encoder: LabEncoder

    def __init__(
        self,
        encoder: nn.Module,
        *,
        loss: str = "l2",
        hidden: int = 128,
        temperature: float = 0.38,
        rebalance: float = 0.5,
    ) -> None:
        super().__init__()
        self.encoder = encoder if isinstance(encoder, LabEncoder) else LabEncoder(encoder)
        out_dim = self.encoder.out_dim
        if loss not in LOSSES:
            raise ValueError(f"loss: expected one of {LOSSES}, got {loss!r}")
        check_positive("hidden", hidden, integer=True)
        check_positive("temperature", temperature)
        if isinstance(rebalance, bool) or not isinstance(rebalance, (int, float)):
            raise TypeError(f"rebalance: expected a float in (0, 1], got {rebalance!r}")
        if not 0.0 < rebalance <= 1.0:
            raise ValueError(f"rebalance: expected a float in (0, 1], got {rebalance!r}")
        self.in_channels = self.encoder.in_channels
        self.loss_type = loss
        self.temperature = float(temperature)
        self.rebalance = float(rebalance)
        if loss == "classification":
            self.register_buffer("bins", ab_bins())
            q = int(self.bins.shape[0])
            self.register_buffer("class_weights", torch.ones(q))
            self.register_buffer("prior", torch.zeros(q))
            self.register_buffer("prior_seen", torch.zeros((), dtype=torch.long))
        else:
            q = 2
        self.decoder = nn.Sequential(
            nn.Conv2d(out_dim, hidden, 3, 1, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            nn.Conv2d(hidden, hidden // 2, 3, 1, 1, bias=False),
            nn.BatchNorm2d(hidden // 2),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden // 2, q, 1),
        )

    # ------------------------------------------------------------------------------ pieces

    def encoder_input(self, rgb: Tensor) -> Tensor:
        """The backbone's input for sRGB ``[B, 3, H, W]`` in [0, 1]: ``(L - 50) / 50``
        replicated to ``in_channels``, float32 (:func:`grey_input`)."""
        return grey_input(rgb, self.in_channels)

    def _head(self, lum: Tensor, size: tuple[int, int]) -> Tensor:
        x = self.decoder(self.encoder.backbone.forward_map(lum))  # type: ignore[operator]
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)

    @torch.no_grad()
    def predict_ab(self, rgb: Tensor) -> Tensor:
        """Predicted ``ab`` ``[B, 2, H, W]`` (float32, CIELAB units) for the lightness of sRGB
        ``[B, 3, H, W]`` in [0, 1] (its colour is not looked at)."""
        out = self._head(self.encoder_input(rgb), (rgb.shape[-2], rgb.shape[-1])).float()
        if self.loss_type == "l2":
            return out * AB_SCALE
        prob = torch.softmax(out / self.temperature, dim=1)  # annealed mean
        return torch.einsum("bqhw,qc->bchw", prob, self.bins)

    @torch.no_grad()
    def colorize(self, rgb: Tensor) -> Tensor:
        """sRGB ``[B, 3, H, W]`` in [0, 1]: the input's L with the predicted ab."""
        L = rgb_to_lab(rgb.float())[:, :1]
        return lab_to_rgb(torch.cat([L, self.predict_ab(rgb)], 1))

    # -------------------------------------------------------------------------------- loss

    def loss(self, views: list[Tensor]) -> Tensor:
        (x,) = self._check_views(views)
        if x.shape[1] != 3:
            raise ValueError(f"views[0]: colourisation needs RGB views, got {x.shape[1]} channels")
        with torch.autocast(x.device.type, enabled=False):
            lab = rgb_to_lab(x.float())
        L, ab = lab[:, :1], lab[:, 1:]
        lum = ((L - 50.0) / 50.0).expand(-1, self.in_channels, -1, -1)
        out = self._head(lum, (x.shape[-2], x.shape[-1])).float()
        if self.loss_type == "l2":
            return F.mse_loss(out, ab / AB_SCALE)
        return self._classification_loss(out, ab)

    def _soft_targets(self, ab: Tensor) -> Tensor:
        """``[B, Q, H, W]`` soft encoding: the 5 nearest bins, Gaussian weights (sigma 5)."""
        b, _, h, w = ab.shape
        pts = ab.permute(0, 2, 3, 1).reshape(-1, 2)
        d2 = torch.cdist(pts, self.bins) ** 2
        near, idx = d2.topk(5, dim=1, largest=False)
        wts = torch.softmax(-near / (2 * 5.0**2), dim=1)
        tgt = torch.zeros_like(d2).scatter_(1, idx, wts)
        return tgt.reshape(b, h, w, -1).permute(0, 3, 1, 2)

    def _classification_loss(self, logits: Tensor, ab: Tensor) -> Tensor:
        tgt = self._soft_targets(ab)
        if self.training and int(self.prior_seen) < 8:  # estimate the prior on 8 batches
            self._update_weights(tgt)
        nearest = tgt.argmax(1)  # [B, H, W]
        w = self.class_weights[nearest]
        ce = -(tgt * F.log_softmax(logits, dim=1)).sum(1)
        return (w * ce).sum() / w.sum()

    @torch.no_grad()
    def _update_weights(self, tgt: Tensor) -> None:
        n = int(self.prior_seen)
        hist = tgt.sum((0, 2, 3))
        hist = hist / hist.sum()
        # running mean of the bin distribution over the batches seen so far
        self.prior.mul_(n / (n + 1)).add_(hist / (n + 1))
        self.prior_seen += 1
        prior = self.prior
        # smooth over the ab plane (Gaussian, sigma 5), mix with uniform, invert, E[w] = 1
        d2 = torch.cdist(self.bins, self.bins) ** 2
        k = torch.exp(-d2 / (2 * 5.0**2))
        smooth = (k @ prior) / k.sum(1)
        smooth = smooth / smooth.sum()
        q = int(self.bins.shape[0])
        w = 1.0 / ((1.0 - self.rebalance) * smooth + self.rebalance / q)
        self.class_weights.copy_(w / (w * smooth).sum())

    def default_augment(self, image_size: int, channels: int) -> Callable[..., list[Tensor]]:
        if channels != 3:
            raise ValueError(
                f"channels: colourisation needs colour (3-channel) images, got {channels}"
            )
        check_positive("image_size", image_size, integer=True)
        return FlipViews()


# ------------------------------------------------------------------------ study and figure


def _rgb01(images: Tensor) -> Tensor:
    if images.dtype == torch.uint8:
        return images.float() / 255.0
    return images.float()


def _metrics(pred_ab: Tensor, lab: Tensor, rgb: Tensor) -> dict[str, float]:
    ab = lab[:, 1:]
    err = pred_ab - ab
    col = lab_to_rgb(torch.cat([lab[:, :1], pred_ab], 1))
    mse = float(((col - rgb) ** 2).mean())
    return {
        "ab_mae": float(err.abs().mean()),
        "ab_rmse": float(err.pow(2).mean().sqrt()),
        "psnr": 10.0 * math.log10(1.0 / max(mse, 1e-12)),
    }


@torch.no_grad()
def colorization_study(
    method: Colorization, test_images: Tensor, train_images: Tensor | None = None
) -> dict[str, Any]:
    """Held-out numbers: ab MAE and RMSE (CIELAB units) and the PSNR (dB) of the colourised
    image against the truth, for the model and two baselines: ``zero`` (predict ab = 0: the
    grey image) and ``mean`` (the mean ab of ``train_images``, or of ``test_images`` when none
    is given: an optimistic baseline then).

    Args:
        test_images: uint8 ``[N, 3, H, W]`` or float in [0, 1].
        train_images: the same, for the mean baseline.
    """
    if not isinstance(method, Colorization):
        raise TypeError(f"method: expected a Colorization, got {type(method).__name__}")
    rgb = _rgb01(test_images)
    was = method.training
    method.eval()
    try:
        lab = rgb_to_lab(rgb)
        pred = torch.cat([method.predict_ab(rgb[i : i + 256]) for i in range(0, len(rgb), 256)])
    finally:
        method.train(was)
    src = lab if train_images is None else rgb_to_lab(_rgb01(train_images))
    mean_ab = src[:, 1:].mean((0, 2, 3)).view(1, 2, 1, 1)
    return {
        "model": _metrics(pred, lab, rgb),
        "zero": _metrics(torch.zeros_like(pred), lab, rgb),
        "mean": _metrics(mean_ab.expand_as(pred), lab, rgb),
        "mean_ab": [float(v) for v in mean_ab.flatten()],
        "n_test": int(rgb.shape[0]),
        "loss": method.loss_type,
    }


@torch.no_grad()
def colorization_figure(method: Colorization, images: Tensor, path: str, *, n: int = 8) -> None:
    """Writes a PNG grid to ``path``: for ``n`` of ``images`` (uint8 ``[N, 3, H, W]`` or float
    in [0, 1]; held-out crops), the input lightness (grey), the prediction (the input's L with
    the predicted ab) and the truth, one row each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not isinstance(method, Colorization):
        raise TypeError(f"method: expected a Colorization, got {type(method).__name__}")
    rgb = _rgb01(images)[:n]
    n = rgb.shape[0]
    if n == 0:
        raise ValueError("images: no images to show")
    was = method.training
    method.eval()
    try:
        pred = method.colorize(rgb)
    finally:
        method.train(was)
    L = rgb_to_lab(rgb)[:, :1]
    grey = lab_to_rgb(torch.cat([L, torch.zeros_like(L).expand(-1, 2, -1, -1)], 1))
    rows = [("input L", grey), ("prediction", pred), ("truth", rgb)]
    fig, axes = plt.subplots(3, n, figsize=(1.4 * n, 4.6), squeeze=False)
    for r, (title, batch) in enumerate(rows):
        for c in range(n):
            ax = axes[r][c]
            ax.imshow(batch[c].permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """``python -m pyssl.methods.colorization --steps 600 --out docs``: pretrains on the photos'
    train crops, writes ``colorization.png`` (held-out crops) and ``colorization.json`` (the
    study) into ``--out`` and returns the study."""
    import argparse
    import json
    import os
    import tempfile
    import time

    from pyssl.data.images import load_photos
    from pyssl.models import resnet_digits
    from pyssl.train.loop import PretrainConfig, pretrain

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--loss", choices=LOSSES, default="l2")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="docs")
    a = ap.parse_args(argv)
    torch.manual_seed(a.seed)
    train = load_photos("train", image_size=a.size, seed=a.seed)
    test = load_photos("test", image_size=a.size)
    method = Colorization(resnet_digits(1, width=a.width), loss=a.loss, hidden=4 * a.width)
    cfg = PretrainConfig(
        steps=a.steps, batch_size=a.batch, lr=a.lr, precision="fp32", seed=a.seed, progress=False
    )
    t0 = time.perf_counter()
    pretrain(method, train, cfg, tempfile.mkdtemp(prefix="pyssl-colorization-"))
    study = colorization_study(method, test.images, train.images)
    study.update(
        steps=a.steps, batch=a.batch, size=a.size, width=a.width, lr=a.lr, seed=a.seed,
        n_train=len(train), train_seconds=round(time.perf_counter() - t0, 1),
    )  # fmt: skip
    os.makedirs(a.out, exist_ok=True)
    suffix = "" if a.loss == "l2" else f"-{a.loss}"
    # a fixed, spread-out choice of held-out crops: both photos, several regions
    pick = torch.linspace(0, len(test) - 1, 10).round().long()
    colorization_figure(
        method, test.images[pick], os.path.join(a.out, f"colorization{suffix}.png"), n=10
    )
    with open(os.path.join(a.out, f"colorization{suffix}.json"), "w") as fh:
        json.dump(study, fh, indent=2)
    print(json.dumps(study, indent=2))
    return study


if __name__ == "__main__":
    main()


__all__ = [
    "Colorization",
    "FlipViews",
    "LabEncoder",
    "grey_input",
    "ab_bins",
    "colorization_figure",
    "colorization_study",
]
