"""Contrastive losses written as lightly and open_clip write them: the full similarity matrix,
then a cross-entropy (or log-sigmoid). Quadratic in memory; the ground truth of the tests."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce(
    query: torch.Tensor,
    key: torch.Tensor,
    temperature: float = 0.1,
    logit_scale: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    normalize: bool = False,
    reduction: str = "mean",
) -> torch.Tensor:
    """Cross-entropy of ``scale * query @ key.T`` against ``labels`` (default ``arange(N)``)."""
    if normalize:
        query, key = F.normalize(query, dim=1), F.normalize(key, dim=1)
    scale = logit_scale if logit_scale is not None else 1.0 / temperature
    logits = scale * query @ key.T
    if labels is None:
        labels = torch.arange(query.shape[0], device=query.device)
    return F.cross_entropy(logits, labels, reduction=reduction)


def nt_xent(
    z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5, normalize: bool = True
) -> torch.Tensor:
    """lightly's ``NTXentLoss`` without a memory bank, on one process (SimCLR)."""
    n = z1.shape[0]
    out0, out1 = (F.normalize(z1, dim=1), F.normalize(z2, dim=1)) if normalize else (z1, z2)
    diag_mask = torch.eye(n, device=z1.device, dtype=torch.bool)
    logits_00 = out0 @ out0.T / temperature
    logits_01 = out0 @ out1.T / temperature
    logits_10 = out1 @ out0.T / temperature
    logits_11 = out1 @ out1.T / temperature
    logits_00 = logits_00[~diag_mask].view(n, -1)
    logits_11 = logits_11[~diag_mask].view(n, -1)
    logits_0100 = torch.cat([logits_01, logits_00], dim=1)
    logits_1011 = torch.cat([logits_10, logits_11], dim=1)
    logits = torch.cat([logits_0100, logits_1011], dim=0)
    labels = torch.arange(n, device=z1.device).repeat(2)
    return F.cross_entropy(logits, labels)


def clip_loss(image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """open_clip's ``ClipLoss`` on one process: features already normalised."""
    logits_per_image = logit_scale * image @ text.T
    logits_per_text = logit_scale * text @ image.T
    labels = torch.arange(image.shape[0], device=image.device)
    image_loss = F.cross_entropy(logits_per_image, labels)
    text_loss = F.cross_entropy(logits_per_text, labels)
    return (image_loss + text_loss) / 2


def siglip_loss(
    image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor, logit_bias: torch.Tensor
) -> torch.Tensor:
    """open_clip's ``SigLipLoss`` on one process: +1 on the diagonal, -1 elsewhere."""
    logits = logit_scale * image @ text.T + logit_bias
    n = image.shape[0]
    labels = 2 * torch.eye(n, device=image.device, dtype=image.dtype) - 1
    return -F.logsigmoid(labels * logits).sum() / n


def moco_loss(
    query: torch.Tensor, key: torch.Tensor, queue: torch.Tensor, temperature: float = 0.2
) -> torch.Tensor:
    """MoCo's loss: logits ``[q.k, q.queue]`` with the positive first; no gradient to the queue."""
    l_pos = (query * key).sum(dim=1, keepdim=True)
    l_neg = query @ queue.detach().T
    logits = torch.cat([l_pos, l_neg], dim=1) / temperature
    labels = torch.zeros(query.shape[0], dtype=torch.long, device=query.device)
    return F.cross_entropy(logits, labels)
