"""The text ops (token masking, span and time masks, masked / causal LM losses) against their
references: the counter-based twin for exact masks, Hugging Face's collator for the laws
(chi-square tests over many draws), wav2vec 2.0's ``_compute_mask_indices`` and SpanBERT's
sampler draw for draw, eager ``linear`` + ``cross_entropy`` for the losses (gradcheck in
float64, flash-attention's 2x rule in 16-bit)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import low_precision_tol, poisoned
from scipy import stats

import pyssl.ops as ops
from pyssl import losses, samplers
from pyssl.ops._backend import view
from pyssl.ops.text import _draw_seed
from pyssl.reference import text as ref

_C = pytest.importorskip("pyssl._C")


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def chi2_sf_2dof(x: float) -> float:
    return math.exp(-x / 2)


def chi2_pvalue(observed: np.ndarray, expected: np.ndarray) -> float:
    """Upper tail of Pearson's statistic (Wilson-Hilferty for more than 2 degrees of freedom)."""
    stat = float(((observed - expected) ** 2 / expected).sum())
    k = len(observed) - 1
    if k == 2:
        return chi2_sf_2dof(stat)
    z = ((stat / k) ** (1 / 3) - (1 - 2 / (9 * k))) / math.sqrt(2 / (9 * k))
    return 0.5 * math.erfc(z / math.sqrt(2))


# ------------------------------------------------------------------------------ mask_tokens


@pytest.mark.parametrize("shape", [(1, 1), (3, 37), (8, 129)])
@pytest.mark.parametrize("extras", ["none", "special", "words"])
def test_mask_tokens_matches_counter_twin(shape, extras):
    b, t = shape
    for seed in range(3):
        g = gen(seed)
        ids = torch.randint(0, 500, shape, generator=g)
        sp = torch.rand(shape, generator=g) < 0.2 if extras != "none" else None
        wid = None
        if extras == "words":
            wid = torch.sort(torch.randint(0, max(t // 2, 1), shape, generator=g), 1).values
            wid[:, 0] = -1
        kw = dict(vocab_size=500, mask_token_id=7, mlm_probability=0.4)
        got = ops.mask_tokens(ids, **kw, special_tokens_mask=sp, word_ids=wid, generator=gen(seed))
        seed_v = int(_draw_seed(gen(seed)))
        want = ref.mask_tokens_counter(ids, seed_v, **kw, special_tokens_mask=sp, word_ids=wid)
        torch.testing.assert_close(got[0], want[0], rtol=0, atol=0)
        torch.testing.assert_close(got[1], want[1], rtol=0, atol=0)
        via_ref = ops.mask_tokens(
            ids,
            **kw,
            special_tokens_mask=sp,
            word_ids=wid,
            generator=gen(seed),
            backend="reference",
        )
        assert torch.equal(via_ref[0], got[0]) and torch.equal(via_ref[1], got[1])


def _classes(ids, masked, labels, mask_id):
    chosen = labels != -100
    to_mask = (masked == mask_id) & chosen
    kept = (masked == ids) & chosen & ~to_mask
    other = chosen & ~to_mask & ~kept
    return chosen, np.array([int(to_mask.sum()), int(other.sum()), int(kept.sum())])


def _expected_split(n: int, mr: float, rr: float, vocab: int) -> np.ndarray:
    # a random token equals the mask id or the original with probability 1/V each
    p = np.array([mr + rr / vocab, rr * (vocab - 2) / vocab, 1 - mr - rr + rr / vocab])
    return n * p


@pytest.mark.parametrize("impl", ["pyssl", "hf_reference"])
@pytest.mark.parametrize("split", [(0.8, 0.1), (0.5, 0.3), (1.0, 0.0)])
def test_mask_tokens_laws_chi_square(impl, split):
    mr, rr = split
    vocab, mask_id, p = 1000, 3, 0.15
    g = gen(11)
    ids = torch.randint(4, vocab, (64, 512), generator=g)
    sp = torch.zeros_like(ids, dtype=torch.bool)
    sp[:, 0] = sp[:, -1] = True
    fn = ops.mask_tokens if impl == "pyssl" else ref.mask_tokens_hf
    masked, labels = fn(
        ids,
        vocab_size=vocab,
        mask_token_id=mask_id,
        mlm_probability=p,
        mask_replace_prob=mr,
        random_replace_prob=rr,
        special_tokens_mask=sp,
        generator=gen(5),
    )
    chosen, counts = _classes(ids, masked, labels, mask_id)
    assert not chosen[sp].any()
    assert torch.equal(masked[~chosen], ids[~chosen])
    assert torch.equal(labels[chosen], ids[chosen])
    # chosen fraction: binomial, |z| < 4.5
    n_allowed = int((~sp).sum())
    z = (int(chosen.sum()) - n_allowed * p) / math.sqrt(n_allowed * p * (1 - p))
    assert abs(z) < 4.5, z
    expected = _expected_split(int(chosen.sum()), mr, rr, vocab)
    live = expected > 0
    assert (counts[~live] == 0).all()
    if live.sum() == 3:
        assert chi2_pvalue(counts, expected) > 1e-4, (counts, expected)


def test_mask_tokens_random_ids_are_uniform():
    vocab = 16
    ids = torch.zeros(128, 512, dtype=torch.int64)
    masked, labels = ops.mask_tokens(
        ids,
        vocab_size=vocab,
        mask_token_id=1,
        mlm_probability=1.0,
        mask_replace_prob=0.0,
        random_replace_prob=1.0,
        generator=gen(3),
    )
    counts = np.bincount(masked.flatten().numpy(), minlength=vocab)
    assert chi2_pvalue(counts, np.full(vocab, ids.numel() / vocab)) > 1e-4


def test_mask_tokens_whole_words():
    g = gen(2)
    b, t = 16, 200
    lengths = torch.randint(1, 5, (b, t), generator=g)
    wid = torch.stack([torch.repeat_interleave(torch.arange(t), lengths[i])[:t] for i in range(b)])
    wid[:, :2] = -1
    ids = torch.randint(5, 300, (b, t), generator=g)
    _, labels = ops.mask_tokens(
        ids, vocab_size=300, mask_token_id=4, mlm_probability=0.3, word_ids=wid, generator=g
    )
    chosen = labels != -100
    assert not chosen[wid < 0].any()
    for i in range(b):
        for w in wid[i].unique().tolist():
            if w < 0:
                continue
            c = chosen[i][wid[i] == w]
            assert c.all() or not c.any()
    # word-level draws: fraction of chosen words near 0.3
    n_words = sum(int((wid[i].unique() >= 0).sum()) for i in range(b))
    n_chosen = sum(len({int(w) for w in wid[i][chosen[i]]}) for i in range(b))
    assert abs(n_chosen - 0.3 * n_words) < 4.5 * math.sqrt(n_words * 0.21)


def test_mask_tokens_reproducible_and_thread_independent():
    ids = torch.randint(0, 100, (7, 300), generator=gen(0))
    kw = dict(vocab_size=100, mask_token_id=1)
    a = ops.mask_tokens(ids, **kw, generator=gen(9))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        b = ops.mask_tokens(ids, **kw, generator=gen(9))
    finally:
        torch.set_num_threads(before)
    c = ops.mask_tokens(ids, **kw, generator=gen(10))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])


def test_mask_tokens_numpy_twin():
    ids = np.random.default_rng(0).integers(0, 100, (4, 64))
    a = ops.mask_tokens_numpy(ids, vocab_size=100, mask_token_id=2, rng=5)
    b = ops.mask_tokens_numpy(ids, vocab_size=100, mask_token_id=2, rng=np.random.default_rng(5))
    assert a[0].dtype == np.int64 and np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert ((a[1] == -100) | (a[1] == ids)).all()


def _numpy_twin_inputs(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    g = np.random.default_rng(seed)
    ids = g.integers(0, 300, (6, 90))
    special = g.random((6, 90)) < 0.15
    words = np.sort(g.integers(0, 40, (6, 90)), axis=1)
    words[:, :3] = -1
    return ids, special, words


@pytest.mark.parametrize("extras", ["none", "special", "words", "both", "reversed_views"])
def test_mask_tokens_numpy_equals_mask_tokens(extras):
    """``mask_tokens_numpy(rng=s)`` draws one 63-bit seed ``rng.integers(0, 2**63 - 1)`` and
    seeds a torch generator with it: the same masks as ``mask_tokens`` given that generator,
    with the special-tokens mask and the word ids passed as numpy arrays."""
    ids, special, words = _numpy_twin_inputs(1)
    if extras == "reversed_views":  # negative strides: torch.from_numpy refuses them as they are
        ids, special, words = ids[:, ::-1], special[:, ::-1], np.sort(words, axis=1)[:, ::-1]
    sp = special if extras in ("special", "both", "reversed_views") else None
    wid = words if extras in ("words", "both", "reversed_views") else None
    kw = dict(vocab_size=300, mask_token_id=5, mlm_probability=0.35)
    for seed in (0, 7, 2**40):
        got = ops.mask_tokens_numpy(ids, **kw, special_tokens_mask=sp, word_ids=wid, rng=seed)
        torch_seed = int(np.random.default_rng(seed).integers(0, 2**63 - 1))
        want = ops.mask_tokens(
            torch.from_numpy(ids.copy()),
            **kw,
            special_tokens_mask=None if sp is None else torch.from_numpy(sp.copy()),
            word_ids=None if wid is None else torch.from_numpy(wid.copy()),
            generator=gen(torch_seed),
        )
        assert np.array_equal(got[0], want[0].numpy()) and np.array_equal(got[1], want[1].numpy())
        chosen = got[1] != -100
        if sp is not None:
            assert not chosen[sp].any()
        if wid is not None:
            assert not chosen[wid < 0].any()


def test_mask_tokens_numpy_rejects_float_ids():
    with pytest.raises(TypeError, match="input_ids"):
        ops.mask_tokens_numpy(np.zeros((2, 3)), vocab_size=10, mask_token_id=1, rng=0)


class _MaskingDataset(torch.utils.data.Dataset):
    def __init__(self, ids: np.ndarray, special: np.ndarray, words: np.ndarray) -> None:
        self.ids, self.special, self.words = ids, special, words

    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        if i == 1:  # an OpenMP team of 2 in the forked worker too (the worker starts at 1)
            torch.set_num_threads(2)
        return ops.mask_tokens_numpy(
            self.ids,
            vocab_size=300,
            mask_token_id=5,
            special_tokens_mask=self.special,
            word_ids=self.words,
            rng=i,
        )


def test_mask_tokens_numpy_in_forked_dataloader_worker_after_openmp():
    """The parent runs the OpenMP kernel first (a thread team of 2), then forks a DataLoader
    worker that calls the numpy twin: no hang (the loader's timeout would raise), and the
    worker's masks equal the parent's for the same seeds."""
    ids, special, words = _numpy_twin_inputs(2)
    big = torch.randint(0, 300, (64, 2048), generator=gen(0))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        ops.mask_tokens(big, vocab_size=300, mask_token_id=5, generator=gen(1))  # OpenMP here
        want = [
            ops.mask_tokens_numpy(
                ids, vocab_size=300, mask_token_id=5, special_tokens_mask=special,
                word_ids=words, rng=i,
            )
            for i in range(2)
        ]  # fmt: skip
        loader = torch.utils.data.DataLoader(
            _MaskingDataset(ids, special, words),
            batch_size=None,
            num_workers=1,
            multiprocessing_context="fork",
            timeout=120,
        )
        got = list(loader)
    finally:
        torch.set_num_threads(before)
    assert len(got) == 2
    for (gm, gl), (wm, wl) in zip(got, want):
        assert np.array_equal(np.asarray(gm), wm) and np.array_equal(np.asarray(gl), wl)


def test_mask_tokens_int32_and_zero_probability():
    ids = torch.randint(0, 50, (3, 20), dtype=torch.int32)
    m, lab = ops.mask_tokens(ids, vocab_size=50, mask_token_id=1, mlm_probability=0.0)
    assert m.dtype == torch.int32 and torch.equal(m, ids) and (lab == -100).all()
    m, lab = ops.mask_tokens(ids, vocab_size=50, mask_token_id=1, mlm_probability=1.0)
    assert torch.equal(lab, ids)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(input_ids=torch.tensor([[0, 50]])), ValueError, "input_ids"),
        (dict(input_ids=torch.tensor([[-1, 2]])), ValueError, "input_ids"),
        (dict(mlm_probability=1.5), ValueError, "mlm_probability"),
        (dict(mlm_probability=-0.1), ValueError, "mlm_probability"),
        (dict(mask_replace_prob=0.95), ValueError, "random_replace_prob"),
        (dict(random_replace_prob=1.2), ValueError, "random_replace_prob"),
        (dict(mask_token_id=50), ValueError, "mask_token_id"),
        (dict(vocab_size=0), ValueError, "vocab_size"),
        (dict(input_ids=torch.zeros(2, 3)), TypeError, "input_ids"),
        (dict(input_ids=torch.zeros(6, dtype=torch.int64)), ValueError, "input_ids"),
        (dict(special_tokens_mask=torch.zeros(2, 2, dtype=torch.bool)), ValueError, "special"),
        (dict(word_ids=torch.zeros(2, 2, dtype=torch.int64)), ValueError, "word_ids"),
        (dict(word_ids=torch.full((2, 3), 7)), ValueError, "word_ids"),
        (dict(word_ids=torch.full((2, 3), -2)), ValueError, "word_ids"),
    ],
)
@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_mask_tokens_bad_input(kwargs, exc, match, backend):
    args = dict(
        input_ids=torch.ones(2, 3, dtype=torch.int64),
        vocab_size=50,
        mask_token_id=4,
        mlm_probability=0.5,
        mask_replace_prob=0.8,
        random_replace_prob=0.1,
    )
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        ops.mask_tokens(**args, backend=backend)


# -------------------------------------------------------------------------- span and time


@pytest.mark.parametrize(
    "prob, p, max_span, special",
    [
        (0.15, 0.2, 10, 0.1),  # SpanBERT's defaults
        (0.4, 0.5, 3, 0.3),
        (0.3, 1.0, 10, 0.0),  # p = 1: every span has length 1
        (0.5, 0.01, 500, 0.1),  # max_span > T: the sampler's CDF stops at T
        (1.0, 0.2, 10, 0.2),  # every free token: the draws run out, one-token spans top up
    ],
)
def test_span_mask_matches_spanbert_sampler(prob, p, max_span, special):
    allowed = np.random.default_rng(0).random((6, 97)) >= special
    chosen, span_id = samplers.span_mask_batch(allowed, prob, p, max_span, np.random.default_rng(3))
    rng = np.random.default_rng(3)
    for b in range(6):
        budget = int(prob * allowed[b].sum() + 0.5)
        c, s = ref.span_mask(97, rng, budget=budget, p=p, max_span=max_span, allowed=allowed[b])
        assert np.array_equal(c, chosen[b]) and np.array_equal(s, span_id[b])
        assert c.sum() == budget  # every row reaches its budget
        assert not c[~allowed[b]].any()
        lengths = np.bincount(s[s >= 0])
        assert lengths.min() >= 1 and lengths.max() <= max_span
        assert ((c) == (s >= 0)).all()
        for k in range(len(lengths)):  # spans are contiguous and disjoint
            where = np.flatnonzero(s == k)
            assert where[-1] - where[0] + 1 == len(where)
        if p == 1.0:
            assert (lengths == 1).all()


def _spanbert_law(p: float, max_span: int) -> np.ndarray:
    """SpanBERT's ``len_distrib``, written as its ``PairWithSpanMaskingScheme`` does."""
    len_distrib = [p * (1 - p) ** (i - 1) for i in range(1, max_span + 1)]
    return np.array([x / sum(len_distrib) for x in len_distrib])


def test_span_length_law_chi_square():
    """The first span of a row is never cut by the budget (budget >= max_span) and is redrawn
    only when it would leave the row, so its length follows SpanBERT's renormalised law times
    the share of starts that fit, ``(T - l + 1) / T`` (within 1% of 1 at T = 1000)."""
    t, rows = 1000, 20000
    allowed = np.ones((rows, t), dtype=np.bool_)
    _, span_id = samplers.span_mask_batch(allowed, 0.01, 0.2, 10, np.random.default_rng(0))
    first = (span_id == 0).sum(1)
    observed = np.bincount(first, minlength=11)[1:]
    assert observed.sum() == rows
    law = _spanbert_law(0.2, 10)
    assert abs((law * np.arange(1, 11)).sum() - 3.797) < 1e-3  # SpanBERT's mean, 3.8
    fit = law * (t - np.arange(1, 11) + 1)
    expected = rows * fit / fit.sum()
    assert stats.chisquare(observed, expected).pvalue > 1e-4, (observed, expected)
    # the test has the power to tell the clipped law min(Geometric(0.2), 10) pyssl used before
    clipped = np.array([0.2 * 0.8 ** (i - 1) for i in range(1, 10)] + [0.8**9])
    wrong = clipped * (t - np.arange(1, 11) + 1)
    assert stats.chisquare(observed, rows * wrong / wrong.sum()).pvalue < 1e-20
    # the sampler's CDF is the law's
    cdf = samplers.span_length_cdf(0.2, 10, t)
    np.testing.assert_allclose(np.diff(cdf, prepend=0.0), law, rtol=1e-12)


@pytest.mark.parametrize(
    "change, exc, match",
    [
        (dict(input_ids=torch.tensor([[0, 50, 1]])), ValueError, "input_ids"),
        (dict(input_ids=torch.tensor([[-1, 2, 3]])), ValueError, "input_ids"),
        (dict(input_ids=torch.zeros(2, 3)), TypeError, "input_ids"),
        (dict(input_ids=torch.zeros(6, dtype=torch.int64)), ValueError, "input_ids"),
        (dict(mlm_probability=1.5), ValueError, "mlm_probability"),
        (dict(mlm_probability=-0.1), ValueError, "mlm_probability"),
        (dict(mlm_probability="0.1"), TypeError, "mlm_probability"),
        (dict(p=0.0), ValueError, "p:"),
        (dict(p=1.2), ValueError, "p:"),
        (dict(p=-0.2), ValueError, "p:"),
        (dict(max_span=0), ValueError, "max_span"),
        (dict(max_span=2.5), TypeError, "max_span"),
        (dict(mask_replace_prob=0.95), ValueError, "random_replace_prob"),
        (dict(mask_replace_prob=0.5, random_replace_prob=0.6), ValueError, "random_replace_prob"),
        (dict(mask_replace_prob=1.1, random_replace_prob=0.0), ValueError, "mask_replace_prob"),
        (dict(special_tokens_mask=torch.zeros(2, 2, dtype=torch.bool)), ValueError, "special"),
        (dict(special_tokens_mask=torch.zeros(3, 2, dtype=torch.bool)), ValueError, "special"),
        (dict(special_tokens_mask=np.zeros((2, 3), dtype=bool)), TypeError, "special"),
        (dict(mask_token_id=50), ValueError, "mask_token_id"),
        (dict(vocab_size=0), ValueError, "vocab_size"),
    ],
)
def test_span_mask_bad_input(change, exc, match):
    args = dict(input_ids=torch.ones(2, 3, dtype=torch.int64), vocab_size=50, mask_token_id=4)
    args.update(change)
    with pytest.raises(exc, match=match):
        ops.span_mask(**args)


def test_span_mask_op_replaces_whole_spans():
    ids = torch.randint(5, 1000, (32, 256), generator=gen(1))
    sp = torch.zeros_like(ids, dtype=torch.bool)
    sp[:, 0] = True
    masked, labels = ops.span_mask(
        ids, vocab_size=1000, mask_token_id=4, special_tokens_mask=sp, generator=gen(2)
    )
    chosen = labels != -100
    assert not chosen[:, 0].any()
    assert torch.equal(chosen.sum(1), torch.full((32,), int(0.15 * 255 + 0.5)))
    # span-level replacement: in every run of chosen tokens with one span id, the class agrees
    rng_state = ops.span_mask(ids, vocab_size=1000, mask_token_id=4, generator=gen(2))
    assert torch.equal(rng_state[1], ops.span_mask(ids, vocab_size=1000, mask_token_id=4,
                                                   generator=gen(2))[1])  # fmt: skip
    allowed = ~sp.numpy()
    seed = int(_draw_seed(gen(2)))
    _, span_id = samplers.span_mask_batch(allowed, 0.15, 0.2, 10, np.random.default_rng(seed))
    sid = torch.from_numpy(span_id)
    for b in range(32):
        for s in sid[b].unique().tolist():
            if s < 0:
                continue
            sel = sid[b] == s
            is_mask = masked[b][sel] == 4
            assert is_mask.all() or not is_mask.any()
    share = float((masked[chosen] == 4).float().mean())
    assert 0.7 < share < 0.9


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("mask_length, min_masks", [(10, 2), (1, 0), (7, 40)])
def test_time_mask_matches_wav2vec2(seed, mask_length, min_masks):
    shape = (5, 160)
    lengths = np.array([160, 100, 9, 57, 0])
    got = ops.time_mask(shape, 0.65, mask_length, min_masks, lengths, rng=seed)
    want = ref.compute_mask_indices(
        shape, 0.65, mask_length, np.random.default_rng(seed), lengths, min_masks
    )
    assert np.array_equal(got, want)
    for b, n in enumerate(lengths):
        assert not got[b, n:].any()  # padding respected


def test_time_mask_probabilistic_rounding():
    """``int(mask_prob * L / mask_length + eps)`` spans with one ``eps ~ U[0, 1)`` per call:
    6.6 expected spans give 7 with probability 0.6 and 6 otherwise (floor would always give 6,
    round always 7). Spans of length 1 never overlap, so the masked frames count the starts."""
    calls = 2000
    counts = np.empty(calls, dtype=np.int64)
    for seed in range(calls):
        m = ops.time_mask((3, 200), 0.033, 1, rng=seed)
        per_row = m.sum(1)
        assert (per_row == per_row[0]).all()  # one eps for the whole batch
        counts[seed] = per_row[0]
    assert set(np.unique(counts).tolist()) == {6, 7}
    se = math.sqrt(0.6 * 0.4 / calls)
    assert abs(counts.mean() - 6.6) < 4.5 * se, counts.mean()
    # with spans of 10 frames: the same counts of starts, drawn by the reference draw for draw
    m = ops.time_mask((1, 200), 0.33, 10, rng=11)
    eps = np.random.default_rng(11).random()
    want = ref.compute_mask_indices((1, 200), 0.33, 10, np.random.default_rng(11))
    assert np.array_equal(m, want) and m.sum() <= 10 * int(6.6 + eps)


def test_time_mask_rows_with_no_span_stay_unmasked():
    """transformers masks frame T - 1 of a padded row that draws no span (its dummy start);
    pyssl masks nothing there (documented)."""
    m = ops.time_mask((3, 50), 0.5, 10, lengths=np.array([50, 5, 9]), rng=0)
    assert m[0].any() and not m[1:].any()


@pytest.mark.parametrize(
    "args, match",
    [
        (((2, 10), 0.5, 11), "mask_length"),
        (((2, 10), 1.5, 2), "mask_prob"),
        (((2, 10), 0.5, 0), "mask_length"),
        (((2, 10, 3), 0.5, 2), "shape"),
    ],
)
def test_time_mask_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        ops.time_mask(*args)
    with pytest.raises(ValueError, match="lengths"):
        ops.time_mask((2, 10), 0.5, 2, lengths=np.array([11, 3]))


# ----------------------------------------------------------------------------- the losses


def lm_inputs(n_shape, h, v, dtype, seed, frac=0.3, bias=True):
    g = gen(seed)
    hidden = torch.randn(*n_shape, h, generator=g).to(dtype)
    weight = (torch.randn(v, h, generator=g) / math.sqrt(h)).to(dtype)
    b = torch.randn(v, generator=g).to(dtype) if bias else None
    labels = torch.randint(0, v, n_shape, generator=g)
    labels[torch.rand(n_shape, generator=g) > frac] = -100
    return hidden, weight, b, labels


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [((1, 1), 5, 3), ((3, 41), 33, 2500), ((2, 9), 16, 130)])
def test_masked_lm_loss_fp32(reduction, bias, shape):
    n_shape, h, v = shape
    for seed in range(2):
        hidden, weight, b, labels = lm_inputs(n_shape, h, v, torch.float32, seed, bias=bias)
        labels.view(-1)[0] = 0  # at least one label
        params = [t.clone().requires_grad_() for t in (hidden, weight) + ((b,) if bias else ())]
        got = ops.masked_lm_loss(
            params[0], params[1], labels, bias=params[2] if bias else None, reduction=reduction
        )
        exact = [t.detach().double().requires_grad_() for t in params]
        want = ref.masked_lm_loss(
            exact[0], exact[1], labels, exact[2] if bias else None, reduction=reduction
        )
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)
        up = torch.rand_like(want)
        grads = torch.autograd.grad(got, params, up.float())
        wgrads = torch.autograd.grad(want, exact, up)
        for g_, w_ in zip(grads, wgrads):
            torch.testing.assert_close(g_.double(), w_, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_masked_lm_loss_gradcheck_fp64(backend):
    hidden, weight, b, labels = lm_inputs((2, 3), 5, 13, torch.float64, 3, frac=0.6)
    labels[0, 0] = 5
    for reduction in ("mean", "none"):

        def fn(hh, ww, bb, reduction=reduction):
            return ops.masked_lm_loss(hh, ww, labels, bias=bb, reduction=reduction, backend=backend)

        args = tuple(t.clone().requires_grad_() for t in (hidden, weight, b))
        # nondet_tol: a second backward through one graph recomputes (another summation order)
        assert torch.autograd.gradcheck(fn, args, nondet_tol=1e-12)


def test_causal_lm_loss_matches_shifted_reference():
    hidden, weight, b, labels = lm_inputs((3, 17), 12, 90, torch.float64, 4, frac=0.8)
    for reduction in ("mean", "sum", "none"):
        hh = hidden.clone().requires_grad_()
        got = ops.causal_lm_loss(hh, weight, labels, bias=b, reduction=reduction)
        want = ref.causal_lm_loss(hidden, weight, labels, b, reduction=reduction)
        torch.testing.assert_close(got, want)
    hidden, weight, b, labels = lm_inputs((2, 4), 4, 11, torch.float64, 4, frac=0.8)
    args = tuple(t.clone().requires_grad_() for t in (hidden, weight, b))
    assert torch.autograd.gradcheck(
        lambda hh, ww, bb: ops.causal_lm_loss(hh, ww, labels, bias=bb), args, nondet_tol=1e-12
    )


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_masked_lm_loss_low_precision(dtype):
    hidden, weight, b, labels = lm_inputs((4, 33), 48, 700, dtype, 5)
    params = [t.clone().requires_grad_() for t in (hidden, weight, b)]
    got = ops.masked_lm_loss(params[0], params[1], labels, bias=params[2], reduction="sum")
    got_g = torch.autograd.grad(got, params)
    assert got.dtype == dtype and all(g.dtype == dtype for g in got_g)
    eager_p = [t.clone().requires_grad_() for t in (hidden, weight, b)]
    eager = ref.masked_lm_loss(eager_p[0], eager_p[1], labels, eager_p[2], reduction="sum")
    eager_g = torch.autograd.grad(eager, eager_p)
    exact_p = [t.detach().double().requires_grad_() for t in (hidden, weight, b)]
    exact = ref.masked_lm_loss(exact_p[0], exact_p[1], labels, exact_p[2], reduction="sum")
    exact_g = torch.autograd.grad(exact, exact_p)
    low_precision_tol(got, eager, exact)
    for g_, e_, x_ in zip(got_g, eager_g, exact_g):
        low_precision_tol(g_, e_, x_)


def test_masked_lm_loss_no_labels_and_thread_independence():
    hidden, weight, b, labels = lm_inputs((2, 6), 8, 40, torch.float32, 6)
    none = torch.full_like(labels, -100)
    hh = hidden.clone().requires_grad_()
    assert torch.isnan(ops.masked_lm_loss(hh, weight, none))
    s = ops.masked_lm_loss(hh, weight, none, reduction="sum")
    (g,) = torch.autograd.grad(s, hh)
    assert s.item() == 0 and (g == 0).all()
    hidden, weight, b, labels = lm_inputs((4, 100), 40, 3000, torch.float32, 7)
    ps = [t.clone().requires_grad_() for t in (hidden, weight, b)]
    out1 = ops.masked_lm_loss(ps[0], ps[1], labels, bias=ps[2])
    g1 = torch.autograd.grad(out1, ps)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        out2 = ops.masked_lm_loss(ps[0], ps[1], labels, bias=ps[2])
        g2 = torch.autograd.grad(out2, ps)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(out1, out2) and all(torch.equal(x, y) for x, y in zip(g1, g2))


def test_lm_kernels_write_every_output():
    hidden, weight, b, labels = lm_inputs((37,), 20, 300, torch.float32, 8)
    n = 37
    loss, lse = poisoned(n), poisoned(n)
    _C.text_cpu.lm_loss_forward(
        view(hidden), view(weight), view(b), view(labels), -100, view(loss), view(lse)
    )
    assert not torch.isnan(loss).any() and not torch.isnan(lse).any()
    assert (loss[labels == -100] == 0).all()
    dh, dw, db = poisoned(n, 20), poisoned(300, 20), poisoned(300)
    grad = torch.rand(n)
    _C.text_cpu.lm_loss_backward(
        view(hidden), view(weight), view(b), view(labels), -100, view(lse), view(grad),
        view(dh), view(dw), view(db),
    )  # fmt: skip
    for t in (dh, dw, db):
        assert not torch.isnan(t).any()
    assert (dh[labels == -100] == 0).all()


def test_modules():
    hidden, weight, b, labels = lm_inputs((2, 8), 16, 50, torch.float32, 9)
    m = losses.MaskedLMLoss()
    torch.testing.assert_close(
        m(hidden, weight, labels, b), ref.masked_lm_loss(hidden, weight, labels, b)
    )
    c = losses.CausalLMLoss(reduction="sum")
    torch.testing.assert_close(
        c(hidden, weight, labels, b), ref.causal_lm_loss(hidden, weight, labels, b, reduction="sum")
    )
    with pytest.raises(ValueError, match="reduction"):
        losses.MaskedLMLoss(reduction="max")


def test_opcheck_text_ops():
    hidden, weight, b, labels = lm_inputs((9,), 8, 30, torch.float32, 10, frac=0.5)
    hidden.requires_grad_()
    weight.requires_grad_()
    b.requires_grad_()
    m = torch.ops.pyssl
    ids = torch.randint(0, 30, (3, 7))
    seed = torch.tensor(123)
    for be in ("cpu", "reference"):
        torch.library.opcheck(m.lm_loss, (hidden, weight, b, labels, -100, be))
        torch.library.opcheck(m.lm_loss, (hidden, weight, None, labels, -100, be))
        torch.library.opcheck(m.mask_tokens, (ids, None, None, seed, 30, 2, 0.5, 0.8, 0.1, be))


@pytest.mark.parametrize("backend", ["cpu", "reference"])
@pytest.mark.parametrize("with_bias", [True, False])
def test_opcheck_lm_training_ops(backend, with_bias):
    """The ops of the training path: ``lm_loss_train`` (loss, log-sum-exp and gradients in one
    sweep; its autograd scales the stored gradients) and ``lm_loss_backward``."""
    hidden, weight, b, labels = lm_inputs((9,), 8, 30, torch.float32, 10, frac=0.5)
    labels[0] = 3
    b = b if with_bias else None
    m = torch.ops.pyssl
    for mean in (True, False):
        for wants in ((True, True, with_bias), (True, False, False), (False, True, with_bias)):
            args = [t.clone().requires_grad_(w) if t is not None else None
                    for t, w in zip((hidden, weight, b), wants)]  # fmt: skip
            torch.library.opcheck(m.lm_loss_train, (*args, labels, -100, mean, *wants, backend))
    _, lse = m.lm_loss(hidden, weight, b, labels, -100, backend)
    grad = torch.rand(9, generator=gen(4)) * (labels != -100)
    for wants in ((True, True, with_bias), (False, True, False), (True, False, False)):
        torch.library.opcheck(
            m.lm_loss_backward, (hidden, weight, b, labels, -100, lse, grad, *wants, backend)
        )


def test_compile_fullgraph_mlm_step():
    torch._dynamo.reset()
    proj = torch.nn.Linear(12, 16)
    emb = torch.nn.Parameter(torch.randn(40, 16) * 0.2)
    x = torch.randn(2, 6, 12, generator=gen(1))
    labels = torch.randint(0, 40, (2, 6), generator=gen(2))
    labels[0, :3] = -100

    def step(a):
        return ops.masked_lm_loss(proj(a), emb, labels)

    eager = step(x)
    eager.backward()
    want = [p.grad.clone() for p in list(proj.parameters()) + [emb]]
    for p in list(proj.parameters()) + [emb]:
        p.grad = None
    got = torch.compile(step, fullgraph=True)(x)
    got.backward()
    torch.testing.assert_close(got, eager)
    for p, w in zip(list(proj.parameters()) + [emb], want):
        torch.testing.assert_close(p.grad, w)


def test_compile_fullgraph_causal_lm_step():
    torch._dynamo.reset()
    proj = torch.nn.Linear(12, 16)
    emb = torch.nn.Parameter(torch.randn(40, 16) * 0.2)
    bias = torch.nn.Parameter(torch.randn(40) * 0.1)
    x = torch.randn(2, 7, 12, generator=gen(3))
    labels = torch.randint(0, 40, (2, 7), generator=gen(4))
    labels[1, :2] = -100
    params = [*proj.parameters(), emb, bias]

    def step(a):
        return ops.causal_lm_loss(proj(a), emb, labels, bias=bias)

    eager = step(x)
    eager.backward()
    want = [p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    got = torch.compile(step, fullgraph=True)(x)
    got.backward()
    torch.testing.assert_close(got, eager)
    torch.testing.assert_close(got, ref.causal_lm_loss(proj(x), emb, labels, bias))
    for p, w in zip(params, want):
        torch.testing.assert_close(p.grad, w)


@pytest.mark.parametrize(
    "change, exc, match",
    [
        (dict(labels=torch.zeros(2, 4, dtype=torch.int64)), ValueError, "labels"),
        (dict(labels=torch.full((2, 3), 30)), ValueError, "labels"),
        (dict(labels=torch.full((2, 3), -5)), ValueError, "labels"),
        (dict(labels=torch.zeros(2, 3)), TypeError, "labels"),
        (dict(weight=torch.zeros(30, 5)), ValueError, "weight"),
        (dict(weight=torch.zeros(30, 8, dtype=torch.float64)), TypeError, "weight"),
        (dict(hidden=torch.zeros(2, 3, 8, dtype=torch.int64)), TypeError, "hidden"),
        (dict(bias=torch.zeros(29)), ValueError, "bias"),
        (dict(reduction="max"), ValueError, "reduction"),
    ],
)
@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_lm_loss_bad_input(change, exc, match, backend):
    args = dict(
        hidden=torch.zeros(2, 3, 8),
        weight=torch.zeros(30, 8),
        labels=torch.zeros(2, 3, dtype=torch.int64),
        bias=None,
        reduction="mean",
    )
    args.update(change)
    hidden, weight, labels = args.pop("hidden"), args.pop("weight"), args.pop("labels")
    with pytest.raises(exc, match=match):
        ops.masked_lm_loss(hidden, weight, labels, **args, backend=backend)
