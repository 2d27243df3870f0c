"""One small, deterministic call of every op family's ops (forward and, where they have one,
backward): masking, contrastive, augmentation, text. Shared
by the thread-safety and leak tests. ``CASES[name](seed)`` returns the op's outputs and input
gradients as a tuple of tensors; the same seed gives the same inputs."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from pyssl import ops
from pyssl.augment import SimCLRAugment

_SIMCLR = SimCLRAugment(16, blur_p=0.5, blur_kernel_size=3)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _with_grads(fn: Callable[..., torch.Tensor], *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
    leaves = [x.detach().clone().requires_grad_(True) for x in inputs]
    out = fn(*leaves)
    out.float().square().sum().backward()  # a non-uniform upstream gradient
    return (out.detach(), *[x.grad for x in leaves])


def patchify(seed: int) -> tuple[torch.Tensor, ...]:
    imgs = torch.randn(3, 3, 32, 48, generator=_gen(seed))
    return _with_grads(lambda x: ops.patchify(x, 8), imgs)


def gather_patches(seed: int) -> tuple[torch.Tensor, ...]:
    g = _gen(seed)
    imgs = torch.randn(3, 3, 32, 32, generator=g)
    ids = torch.rand(3, 16, generator=g).argsort(1)[:, :5]
    return _with_grads(lambda x: ops.gather_patches(x, ids, 8), imgs)


def random_masking(seed: int) -> tuple[torch.Tensor, ...]:
    g = _gen(seed)
    x = torch.randn(4, 49, 24, generator=g)
    noise = torch.rand(4, 49, generator=g)
    res = ops.random_masking(x, 0.75, noise=noise)
    return (*res, *_with_grads(lambda t: ops.random_masking(t, 0.75, noise=noise)[0], x))


def restore_masked(seed: int) -> tuple[torch.Tensor, ...]:
    g = _gen(seed)
    visible, token = torch.randn(4, 12, 16, generator=g), torch.randn(16, generator=g)
    ids = torch.rand(4, 49, generator=g).argsort(1)
    return _with_grads(lambda v, t: ops.restore_masked(v, t, ids), visible, token)


def masked_patch_loss(seed: int) -> tuple[torch.Tensor, ...]:
    g = _gen(seed)
    imgs, pred = torch.randn(2, 3, 32, 32, generator=g), torch.randn(2, 16, 192, generator=g)
    mask = (torch.rand(2, 16, generator=g) < 0.75).float()
    return _with_grads(lambda p: ops.masked_patch_loss(p, imgs, mask, 8), pred)


def _features(seed: int, *rows: int, d: int = 40) -> list[torch.Tensor]:
    g = _gen(seed)
    return [F.normalize(torch.randn(n, d, generator=g), dim=1) for n in rows]


def info_nce(seed: int) -> tuple[torch.Tensor, ...]:
    return _with_grads(lambda q, k: ops.info_nce(q, k, temperature=0.1), *_features(seed, 30, 50))


def nt_xent(seed: int) -> tuple[torch.Tensor, ...]:
    return _with_grads(lambda a, b: ops.nt_xent(a, b), *_features(seed, 33, 33))


def clip_loss(seed: int) -> tuple[torch.Tensor, ...]:
    scale = torch.tensor(14.0)
    return _with_grads(lambda a, b, s: ops.clip_loss(a, b, s), *_features(seed, 40, 40), scale)


def siglip_loss(seed: int) -> tuple[torch.Tensor, ...]:
    scale, bias = torch.tensor(10.0), torch.tensor(-10.0)
    return _with_grads(ops.siglip_loss, *_features(seed, 40, 40), scale, bias)


def moco_loss(seed: int) -> tuple[torch.Tensor, ...]:
    q, k, queue = _features(seed, 16, 16, 200)
    return _with_grads(lambda a, b: ops.moco_loss(a, b, queue), q, k)


def simclr_views(seed: int) -> tuple[torch.Tensor, ...]:
    images = torch.randint(0, 256, (2, 20, 18, 3), dtype=torch.uint8, generator=_gen(seed))
    return tuple(_SIMCLR(images, seed=seed))


def mask_tokens(seed: int) -> tuple[torch.Tensor, ...]:
    ids = torch.randint(5, 1000, (4, 64), generator=_gen(seed))
    return ops.mask_tokens(ids, vocab_size=1000, mask_token_id=3, generator=_gen(seed + 1))


def masked_lm_loss(seed: int) -> tuple[torch.Tensor, ...]:
    g = _gen(seed)
    hidden, weight = torch.randn(2, 16, 24, generator=g), torch.randn(300, 24, generator=g) * 0.1
    labels = torch.randint(0, 300, (2, 16), generator=g)
    labels[torch.rand(2, 16, generator=g) < 0.6] = -100
    return _with_grads(lambda h, w: ops.masked_lm_loss(h, w, labels), hidden, weight)


CASES: dict[str, Callable[[int], tuple[torch.Tensor, ...]]] = {
    f.__name__: f
    for f in (
        patchify,
        gather_patches,
        random_masking,
        restore_masked,
        masked_patch_loss,
        info_nce,
        nt_xent,
        clip_loss,
        siglip_loss,
        moco_loss,
        simclr_views,
        mask_tokens,
        masked_lm_loss,
    )
}
