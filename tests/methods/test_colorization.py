"""Colourisation: it trains under ``pretrain`` and beats the grey baseline on held-out crops;
the photos data, the study, the figure and bad arguments."""

from __future__ import annotations

import pytest
import torch

from pyssl.data.images import load_images, load_photos
from pyssl.methods.colorization import (
    Colorization,
    FlipViews,
    ab_bins,
    colorization_figure,
    colorization_study,
)
from pyssl.models import resnet_digits
from pyssl.train.loop import PretrainConfig, pretrain


def small(loss: str = "l2") -> Colorization:
    torch.manual_seed(0)
    return Colorization(resnet_digits(1, width=8), loss=loss, hidden=32)


def test_photos_split_by_region():
    tr = load_images("photos", split="train", image_size=16)
    te = load_images("photos", split="test", image_size=16)
    assert tr.images.dtype == torch.uint8 and tr.images.shape[1:] == (3, 16, 16)
    assert len(tr) == 2048 and len(te) == 450 and set(te.labels.tolist()) == {0, 1}
    # no test crop appears among the train crops (they come from disjoint column ranges)
    train_set = {bytes(x.numpy()) for x in tr.images}
    assert not any(bytes(x.numpy()) in train_set for x in te.images)
    # the same seed gives the same crops; another seed others
    assert torch.equal(load_photos("train", image_size=16).images, tr.images)
    assert not torch.equal(load_photos("train", image_size=16, seed=1).images, tr.images)
    with pytest.raises(ValueError, match="split"):
        load_photos("val")
    with pytest.raises(ValueError, match="image_size"):
        load_photos(image_size=500)


def test_short_run_beats_the_grey_baseline(tmp_path):
    tr = load_photos("train", image_size=16, n_train=512)
    te = load_photos("test", image_size=16)
    m = small()
    before = colorization_study(m, te.images, tr.images)
    cfg = PretrainConfig(steps=80, batch_size=32, progress=False, precision="fp32", lr=3e-3)
    pretrain(m, tr, cfg, str(tmp_path))
    after = colorization_study(m, te.images, tr.images)
    assert (tmp_path / "checkpoint.pt").exists()
    # the predict-ab=0 (grey) baseline does not depend on the model
    assert after["zero"] == before["zero"]
    assert after["model"]["ab_mae"] < after["zero"]["ab_mae"]
    assert after["model"]["psnr"] > after["zero"]["psnr"]


def test_classification_head():
    bins = ab_bins()
    assert 200 < bins.shape[0] < 400  # Zhang et al.'s ImageNet gamut: 313
    m = small("classification")
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    loss = m.loss([x])
    loss.backward()
    assert torch.isfinite(loss) and int(m.prior_seen) == 1
    prior = m.prior
    assert abs(float(prior.sum()) - 1.0) < 1e-5
    tgt = m._soft_targets(torch.randn(2, 2, 3, 3) * 30)
    torch.testing.assert_close(tgt.sum(1), torch.ones(2, 3, 3))
    ab = m.predict_ab(x)
    assert ab.shape == (4, 2, 16, 16) and ab.abs().max() < 130


def test_views_figure_and_study(tmp_path):
    m = small()
    imgs = load_photos("test", image_size=16).images[:6]
    views = m.default_augment(16, 3)(imgs, generator=torch.Generator().manual_seed(0))
    assert isinstance(m.default_augment(16, 3), FlipViews)
    assert len(views) == 1 and views[0].dtype == torch.float32
    assert 0.0 <= views[0].min() and views[0].max() <= 1.0
    path = tmp_path / "fig.png"
    colorization_figure(m, imgs, str(path), n=4)
    assert path.stat().st_size > 1000
    r = colorization_study(m, imgs)
    assert set(r) >= {"model", "zero", "mean"} and r["n_test"] == 6
    assert m.encoder_input(views[0]).shape == (6, 1, 16, 16)


def test_encoder_takes_rgb_for_probes():
    # a probe feeds the encoder images / 255 (FlipViews declares mean 0, std 1); the encoder
    # looks at their lightness only, through the backbone the method trained
    m = small().eval()
    rgb = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    feats = m.encoder(rgb)
    assert feats.shape == (3, m.encoder.out_dim) == (3, 32)
    torch.testing.assert_close(feats, m.encoder.backbone(m.encoder_input(rgb)))
    grey = rgb.mean(1, keepdim=True).expand(-1, 3, -1, -1)
    assert not torch.allclose(m.encoder(grey), feats)  # lightness changed: features change
    aug = m.default_augment(16, 3)
    assert aug.views[0].mean == (0.0, 0.0, 0.0) and aug.views[0].std == (1.0, 1.0, 1.0)
    # three-channel backbones (build()'s default) get the lightness replicated
    m3 = Colorization(resnet_digits(3, width=8), hidden=16)
    assert m3.encoder_input(rgb).shape == (3, 3, 16, 16)
    assert torch.isfinite(m3.loss([rgb]))


def test_bad_arguments():
    with pytest.raises(TypeError, match="encoder"):
        Colorization(torch.nn.Linear(3, 3))
    with pytest.raises(ValueError, match="loss"):
        Colorization(resnet_digits(1, width=8), loss="l3")
    with pytest.raises(ValueError, match="hidden"):
        Colorization(resnet_digits(1, width=8), hidden=0)
    with pytest.raises(ValueError, match="rebalance"):
        Colorization(resnet_digits(1, width=8), rebalance=0.0)
    m = small()
    with pytest.raises(ValueError, match="channels"):
        m.default_augment(16, 1)
    with pytest.raises(ValueError, match="views"):
        m.loss([torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)])
    with pytest.raises(ValueError, match="RGB"):
        m.loss([torch.rand(2, 1, 8, 8)])
    with pytest.raises(TypeError, match="method"):
        colorization_study(torch.nn.Linear(2, 2), torch.zeros(1, 3, 4, 4))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="images"):
        FlipViews()(torch.zeros(2, 1, 4, 4, dtype=torch.uint8))
