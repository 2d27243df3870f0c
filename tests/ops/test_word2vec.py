"""Skip-gram with negative sampling: the C++ kernel against the eager reference (same random
stream, same updates; one thread), each step against autograd's gradient of the pair loss, the
sampling laws (unigram^0.75 table, subsampling keep rate, reduced window) by chi-square and
binomial tests, a planted-structure corpus whose neighbours must come out right, and bad
inputs."""

from __future__ import annotations

import argparse
import math

import numpy as np
import pytest
import torch

from pyssl import word2vec as w2v
from pyssl.reference import word2vec as ref

_C = pytest.importorskip("pyssl._C")


@pytest.fixture
def one_thread():
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


def chi2_pvalue(observed: np.ndarray, expected: np.ndarray) -> float:
    """Upper tail of Pearson's statistic (Wilson-Hilferty)."""
    stat = float(((observed - expected) ** 2 / expected).sum())
    k = len(observed) - 1
    z = ((stat / k) ** (1 / 3) - (1 - 2 / (9 * k))) / math.sqrt(2 / (9 * k))
    return 0.5 * math.erfc(z / math.sqrt(2))


def random_corpus(seed: int, vocab: int, sentences: int, max_len: int, zipf: bool = True):
    """tokens int32, offsets int64, counts int64 of a random corpus (Zipf-like frequencies, every
    word present at least once so counts are positive)."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, vocab + 1) if zipf else np.ones(vocab)
    lens = rng.integers(0, max_len + 1, sentences)
    ids = rng.choice(vocab, size=int(lens.sum()), p=p / p.sum()).astype(np.int32)
    ids = np.concatenate([ids, np.arange(vocab, dtype=np.int32)])
    lens[-1] += vocab
    offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    counts = np.bincount(ids, minlength=vocab).astype(np.int64)
    return torch.from_numpy(ids), torch.from_numpy(offsets), torch.from_numpy(counts)


def init(vocab: int, dim: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    syn0 = (torch.rand(vocab, dim, generator=g) - 0.5) / dim
    syn1 = (torch.rand(vocab, dim, generator=g) - 0.5) / dim  # non-zero: every term is live
    return syn0, syn1


# ------------------------------------------------------------------------------ tables


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("size", [1, 7, 1000, 4099])
def test_unigram_table_matches_word2vec_c(seed, size):
    counts = torch.from_numpy(np.random.default_rng(seed).integers(0, 50, 37)).to(torch.int64)
    counts[0] += 1
    for power in (0.75, 1.0, 0.0):
        got = w2v.unigram_table(counts, power, size)
        assert torch.equal(got, torch.from_numpy(ref.unigram_table(counts.numpy(), power, size)))


def test_unigram_table_shares_follow_count_power():
    counts = torch.from_numpy(np.random.default_rng(3).integers(1, 10_000, 500)).to(torch.int64)
    table = w2v.unigram_table(counts, 0.75, 2**20)
    want = counts.double() ** 0.75
    want = want / want.sum()
    got = torch.bincount(table.long(), minlength=500).double() / table.numel()
    assert (got - want).abs().max().item() <= 2.0 / table.numel()
    # and the kernel's draws (negatives, with -1 meaning "drew the centre word") follow it
    tokens, offsets, _ = random_corpus(4, 500, 40, 60)
    pairs = w2v.sample_pairs(tokens, offsets, counts, table, window=3, negative=20, sample=0)
    negs = pairs[:, 3:]
    drawn = torch.where(negs < 0, pairs[:, 1:2].expand_as(negs), negs).flatten()
    obs = torch.bincount(drawn, minlength=500).double().numpy()
    top = np.argsort(-want.numpy())[:60]  # the frequent words, plus the rest pooled
    exp = want.numpy() * drawn.numel()
    o = np.append(obs[top], obs.sum() - obs[top].sum())
    e = np.append(exp[top], exp.sum() - exp[top].sum())
    assert chi2_pvalue(o, e) > 1e-4
    # a wrong law (counts^1) is rejected by the same test
    w1 = counts.double().numpy() / counts.sum().item() * drawn.numel()
    assert chi2_pvalue(o, np.append(w1[top], w1.sum() - w1[top].sum())) < 1e-6


# ------------------------------------------------------------------------------ sampling


@pytest.mark.parametrize("seed", [0, 5, 11])
@pytest.mark.parametrize("sample", [0.0, 1e-2])
def test_sample_pairs_match_reference(seed, sample):
    tokens, offsets, counts = random_corpus(seed, 29, 9, 40)
    table = w2v.unigram_table(counts, 0.75, 1000)
    window, negative = 1 + seed % 4, 3
    for epoch in (0, 2):
        got = w2v.sample_pairs(tokens, offsets, counts, table, window=window, negative=negative,
                               sample=sample, epoch=epoch, seed=seed)  # fmt: skip
        keep = ref.keep_probabilities(counts.numpy(), sample) if sample > 0 else None
        rows = []
        for s in range(len(offsets) - 1):
            _, pairs = ref.sentence_pairs(tokens.numpy(), offsets.numpy(), keep, table.numpy(),
                                          window, negative, epoch, seed, s)  # fmt: skip
            rows += [[s, c, x, *n] for c, x, n in pairs]
        assert got.tolist() == rows


def test_reduced_window_is_uniform():
    # one long sentence of distinct words: a centre's farthest context is its reduced window
    n, window = 6000, 5
    tokens = torch.arange(n, dtype=torch.int32)
    offsets = torch.tensor([0, n], dtype=torch.int64)
    counts = torch.ones(n, dtype=torch.int64)
    table = torch.zeros(1, dtype=torch.int32)
    pairs = w2v.sample_pairs(tokens, offsets, counts, table, window=window, negative=0, sample=0)
    centre, ctx = pairs[:, 1], pairs[:, 2]
    inner = (centre >= window) & (centre < n - window)
    reach = torch.zeros(n, dtype=torch.int64)
    reach.scatter_reduce_(0, centre.long(), (ctx - centre).abs().long(), reduce="amax")
    # every context within the reduced window is present: 2 * reach pairs per inner centre
    per = torch.bincount(centre[inner].long(), minlength=n)[window : n - window]
    assert torch.equal(per, 2 * reach[window : n - window])
    obs = torch.bincount(reach[window : n - window], minlength=window + 1)[1:].double().numpy()
    assert chi2_pvalue(obs, np.full(window, obs.sum() / window)) > 1e-4
    # a window law of b in [0, window] (an off-by-one) would be rejected
    assert chi2_pvalue(obs[:-1], np.full(window - 1, obs.sum() / (window + 1))) < 1e-6


def test_window_beyond_every_sentence():
    # the scratch is sized by min(window, longest sentence): a huge window neither allocates
    # gigabytes nor changes the law (every other word of the sentence is a context)
    tokens, offsets, counts = random_corpus(2, 10, 3, 30)
    table = w2v.unigram_table(counts, 0.75, 100)
    pairs = w2v.sample_pairs(tokens, offsets, counts, table, window=10**9, negative=2, sample=0)
    lens = (offsets[1:] - offsets[:-1]).tolist()
    assert len(pairs) == sum(n * (n - 1) for n in lens)
    syn0, syn1 = init(10, 4, 0)
    w2v.train_sgns(tokens, offsets, counts, table, syn0, syn1, window=10**9, negative=2)
    assert torch.isfinite(syn0).all()


def test_subsampling_keep_rate():
    # one frequent word among rare ones: the rare ones are always kept (p > 1)
    rng = np.random.default_rng(7)
    n, sample, vocab = 200_000, 1e-3, 400
    ids = np.where(rng.random(n) < 0.2, 0, rng.integers(1, vocab, n)).astype(np.int32)
    tokens = torch.from_numpy(ids)
    offsets = torch.arange(0, n + 1, 1000, dtype=torch.int64)
    counts = torch.from_numpy(np.bincount(ids, minlength=vocab).astype(np.int64))
    table = w2v.unigram_table(counts)
    keep = ref.keep_probabilities(counts.numpy(), sample)
    assert keep[0] < 0.1 and (keep[1:] > 1).all()
    syn0, syn1 = init(vocab, 1, 0)
    kept = w2v.train_sgns(tokens, offsets, counts, table, syn0, syn1, window=1, negative=0,
                          sample=sample, alpha=0.0, min_alpha=0.0)  # fmt: skip
    c0 = int(counts[0])
    kept0 = kept - (n - c0)
    sd = math.sqrt(c0 * keep[0] * (1 - keep[0]))
    assert abs(kept0 - c0 * keep[0]) < 5 * sd, (kept0, c0 * keep[0], sd)
    assert abs(kept0 - c0 * keep[0] * 1.25) > 5 * sd  # 25% off would be caught


# ------------------------------------------------------------------------------ training


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("dim", [1, 33, 100])
def test_train_matches_reference(one_thread, seed, dim):
    vocab = [3, 17, 40][seed % 3]  # 3 words: negatives repeat within a pair all the time
    tokens, offsets, counts = random_corpus(seed, vocab, 6, 25)
    table = w2v.unigram_table(counts, 0.75, 997)
    syn0, syn1 = init(vocab, dim, seed)
    r0, r1 = syn0.numpy().copy(), syn1.numpy().copy()
    kw = dict(window=1 + seed % 3, negative=1 + seed, sample=[0.0, 0.05][seed % 2],
              alpha=0.05, min_alpha=0.005, seed=seed)  # fmt: skip
    got, want = 0, 0
    for epoch in range(2):
        got += w2v.train_sgns(
            tokens, offsets, counts, table, syn0, syn1, epoch=epoch, epochs=2, **kw
        )
    want = ref.train_sgns(tokens.numpy(), offsets.numpy(), counts.numpy(), table.numpy(), r0, r1,
                          epochs=2, **kw)  # fmt: skip
    assert got == want
    assert not np.allclose(r0, init(vocab, dim, seed)[0].numpy(), atol=1e-3)  # it trained
    torch.testing.assert_close(syn0, torch.from_numpy(r0), rtol=1e-4, atol=2e-5)
    torch.testing.assert_close(syn1, torch.from_numpy(r1), rtol=1e-4, atol=2e-5)


def test_each_step_is_minus_lr_times_autograd_gradient(one_thread):
    # the kernel's run replayed pair by pair in float64: loss by autograd, p -= lr * grad
    vocab, dim, lr = 5, 33, 0.3
    tokens, offsets, counts = random_corpus(9, vocab, 4, 12)
    table = w2v.unigram_table(counts, 0.75, 101)
    syn0, syn1 = init(vocab, dim, 9)
    p0, p1 = syn0.double().clone(), syn1.double().clone()
    kw = dict(window=2, negative=4, sample=0.0, seed=9)
    pairs = w2v.sample_pairs(tokens, offsets, counts, table, **kw)
    assert len(pairs) > 20
    repeats = 0
    for _, centre, ctx, *negs in pairs.tolist():
        negs = [n for n in negs if n >= 0]
        repeats += len(negs) != len(set(negs))
        a = p0[ctx].clone().requires_grad_()
        u = p1[[centre, *negs]].clone().requires_grad_()
        s = u @ a
        loss = -torch.nn.functional.logsigmoid(s[0]) - torch.nn.functional.logsigmoid(-s[1:]).sum()
        ga, gu = torch.autograd.grad(loss, (a, u))
        p0[ctx] -= lr * ga
        p1.index_add_(0, torch.tensor([centre, *negs]), -lr * gu)
    assert repeats > 0  # repeated negatives were exercised
    w2v.train_sgns(tokens, offsets, counts, table, syn0, syn1, alpha=lr, min_alpha=lr, **kw)
    torch.testing.assert_close(syn0.double(), p0, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(syn1.double(), p1, rtol=1e-4, atol=1e-5)


def test_pair_gradient_closed_form_fp64():
    # the closed form the kernel applies, g_j = label_j - sigmoid(u_j . a), against autograd
    g = torch.Generator().manual_seed(0)
    a = torch.randn(33, dtype=torch.float64, generator=g, requires_grad=True)
    u = torch.randn(6, 33, dtype=torch.float64, generator=g, requires_grad=True)

    def loss(a, u):
        s = u @ a
        return -torch.nn.functional.logsigmoid(s[0]) - torch.nn.functional.logsigmoid(-s[1:]).sum()

    assert torch.autograd.gradcheck(loss, (a, u))
    ga, gu = torch.autograd.grad(loss(a, u), (a, u))
    label = torch.zeros(6, dtype=torch.float64)
    label[0] = 1
    coef = label - torch.sigmoid(u.detach() @ a.detach())
    torch.testing.assert_close(-ga, coef @ u.detach())
    torch.testing.assert_close(-gu, coef[:, None] * a.detach()[None, :])


def test_one_thread_is_deterministic(one_thread):
    tokens, offsets, counts = random_corpus(1, 50, 30, 40)
    table = w2v.unigram_table(counts)
    out = []
    for _ in range(2):
        syn0, syn1 = init(50, 20, 1)
        w2v.train_sgns(tokens, offsets, counts, table, syn0, syn1, seed=5)
        out.append((syn0, syn1))
    assert torch.equal(out[0][0], out[1][0]) and torch.equal(out[0][1], out[1][1])
    syn0, syn1 = init(50, 20, 1)
    w2v.train_sgns(tokens, offsets, counts, table, syn0, syn1, seed=6)
    assert not torch.equal(syn0, out[0][0])


def planted_corpus(seed: int, topics: int = 2, words_per_topic: int = 12, sentences: int = 300):
    """Sentences each drawn from one topic's vocabulary, topics disjoint."""
    rng = np.random.default_rng(seed)
    vocab = [[f"t{t}w{i}" for i in range(words_per_topic)] for t in range(topics)]
    return [list(rng.choice(vocab[rng.integers(topics)], size=20)) for _ in range(sentences)], vocab


@pytest.mark.parametrize("workers", [1, 2])
def test_planted_topics_are_recovered(workers):
    sents, vocab = planted_corpus(workers)
    m = w2v.Word2Vec(sents, vector_size=16, window=3, negative=5, min_count=1, epochs=5,
                     workers=workers, seed=3, sample=0)  # fmt: skip
    assert m.effective_words == 300 * 20 * 5
    hits = 0
    for t, words in enumerate(vocab):
        for w in words:
            near = [n for n, _ in m.wv.most_similar(w, topn=5)]
            hits += sum(n.startswith(f"t{t}w") for n in near)
    assert hits / (2 * 12 * 5) > 0.95
    # and a random model does not pass this
    r = w2v.Word2Vec(vector_size=16, min_count=1, seed=3)
    r.build_vocab(sents)
    near = [n for w in vocab[0] for n, _ in r.wv.most_similar(w, topn=5)]
    assert sum(n.startswith("t0w") for n in near) / len(near) < 0.8


def test_multithreaded_run_on_pydoc_learns():
    sents = w2v.load_sentences()[:400]
    m = w2v.Word2Vec(sents, vector_size=32, min_count=3, epochs=2, workers=2, seed=0)
    assert np.isfinite(m.wv.vectors).all()
    assert m.corpus_words > 5000 and 0 < m.effective_words < m.corpus_words * 2
    # co-occurring words end up closer than the average pair
    sims = m.wv.vectors / np.linalg.norm(m.wv.vectors, axis=1, keepdims=True)
    assert m.wv.similarity("the", "of") > float((sims @ sims.T).mean())


# ------------------------------------------------------------------------------ API


def test_save_load_roundtrip(tmp_path):
    sents, _ = planted_corpus(0, sentences=20)
    m = w2v.Word2Vec(sents, vector_size=7, min_count=1, epochs=1)
    path = tmp_path / "v.txt"
    m.wv.save_word2vec_format(str(path))
    kv = w2v.KeyedVectors.load_word2vec_format(str(path))
    assert kv.index_to_key == m.wv.index_to_key
    np.testing.assert_array_equal(kv.vectors, m.wv.vectors)
    assert kv.most_similar("t0w0", 3) == m.wv.most_similar("t0w0", 3)
    path.write_text("2 3\na 1 2 3\n")
    with pytest.raises(ValueError, match="header says 2"):
        w2v.KeyedVectors.load_word2vec_format(str(path))


def test_sentences_may_be_a_generator():
    sents, _ = planted_corpus(0, sentences=30)
    a = w2v.Word2Vec((s for s in sents), vector_size=8, min_count=1, epochs=1, workers=1)
    b = w2v.Word2Vec(sents, vector_size=8, min_count=1, epochs=1, workers=1)
    assert a.corpus_words == 600
    np.testing.assert_array_equal(a.wv.vectors, b.wv.vectors)


def test_vocabulary_order_and_min_count():
    m = w2v.Word2Vec(vector_size=4, min_count=2)
    m.build_vocab([["b", "a", "c", "a"], ["b", "d", "a"]])
    assert m.wv.index_to_key == ["a", "b"]
    assert m.counts.tolist() == [3, 2]
    tokens, offsets = m.encode([["c", "a"], ["d"], ["b", "b", "x"]])
    assert tokens.tolist() == [0, 1, 1] and offsets.tolist() == [0, 1, 3]


def test_command_on_a_text_file(tmp_path, capsys):
    sents, _ = planted_corpus(1, sentences=60)
    (tmp_path / "c.txt").write_text("\n\n".join(" ".join(s) for s in sents))
    p = argparse.ArgumentParser()
    w2v.add_parser(p.add_subparsers())
    out = tmp_path / "vec.txt"
    argv = ["word2vec", "--data", str(tmp_path / "c.txt"), "--words", "t0w1,zzz"]
    argv += [
        "--min-count",
        "1",
        "--sample",
        "0",
        "--epochs",
        "10",
        "--no-progress",
        "--out",
        str(out),
    ]
    args = p.parse_args(argv)
    w2v.run(args)
    text = capsys.readouterr().out
    assert "words/s" in text and "t0w1: t0w" in text and "zzz: not in the vocabulary" in text
    assert w2v.KeyedVectors.load_word2vec_format(str(out)).vector_size == 100


# ------------------------------------------------------------------------------ bad input


def _args():
    tokens, offsets, counts = random_corpus(0, 10, 3, 8)
    table = w2v.unigram_table(counts, 0.75, 100)
    syn0, syn1 = init(10, 8, 0)
    return tokens, offsets, counts, table, syn0, syn1


@pytest.mark.parametrize(
    ("change", "exc", "match"),
    [
        (lambda a: {0: a[0].long()}, TypeError, "tokens: expected torch.int32"),
        (lambda a: {0: a[0].clone().fill_(10)}, ValueError, "tokens: word id 10"),
        (lambda a: {0: a[0].clone().fill_(-1)}, ValueError, "tokens: word id -1"),
        (lambda a: {1: a[1][:-1]}, ValueError, "offsets: expected offsets"),
        (lambda a: {1: a[1].flip(0)}, ValueError, "offsets"),
        (lambda a: {2: -a[2]}, ValueError, "counts: count"),
        (lambda a: {3: a[3].clone().fill_(99)}, ValueError, "table: word id 99"),
        (lambda a: {4: a[4][:5]}, ValueError, "syn0: expected 10 rows"),
        (lambda a: {5: a[5][:, :3].contiguous()}, ValueError, "syn1neg: expected syn0's shape"),
        (lambda a: {5: a[4]}, ValueError, "syn1neg: must not share memory"),
        (
            lambda a: {4: a[4].view(-1)[:40].view(10, 4), 5: a[4].view(-1)[20:60].view(10, 4)},
            ValueError,
            "syn1neg: must not share memory",
        ),  # fmt: skip
        (lambda a: {4: a[4].double()}, TypeError, "syn0: expected torch.float32"),
        (lambda a: {4: a[4].t()}, ValueError, "syn0"),
        (lambda a: {"window": 0}, ValueError, "window"),
        (lambda a: {"negative": -1}, ValueError, "negative"),
        (lambda a: {"sample": -1e-3}, ValueError, "sample"),
        (lambda a: {"alpha": float("nan")}, ValueError, "alpha"),
        (lambda a: {"epoch": 3, "epochs": 3}, ValueError, "epoch"),
        (lambda a: {"window": 2.5}, TypeError, "window: expected an int"),
        (lambda a: {"sentences": (0, 99)}, ValueError, "sentence_begin"),
    ],
)
def test_train_bad_input(change, exc, match):
    args = list(_args())
    kw = {}
    for k, v in change(args).items():
        if isinstance(k, int):
            args[k] = v
        else:
            kw[k] = v
    before = args[4].clone() if args[4].dtype == torch.float32 else None
    with pytest.raises(exc, match=match):
        w2v.train_sgns(*args, **kw)
    if before is not None and args[4].is_contiguous():
        assert torch.equal(args[4], before)  # rejected before any update


@pytest.mark.parametrize(
    ("kw", "exc", "match"),
    [
        ({"vector_size": 0}, ValueError, "vector_size"),
        ({"window": "5"}, TypeError, "window"),
        ({"negative": 0}, ValueError, "negative"),
        ({"min_count": 0}, ValueError, "min_count"),
        ({"alpha": 0.0}, ValueError, "alpha"),
        ({"epochs": 0}, ValueError, "epochs"),
        ({"workers": 0}, ValueError, "workers"),
        ({"seed": -1}, ValueError, "seed"),
    ],
)
def test_model_bad_parameters(kw, exc, match):
    with pytest.raises(exc, match=match):
        w2v.Word2Vec(**kw)


def test_model_bad_sentences_and_words():
    with pytest.raises(TypeError, match="sentences: item 0 is a str"):
        w2v.Word2Vec(["a b c"])
    with pytest.raises(ValueError, match="min_count=5"):
        w2v.Word2Vec([["a", "b"]])
    sents, _ = planted_corpus(0, sentences=10)
    m = w2v.Word2Vec(sents, vector_size=4, min_count=1, epochs=1)
    with pytest.raises(KeyError, match="'nope' is not in the vocabulary"):
        m.wv.most_similar("nope")
    with pytest.raises(ValueError, match="topn"):
        m.wv.most_similar("t0w0", topn=0)
    with pytest.raises(TypeError, match="word: expected a str"):
        m.wv.most_similar(3)  # type: ignore[arg-type]


def test_table_bad_input():
    with pytest.raises(TypeError, match="counts: expected torch.int64"):
        w2v.unigram_table(torch.ones(3))
    with pytest.raises(ValueError, match="counts: expected a positive total"):
        w2v.unigram_table(torch.zeros(3, dtype=torch.int64))
    with pytest.raises(ValueError, match="table_size"):
        w2v.unigram_table(torch.ones(3, dtype=torch.int64), table_size=0)
