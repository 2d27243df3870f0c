"""TS2Vec: the hierarchical loss on pyssl's NT-Xent against TS2Vec's own (transcribed in
pyssl.reference.ts2vec), the crop and mask laws, the encoder, SWA, the loop, bad input."""

from __future__ import annotations

import json
import os

import pytest
import torch
from scipy import stats

from pyssl.data.mnist1d import SeriesData
from pyssl.methods.ts2vec import TS2Vec, hierarchical_loss, sample_crops, take_per_row
from pyssl.models.tcn import TSEncoder
from pyssl.reference.ts2vec import hierarchical_contrastive_loss
from pyssl.train.loop import PretrainConfig, pretrain

SHAPES = [(8, 40, 33), (1, 5, 4), (3, 1, 7), (5, 17, 16), (2, 2, 3)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("alpha", [0.5, 0.0, 1.0, 0.3])
def test_loss_matches_reference(shape: tuple[int, int, int], dtype: torch.dtype, alpha: float):
    g = torch.Generator().manual_seed(hash((shape, alpha)) % 2**31)
    z1 = torch.randn(shape, generator=g, dtype=dtype, requires_grad=True)
    z2 = torch.randn(shape, generator=g, dtype=dtype, requires_grad=True)
    ours = hierarchical_loss(z1, z2, alpha=alpha)
    ref = hierarchical_contrastive_loss(z1, z2, alpha=alpha)
    assert ours.dtype == dtype
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-12, "atol": 1e-13}
    torch.testing.assert_close(ours, ref, **tol)
    if ref.requires_grad:
        for a, b in zip(torch.autograd.grad(ours, (z1, z2)), torch.autograd.grad(ref, (z1, z2))):
            torch.testing.assert_close(a, b, **tol)


def test_temporal_unit_matches_reference() -> None:
    z1, z2 = torch.randn(4, 19, 6, dtype=torch.float64), torch.randn(4, 19, 6, dtype=torch.float64)
    for unit in (1, 3, 9):
        torch.testing.assert_close(
            hierarchical_loss(z1, z2, temporal_unit=unit),
            hierarchical_contrastive_loss(z1, z2, temporal_unit=unit),
        )


def test_loss_gradcheck() -> None:
    z1 = torch.randn(3, 5, 4, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(3, 5, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: hierarchical_loss(a, b), (z1, z2))


def _method(out_dim: int = 16) -> TS2Vec:
    torch.manual_seed(0)
    return TS2Vec(TSEncoder(1, out_dim, hidden=8, depth=2, dropout=0.0))


def test_method_loss_is_the_reference_on_its_crops() -> None:
    m = _method().double()
    x = torch.randn(6, 1, 23, dtype=torch.float64)
    seed = torch.tensor([1234])
    loss = m.loss([x, seed])
    # the same crops and masks, drawn again from the same seed, through TS2Vec's own loss
    x1, x2, m1, m2, crop_l = m.views(x, torch.Generator().manual_seed(1234))
    z1 = m.encoder.series(x1, m1)[:, -crop_l:]
    z2 = m.encoder.series(x2, m2)[:, :crop_l]
    torch.testing.assert_close(loss, hierarchical_contrastive_loss(z1, z2))
    # and the same seed gives the same loss; another seed another
    torch.testing.assert_close(m.loss([x, seed]), loss)
    assert not torch.allclose(m.loss([x, torch.tensor([99])]), loss)


def test_crops_overlap_and_stay_inside() -> None:
    g = torch.Generator().manual_seed(0)
    for length in (2, 3, 7, 40, 41):
        for _ in range(200):
            crop_l, left, right, eleft, eright, off = sample_crops(5, length, g)
            assert 2 <= crop_l <= length and right - left == crop_l  # the overlap is never empty
            assert 0 <= eleft <= left and right <= eright <= length
            assert bool((off + eleft >= 0).all()) and bool((off + eright <= length).all())
    # and the overlap holds the same values in both views
    x = torch.arange(3 * 2 * 30, dtype=torch.float32).reshape(3, 2, 30)
    for s in range(50):
        crop_l, left, right, eleft, eright, off = sample_crops(3, 30, g.manual_seed(s))
        x1 = take_per_row(x, off + eleft, right - eleft)
        x2 = take_per_row(x, off + left, eright - left)
        assert torch.equal(x1[..., -crop_l:], x2[..., :crop_l])


def test_crop_length_is_uniform() -> None:
    # crop_l ~ U{2..T}: a chi-square goodness-of-fit test (fails at p < 1e-4)
    g = torch.Generator().manual_seed(1)
    counts = torch.zeros(41)
    for _ in range(3000):
        counts[sample_crops(1, 40, g)[0]] += 1
    assert counts[:2].sum() == 0
    assert stats.chisquare(counts[2:].numpy()).pvalue > 1e-4


def test_mask_rate_is_one_half() -> None:
    m = _method()
    x = torch.randn(64, 1, 40)
    kept, total = 0, 0
    for s in range(20):
        _, _, m1, m2, _ = m.views(x, torch.Generator().manual_seed(s))
        kept += int(m1.sum() + m2.sum())
        total += m1.numel() + m2.numel()
    assert stats.binomtest(kept, total, 0.5).pvalue > 1e-4
    m0 = TS2Vec(TSEncoder(1, 8, hidden=4, depth=1), mask_p=0.0)
    _, _, a, b, _ = m0.views(x, torch.Generator().manual_seed(0))
    assert not a.any() and not b.any()


def test_mask_zeroes_the_input_projection() -> None:
    enc = TSEncoder(1, 8, hidden=4, depth=1, dropout=0.0).eval()
    x = torch.randn(2, 1, 9)
    none = torch.zeros(2, 9, dtype=torch.bool)
    # with every timestamp masked the output no longer depends on x
    torch.testing.assert_close(enc.series(x, none), enc.series(5 * x + 1, none))
    torch.testing.assert_close(enc.series(x, ~none), enc.series(x))
    keep = none.clone()
    keep[:, 3] = True
    assert not torch.allclose(enc.series(x, keep), enc.series(x, none))


def test_encoder_shapes_and_full_series_pooling() -> None:
    enc = TSEncoder(3, 12, hidden=8, depth=3).eval()
    x = torch.randn(4, 3, 17)
    z = enc.series(x)
    assert z.shape == (4, 17, 12)
    torch.testing.assert_close(enc(x), z.amax(1))
    assert enc.out_dim == 12


def test_swa_is_the_running_mean() -> None:
    m = _method()
    start = [p.detach().clone() for p in m.encoder.parameters()]
    seen = [start]
    for step in range(3):
        with torch.no_grad():
            for p in m.encoder.parameters():
                p.add_(torch.randn_like(p))
        seen.append([p.detach().clone() for p in m.encoder.parameters()])
        m.on_step_end(step, 3)
    for avg, *its in zip(m.averaged.parameters(), *seen):  # type: ignore[union-attr]
        torch.testing.assert_close(avg, torch.stack(its).mean(0))
    assert m.probe_encoder() is m.averaged
    assert TS2Vec(TSEncoder(1, 8, hidden=4, depth=1), swa=False).probe_encoder() is not None


def test_pretrain_loop_runs_deterministically(tmp_path) -> None:  # type: ignore[no-untyped-def]
    g = torch.Generator().manual_seed(0)
    data = SeriesData(torch.randn(32, 1, 20, generator=g), None, [], "toy")
    cfg = PretrainConfig(steps=4, batch_size=8, lr=1e-3, progress=False, log_every=1)
    finals = []
    for run in range(2):
        m = _method()
        s = pretrain(m, data, cfg, str(tmp_path / str(run)))
        finals.append([p.detach().clone() for p in m.averaged.parameters()])  # type: ignore[union-attr]
        assert s["ran_steps"] == 4
    for a, b in zip(*finals):
        assert torch.equal(a, b)
    state = torch.load(tmp_path / "0" / "checkpoint.pt", weights_only=False)
    assert state["modality"] == "series" and state["method"] == "ts2vec"
    with open(os.path.join(tmp_path, "0", "metrics.jsonl")) as fh:
        assert len([json.loads(line) for line in fh]) == 4


def test_bad_input() -> None:
    m = _method()
    x = torch.randn(4, 1, 10)
    with pytest.raises(TypeError, match="views"):
        m.loss(x)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="views"):
        m.loss([x, torch.tensor([1]), x])
    with pytest.raises(ValueError, match=r"views\[0\]"):
        m.loss([torch.randn(4, 10)])
    with pytest.raises(ValueError, match=r"views\[0\]"):
        m.loss([torch.zeros(4, 1, 10, dtype=torch.int64)])
    with pytest.raises(TypeError, match=r"views\[1\]"):
        m.loss([x, torch.tensor([1.0])])
    with pytest.raises(ValueError, match="x"):
        m.loss([torch.randn(4, 2, 10)])  # the encoder takes one channel
    with pytest.raises(ValueError, match="length"):
        m.loss([torch.randn(4, 1, 1)])
    with pytest.raises(ValueError, match="alpha"):
        TS2Vec(TSEncoder(1, 8), alpha=1.5)
    with pytest.raises(TypeError, match="alpha"):
        TS2Vec(TSEncoder(1, 8), alpha="0.5")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mask_p"):
        TS2Vec(TSEncoder(1, 8), mask_p=-0.1)
    with pytest.raises(ValueError, match="temporal_unit"):
        TS2Vec(TSEncoder(1, 8), temporal_unit=-1)
    with pytest.raises(TypeError, match="encoder"):
        TS2Vec(torch.nn.Linear(3, 3))
    with pytest.raises(ValueError, match="z2"):
        hierarchical_loss(torch.randn(2, 3, 4), torch.randn(2, 4, 4))
    with pytest.raises(TypeError, match="z1"):
        hierarchical_loss([1.0], torch.randn(2, 4, 4))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="z1"):
        hierarchical_loss(torch.randn(2, 4), torch.randn(2, 4))
    with pytest.raises(ValueError, match="out_dim"):
        TSEncoder(1, 0)
    with pytest.raises(ValueError, match="depth"):
        TSEncoder(1, 8, depth=-1)
    with pytest.raises(ValueError, match="mask"):
        TSEncoder(1, 8).series(x, torch.ones(4, 9, dtype=torch.bool))
    with pytest.raises(TypeError, match="x"):
        TSEncoder(1, 8)(x.numpy())  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ short study

_STUDY: dict = {}


def _short_study(tmp_path_factory: pytest.TempPathFactory) -> dict:
    # one small run shared by the study tests: 1,000 MNIST-1D series, a narrow encoder, 150
    # steps, probes at 20% of the 800 training labels, no supervised baseline (~15 s here)
    if not _STUDY:
        from pyssl.train.series_study import ts2vec_study

        out = tmp_path_factory.mktemp("ts2vec-study")
        r = ts2vec_study(
            steps=150,
            batch_size=16,
            hidden=16,
            depth=2,
            out_dim=32,
            num_samples=1000,
            label_fraction=0.2,
            supervised_steps=0,
            out_dir=str(out),
            log=lambda _: None,
        )
        _STUDY.update(r, out=str(out))
    return _STUDY


def _acc(study: dict, model: str) -> float:
    return next(r["test_accuracy"] for r in study["records"] if r["model"] == model)


def test_short_study_probe_beats_raw_series(tmp_path_factory: pytest.TempPathFactory) -> None:
    from pyssl.train.report import read_records

    s = _short_study(tmp_path_factory)
    assert {r["model"] for r in s["records"]} == {"ts2vec", "random-init", "raw-series"}
    key = lambda r: r["model"]  # noqa: E731
    # the records went into the run's report.json in add_records' format
    assert sorted(read_records(s["out"]), key=key) == sorted(s["records"], key=key)
    # logistic regression on the 40 raw values is near MNIST-1D's published 32%; the frozen
    # TS2Vec features must be far above it (measured here: 61.5% vs 27.5%; 53.5% with the
    # published mask_p=0.5 instead of the study's 1.0)
    assert _acc(s, "ts2vec") > _acc(s, "raw-series") + 0.15


@pytest.mark.xfail(
    strict=True,
    reason="measured: with this narrow encoder (16/2/32, 150 steps) the random-init TSEncoder "
    "still probes better than TS2Vec (68.0% vs 61.5% with the study's mask_p=1.0, 53.5% with "
    "the published 0.5); at the study's default size TS2Vec wins (docs/time-series.md); "
    "strict, so a reversal is noticed",
)
def test_short_study_probe_beats_random_init(tmp_path_factory: pytest.TempPathFactory) -> None:
    s = _short_study(tmp_path_factory)
    assert _acc(s, "ts2vec") > _acc(s, "random-init")
