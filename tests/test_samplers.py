"""The numba mask samplers against their methods' pure-Python definitions
(``pyssl.reference.samplers``, written from the repositories' code): the same masks for one
seed, then the laws each method states (counts, block shapes, tubes, overlap rules), and bad
arguments, including ratios no mask can satisfy (an error, never an endless loop)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from pyssl import masking, samplers
from pyssl.reference import samplers as ref


def rngs(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    return np.random.default_rng(seed), np.random.default_rng(seed)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(
    "kw",
    [
        dict(),
        dict(input_size=(9, 13), num_masking_patches=50, min_num_patches=4, min_aspect=0.5),
        dict(input_size=6, num_masking_patches=36, min_num_patches=30),
    ],
)
@pytest.mark.parametrize("exact", [False, True])
def test_beit_matches_definition(seed, kw, exact):
    a, b = rngs(seed)
    got = samplers.beit_masks(7, **kw, exact=exact, rng=a)
    size = kw.get("input_size", 14)
    h, w = (size, size) if isinstance(size, int) else size
    rkw = {k: v for k, v in kw.items() if k != "input_size"}
    want = np.array([ref.beit_mask(b, h, w, **rkw, exact=exact) for _ in range(7)], dtype=bool)
    assert np.array_equal(got, want)
    n = kw.get("num_masking_patches", 75)
    counts = got.reshape(7, -1).sum(1)
    assert (counts <= n).all()
    if exact:
        assert (counts == n).all()


def test_beit_laws():
    """Block-wise masking masks about the target on average and in connected blocks: most
    masked patches have a masked 4-neighbour (a uniform 75/196 mask gives ~0.8 of that)."""
    m = samplers.beit_masks(200, rng=3)
    assert 70 <= m.reshape(200, -1).sum(1).mean() <= 75
    nb = np.zeros_like(m)
    nb[:, 1:] |= m[:, :-1]
    nb[:, :-1] |= m[:, 1:]
    nb[:, :, 1:] |= m[:, :, :-1]
    nb[:, :, :-1] |= m[:, :, 1:]
    assert (nb & m).sum() / m.sum() > 0.97


def _beit_definition_boxes(
    rng: np.random.Generator, n: int, grid: int, lo: int, hi: int, log_aspect: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """BEiT's block law simulated from its definition, vectorised: area ``U(lo, hi)``, aspect
    ``exp(U(log_aspect))``, sides ``round(sqrt(area * aspect))`` and ``round(sqrt(area /
    aspect))``; an attempt counts when the block fits the grid and has at most ``hi`` patches
    (on an empty grid), so the placed block follows the law conditioned on that."""
    area = lo + (hi - lo) * rng.random(n)
    aspect = np.exp(log_aspect[0] + (log_aspect[1] - log_aspect[0]) * rng.random(n))
    h, w = np.rint(np.sqrt(area * aspect)), np.rint(np.sqrt(area / aspect))
    ok = (h < grid) & (w < grid) & (h * w <= hi) & (h * w > 0)
    return h[ok], w[ok]


def test_beit_single_block_laws():
    """One block per image (one call of BEiT's ``_mask`` step on an empty 40x40 grid, blocks of
    100 to 300 patches): the masked region is one rectangle; its area lies within
    [min_num_patches, max block area] up to the rounding of the sides; its log aspect ratio
    is close to uniform on [log 0.3, log 1/0.3] (one-sample KS; the rounded sides make it
    discrete) and follows the definition's law (two-sample KS against a simulation of it),
    a test that rejects a linear-uniform aspect law."""
    grid, lo, hi, n = 40, 100, 300, 4000
    log_aspect = (math.log(0.3), math.log(1 / 0.3))
    rng = np.random.default_rng(0)
    hw = np.empty((n, 2), dtype=np.int64)
    for k in range(n):
        mask = np.zeros((grid, grid), dtype=np.bool_)
        added = samplers.beit_block(mask, rng, hi, lo, *log_aspect)
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        h, w = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
        assert added == h * w == mask.sum()  # one filled rectangle
        hw[k] = h, w
    area = hw[:, 0] * hw[:, 1]
    # area: at most the max block area; at least min_num_patches less the rounding of the
    # sides, (sqrt(a r) - 1/2)(sqrt(a / r) - 1/2) at a = 100 and the extreme aspect 0.3
    r = 0.3
    floor = (math.sqrt(lo * r) - 0.5) * (math.sqrt(lo / r) - 0.5)
    assert area.max() <= hi and area.min() >= math.floor(floor)
    assert ((area >= lo) & (area <= hi)).mean() > 0.97
    log_ratio = np.log(hw[:, 0] / hw[:, 1])
    uniform = stats.uniform(log_aspect[0], log_aspect[1] - log_aspect[0])
    ks = stats.kstest(log_ratio, uniform.cdf)
    assert ks.statistic < 0.035, ks  # the definition's own rounding gives ~0.016
    sim_h, sim_w = _beit_definition_boxes(
        np.random.default_rng(1), 200_000, grid, lo, hi, log_aspect
    )
    assert stats.ks_2samp(log_ratio, np.log(sim_h / sim_w)).pvalue > 1e-3
    assert stats.ks_2samp(area, sim_h * sim_w).pvalue > 1e-3
    g = np.random.default_rng(2)  # power: aspect uniform on [0.3, 1/0.3] instead
    a = lo + (hi - lo) * g.random(200_000)
    asp = 0.3 + (1 / 0.3 - 0.3) * g.random(200_000)
    h2, w2 = np.rint(np.sqrt(a * asp)), np.rint(np.sqrt(a / asp))
    ok = (h2 < grid) & (w2 < grid) & (h2 * w2 <= hi)
    assert stats.ks_2samp(log_ratio, np.log(h2[ok] / w2[ok])).pvalue < 1e-20


@pytest.mark.parametrize("seed", [0, 5])
def test_simmim_matches_definition_and_laws(seed):
    a, b = rngs(seed)
    got = samplers.simmim_masks(5, rng=a)
    want = np.array([ref.simmim_mask(b) for _ in range(5)], dtype=bool)
    assert np.array_equal(got, want)
    assert got.shape == (5, 48, 48)
    coarse = got.reshape(5, 6, 8, 6, 8)
    assert (coarse.all(axis=(2, 4)) == coarse.any(axis=(2, 4))).all()  # whole 8x8 cells
    assert (coarse.any(axis=(2, 4)).reshape(5, -1).sum(1) == math.ceil(36 * 0.6)).all()


@pytest.mark.parametrize("seed", [0, 5])
def test_tube_matches_definition_and_laws(seed):
    a, b = rngs(seed)
    got = samplers.tube_masks(4, (3, 7, 5), 0.75, rng=a)
    want = np.array([ref.tube_mask(b, 3, 7, 5, 0.75) for _ in range(4)], dtype=bool)
    assert np.array_equal(got.reshape(4, 3, -1), want)
    assert (got == got[:, :1]).all()  # the same mask in every frame: tubes
    assert (got[:, 0].reshape(4, -1).sum(1) == int(0.75 * 35)).all()


@pytest.mark.parametrize("seed", [0, 1, 7])
@pytest.mark.parametrize("allow_overlap", [False, True])
def test_ijepa_matches_definition_and_laws(seed, allow_overlap):
    a, b = rngs(seed)
    enc, pred = samplers.ijepa_masks(8, allow_overlap=allow_overlap, rng=a)
    enc_r, pred_r = ref.ijepa_masks(b, 8, allow_overlap=allow_overlap)
    assert np.array_equal(enc, np.array(enc_r)) and np.array_equal(pred, np.array(pred_r))
    # the drawn block sizes, from the same draws
    g = np.random.default_rng(seed)
    ph, pw = ref.ijepa_block_size(g.random(), 14, 14, (0.15, 0.2), (0.75, 1.5))
    eh, ew = ref.ijepa_block_size(g.random(), 14, 14, (0.85, 1.0), (1.0, 1.0))
    assert pred.shape[1] == 4 and enc.shape[1] == 1
    assert pred.shape[2] == ph * pw  # targets are never constrained: whole blocks
    for i in range(8):
        for k in range(4):
            rows, cols = pred[i, k] // 14, pred[i, k] % 14
            assert rows.max() - rows.min() + 1 == ph and cols.max() - cols.min() + 1 == pw
        e = enc[i, 0]
        assert len(e) > 10 and len(e) <= eh * ew
        if not allow_overlap:
            assert not np.isin(e, pred[i]).any()


def test_ijepa_relaxes_constraints_instead_of_hanging():
    # 6 targets of ~40% of a 6x6 grid leave no room for a context block: I-JEPA drops the
    # constraints one by one and ends
    enc, pred = samplers.ijepa_masks(4, 6, pred_mask_scale=(0.4, 0.4), npred=6, min_keep=4, rng=0)
    assert enc.shape[0] == 4 and enc.shape[2] > 4


@pytest.mark.parametrize("seed", [0, 3])
@pytest.mark.parametrize("kw", [dict(), dict(num_patches=64, mask_prob=0.5, mask_length=2)])
def test_data2vec_matches_definition_and_laws(seed, kw):
    a, b = rngs(seed)
    got = samplers.data2vec_masks(6, **kw, rng=a)
    want = np.array([ref.data2vec_mask(b, **kw) for _ in range(6)], dtype=bool)
    assert np.array_equal(got, want)
    length = kw.get("num_patches", 196)
    keep = int(length * (1 - kw.get("mask_prob", 0.8)))
    assert (got.sum(1) == length - keep).all()  # equal counts per sample


def test_samplers_reproducible_and_reexported():
    assert np.array_equal(masking.beit_masks(3, rng=9), samplers.beit_masks(3, rng=9))
    assert not np.array_equal(samplers.simmim_masks(3, rng=9), samplers.simmim_masks(3, rng=8))
    with pytest.raises(AttributeError):
        masking.no_such_sampler  # noqa: B018


@pytest.mark.parametrize(
    "fn, kw, match",
    [
        (samplers.beit_masks, dict(num_masking_patches=197), "num_masking_patches"),
        (samplers.beit_masks, dict(min_aspect=0.0), "min_aspect"),
        (samplers.beit_masks, dict(min_aspect=2.0, max_aspect=1.0), "max_aspect"),
        (samplers.simmim_masks, dict(mask_ratio=1.5), "mask_ratio"),
        (samplers.simmim_masks, dict(input_size=200), "input_size"),
        (samplers.simmim_masks, dict(model_patch_size=5), "mask_patch_size"),
        (samplers.tube_masks, dict(mask_ratio=-0.1), "mask_ratio"),
        (samplers.tube_masks, dict(input_size=(8, 14)), "input_size"),
        (samplers.ijepa_masks, dict(min_keep=200), "min_keep"),
        (samplers.ijepa_masks, dict(pred_mask_scale=(0.3, 0.2)), "pred_mask_scale"),
        (samplers.data2vec_masks, dict(num_patches=195), "num_patches"),
        (samplers.data2vec_masks, dict(mask_prob=1.2), "mask_prob"),
        (samplers.data2vec_masks, dict(mask_length=1), "mask_length"),
    ],
)
def test_bad_input(fn, kw, match):
    with pytest.raises(ValueError, match=match):
        fn(2, **kw, rng=0)
