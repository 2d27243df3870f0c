"""Skip-gram with negative sampling written as word2vec.c writes it, one pair at a time, in
numpy on one thread; the ground truth of the tests and the eager baseline of the benchmarks.

It draws the same random stream as the C++ kernel (``csrc/word2vec/word2vec.h``): per
(epoch, sentence) a copy of word2vec.c's generator ``next = next * 25214903917 + 11`` seeded by
splitmix64, and the draws in word2vec.c's order (subsampling, reduced window, negatives). Each
(centre, context) pair takes one SGD step on its loss
``-log s(l1 . u_centre) - sum_k log s(-l1 . u_k)`` where ``l1 = syn0[context]`` and
``u = syn1neg[target]``: all dot products are taken before any row changes (word2vec.c
interleaves them target by target, which differs only when a negative repeats within a pair).
"""

from __future__ import annotations

import math

import numpy as np

_M64 = (1 << 64) - 1


def splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def sentence_state(seed: int, epoch: int, num_sentences: int, sentence: int) -> int:
    """The generator state sentence ``sentence`` of epoch ``epoch`` starts from."""
    return splitmix64((seed & _M64) ^ splitmix64((epoch * num_sentences + sentence) & _M64))


def lcg_next(r: int) -> int:
    """word2vec.c's generator step (mod 2^64)."""
    return (r * 25214903917 + 11) & _M64


def keep_probabilities(counts: np.ndarray, sample: float) -> np.ndarray:
    """word2vec.c's subsampling: keep a word of count c with probability
    ``(sqrt(c / (sample * total)) + 1) * (sample * total) / c`` (>= 1: always kept)."""
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    st = sample * float(total)
    out = np.full(len(counts), 2.0)
    for i, c in enumerate(counts.tolist()):
        if sample > 0 and c > 0:
            out[i] = (math.sqrt(c / st) + 1.0) * st / c
    return out


def unigram_table(counts: np.ndarray, power: float, size: int) -> np.ndarray:
    """word2vec.c's ``InitUnigramTable``: int32 ``[size]``; slot a holds the word whose
    cumulative share of ``sum(count ** power)`` first exceeds ``a / size``."""
    c = [float(x) for x in np.asarray(counts, dtype=np.int64).tolist()]
    total = sum(x**power for x in c)
    table = np.empty(size, dtype=np.int32)
    i, d1 = 0, c[0] ** power / total
    for a in range(size):
        table[a] = i
        if a / size > d1:
            i += 1
            if i < len(c):
                d1 += c[i] ** power / total
        if i >= len(c):
            i = len(c) - 1
    return table


def sentence_pairs(
    tokens: np.ndarray,
    offsets: np.ndarray,
    keep: np.ndarray | None,
    table: np.ndarray,
    window: int,
    negative: int,
    epoch: int,
    seed: int,
    sentence: int,
) -> tuple[int, list[tuple[int, int, list[int]]]]:
    """The kept-word count and the (centre, context, negatives) pairs of one sentence, in
    word2vec.c's order; a negative that drew the centre word is -1 (skipped). A slot is
    picked as ``((r >> 32) * T) >> 32`` (word2vec.c: ``(r >> 16) % T``)."""
    num_sentences = len(offsets) - 1
    r = sentence_state(seed, epoch, num_sentences, sentence)
    kept = []
    for w in tokens[offsets[sentence] : offsets[sentence + 1]].tolist():
        if keep is not None:
            r = lcg_next(r)
            if keep[w] < (r & 0xFFFF) / 65536.0:
                continue
        kept.append(w)
    pairs = []
    n, T = len(kept), len(table)
    for p, w in enumerate(kept):
        r = lcg_next(r)
        b = r % window  # the reduced window is window - b, uniform in [1, window]
        for a in range(max(b, window - p), min(2 * window + 1 - b, window - p + n)):
            c = p - window + a  # a context inside the sentence
            if a == window:
                continue
            negs = []
            for _ in range(negative):
                r = lcg_next(r)
                t = int(table[((r >> 32) * T) >> 32])  # word2vec.c: (r >> 16) % T
                negs.append(-1 if t == w else t)
            pairs.append((w, kept[c], negs))
    return n, pairs


def sgns_step(
    syn0: np.ndarray, syn1neg: np.ndarray, centre: int, context: int, negs: list[int], alpha: float
) -> None:
    """One SGD step (float32, in place) on the pair's loss; a repeated negative counts twice."""
    targets = [centre] + [t for t in negs if t >= 0]
    labels = np.zeros(len(targets), dtype=np.float32)
    labels[0] = 1.0
    l1 = syn0[context].copy()  # the row before the step
    rows = syn1neg[targets]  # a copy: the rows before the step
    f = rows @ l1
    g = (labels - np.float32(1.0) / (np.float32(1.0) + np.exp(-f))) * np.float32(alpha)
    syn0[context] = l1 + g @ rows
    np.add.at(syn1neg, targets, g[:, None] * l1[None, :])


def train_sgns(
    tokens: np.ndarray,
    offsets: np.ndarray,
    counts: np.ndarray,
    table: np.ndarray,
    syn0: np.ndarray,
    syn1neg: np.ndarray,
    *,
    window: int,
    negative: int,
    sample: float,
    alpha: float,
    min_alpha: float,
    epochs: int,
    seed: int,
) -> int:
    """Trains ``syn0``/``syn1neg`` (float32 ``[V, D]``, in place) for ``epochs`` passes over the
    sentences ``tokens[offsets[s]:offsets[s + 1]]``; the learning rate of a sentence decays
    linearly with the corpus position of its first word, from ``alpha`` to ``min_alpha``.
    Returns the number of words kept by subsampling over all epochs."""
    keep = keep_probabilities(counts, sample) if sample > 0 else None
    n_words, total = int(offsets[-1]), float(epochs) * float(offsets[-1])
    kept_words = 0
    for epoch in range(epochs):
        for s in range(len(offsets) - 1):
            pos = float(epoch * n_words + int(offsets[s]))
            lr = np.float32(alpha - (alpha - min_alpha) * (pos / total if total > 0 else 0.0))
            n, pairs = sentence_pairs(
                tokens, offsets, keep, table, window, negative, epoch, seed, s
            )
            kept_words += n
            for w, c, negs in pairs:
                sgns_step(syn0, syn1neg, w, c, negs, float(lr))
    return kept_words
