"""Each method's default augmentation: the recipe and its scaling to the image size, views the
method's loss accepts, one-channel images."""

from __future__ import annotations

import pytest
import torch

from pyssl import augment
from pyssl.methods import METHODS, build
from pyssl.methods.augment import GrayViews, dino_local_size

RECIPE = {
    "simclr": augment.SimCLRAugment,
    "mocov2": augment.SimCLRAugment,
    "simsiam": augment.SimCLRAugment,
    "mocov3": augment.BYOLAugment,
    "byol": augment.BYOLAugment,
    "barlow": augment.BYOLAugment,
    "vicreg": augment.BYOLAugment,
    "dino": augment.DINOAugment,
    "mae": augment.MAEAugment,
    "rotnet": augment.MAEAugment,  # the pretext ops make the task's inputs from one view
    "jigsaw": augment.MAEAugment,
}
# colourisation's FlipViews (tests/methods/test_colorization.py); ts2vec and mlm: not images
NO_RECIPE = {"colorization", "ts2vec", "mlm"}


def images(n: int = 4, size: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, size, size, 3), dtype=torch.uint8, generator=g)


@pytest.mark.parametrize("name", sorted(RECIPE))
def test_default_views_feed_the_loss(name: str) -> None:
    torch.manual_seed(0)
    m = build(name)
    aug = m.default_augment(32, 3)
    assert isinstance(aug, RECIPE[name])
    views = aug(images(), generator=torch.Generator().manual_seed(1))
    assert all(v.dtype == torch.float32 and v.shape[:2] == (4, 3) for v in views)
    if name == "dino":
        assert [v.shape[-1] for v in views] == [32, 32] + [16] * 6
    else:
        assert len(views) == m.num_views and all(v.shape[-1] == 32 for v in views)
    assert torch.isfinite(m.loss(views))


def test_scaling_to_the_image_size() -> None:
    small = build("simclr").default_augment(32, 3).views[0]
    large = build("simclr", image_size=224).default_augment(224, 3).views[0]
    assert (small.blur_p, small.scale, small.brightness) == (0.0, (0.2, 1.0), 0.4)
    assert (large.blur_p, large.scale, large.brightness) == (0.5, (0.08, 1.0), 0.8)
    assert large.kernel_size == 23
    moco = build("mocov2").default_augment(224, 3).views[0]
    assert (moco.scale, moco.brightness, moco.hue, moco.blur_p) == ((0.2, 1.0), 0.4, 0.1, 0.5)
    byol = build("byol").default_augment(224, 3).views
    assert [v.blur_p for v in byol] == [1.0, 0.1] and [v.solarize_p for v in byol] == [0.0, 0.2]
    assert all(v.solarize_threshold == 128.0 for v in byol)  # torchvision's 128 of 255
    assert [v.blur_p for v in build("byol").default_augment(32, 3).views] == [0.0, 0.0]
    assert [dino_local_size(s) for s in (32, 64, 224)] == [16, 24, 96]
    dino = build("dino").default_augment(224, 3).views
    assert len(dino) == 10 and dino[2].size == 96 and dino[2].scale == (0.05, 0.4)


def test_one_channel_images() -> None:
    m = build("simclr", in_channels=1)
    aug = m.default_augment(32, 1)
    assert isinstance(aug, GrayViews)
    gray = images()[..., 0]
    for batch in (gray, gray[:, None], gray[..., None]):
        views = aug(batch, generator=torch.Generator().manual_seed(0))
        assert [tuple(v.shape) for v in views] == [(4, 1, 32, 32)] * 2
    # the RGB recipe on the replicated image keeps its three channels equal
    assert aug.recipe.views[0].mean == (0.449,) * 3
    rgb = gray[..., None].expand(-1, -1, -1, 3)
    full = aug.recipe(rgb, generator=torch.Generator().manual_seed(0))
    for f, v in zip(full, views):
        torch.testing.assert_close(f[:, 1:], f[:, :1].expand(-1, 2, -1, -1))
        torch.testing.assert_close(v, f[:, :1])
    assert torch.isfinite(m.loss(views))


def test_bad_augment_arguments() -> None:
    m = build("simclr")
    with pytest.raises(ValueError, match="channels"):
        m.default_augment(32, 2)
    with pytest.raises(ValueError, match="image_size"):
        m.default_augment(0, 3)
    assert set(RECIPE) == set(METHODS) - NO_RECIPE
