"""Losses as modules for drop-in use in training code."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pyssl import distributed
from pyssl.ops.contrastive import (
    check_temperature,
    clip_loss,
    info_nce,
    moco_loss,
    nt_xent,
    siglip_loss,
)
from pyssl.ops.masking import masked_patch_loss
from pyssl.ops.text import causal_lm_loss, masked_lm_loss


class MaskedPatchLoss(nn.Module):
    """MAE's reconstruction loss (see :func:`pyssl.ops.masked_patch_loss`): per-patch MSE
    against the (normalised) pixels of ``imgs``, averaged over the removed patches, without
    materialising the patchified target.

    Example (replacing MAE's ``forward_loss``)::

        self.loss = MaskedPatchLoss(patch_size=16, norm_pix=True)
        ...
        loss = self.loss(pred, imgs, mask)
    """

    def __init__(self, patch_size: int, *, norm_pix: bool = True, eps: float = 1e-6) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.norm_pix = norm_pix
        self.eps = eps

    def forward(self, pred: Tensor, imgs: Tensor, mask: Tensor) -> Tensor:
        return masked_patch_loss(
            pred, imgs, mask, self.patch_size, norm_pix=self.norm_pix, eps=self.eps
        )

    def extra_repr(self) -> str:
        return f"patch_size={self.patch_size}, norm_pix={self.norm_pix}, eps={self.eps}"


class FeatureQueue(nn.Module):
    """A fixed-size FIFO of detached keys (MoCo v2's negatives queue).

    ``push(keys)`` appends a batch (detached, oldest rows dropped beyond ``size``);
    ``features()`` returns the stored rows, oldest first, as a ``[<= size, dim]`` tensor to pass
    as ``queue`` to :func:`pyssl.ops.moco_loss`. The buffer moves with the module (``.to``) and
    is saved in its state dict.
    """

    buffer: Tensor
    count: Tensor

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        if size < 1 or dim < 1:
            raise ValueError(f"size and dim: expected positive ints, got {size}, {dim}")
        self.size, self.dim = size, dim
        self.register_buffer("buffer", torch.zeros(size, dim))
        self.register_buffer("count", torch.zeros((), dtype=torch.int64))

    @torch.no_grad()
    def push(self, keys: Tensor) -> None:
        if keys.dim() != 2 or keys.shape[1] != self.dim:
            raise ValueError(f"keys: expected width {self.dim}, got shape {tuple(keys.shape)}")
        keys = keys.detach().to(self.buffer.dtype)[-self.size :]
        n = keys.shape[0]
        self.buffer.copy_(torch.cat([self.buffer[n:], keys]))
        self.count.add_(n).clamp_(max=self.size)

    def features(self) -> Tensor:
        return self.buffer[self.size - int(self.count) :]

    def extra_repr(self) -> str:
        return f"size={self.size}, dim={self.dim}"


def _options(**kw: object) -> str:
    """``extra_repr`` text: the given options, ``backend`` only when one is forced."""
    if kw.get("backend") is None:
        kw.pop("backend", None)
    return ", ".join(f"{k}={v!r}" for k, v in kw.items())


def _check_reduction(reduction: str) -> str:
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction: expected 'mean', 'sum' or 'none', got {reduction!r}")
    return reduction


class InfoNCELoss(nn.Module):
    """InfoNCE (see :func:`pyssl.ops.info_nce`): cross-entropy of ``query @ key.T /
    temperature`` against ``labels`` (default ``arange(N)``), without the ``[N, M]`` logits.

    The constructor holds the hyper-parameters; ``forward(query, key, labels=None,
    logit_scale=None)`` takes the tensors (a ``logit_scale`` tensor, e.g. a learnt
    ``log_scale.exp()``, replaces ``1 / temperature`` and receives a gradient).

    Example::

        self.loss = InfoNCELoss(temperature=0.1, normalize=True, gather=True)
        ...
        loss = self.loss(q, k)
    """

    def __init__(
        self,
        temperature: float = 0.1,
        *,
        normalize: bool = False,
        reduction: str = "mean",
        gather: bool = False,
        backend: str | None = None,
    ) -> None:
        super().__init__()
        self.temperature = check_temperature(temperature)
        self.normalize = normalize
        self.reduction = _check_reduction(reduction)
        self.gather = gather
        self.backend = backend

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        labels: Tensor | None = None,
        logit_scale: Tensor | None = None,
    ) -> Tensor:
        return info_nce(
            query,
            key,
            temperature=self.temperature,
            logit_scale=logit_scale,
            labels=labels,
            normalize=self.normalize,
            reduction=self.reduction,
            gather=self.gather,
            backend=self.backend,
        )

    def extra_repr(self) -> str:
        return _options(
            temperature=self.temperature,
            normalize=self.normalize,
            reduction=self.reduction,
            gather=self.gather,
            backend=self.backend,
        )


class NTXentLoss(nn.Module):
    """SimCLR's NT-Xent (see :func:`pyssl.ops.nt_xent`), a drop-in for lightly's
    ``NTXentLoss(temperature=0.5, memory_bank_size=0, gather_distributed=False)``:
    ``forward(z1, z2)`` (lightly's ``out0, out1``) returns the mean over the 2N views, each
    view's positive its other view, its self-similarity excluded. ``gather`` is lightly's
    ``gather_distributed``. Deliberate difference: no memory bank (use :class:`MoCoLoss` with a
    queue for memory-bank negatives).
    """

    def __init__(
        self,
        temperature: float = 0.5,
        *,
        normalize: bool = True,
        gather: bool = False,
        backend: str | None = None,
    ) -> None:
        super().__init__()
        self.temperature = check_temperature(temperature)
        self.normalize = normalize
        self.gather = gather
        self.backend = backend

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        return nt_xent(
            z1,
            z2,
            temperature=self.temperature,
            normalize=self.normalize,
            gather=self.gather,
            backend=self.backend,
        )

    def extra_repr(self) -> str:
        return _options(
            temperature=self.temperature,
            normalize=self.normalize,
            gather=self.gather,
            backend=self.backend,
        )


class _ScaleMixin(nn.Module):
    """The logit scale (and bias) of the CLIP-style losses: passed to ``forward`` as open_clip
    passes them, or owned by the module as learnable parameters."""

    logit_scale: nn.Parameter | None
    logit_bias: nn.Parameter | None

    def _scale(self, given: Tensor | None) -> Tensor:
        """The multiplier: ``exp`` of the owned log-scale, or the one passed to forward."""
        if self.logit_scale is not None:
            self._not_both("logit_scale", given)
            return self.logit_scale.exp()
        if given is None:
            raise TypeError(
                f"logit_scale: expected a scalar torch.Tensor (or construct {type(self).__name__}"
                " with learnable=True), got None"
            )
        return given

    def _not_both(self, name: str, given: Tensor | None) -> None:
        if given is not None:
            raise ValueError(
                f"{name}: this {type(self).__name__} owns a learnable {name}; "
                "do not pass one to forward"
            )


class ClipLoss(_ScaleMixin):
    """CLIP's symmetric contrastive loss (see :func:`pyssl.ops.clip_loss`), a drop-in for
    open_clip's ``ClipLoss``: ``forward(image, text, logit_scale)`` with features already
    normalised and ``logit_scale`` the multiplier (open_clip passes ``model.logit_scale.exp()``).
    ``gather=True`` is open_clip's ``local_loss=True, gather_with_grad=True`` (the rank and world
    size come from the process group, not the constructor).

    ``learnable=True`` instead makes the module own the scale, as open_clip's CLIP model does:
    a parameter ``logit_scale`` holding the *log* of the multiplier, initialised to
    ``init_logit_scale = log(1 / 0.07)``; ``forward(image, text)`` then uses
    ``logit_scale.exp()``. As in open_clip, no clamp is applied in the forward: clamp the
    parameter after the optimiser step (``loss.logit_scale.data.clamp_(0, math.log(100))``).
    """

    def __init__(
        self,
        *,
        learnable: bool = False,
        init_logit_scale: float = math.log(1 / 0.07),
        gather: bool = False,
        backend: str | None = None,
    ) -> None:
        super().__init__()
        self.learnable = learnable
        self.logit_scale = (
            nn.Parameter(torch.tensor(float(init_logit_scale))) if learnable else None
        )
        self.logit_bias = None
        self.gather = gather
        self.backend = backend

    def forward(self, image: Tensor, text: Tensor, logit_scale: Tensor | None = None) -> Tensor:
        scale = self._scale(logit_scale)
        return clip_loss(image, text, scale, gather=self.gather, backend=self.backend)

    def extra_repr(self) -> str:
        return _options(learnable=self.learnable, gather=self.gather, backend=self.backend)


class SigLipLoss(_ScaleMixin):
    """SigLIP's pairwise sigmoid loss (see :func:`pyssl.ops.siglip_loss`), a drop-in for
    open_clip's ``SigLipLoss``: ``forward(image, text, logit_scale, logit_bias=None)`` with
    ``logit_scale`` the multiplier (open_clip passes ``model.logit_scale.exp()``); a ``None``
    bias is no bias, as in open_clip. ``gather=True`` is the result of open_clip's
    neighbour-exchange over every process (the local images against every process's texts),
    computed through :func:`pyssl.distributed.all_gather`.

    ``learnable=True`` makes the module own both scalars, initialised as SigLIP does
    (open_clip's ``init_logit_scale=log(10)``, ``init_logit_bias=-10``): parameters
    ``logit_scale`` (the *log* of the multiplier, ``t'`` in the paper; the forward uses
    ``exp(t')``) and ``logit_bias`` (``b``); ``forward(image, text)`` then takes no scalars.
    """

    def __init__(
        self,
        *,
        learnable: bool = False,
        init_logit_scale: float = math.log(10),
        init_logit_bias: float = -10.0,
        gather: bool = False,
        backend: str | None = None,
    ) -> None:
        super().__init__()
        self.learnable = learnable
        if learnable:
            self.logit_scale = nn.Parameter(torch.tensor(float(init_logit_scale)))
            self.logit_bias = nn.Parameter(torch.tensor(float(init_logit_bias)))
        else:
            self.logit_scale = self.logit_bias = None
        self.gather = gather
        self.backend = backend

    def forward(
        self,
        image: Tensor,
        text: Tensor,
        logit_scale: Tensor | None = None,
        logit_bias: Tensor | None = None,
    ) -> Tensor:
        scale = self._scale(logit_scale)
        bias: Tensor
        if self.logit_bias is not None:
            self._not_both("logit_bias", logit_bias)
            bias = self.logit_bias
        elif logit_bias is not None:
            bias = logit_bias
        else:  # open_clip's logit_bias=None: no bias
            bias = torch.zeros((), dtype=scale.dtype, device=scale.device)
        return siglip_loss(image, text, scale, bias, gather=self.gather, backend=self.backend)

    def extra_repr(self) -> str:
        return _options(learnable=self.learnable, gather=self.gather, backend=self.backend)


class MoCoLoss(nn.Module):
    """MoCo's contrastive loss (see :func:`pyssl.ops.moco_loss`).

    - ``MoCoLoss(temperature)``: ``forward(query, key, queue)`` with a queue you keep (MoCo
      v1/v2: the positive is the row's own key, the negatives the queue), or
      ``forward(query, key)`` for MoCo v3's in-batch form (the batch's other keys are the
      negatives; MoCo v3's ``2 * temperature`` factor is left to the caller).
    - ``MoCoLoss(temperature, queue_size=K, dim=D)``: the module owns a :class:`FeatureQueue`
      (``self.queue``), filled at construction with random unit vectors as MoCo's builder
      fills its queue. ``forward(query, key)`` scores against a copy of the queue (MoCo's
      ``self.queue.clone().detach()``: the copy lets the queue change before the backward),
      then, in training mode only, enqueues this batch's detached keys, as
      ``_dequeue_and_enqueue`` does: with ``gather=True``, the keys of every process, in rank
      order, so that the queue stays the same on every process.

    ``gather=True`` makes the loss that of one process holding the whole batch (see
    :func:`pyssl.ops.moco_loss`): in-batch, the keys of every process are gathered; with a
    queue the loss is row-local and only the enqueued keys are gathered.
    """

    queue: FeatureQueue | None

    def __init__(
        self,
        temperature: float = 0.2,
        *,
        queue_size: int | None = None,
        dim: int | None = None,
        gather: bool = False,
        backend: str | None = None,
    ) -> None:
        super().__init__()
        self.temperature = check_temperature(temperature)
        self.gather = gather
        self.backend = backend
        if (queue_size is None) != (dim is None):
            raise ValueError("queue_size and dim: give both (to own a queue) or neither")
        if queue_size is not None and dim is not None:
            self.queue = FeatureQueue(queue_size, dim)
            self.queue.push(F.normalize(torch.randn(queue_size, dim), dim=1))
        else:
            self.queue = None

    def forward(self, query: Tensor, key: Tensor, queue: Tensor | None = None) -> Tensor:
        if self.queue is None:
            return moco_loss(
                query,
                key,
                queue,
                temperature=self.temperature,
                gather=self.gather,
                backend=self.backend,
            )
        if queue is not None:
            raise ValueError("queue: this MoCoLoss owns a queue; do not pass one to forward")
        negatives = self.queue.features()
        if isinstance(query, Tensor):
            negatives = negatives.to(query.dtype, copy=True)
        loss = moco_loss(
            query,
            key,
            negatives,
            temperature=self.temperature,
            gather=self.gather,
            backend=self.backend,
        )
        if self.training:
            keys = key.detach()
            self.queue.push(distributed.all_gather(keys) if self.gather else keys)
        return loss

    def extra_repr(self) -> str:
        return _options(temperature=self.temperature, gather=self.gather, backend=self.backend)


class MaskedLMLoss(nn.Module):
    """BERT's masked-LM head loss (see :func:`pyssl.ops.masked_lm_loss`): cross-entropy of
    ``hidden @ decoder.weight.T + decoder.bias`` at the labelled positions, without the full
    logits. Pass the decoder's (often tied) weight and bias in the call.

    Example (a BERT MLM head)::

        self.loss = MaskedLMLoss()
        ...
        h = self.transform(encoder_out)                      # [B, T, H]
        loss = self.loss(h, self.embed.weight, labels, bias=self.decoder_bias)
    """

    def __init__(self, *, ignore_index: int = -100, reduction: str = "mean") -> None:
        super().__init__()
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction: expected 'mean', 'sum' or 'none', got {reduction!r}")
        self.ignore_index, self.reduction = ignore_index, reduction

    def forward(
        self, hidden: Tensor, weight: Tensor, labels: Tensor, bias: Tensor | None = None
    ) -> Tensor:
        return masked_lm_loss(
            hidden,
            weight,
            labels,
            bias=bias,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
        )

    def extra_repr(self) -> str:
        return f"ignore_index={self.ignore_index}, reduction={self.reduction!r}"


class CausalLMLoss(MaskedLMLoss):
    """Next-token cross-entropy (see :func:`pyssl.ops.causal_lm_loss`): position ``t`` predicts
    ``labels[..., t + 1]``, as Hugging Face's causal-LM heads shift them."""

    def forward(
        self, hidden: Tensor, weight: Tensor, labels: Tensor, bias: Tensor | None = None
    ) -> Tensor:
        return causal_lm_loss(
            hidden,
            weight,
            labels,
            bias=bias,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
        )
