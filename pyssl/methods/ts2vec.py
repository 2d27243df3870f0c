"""TS2Vec (Yue et al. 2022, "TS2Vec: Towards Universal Representation of Time Series", AAAI).

Anchor: github.com/zhihanyue/ts2vec ``ts2vec.py`` ``TS2Vec.fit`` and ``models/losses.py``. Per
batch of series ``[B, C, T]``: one random overlap ``[crop_left, crop_right)`` of length
``crop_l`` (uniform in ``[2**(temporal_unit + 1), T]``), two enclosing windows
``[crop_eleft, crop_right)`` and ``[crop_left, crop_eright)`` shifted per series by a random
offset (kept inside the series), each window through the encoder with its own timestamp mask
(Bernoulli keep, p = 0.5, on the input projection's output); the representations of the overlap
(the last ``crop_l`` steps of view 1, the first ``crop_l`` of view 2) go into the hierarchical
loss: at each max-pool scale (kernel 2 over time, down to one step) ``alpha * instance +
(1 - alpha) * temporal``, averaged over the scales.

Both losses are NT-Xent on raw dot products at temperature 1, which is what TS2Vec's
``tril``/``triu`` construction computes (verified against :mod:`pyssl.reference.ts2vec` in
the tests): the instance loss at timestamp ``t`` is ``nt_xent(z1[:, t], z2[:, t])`` over the 2B
views, the temporal loss of series ``b`` is ``nt_xent(z1[b], z2[b])`` over its 2T timestamps;
they run on :func:`pyssl.ops.contrastive.nt_xent` with ``normalize=False, temperature=1``. That
op takes one ``[N, D]`` group per call, so a scale costs ``T + B`` calls (about 80 at MNIST-1D's
length and batch 8): a Python loop whose overhead is a few ms a step here. A grouped
``[G, N, D]`` variant of the op would make it one call per scale.

Defaults, published -> here: alpha 0.5, temporal_unit 0, mask p 0.5, batch 8, lr 1e-3
(AdamW, constant), 600 iterations for a training set of more than 100k values, as published.
TS2Vec keeps a running equal-weight average of the weights (``AveragedModel``, SWA) and encodes
with it: ``swa=True`` keeps it in ``averaged`` (updated in :meth:`on_step_end`), and
:meth:`probe_encoder` returns it. Deliberate differences: the crops and masks are drawn from a
``torch.Generator`` (the loop passes a seed per step, see :meth:`TS2Vec.loss`), not numpy's
global state; no splitting of series longer than ``max_train_length``; no NaN handling.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pyssl.methods.base import SSLMethod, check_unit, feature_dim
from pyssl.ops.contrastive import nt_xent


def _nt(a: Tensor, b: Tensor, backend: str | None) -> Tensor:
    return nt_xent(a, b, temperature=1.0, normalize=False, backend=backend)


def instance_loss(z1: Tensor, z2: Tensor, *, backend: str | None = None) -> Tensor:
    """TS2Vec's ``instance_contrastive_loss`` of ``z1``, ``z2`` ``[B, T, D]``: the mean over
    the ``T`` timestamps of NT-Xent (raw dot products, temperature 1) over the 2B views; 0 for
    ``B = 1``. One grouped :func:`~pyssl.ops.contrastive.nt_xent` call, a group per
    timestamp."""
    if z1.shape[0] == 1:
        return z1.new_zeros((), dtype=torch.float64 if z1.dtype == torch.float64 else None)
    return _nt(z1.transpose(0, 1).contiguous(), z2.transpose(0, 1).contiguous(), backend)


def temporal_loss(z1: Tensor, z2: Tensor, *, backend: str | None = None) -> Tensor:
    """TS2Vec's ``temporal_contrastive_loss`` of ``z1``, ``z2`` ``[B, T, D]``: the mean over the
    ``B`` series of NT-Xent over the 2T timestamps of the two views; 0 for ``T = 1``. One
    grouped :func:`~pyssl.ops.contrastive.nt_xent` call, a group per series."""
    if z1.shape[1] == 1:
        return z1.new_zeros((), dtype=torch.float64 if z1.dtype == torch.float64 else None)
    return _nt(z1, z2, backend)


def hierarchical_loss(
    z1: Tensor,
    z2: Tensor,
    *,
    alpha: float = 0.5,
    temporal_unit: int = 0,
    backend: str | None = None,
) -> Tensor:
    """TS2Vec's ``hierarchical_contrastive_loss`` of the overlap's representations ``z1``,
    ``z2`` ``[B, T, D]`` (same shape, float): the sum over max-pool scales (kernel 2 over time,
    a trailing odd step dropped, until length 1) of ``alpha * instance_loss +
    (1 - alpha) * temporal_loss`` (the temporal term from scale ``temporal_unit`` on), divided by
    the number of scales. Returns a float32 scalar (float64 for float64 inputs)."""
    for name, z in (("z1", z1), ("z2", z2)):
        if not isinstance(z, Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(z).__name__}")
        if z.dim() != 3 or not z.is_floating_point() or 0 in z.shape:
            raise ValueError(
                f"{name}: expected a non-empty float [B, T, D] tensor, got {z.dtype} "
                f"{tuple(z.shape)}"
            )
    if z1.shape != z2.shape:
        raise ValueError(f"z2: shape {tuple(z2.shape)} differs from z1's {tuple(z1.shape)}")
    check_unit("alpha", alpha, closed=True)
    if isinstance(temporal_unit, bool) or not isinstance(temporal_unit, int) or temporal_unit < 0:
        raise ValueError(f"temporal_unit: expected an int >= 0, got {temporal_unit!r}")
    terms: list[Tensor] = []
    d = 0
    while True:
        last = z1.shape[1] == 1
        if alpha != 0:
            terms.append(alpha * instance_loss(z1, z2, backend=backend))
        if not last and d >= temporal_unit and alpha != 1:
            terms.append((1 - alpha) * temporal_loss(z1, z2, backend=backend))
        d += 1
        if last:
            break
        z1 = F.max_pool1d(z1.transpose(1, 2), kernel_size=2).transpose(1, 2)
        z2 = F.max_pool1d(z2.transpose(1, 2), kernel_size=2).transpose(1, 2)
    if not terms:  # alpha == 0 on a single step: TS2Vec's loss is 0 too
        return z1.new_zeros(()).float() if z1.dtype != torch.float64 else z1.new_zeros(())
    return torch.stack([t.to(terms[0].dtype) for t in terms]).sum() / d


def sample_crops(
    batch: int, length: int, generator: torch.Generator | None = None, temporal_unit: int = 0
) -> tuple[int, int, int, int, int, Tensor]:
    """TS2Vec's random cropping (``TS2Vec.fit``), drawn from ``generator``: returns
    ``(crop_l, crop_left, crop_right, crop_eleft, crop_eright, offsets)`` with
    ``crop_l ~ U[2**(temporal_unit+1), length]``, ``crop_left ~ U[0, length - crop_l]``,
    ``crop_right = crop_left + crop_l``, ``crop_eleft ~ U[0, crop_left]``,
    ``crop_eright ~ U[crop_right, length]`` and per-series ``offsets`` int64 ``[batch]``
    ``~ U[-crop_eleft, length - crop_eright]``. View 1 is ``[offset + crop_eleft, offset +
    crop_right)``, view 2 ``[offset + crop_left, offset + crop_eright)``: both inside the series,
    and they share the ``crop_l`` steps ``[offset + crop_left, offset + crop_right)``."""
    lo = 2 ** (temporal_unit + 1)
    if length < lo:
        raise ValueError(f"length: TS2Vec's crops need series of at least {lo} steps, got {length}")

    def randint(low: int, high: int) -> int:  # numpy's randint(low, high): [low, high)
        return int(torch.randint(low, high, (1,), generator=generator))

    crop_l = randint(lo, length + 1)
    crop_left = randint(0, length - crop_l + 1)
    crop_right = crop_left + crop_l
    crop_eleft = randint(0, crop_left + 1)
    crop_eright = randint(crop_right, length + 1)
    offsets = torch.randint(-crop_eleft, length - crop_eright + 1, (batch,), generator=generator)
    return crop_l, crop_left, crop_right, crop_eleft, crop_eright, offsets


def take_per_row(x: Tensor, start: Tensor, num: int) -> Tensor:
    """``x`` ``[B, C, T]``: row ``b``'s steps ``[start[b], start[b] + num)`` -> ``[B, C, num]``
    (TS2Vec's ``take_per_row`` in the channels-first layout)."""
    idx = start[:, None].to(x.device) + torch.arange(num, device=x.device)  # B x num
    return torch.gather(x, 2, idx[:, None, :].expand(-1, x.shape[1], -1))


class TS2Vec(SSLMethod):
    """TS2Vec: hierarchical contrastive learning over two overlapping random crops with
    timestamp masking.

    Args:
        encoder: a :class:`~pyssl.models.tcn.TSEncoder` (or any module with ``out_dim`` and
            ``series(x [B, C, T], mask [B, T] bool) -> [B, T, D]``).
        alpha: weight of the instance loss (temporal: ``1 - alpha``), 0.5 as published.
        temporal_unit: first scale with a temporal loss; crops are at least
            ``2**(temporal_unit + 1)`` long (0 as published).
        mask_p: probability that a timestamp is kept (TS2Vec's binomial mask, 0.5).
        swa: keep TS2Vec's equal-weight running average of the encoder (``averaged``).
        backend: the contrastive op's backend (``None``: by device).
    """

    name = "ts2vec"
    modality = "series"

    def __init__(
        self,
        encoder: nn.Module,
        *,
        alpha: float = 0.5,
        temporal_unit: int = 0,
        mask_p: float = 0.5,
        swa: bool = True,
        backend: str | None = None,
    ) -> None:
        super().__init__()
        feature_dim(encoder)
        if not callable(getattr(encoder, "series", None)):
            raise TypeError("encoder: expected a module with series(x, mask) -> [B, T, D]")
        check_unit("alpha", alpha, closed=True)
        check_unit("mask_p", mask_p, closed=True)
        if isinstance(temporal_unit, bool) or not isinstance(temporal_unit, int):
            raise TypeError(f"temporal_unit: expected an int, got {type(temporal_unit).__name__}")
        if temporal_unit < 0:
            raise ValueError(f"temporal_unit: expected >= 0, got {temporal_unit}")
        self.encoder = encoder
        self.alpha = float(alpha)
        self.temporal_unit = temporal_unit
        self.mask_p = float(mask_p)
        self.backend = backend
        self.averaged: nn.Module | None = None
        if swa:
            self.averaged = copy.deepcopy(encoder)
            for p in self.averaged.parameters():
                p.requires_grad_(False)
            # AveragedModel right after creation holds one model: the initial weights
            self.register_buffer("n_averaged", torch.ones((), dtype=torch.int64))

    def views(
        self, x: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, int]:
        """The two crops of ``x`` ``[B, C, T]``, their keep-masks ``[B, T1]``, ``[B, T2]`` and
        the overlap length ``crop_l``, drawn from ``generator``."""
        b, _, length = x.shape
        crop_l, left, right, eleft, eright, off = sample_crops(
            b, length, generator, self.temporal_unit
        )
        x1 = take_per_row(x, off + eleft, right - eleft)
        x2 = take_per_row(x, off + left, eright - left)
        m1 = torch.rand(b, x1.shape[2], generator=generator) < self.mask_p
        m2 = torch.rand(b, x2.shape[2], generator=generator) < self.mask_p
        return x1, x2, m1.to(x.device), m2.to(x.device), crop_l

    def loss(self, views: list[Tensor]) -> Tensor:
        """``views``: ``[x]`` or ``[x, seed]`` with ``x`` float ``[B, C, T]`` (the loop passes
        the raw batch and an int64 seed drawn from its per-step generator; without a seed the
        crops and masks come from torch's global RNG). Returns the hierarchical loss."""
        if isinstance(views, Tensor) or not isinstance(views, (list, tuple)):
            raise TypeError(f"views: expected a list [x] or [x, seed], got {type(views).__name__}")
        if len(views) not in (1, 2):
            raise ValueError(f"views: ts2vec takes [x] or [x, seed], got {len(views)} items")
        x = views[0]
        if not isinstance(x, Tensor) or x.dim() != 3 or not x.is_floating_point():
            raise ValueError(
                "views[0]: expected a float [B, C, T] series batch, got "
                + (f"{x.dtype} {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__)
            )
        if x.shape[0] < 1:
            raise ValueError("views[0]: empty batch")
        g = None
        if len(views) == 2:
            seed = views[1]
            if not isinstance(seed, Tensor) or seed.dtype != torch.int64 or seed.numel() != 1:
                raise TypeError("views[1]: expected an int64 seed tensor of one element")
            g = torch.Generator().manual_seed(int(seed))
        x1, x2, m1, m2, crop_l = self.views(x, g)
        out1 = self.encoder.series(x1, m1)[:, -crop_l:]  # type: ignore[operator]
        out2 = self.encoder.series(x2, m2)[:, :crop_l]  # type: ignore[operator]
        return hierarchical_loss(
            out1,
            out2,
            alpha=self.alpha,
            temporal_unit=self.temporal_unit,
            backend=self.backend,
        )

    @torch.no_grad()
    def on_step_end(self, step: int, total_steps: int) -> None:
        """SWA: ``averaged += (encoder - averaged) / (n + 1)``, ``n += 1`` (``AveragedModel``'s
        default average, updated after every step as TS2Vec's ``fit``)."""
        if self.averaged is None:
            return
        count: Tensor = self.n_averaged  # type: ignore[assignment]
        n = int(count)
        t_params: list[Tensor] = list(self.averaged.parameters())
        o_params: list[Tensor] = [p.detach() for p in self.encoder.parameters()]
        torch._foreach_lerp_(t_params, o_params, 1.0 / (n + 1))
        count += 1

    def probe_encoder(self) -> nn.Module:
        """What TS2Vec encodes with: the averaged encoder (``swa=True``), else ``encoder``."""
        return self.averaged if self.averaged is not None else self.encoder


def default_encoder(in_channels: int = 1, **kw: Any) -> nn.Module:
    """The :class:`~pyssl.models.tcn.TSEncoder` this method is built with by default."""
    from pyssl.models.tcn import TSEncoder

    return TSEncoder(in_channels, **kw)
