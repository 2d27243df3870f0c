"""Benchmarks of the word2vec family: skip-gram with negative sampling on the pydoc corpus,
CPU, 2 threads, one run. Conventions as ``bench_text.py``.

    PYTHONPATH=$PWD python bench/bench_word2vec.py    # ~1 min, JSON -> bench/.results/
    python bench/report.py

Cases:

* ``word2vec train``: ``epochs=5`` passes over the pydoc corpus (``pyssl.word2vec.
  load_sentences()``: paragraphs of lower-cased words) with gensim's hyper-parameters
  vector_size=100, window=5, negative=5, sample=1e-3, min_count=5, alpha=0.025,
  min_alpha=0.0001, workers=2 (and 1: on a shared machine a second thread often waits for a
  core). ``pyssl`` = ``pyssl.word2vec.Word2Vec.train``; ``gensim`` =
  ``gensim.models.Word2Vec(sg=1, hs=0).train`` on the same sentences (vocabulary built before
  the clock starts, fresh model per round, as pyssl). Words/s = corpus words (in the
  vocabulary, before subsampling) x epochs / time, gensim's own definition.
* ``word2vec slice``: one epoch over the first 400 paragraphs (min_count=1), ``pyssl`` (C++
  kernel) against ``eager`` (``pyssl.reference.word2vec.train_sgns``, numpy, one pair at a time).

FLOPs per (pair, target): 2D for the dot product, 2D for neu1e += g u, 2D for u += g l1; plus
2D per pair for l1 += neu1e (D = vector_size). Compulsory bytes per (pair, target): the output
row read and written (8D) when it is not in cache, plus one 4-byte table slot.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import numpy as np
import pytest
import torch

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
import ceilings  # noqa: E402

ceilings.use_working_tree_if_built()

from bench_masking import (  # noqa: E402, F401  (the ceiling tests run here too)
    ForeignCpu,
    test_ceiling_copy,
    test_ceiling_matmul,
    wait_for_quiet,
)

from pyssl import word2vec as w2v  # noqa: E402
from pyssl.reference import word2vec as ref  # noqa: E402

torch.set_num_threads(2)
RESULTS = os.path.join(_HERE, ".results")
PARAMS = dict(vector_size=100, window=5, negative=5, sample=1e-3, min_count=5, alpha=0.025,
              min_alpha=0.0001, epochs=5, workers=2, seed=1)  # fmt: skip
WORDS = ("function", "list", "class", "string", "file")


def pair_counts(m: w2v.Word2Vec, sentences: list[list[str]]) -> tuple[int, int]:
    """(pairs, targets) of one epoch of ``m``'s draws (seed, subsampling, windows, negatives)."""
    tokens, offsets = m.encode(sentences)
    counts = torch.from_numpy(m.counts)
    table = w2v.unigram_table(counts, m.ns_exponent, m.table_size)
    p = w2v.sample_pairs(tokens, offsets, counts, table, window=m.window, negative=m.negative,
                         sample=m.sample, seed=m.seed)  # fmt: skip
    return len(p), len(p) + int((p[:, 3:] >= 0).sum())


def gensim_model(sentences: list[list[str]], params: dict[str, Any]) -> Any:
    from gensim.models import Word2Vec

    g = Word2Vec(sg=1, hs=0, **params)
    g.build_vocab(sentences)
    return g


@pytest.mark.parametrize("impl", ["pyssl", "gensim"])
@pytest.mark.parametrize("workers", [2, 1])
def test_train(benchmark: Any, impl: str, workers: int) -> None:
    benchmark.group = f"word2vec train, {workers} worker(s)"
    params = {**PARAMS, "workers": workers}
    sentences = w2v.load_sentences()
    probe = w2v.Word2Vec(**params)
    probe.build_vocab(sentences)
    words = int(probe.encode(sentences)[0].numel()) * PARAMS["epochs"]
    pairs, targets = pair_counts(probe, sentences)
    d = PARAMS["vector_size"]
    models: list[Any] = []

    if impl == "pyssl":
        pytest.importorskip("pyssl._C")

        def setup() -> tuple[tuple, dict]:
            m = w2v.Word2Vec(**params)
            m.build_vocab(sentences)
            models.append(m)
            return (), {}

        def run() -> None:
            models[-1].train(sentences)

    else:
        pytest.importorskip("gensim")

        def setup() -> tuple[tuple, dict]:
            models.append(gensim_model(sentences, params))
            return (), {}

        def run() -> None:
            g = models[-1]
            g.train(sentences, total_examples=g.corpus_count, epochs=g.epochs)

    benchmark.extra_info.update(
        {
            "case": f"word2vec train {workers}w",
            "mode": "fwd",
            "impl": impl,
            "workers": workers,
            "words": words,
            "pairs_per_epoch": pairs,
            "targets_per_epoch": targets,
            "flops": PARAMS["epochs"] * (6 * d * targets + 2 * d * pairs),
            "bytes": PARAMS["epochs"] * targets * (8 * d + 4),
            "waited_for_quiet_s": wait_for_quiet(),
        }  # fmt: skip
    )
    with ForeignCpu() as other:
        benchmark.pedantic(run, setup=setup, rounds=5, iterations=1)
    benchmark.extra_info["foreign_cpu_cores"] = other.cores
    benchmark.extra_info["words_per_s"] = words / benchmark.stats.stats.median
    m = models[-1]
    wv = m.wv
    benchmark.extra_info["neighbours"] = {
        w: [n for n, _ in wv.most_similar(w, topn=5)] for w in WORDS if w in wv.key_to_index
    }


@pytest.mark.parametrize("impl", ["pyssl", "eager"])
def test_slice(benchmark: Any, impl: str) -> None:
    benchmark.group = "word2vec slice"
    sentences = w2v.load_sentences()[:400]
    m = w2v.Word2Vec(**{**PARAMS, "min_count": 1, "epochs": 1})
    m.build_vocab(sentences)
    tokens, offsets = m.encode(sentences)
    counts = torch.from_numpy(m.counts)
    table = w2v.unigram_table(counts, 0.75)
    pairs, targets = pair_counts(m, sentences)
    d = m.vector_size
    kw = dict(window=m.window, negative=m.negative, sample=m.sample, alpha=m.alpha,
              min_alpha=m.min_alpha, seed=m.seed)  # fmt: skip
    syn0 = torch.from_numpy(m.wv.vectors.copy())
    syn1 = torch.zeros_like(syn0)

    def run() -> None:
        if impl == "pyssl":
            w2v.train_sgns(tokens, offsets, counts, table, syn0, syn1, **kw)
        else:
            ref.train_sgns(tokens.numpy(), offsets.numpy(), counts.numpy(), table.numpy(),
                           syn0.numpy(), syn1.numpy(), epochs=1, **kw)  # fmt: skip

    benchmark.extra_info.update(
        {
            "case": "word2vec slice",
            "mode": "fwd",
            "impl": impl,
            "words": int(tokens.numel()),
            "flops": 6 * d * targets + 2 * d * pairs,
            "bytes": targets * (8 * d + 4),
            "waited_for_quiet_s": wait_for_quiet(),
        }  # fmt: skip
    )
    with ForeignCpu() as other:
        benchmark.pedantic(run, rounds=3 if impl == "pyssl" else 1, iterations=1)
    benchmark.extra_info["foreign_cpu_cores"] = other.cores
    benchmark.extra_info["words_per_s"] = tokens.numel() / benchmark.stats.stats.median
    assert np.isfinite(syn0.numpy()).all()


if __name__ == "__main__":
    os.makedirs(RESULTS, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    args = [os.path.abspath(__file__), "-p", "no:cacheprovider", "--benchmark-disable-gc",
            "--benchmark-warmup=off", "--benchmark-group-by=group", "--benchmark-sort=name",
            f"--benchmark-json={os.path.join(RESULTS, f'word2vec-{stamp}.json')}",
            *sys.argv[1:]]  # fmt: skip
    print("pytest", " ".join(args[1:]))
    sys.exit(pytest.main(args))
