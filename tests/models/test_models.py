"""Backbones: shapes, parameter counts against the published models, ViT's masked path against
MAE's reference order of operations, the text encoder's padding and tied LM head, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pyssl import models
from pyssl.reference import masking as ref


def count(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_resnet_shapes_and_sizes() -> None:
    # torchvision-style CIFAR ResNet-18 without its 10-way classifier: 11,173,962 - 5,130
    assert count(models.resnet18_cifar()) == 11_168_832
    assert models.resnet18_cifar().out_dim == 512
    m = models.ResNet((1, 2), width=8, in_channels=1)
    assert m.out_dim == 16
    x = torch.randn(3, 1, 17, 9)  # odd sizes: global pooling takes any H, W
    assert m.forward_map(x).shape == (3, 16, 9, 5)
    assert m(x).shape == (3, 16)
    d = models.resnet_digits()
    assert d.out_dim == 128 and 250_000 < count(d) < 400_000
    assert d(torch.randn(2, 3, 32, 32)).shape == (2, 128)


def test_resnet_bad_input() -> None:
    with pytest.raises(ValueError, match="layers"):
        models.ResNet(())
    with pytest.raises(ValueError, match="width"):
        models.ResNet((1,), width=0)
    with pytest.raises(ValueError, match=r"x: expected \[B, 3, H, W\]"):
        models.ResNet((1,), width=4)(torch.randn(2, 1, 8, 8))


def test_vit_parameter_counts_match_deit() -> None:
    # DeiT-Ti/S minus their 1000-way head and learned position table (fixed sin-cos here)
    assert count(models.vit_tiny()) == 5_717_416 - (192 * 1000 + 1000) - 197 * 192
    assert count(models.vit_small()) == 22_050_664 - (384 * 1000 + 1000) - 197 * 384
    m = models.vit_micro()
    assert m.out_dim == 128 and m.num_patches == 64


def mae_sincos(dim: int, grid: int) -> np.ndarray:
    """MAE's util/pos_embed.py get_2d_sincos_pos_embed (without the class token), verbatim."""

    def from_grid_1d(d: int, pos: np.ndarray) -> np.ndarray:
        omega = np.arange(d // 2, dtype=np.float64) / (d / 2.0)
        omega = 1.0 / 10000**omega
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    g = np.meshgrid(np.arange(grid, dtype=np.float32), np.arange(grid, dtype=np.float32))
    g = np.stack(g, axis=0).reshape([2, 1, grid, grid])
    return np.concatenate([from_grid_1d(dim // 2, g[0]), from_grid_1d(dim // 2, g[1])], axis=1)


def test_sincos_matches_mae() -> None:
    ours = models.sincos_pos_embed(32, 5, 5)
    torch.testing.assert_close(ours, torch.from_numpy(mae_sincos(32, 5)).float())


def mae_forward_encoder(m: models.ViT, x: torch.Tensor, ratio: float, noise: torch.Tensor):
    """MAE's forward_encoder on m's weights: embed every patch, add positions, mask, class
    token, blocks, norm — the reference order of operations."""
    tokens = m.patch_embed(ref.patchify(x, m.patch_size)) + m.pos_embed
    visible, mask, ids_keep, ids_restore = ref.random_masking(tokens, ratio, noise)
    t = torch.cat([m.cls_token.expand(x.shape[0], -1, -1), visible], 1)
    for blk in m.blocks:
        t = blk(t)
    return m.norm(t), mask, ids_keep, ids_restore


@pytest.mark.parametrize("seed", [0, 1])
def test_vit_masked_path_matches_mae_reference(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    m = models.ViT(image_size=12, patch_size=3, in_channels=2, dim=16, depth=2, heads=2)
    x = torch.randn(3, 2, 12, 12, generator=g)
    noise = torch.rand(3, 16, generator=g)
    tokens, res = m.forward_tokens(x, 0.75, noise=noise)
    want, mask, ids_keep, ids_restore = mae_forward_encoder(m, x, 0.75, noise)
    assert tokens.shape == (3, 1 + 4, 16)
    torch.testing.assert_close(tokens, want, rtol=1e-5, atol=1e-5)
    assert res is not None
    torch.testing.assert_close(res.mask, mask)
    assert torch.equal(res.ids_keep, ids_keep) and torch.equal(res.ids_restore, ids_restore)
    # gradients reach the patch embedding only through the kept patches' pixels
    x.requires_grad_(True)
    tokens, res = m.forward_tokens(x, 0.75, noise=noise)
    tokens.sum().backward()
    assert m.patch_embed.weight.grad is not None and m.patch_embed.weight.grad.abs().sum() > 0
    removed = ref.patchify(x.grad, 3)[res.mask.bool()]
    assert removed.abs().max() == 0


def test_vit_unmasked_pooling_and_other_sizes() -> None:
    torch.manual_seed(0)
    m = models.ViT(image_size=16, patch_size=4, in_channels=3, dim=16, depth=1, heads=2)
    x = torch.randn(2, 3, 16, 16)
    tokens, res = m.forward_tokens(x)
    assert res is None and tokens.shape == (2, 17, 16)
    torch.testing.assert_close(m(x), tokens[:, 0])
    m.pool = "mean"
    torch.testing.assert_close(m(x), tokens[:, 1:].mean(1))
    # a smaller crop (DINO's local views): positions span the trained grid's range
    assert m(torch.randn(2, 3, 8, 8)).shape == (2, 16)
    with pytest.raises(ValueError, match="divisible"):
        m(torch.randn(2, 3, 10, 10))
    with pytest.raises(ValueError, match="image_size"):
        models.ViT(image_size=10, patch_size=4)
    with pytest.raises(ValueError, match="heads"):
        models.ViT(image_size=8, patch_size=4, dim=12, heads=5)


def test_text_encoder_padding_and_tied_head() -> None:
    torch.manual_seed(0)
    m = models.TextEncoder(50, max_len=12, dim=16, depth=2, heads=2, pad_token_id=0)
    ids = torch.randint(1, 50, (3, 7))
    feats = m(ids)
    assert feats.shape == (3, 16) and m.out_dim == 16
    padded = torch.cat([ids, torch.zeros(3, 5, dtype=torch.int64)], 1)
    torch.testing.assert_close(m(padded), feats, rtol=1e-5, atol=1e-5)
    tokens = m.forward_tokens(ids)
    assert tokens.shape == (3, 7, 16)
    assert m.lm_weight.data_ptr() == m.tok_embed.weight.data_ptr()  # tied
    logits = m.lm_logits(tokens)
    assert logits.shape == (3, 7, 50)
    torch.testing.assert_close(logits, m.lm_hidden(tokens) @ m.tok_embed.weight.T + m.lm_bias)
    logits.sum().backward()
    assert m.tok_embed.weight.grad is not None
    # a sequence that is all padding still gives finite features
    assert torch.isfinite(m(torch.zeros(2, 5, dtype=torch.int64))).all()
    with pytest.raises(ValueError, match="max_len"):
        m(torch.randint(1, 50, (1, 13)))
    with pytest.raises(TypeError, match="int64"):
        m(torch.zeros(1, 3, dtype=torch.int32))
    with pytest.raises(ValueError, match="pad_token_id"):
        models.TextEncoder(10, pad_token_id=10)
