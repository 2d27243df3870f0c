"""Cross-process helpers for the contrastive losses (any torch.distributed backend).

:func:`all_gather` concatenates every process's rows and, unlike ``dist.all_gather``, is
differentiable: its backward sums the gradient that every process computed for a block and
hands the total to the block's owner. (Taking only the local process's own gradient of the
gathered tensor, or none, is the bug lightly #1528 and mmselfsup had: the gradients through the
other processes' losses were lost.)
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def is_active() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_active() else 0


def world_size() -> int:
    return dist.get_world_size() if is_active() else 1


class _AllGather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x)
        ctx.rows = x.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        r = dist.get_rank()
        return grad[r * ctx.rows : (r + 1) * ctx.rows]


def all_gather(x: Tensor) -> Tensor:
    """Every process's ``x`` concatenated along dim 0 in rank order (``x`` itself outside a
    process group). Every process must pass the same shape. The backward sums the gradients of
    all processes for each block and returns the owner's block."""
    if not is_active():
        return x
    shapes: list[object] = [None] * dist.get_world_size()
    if not torch.compiler.is_compiling():
        dist.all_gather_object(shapes, tuple(x.shape))
        if any(s != tuple(x.shape) for s in shapes):
            raise ValueError(f"all_gather: every process must pass the same shape, got {shapes}")
    return _AllGather.apply(x)
