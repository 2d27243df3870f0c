"""DINO (Caron et al. 2021, "Emerging Properties in Self-Supervised Vision Transformers"):
self-distillation with no labels — a student matches the centred, sharpened output of an EMA
teacher across multi-crop views.

Anchor: facebookresearch/dino ``main_dino.py`` (``DINOLoss``, the schedules) and
``vision_transformer.py`` (``DINOHead``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pyssl import distributed
from pyssl.methods.augment import dino_augment
from pyssl.methods.base import (
    SSLMethod,
    check_positive,
    check_unit,
    cosine_momentum,
    ema_update,
    feature_dim,
    frozen_copy,
)


class DINOHead(nn.Module):
    """DINO's head: an MLP (GELU, no batch norm) to a bottleneck, L2 normalisation, then a
    weight-normalised linear layer without bias to ``out_dim`` prototypes; with
    ``norm_last_layer`` the weight norm's scale is fixed at 1."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden: int = 2048,
        bottleneck: int = 256,
        layers: int = 3,
        norm_last_layer: bool = True,
    ) -> None:
        super().__init__()
        dims = [in_dim] + [hidden] * (layers - 1) + [bottleneck]
        mods: list[nn.Module] = []
        for i in range(len(dims) - 1):
            mods.append(nn.Linear(dims[i], dims[i + 1]))
            if i < len(dims) - 2:
                mods.append(nn.GELU())
        self.mlp = nn.Sequential(*mods)
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last_layer = nn.utils.parametrizations.weight_norm(
            nn.Linear(bottleneck, out_dim, bias=False)
        )
        scale = self.last_layer.parametrizations.weight.original0
        scale.data.fill_(1.0)
        if norm_last_layer:
            scale.requires_grad_(False)

    def forward(self, x: Tensor) -> Tensor:
        return self.last_layer(F.normalize(self.mlp(x), dim=-1, p=2))


def _stat_dtype(t: Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def dino_loss(
    student: list[Tensor],
    teacher: list[Tensor],
    center: Tensor,
    student_temp: float,
    teacher_temp: float | Tensor,
) -> Tensor:
    """DINOLoss.forward: the mean over pairs (teacher global view ``i``, student view ``v``,
    ``v != i``) of the batch-mean cross-entropy
    ``-softmax((t_i - center) / teacher_temp) . log_softmax(s_v / student_temp)``."""
    total = student[0].new_zeros((), dtype=_stat_dtype(student[0]))
    terms = 0
    for i, t in enumerate(teacher):
        q = F.softmax((t.to(total.dtype) - center) / teacher_temp, dim=-1)
        for v, s in enumerate(student):
            if v == i:
                continue
            log_p = F.log_softmax(s.to(total.dtype) / student_temp, dim=-1)
            total = total + torch.sum(-q * log_p, dim=-1).mean()
            terms += 1
    return total / terms


class DINO(SSLMethod):
    """DINO: ``views = [global_1, global_2, local_1, ..., local_n]``; the teacher sees the
    global views, the student all of them (:func:`dino_loss`).

    ``on_step_end(k, K)``: the teacher follows the student by EMA with momentum rising from
    ``momentum`` to 1 on BYOL's cosine; the centre moves to
    ``c = center_momentum * c + (1 - center_momentum) * mean(teacher outputs)`` (averaged over
    processes); the teacher temperature for the next step follows the linear warm-up from
    ``warmup_teacher_temp`` to ``teacher_temp`` over the first ``warmup_teacher_frac`` of the
    steps (:meth:`teacher_temp_at`).

    Defaults, published -> here: prototypes 65536 -> 1024, head hidden 2048 -> 512, bottleneck
    256 -> 128, student temperature 0.1 (kept), teacher temperature 0.04 -> 0.07 warmed up over
    30 of 300 epochs -> over the first 30% of the steps (short runs), centre momentum 0.9
    (kept), teacher momentum 0.996 (kept). Deliberate difference: the last layer is not frozen
    during the first epoch (that is the training loop's gradient handling in DINO).
    """

    name = "dino"
    num_views = 2  # at least: the two global crops, then any number of local ones

    def __init__(
        self,
        encoder: nn.Module,
        *,
        out_dim: int = 1024,
        hidden: int = 512,
        bottleneck: int = 128,
        student_temp: float = 0.1,
        teacher_temp: float = 0.07,
        warmup_teacher_temp: float = 0.04,
        warmup_teacher_frac: float = 0.3,
        center_momentum: float = 0.9,
        momentum: float = 0.996,
        norm_last_layer: bool = True,
    ) -> None:
        super().__init__()
        for n, v in (("out_dim", out_dim), ("hidden", hidden), ("bottleneck", bottleneck)):
            check_positive(n, v, integer=True)
        for n, t in (
            ("student_temp", student_temp),
            ("teacher_temp", teacher_temp),
            ("warmup_teacher_temp", warmup_teacher_temp),
        ):
            check_positive(n, t)
        check_unit("warmup_teacher_frac", warmup_teacher_frac, closed=True)
        check_unit("center_momentum", center_momentum, closed=True)
        check_unit("momentum", momentum, closed=True)
        self.encoder = encoder
        self.head = DINOHead(feature_dim(encoder), out_dim, hidden, bottleneck, 3, norm_last_layer)
        self.teacher_encoder = frozen_copy(encoder)
        self.teacher_head = frozen_copy(self.head)
        self.register_buffer("center", torch.zeros(1, out_dim))
        self.student_temp = float(student_temp)
        self.final_teacher_temp = float(teacher_temp)
        self.warmup_teacher_temp = float(warmup_teacher_temp)
        self.warmup_teacher_frac = float(warmup_teacher_frac)
        # the temperature of the coming step (step 0's now; on_step_end sets each next one): a
        # buffer, so that a checkpoint restores it with the weights
        first = warmup_teacher_temp if warmup_teacher_frac > 0 else teacher_temp
        self.register_buffer("teacher_temp_now", torch.tensor(float(first), dtype=torch.float64))
        self.center_momentum = float(center_momentum)
        self.base_momentum = float(momentum)
        self.momentum = float(momentum)
        self._batch_center: tuple[Tensor, int] | None = None

    center: Tensor
    teacher_temp_now: Tensor

    @property
    def teacher_temp(self) -> float:
        """The teacher temperature the next :meth:`loss` uses."""
        return float(self.teacher_temp_now)

    @teacher_temp.setter
    def teacher_temp(self, value: float) -> None:
        self.teacher_temp_now.fill_(value)

    def teacher_temp_at(self, step: int, total_steps: int) -> float:
        """DINO's ``teacher_temp_schedule`` per step: ``linspace(warmup, final, W)`` over the
        first ``W = int(warmup_teacher_frac * total_steps)`` steps, then ``final``."""
        warm = int(self.warmup_teacher_frac * total_steps)
        if step >= warm:
            return self.final_teacher_temp
        if warm == 1:
            return self.warmup_teacher_temp
        frac = step / (warm - 1)
        return self.warmup_teacher_temp + frac * (
            self.final_teacher_temp - self.warmup_teacher_temp
        )

    def _forward_views(
        self, encoder: nn.Module, head: nn.Module, views: list[Tensor]
    ) -> list[Tensor]:
        # views of one resolution go through the backbone together (DINO's MultiCropWrapper)
        out: list[Tensor] = []
        i = 0
        while i < len(views):
            j = i
            while j < len(views) and views[j].shape == views[i].shape:
                j += 1
            out.extend(head(encoder(torch.cat(views[i:j]))).chunk(j - i))
            i = j
        return out

    def loss(self, views: list[Tensor]) -> Tensor:
        views = self._check_views(views, at_least=True)
        if views[0].shape != views[1].shape:
            raise ValueError("views: DINO's first two views are the global crops, of one shape")
        student = self._forward_views(self.encoder, self.head, views)
        with torch.no_grad():
            teacher = self._forward_views(self.teacher_encoder, self.teacher_head, views[:2])
            batch_sum = torch.cat(teacher).to(self.center.dtype).sum(0, keepdim=True)
        # on_step_end centres on the mean teacher output of every loss since the last step
        count = 2 * views[0].shape[0]
        if self._batch_center is not None:
            batch_sum, count = batch_sum + self._batch_center[0], count + self._batch_center[1]
        self._batch_center = (batch_sum, count)
        return dino_loss(student, teacher, self.center, self.student_temp, self.teacher_temp_now)

    @torch.no_grad()
    def on_step_end(self, step: int, total_steps: int) -> None:
        self.momentum = cosine_momentum(self.base_momentum, step, total_steps)
        ema_update(self.teacher_encoder, self.encoder, self.momentum)
        ema_update(self.teacher_head, self.head, self.momentum)
        if self._batch_center is not None:
            total, count = self._batch_center
            if distributed.is_active():
                torch.distributed.all_reduce(total)
                count *= distributed.world_size()
            c = total / count
            self.center.mul_(self.center_momentum).add_(c, alpha=1 - self.center_momentum)
            self._batch_center = None
        self.teacher_temp = self.teacher_temp_at(step + 1, total_steps)

    def default_augment(self, image_size: int, channels: int) -> Callable[..., list[Tensor]]:
        return dino_augment(image_size, channels)
