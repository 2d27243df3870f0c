"""pyssl's skip-gram against gensim's ``Word2Vec(sg=1, hs=0)`` with the same hyper-parameters on
the same pydoc sentences: the random streams differ, so the vectors do not match, but the two
must learn the same neighbourhoods. Runs where gensim installs; skipped elsewhere."""

from __future__ import annotations

import numpy as np
import pytest

from pyssl import word2vec as w2v

gensim_models = pytest.importorskip("gensim.models", reason="gensim is not installed")

PARAMS = dict(vector_size=50, window=5, negative=5, sample=1e-3, min_count=5, alpha=0.025,
              min_alpha=0.0001, epochs=5, seed=1)  # fmt: skip


def test_neighbourhoods_agree_with_gensim():
    sents = w2v.load_sentences()
    ours = w2v.Word2Vec(sents, workers=1, **PARAMS)
    theirs = gensim_models.Word2Vec(sents, sg=1, hs=0, workers=1, **PARAMS)
    # the same vocabulary, in the same order (count descending; gensim breaks ties by first
    # occurrence, pyssl alphabetically, so compare as sets)
    assert set(ours.wv.index_to_key) == set(theirs.wv.index_to_key)
    words = ours.wv.index_to_key[20:120]  # frequent words past the stop words
    overlap = [
        len({n for n, _ in ours.wv.most_similar(w, topn=10)}
            & {n for n, _ in theirs.wv.most_similar(w, topn=10)}) / 10
        for w in words
    ]  # fmt: skip
    # measured: two gensim runs with seeds 1 and 2 share 61% of their top-10 lists here, pyssl
    # and gensim 56%; random vectors share under 1%
    assert float(np.mean(overlap)) > 0.4, np.mean(overlap)
    rand = w2v.KeyedVectors(
        ours.wv.index_to_key, np.random.default_rng(0).random(ours.wv.vectors.shape)
    )
    chance = np.mean([
        len({n for n, _ in rand.most_similar(w, topn=10)}
            & {n for n, _ in theirs.wv.most_similar(w, topn=10)}) / 10
        for w in words
    ])  # fmt: skip
    assert chance < 0.1
