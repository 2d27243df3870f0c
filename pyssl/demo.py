"""A short, real demonstration of the masked-patch ops on a photograph that ships with
scikit-learn: patchify, MAE random masking, the normalised reconstruction target, the loss."""

from __future__ import annotations

import os
import time

import numpy as np
import torch

from pyssl import ops


def load_image(name: str) -> np.ndarray:
    """An RGB uint8 image [H, W, 3]: a scikit-learn sample image name or a file path."""
    if os.path.exists(name):
        from PIL import Image

        return np.asarray(Image.open(name).convert("RGB"))
    try:
        from sklearn.datasets import load_sample_image
    except ImportError as exc:
        raise RuntimeError(
            "the demo needs scikit-learn: pip install 'pyssl-kernels[demo]'"
        ) from exc
    return load_sample_image(name)


def mae_demo(
    out: str,
    *,
    image: str = "china.jpg",
    mask_ratio: float = 0.75,
    patch_size: int = 16,
    seed: int = 0,
) -> str:
    """Masks ``image`` as MAE does and writes ``out``: a PNG with the original, the visible
    patches (removed ones greyed) and the per-patch normalised target MAE regresses. Returns
    a summary of what it did."""
    from PIL import Image

    rgb = load_image(image)
    p = patch_size
    h, w = (rgb.shape[0] // p) * p, (rgb.shape[1] // p) * p
    rgb = rgb[:h, :w]
    imgs = (
        torch.from_numpy(np.ascontiguousarray(rgb).copy())
        .permute(2, 0, 1)[None]
        .float()
        .div(255.0)
        .contiguous()
    )
    g = torch.Generator().manual_seed(seed)

    def run_ops() -> tuple:
        patches = ops.patchify(imgs, p)
        vis = ops.random_masking(patches, mask_ratio, generator=g)
        kept = ops.gather_patches(imgs, vis.ids_keep, p)  # same rows, straight from the image
        grey = torch.full((patches.shape[-1],), 0.5)
        masked = ops.restore_masked(kept, grey, vis.ids_restore)
        loss_zero = ops.masked_patch_loss(torch.zeros_like(patches), imgs, vis.mask, p)
        return patches, vis, kept, masked, loss_zero

    # The first call of each op includes torch.library's one-time setup; time the second.
    t0 = time.perf_counter()
    run_ops()
    first = time.perf_counter() - t0
    g.manual_seed(seed)
    t0 = time.perf_counter()
    patches, vis, kept, masked, loss_zero = run_ops()
    elapsed = time.perf_counter() - t0
    if not torch.equal(kept, vis.visible):
        raise AssertionError("gather_patches disagrees with patchify + random_masking")

    mean = patches.mean(-1, keepdim=True)
    std = (patches.var(-1, keepdim=True) + 1e-6).sqrt()
    target = (patches - mean) / std
    target = (target.clamp(-2.5, 2.5) + 2.5) / 5.0  # +-2.5 std to [0, 1]

    grid = (h // p, w // p)
    panels = [ops.unpatchify(x, p, 3, grid=grid)[0] for x in (patches, masked, target)]
    strip = torch.cat([torch.cat([x, torch.ones(3, h, 8)], 2) for x in panels], 2)[:, :, :-8]
    png = (strip.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(png).save(out)
    return (
        f"image {image}: {w}x{h}, {patches.shape[1]} patches of {p}x{p}; kept "
        f"{vis.visible.shape[1]} ({1 - mask_ratio:.0%}), removed {int(vis.mask.sum())}\n"
        f"loss of an all-zero prediction on the normalised target: {loss_zero.item():.4f} "
        f"(about 1 by construction)\n"
        f"pyssl ops ran in {elapsed * 1e3:.1f} ms on {ops.explain('patchify', imgs).backend!r} "
        f"(first call, with one-time op setup: {first * 1e3:.0f} ms)\n"
        f"wrote {out}: original | visible patches (removed in grey) | normalised target"
    )
