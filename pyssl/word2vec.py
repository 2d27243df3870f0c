"""word2vec: skip-gram with negative sampling (SGNS) on a compiled, lock-free multi-threaded
kernel, and the ``pyssl word2vec`` command.

Anchor: Mikolov et al.'s ``word2vec.c`` (``-cbow 0 -hs 0``) and gensim's
``Word2Vec(sg=1, hs=0)``, whose parameter names this module takes (``vector_size``,
``window``, ``negative``, ``sample``, ``min_count``, ``alpha``, ``min_alpha``, ``epochs``,
``workers``, ``seed``, ``ns_exponent``). What is the same as word2vec.c:

* the vocabulary keeps words seen at least ``min_count`` times, sorted by decreasing count
  (ties alphabetically); dropped words are removed from the sentences before training;
* subsampling keeps a word of count c with probability
  ``(sqrt(c / (sample * total)) + 1) * (sample * total) / c``, one generator draw per word;
* the reduced window ``window - b``, b uniform in ``[0, window)``, is drawn per centre word;
* each (centre, context) pair updates the context's input row ``syn0[context]`` against the
  centre's output row ``syn1neg[centre]`` (label 1) and ``negative`` rows drawn from the
  unigram table built from ``count ** ns_exponent`` (label 0), a draw equal to the centre word
  is skipped; threads update the shared matrices without locks (Hogwild);
* ``syn0`` starts uniform in ``[-0.5, 0.5) / vector_size``, ``syn1neg`` at zero; the learning
  rate decays linearly from ``alpha`` to ``min_alpha`` over ``epochs`` passes.

Deliberate differences, all named:

* the sigmoid is exact (``1 / (1 + exp(-f))``), not word2vec.c's 1000-entry table clipped at
  ``|f| > 6``; and a pair's 1 + K dot products are taken before any of its rows changes, so a
  step is exactly ``-alpha`` times the gradient of the pair's loss (word2vec.c interleaves them;
  the two differ only when one negative repeats within a pair);
* the generator: word2vec.c's LCG, but re-seeded per (epoch, sentence) from ``seed`` with
  splitmix64, so the random draws never depend on the thread that runs a sentence; one worker
  gives a deterministic run (several race on the floats, as in word2vec.c and gensim);
* the unigram table has ``table_size`` slots (default ``max(2**20, 16 V)``, at most ``1e8``):
  every negative draw reads one random slot, and word2vec.c's ``1e8`` slots (400 MB) make each
  a cache and TLB miss; the kernel prefetches the slots of a block of draws, and measured on
  pydoc (one thread, loaded machine) 2**16 to 2**21 slots run at the same speed (~1.0M
  words/s) while 2**23 drops to 0.81M; 2**20 slots (4 MB) give each word its share
  ``count ** 0.75 / sum`` to within ``2**-20``. A slot is picked from the top 32 bits of the
  generator, ``((r >> 32) * T) >> 32``, where word2vec.c takes ``(r >> 16) % T`` (a 64-bit
  division per draw); word2vec.c's redraw of slot value 0 (its ``</s>`` token) is not done
  (there is no ``</s>``);
* the learning rate is set per sentence from the corpus position of its first word (word2vec.c:
  every 10 000 words per thread; gensim: per job of 10 000 words);
* sentences longer than 10 000 words are split into pieces of 10 000 (gensim truncates them,
  word2vec.c cuts at 1 000); the random initialisation uses numpy's generator, not gensim's
  per-word hash seeding;
* only skip-gram with negative sampling: no CBOW, no hierarchical softmax.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from pyssl.reference import word2vec as ref

MAX_WORDS_IN_SENTENCE = 10_000
_WORD = re.compile(r"[a-z_][a-z0-9_]*")
_SEED_BOUND = 2**64


# ----------------------------------------------------------------------------- validation


def _int(v: object, name: str, lo: int, hi: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise TypeError(f"{name}: expected an int, got {type(v).__name__}")
    if v < lo or (hi is not None and v > hi):
        bound = f"in [{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise ValueError(f"{name}: expected an int {bound}, got {v}")
    return int(v)


def _float(v: object, name: str, lo: float = 0.0, strict: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name}: expected a number, got {type(v).__name__}")
    x = float(v)
    if not math.isfinite(x) or x < lo or (strict and x == lo):
        rel = ">" if strict else ">="
        raise ValueError(f"{name}: expected a finite number {rel} {lo}, got {v}")
    return x


def _tensor(t: object, name: str, dtype: torch.dtype, ndim: int) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if t.dtype != dtype:
        raise TypeError(f"{name}: expected {dtype}, got {t.dtype}")
    if t.device.type != "cpu":
        raise ValueError(f"{name}: expected a CPU tensor, got device {t.device}")
    if t.dim() != ndim:
        raise ValueError(f"{name}: expected {ndim} dimension(s), got shape {tuple(t.shape)}")
    if not t.is_contiguous():
        raise ValueError(f"{name}: expected a contiguous tensor")
    return t


def _core() -> Any:
    from pyssl.ops import _backend

    if _backend._C is None:
        raise RuntimeError(f"pyssl's compiled core is missing ({_backend.CORE_ERROR})")
    _backend._sync_threads()
    return _backend._C.word2vec_cpu


def _view(t: torch.Tensor) -> Any:
    from pyssl.ops._backend import view

    return view(t)


# ----------------------------------------------------------------------------- kernels


def default_table_size(vocab_size: int) -> int:
    """``max(2**20, 16 * vocab_size)`` slots, at most word2vec.c's ``1e8`` (see the module
    docstring: every negative draw reads one random slot, so the table should stay in cache)."""
    return int(min(100_000_000, max(2**20, 16 * vocab_size)))


def unigram_table(
    counts: torch.Tensor, ns_exponent: float = 0.75, table_size: int | None = None
) -> torch.Tensor:
    """word2vec.c's negative-sampling table: int32 ``[table_size]`` where word ``w`` fills a
    share ``counts[w] ** ns_exponent / sum(counts ** ns_exponent)`` of the slots (to within one
    slot), in word order. ``counts``: int64 ``[V]``, non-negative, not all zero."""
    counts = _tensor(counts, "counts", torch.int64, 1)
    if counts.numel() == 0:
        raise ValueError("counts: expected at least one word")
    power = _float(ns_exponent, "ns_exponent", lo=-1e9)
    size = default_table_size(counts.numel()) if table_size is None else table_size
    size = _int(size, "table_size", 1, 2**31 - 1)
    table = torch.full((size,), -1, dtype=torch.int32)
    _core().build_unigram_table(_view(counts), power, _view(table))
    return table


def _check_corpus(
    tokens: torch.Tensor, offsets: torch.Tensor, counts: torch.Tensor, table: torch.Tensor
) -> None:
    _tensor(tokens, "tokens", torch.int32, 1)
    _tensor(offsets, "offsets", torch.int64, 1)
    _tensor(counts, "counts", torch.int64, 1)
    _tensor(table, "table", torch.int32, 1)


def train_sgns(
    tokens: torch.Tensor,
    offsets: torch.Tensor,
    counts: torch.Tensor,
    table: torch.Tensor,
    syn0: torch.Tensor,
    syn1neg: torch.Tensor,
    *,
    window: int = 5,
    negative: int = 5,
    sample: float = 1e-3,
    alpha: float = 0.025,
    min_alpha: float = 0.0001,
    epoch: int = 0,
    epochs: int = 1,
    seed: int = 1,
    sentences: tuple[int, int] | None = None,
    backend: str = "cpu",
) -> int:
    """One epoch (or the sentence range ``sentences`` of it) of skip-gram with negative
    sampling, updating ``syn0`` and ``syn1neg`` (float32 ``[V, D]``) in place.

    ``tokens`` int32 ``[N]`` word ids; sentence s is ``tokens[offsets[s]:offsets[s + 1]]``
    (``offsets`` int64 ``[S + 1]``, from 0 to N); ``counts`` int64 ``[V]`` the corpus counts
    (subsampling's frequencies); ``table`` from :func:`unigram_table`. The learning rate of
    sentence s is ``alpha - (alpha - min_alpha) * (epoch * N + offsets[s]) / (epochs * N)``.
    ``backend="cpu"`` runs the compiled kernel on ``torch.get_num_threads()`` threads (Hogwild);
    ``"reference"`` the eager numpy version (one thread, the same updates in the same order).
    Returns the number of words kept by subsampling. Not a differentiable op: a trainer that
    mutates its arguments, so it is not registered with ``torch.library``."""
    _check_corpus(tokens, offsets, counts, table)
    _tensor(syn0, "syn0", torch.float32, 2)
    _tensor(syn1neg, "syn1neg", torch.float32, 2)
    a0, a1 = syn0.data_ptr(), syn0.data_ptr() + syn0.numel() * 4
    b0, b1 = syn1neg.data_ptr(), syn1neg.data_ptr() + syn1neg.numel() * 4
    if a0 < b1 and b0 < a1:
        raise ValueError("syn1neg: must not share memory with syn0")
    window = _int(window, "window", 1)
    negative = _int(negative, "negative", 0, 1000)
    sample = _float(sample, "sample")
    alpha = _float(alpha, "alpha")
    min_alpha = _float(min_alpha, "min_alpha")
    epochs = _int(epochs, "epochs", 1)
    epoch = _int(epoch, "epoch", 0, epochs - 1)
    seed = _int(seed, "seed", 0, _SEED_BOUND - 1)
    n_sent = offsets.numel() - 1
    lo, hi = (0, n_sent) if sentences is None else sentences
    if backend == "cpu":
        return int(
            _core().train_sgns(
                _view(tokens), _view(offsets), _view(counts), _view(table), _view(syn0),
                _view(syn1neg), window, negative, sample, alpha, min_alpha, epoch, epochs,
                int(lo), int(hi), seed,
            )
        )  # fmt: skip
    if backend != "reference":
        raise ValueError(f"backend: expected 'cpu' or 'reference', got {backend!r}")
    if sentences is not None or epoch != 0 or epochs != 1:
        raise ValueError("backend: 'reference' trains whole runs (use ref.train_sgns)")
    return ref.train_sgns(
        tokens.numpy(), offsets.numpy(), counts.numpy(), table.numpy(), syn0.numpy(),
        syn1neg.numpy(), window=window, negative=negative, sample=sample, alpha=alpha,
        min_alpha=min_alpha, epochs=1, seed=seed,
    )  # fmt: skip


def sample_pairs(
    tokens: torch.Tensor,
    offsets: torch.Tensor,
    counts: torch.Tensor,
    table: torch.Tensor,
    *,
    window: int = 5,
    negative: int = 5,
    sample: float = 1e-3,
    epoch: int = 0,
    seed: int = 1,
) -> torch.Tensor:
    """The random draws :func:`train_sgns` makes in epoch ``epoch``, without training: int64
    ``[P, 3 + negative]``, one row per (centre, context) pair in training order:
    ``[sentence, centre, context, negatives...]`` (-1 for a negative that drew the centre word,
    which training skips). For tests and for inspecting the sampling laws."""
    _check_corpus(tokens, offsets, counts, table)
    window = _int(window, "window", 1)
    negative = _int(negative, "negative", 0, 1000)
    sample = _float(sample, "sample")
    epoch = _int(epoch, "epoch", 0)
    seed = _int(seed, "seed", 0, _SEED_BOUND - 1)
    core = _core()
    args = (_view(tokens), _view(offsets), _view(counts), _view(table), window, negative, sample)
    empty = torch.empty((0, 3 + negative), dtype=torch.int64)
    n = core.sample_pairs(*args, epoch, seed, _view(empty))
    out = torch.full((n, 3 + negative), -2, dtype=torch.int64)
    core.sample_pairs(*args, epoch, seed, _view(out))
    return out


# ----------------------------------------------------------------------------- corpus


def tokenize(text: str) -> list[list[str]]:
    """Sentences of a text: its paragraphs (split at blank lines), each as lower-cased words
    (identifiers: a letter or ``_`` then letters, digits, ``_``); punctuation and bare numbers
    are dropped. Paragraphs over 10 000 words are cut into pieces of 10 000."""
    out = []
    for para in re.split(r"\n\s*\n", text):
        words = _WORD.findall(para.lower())
        for i in range(0, len(words), MAX_WORDS_IN_SENTENCE):
            out.append(words[i : i + MAX_WORDS_IN_SENTENCE])
    return [s for s in out if s]


def load_sentences(data: str = "pydoc") -> list[list[str]]:
    """The sentences (:func:`tokenize`) of the pydoc corpus (``"pydoc"``:
    :func:`pyssl.data.text.load_corpus`) or of a text file or folder of ``.txt`` files."""
    from pyssl.data.text import load_corpus, read_text_files

    docs = load_corpus() if data == "pydoc" else read_text_files(data)
    return [s for d in docs for s in tokenize(d)]


# ----------------------------------------------------------------------------- models


class WordNotInVocabulary(KeyError, ValueError):
    """A word the model has no vector for (a ``KeyError`` as in gensim, and a ``ValueError``)."""

    def __str__(self) -> str:
        return str(self.args[0])


class KeyedVectors:
    """Word vectors: ``index_to_key`` (the words), ``key_to_index`` and ``vectors`` (float32
    numpy ``[V, D]``), as gensim's ``KeyedVectors``."""

    def __init__(self, words: Sequence[str], vectors: np.ndarray):
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(words):
            raise ValueError(
                f"vectors: expected shape [{len(words)}, D], got {tuple(vectors.shape)}"
            )
        self.index_to_key = list(words)
        self.key_to_index = {w: i for i, w in enumerate(self.index_to_key)}
        self.vectors = vectors

    @property
    def vector_size(self) -> int:
        return int(self.vectors.shape[1])

    def __len__(self) -> int:
        return len(self.index_to_key)

    def __contains__(self, word: object) -> bool:
        return word in self.key_to_index

    def __getitem__(self, word: str) -> np.ndarray:
        return self.vectors[self._index(word)]

    def _index(self, word: str) -> int:
        if not isinstance(word, str):
            raise TypeError(f"word: expected a str, got {type(word).__name__}")
        i = self.key_to_index.get(word)
        if i is None:
            raise WordNotInVocabulary(f"word: {word!r} is not in the vocabulary")
        return i

    def most_similar(self, word: str, topn: int = 10) -> list[tuple[str, float]]:
        """The ``topn`` words of highest cosine similarity to ``word`` (itself excluded), best
        first, as ``(word, cosine)``; gensim's ``most_similar(positive=[word])``."""
        i = self._index(word)
        topn = _int(topn, "topn", 1)
        norms = np.linalg.norm(self.vectors, axis=1)
        unit = self.vectors / np.maximum(norms, 1e-12)[:, None]
        sims = unit @ unit[i]
        sims[i] = -np.inf
        k = min(topn, len(sims) - 1)
        if k <= 0:
            return []
        best = np.argpartition(-sims, k - 1)[:k]
        best = best[np.argsort(-sims[best], kind="stable")]
        return [(self.index_to_key[j], float(sims[j])) for j in best]

    def similarity(self, a: str, b: str) -> float:
        """Cosine similarity of two words' vectors."""
        u, v = self[a], self[b]
        return float(u @ v / max(float(np.linalg.norm(u) * np.linalg.norm(v)), 1e-12))

    def save_word2vec_format(self, path: str) -> None:
        """word2vec.c's text format: ``V D`` on the first line, then ``word x1 ... xD``."""
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(f"{len(self)} {self.vector_size}\n")
            for w, v in zip(self.index_to_key, self.vectors, strict=True):
                fh.write(w + " " + " ".join(repr(float(x)) for x in v) + "\n")

    @classmethod
    def load_word2vec_format(cls, path: str) -> KeyedVectors:
        """Reads the text format :meth:`save_word2vec_format` writes (gensim's, word2vec.c's)."""
        with open(path, encoding="utf-8") as fh:
            head = fh.readline().split()
            if len(head) != 2 or not all(h.isdigit() for h in head):
                raise ValueError(f"{path}: expected a first line 'V D', got {' '.join(head)!r}")
            n, d = int(head[0]), int(head[1])
            words, rows = [], []
            for k, line in enumerate(fh, start=2):
                parts = line.rstrip("\n").split(" ")
                if len(parts) != d + 1:
                    raise ValueError(f"{path}:{k}: expected a word and {d} numbers")
                words.append(parts[0])
                rows.append([float(x) for x in parts[1:]])
        if len(words) != n:
            raise ValueError(f"{path}: the header says {n} words, the file holds {len(words)}")
        return cls(words, np.asarray(rows, dtype=np.float32).reshape(n, d))


class Word2Vec:
    """Skip-gram with negative sampling over ``sentences`` (an iterable of lists of words), with
    gensim's parameter names and defaults (except ``sg``: always skip-gram; ``workers``:
    ``torch.get_num_threads()`` by default). Trains on construction when ``sentences`` is given;
    the vectors are in ``self.wv`` (:class:`KeyedVectors`). See the module docstring for the
    semantics and every difference from word2vec.c / gensim."""

    def __init__(
        self,
        sentences: Iterable[Sequence[str]] | None = None,
        *,
        vector_size: int = 100,
        window: int = 5,
        negative: int = 5,
        sample: float = 1e-3,
        min_count: int = 5,
        alpha: float = 0.025,
        min_alpha: float = 0.0001,
        epochs: int = 5,
        workers: int | None = None,
        seed: int = 1,
        ns_exponent: float = 0.75,
        table_size: int | None = None,
        progress: bool = False,
    ):
        self.vector_size = _int(vector_size, "vector_size", 1)
        self.window = _int(window, "window", 1)
        self.negative = _int(negative, "negative", 1, 1000)
        self.sample = _float(sample, "sample")
        self.min_count = _int(min_count, "min_count", 1)
        self.alpha = _float(alpha, "alpha", strict=True)
        self.min_alpha = _float(min_alpha, "min_alpha")
        self.epochs = _int(epochs, "epochs", 1)
        self.workers = None if workers is None else _int(workers, "workers", 1)
        self.seed = _int(seed, "seed", 0, _SEED_BOUND - 1)
        self.ns_exponent = _float(ns_exponent, "ns_exponent", lo=-1e9)
        self.table_size = None if table_size is None else _int(table_size, "table_size", 1)
        self.progress = bool(progress)
        self.wv = KeyedVectors([], np.zeros((0, self.vector_size), np.float32))
        self.counts = np.zeros(0, dtype=np.int64)
        self.syn1neg = np.zeros((0, self.vector_size), np.float32)
        self.corpus_words = 0  # words of the last training corpus (in the vocabulary)
        self.effective_words = 0  # kept by subsampling, over all epochs
        self.train_seconds = 0.0
        if sentences is not None:
            if isinstance(sentences, Iterator):  # one pass would leave nothing to train on
                sentences = list(sentences)
            self.build_vocab(sentences)
            self.train(sentences)

    def build_vocab(self, sentences: Iterable[Sequence[str]]) -> None:
        """Counts the words; keeps those seen ``min_count`` times or more, most frequent first
        (ties alphabetically); initialises ``syn0`` uniform in ``[-0.5, 0.5) / vector_size``
        (numpy's generator under ``seed``) and ``syn1neg`` at zero."""
        counts: Counter[str] = Counter()
        for k, s in enumerate(sentences):
            if isinstance(s, str) or not isinstance(s, Sequence):
                raise TypeError(f"sentences: item {k} is a {type(s).__name__}, not a list of words")
            counts.update(s)
        kept = sorted(
            ((w, c) for w, c in counts.items() if c >= self.min_count), key=lambda x: (-x[1], x[0])
        )
        if not kept:
            raise ValueError(f"sentences: no word occurs min_count={self.min_count} times or more")
        words = [w for w, _ in kept]
        self.counts = np.array([c for _, c in kept], dtype=np.int64)
        rng = np.random.default_rng(self.seed)
        V, D = len(words), self.vector_size
        syn0 = ((rng.random((V, D), dtype=np.float32) - 0.5) / D).astype(np.float32)
        self.wv = KeyedVectors(words, syn0)
        self.syn1neg = np.zeros((V, D), dtype=np.float32)

    def encode(self, sentences: Iterable[Sequence[str]]) -> tuple[torch.Tensor, torch.Tensor]:
        """``tokens`` int32 ``[N]`` and ``offsets`` int64 ``[S + 1]`` of the sentences, words
        outside the vocabulary dropped (as word2vec.c and gensim drop them)."""
        index = self.wv.key_to_index
        ids: list[int] = []
        offsets = [0]
        for s in sentences:
            for i in range(0, len(s), MAX_WORDS_IN_SENTENCE):
                ids.extend(
                    j for w in s[i : i + MAX_WORDS_IN_SENTENCE] if (j := index.get(w)) is not None
                )
                if len(ids) > offsets[-1]:
                    offsets.append(len(ids))
        return torch.tensor(ids, dtype=torch.int32), torch.tensor(offsets, dtype=torch.int64)

    def train(self, sentences: Iterable[Sequence[str]]) -> None:
        """``epochs`` passes of SGNS over ``sentences`` on ``workers`` threads; records
        ``corpus_words``, ``effective_words`` and ``train_seconds`` (training only, not the
        encoding of the sentences)."""
        if len(self.wv) == 0:
            raise ValueError("sentences: build_vocab() must run before train()")
        tokens, offsets = self.encode(sentences)
        if tokens.numel() == 0:
            raise ValueError("sentences: no word of the vocabulary in the training sentences")
        counts = torch.from_numpy(self.counts)
        table = unigram_table(counts, self.ns_exponent, self.table_size)
        syn0 = torch.from_numpy(self.wv.vectors)
        syn1 = torch.from_numpy(self.syn1neg)
        S, N = offsets.numel() - 1, int(tokens.numel())
        # progress: pieces of about 200 000 words, else one call per epoch
        step = max(1, S * 200_000 // N) if self.progress else S
        cuts = list(range(0, S, step)) + [S]
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(total=N * self.epochs, unit="word", unit_scale=True, desc="word2vec")
        prev = torch.get_num_threads()
        if self.workers is not None:
            torch.set_num_threads(self.workers)
        kept = 0
        try:
            t0 = time.perf_counter()
            for e in range(self.epochs):
                for lo, hi in zip(cuts[:-1], cuts[1:], strict=True):
                    kept += train_sgns(
                        tokens, offsets, counts, table, syn0, syn1, window=self.window,
                        negative=self.negative, sample=self.sample, alpha=self.alpha,
                        min_alpha=self.min_alpha, epoch=e, epochs=self.epochs, seed=self.seed,
                        sentences=(lo, hi),
                    )  # fmt: skip
                    if bar is not None:
                        bar.update(int(offsets[hi] - offsets[lo]))
            self.train_seconds = time.perf_counter() - t0
        finally:
            torch.set_num_threads(prev)
            if bar is not None:
                bar.close()
        self.corpus_words, self.effective_words = N, kept
        if not np.isfinite(self.wv.vectors).all():
            raise FloatingPointError(
                "word2vec: the vectors became NaN or infinite (alpha too large?)"
            )

    @property
    def words_per_second(self) -> float:
        """Corpus words (before subsampling) times epochs over the training time."""
        return self.corpus_words * self.epochs / max(self.train_seconds, 1e-12)


# ----------------------------------------------------------------------------- command

DEFAULT_WORDS = ("function", "list", "class", "string", "file")


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Adds the ``word2vec`` subcommand to an argparse subparsers object."""
    p: argparse.ArgumentParser = sub.add_parser(
        "word2vec",
        help="skip-gram word vectors of the pydoc corpus or a text file, with neighbours",
        description="Trains skip-gram with negative sampling (word2vec.c's method, "
        "gensim's parameter names) on the pydoc corpus or a text file / folder of .txt "
        "files, prints words per second and the nearest neighbours of a few words, and "
        "optionally saves the vectors in word2vec's text format or times gensim on the "
        "same sentences with the same parameters.",
    )
    p.add_argument(
        "--data", default="pydoc", help="'pydoc' or a text file / folder (default: %(default)s)"
    )
    p.add_argument(
        "--vector-size",
        type=int,
        default=100,
        help="dimensions of each word vector (default: %(default)s)",
    )
    p.add_argument(
        "--window",
        type=int,
        default=5,
        help="largest context window each side; each centre draws 1..window (default: %(default)s)",
    )
    p.add_argument(
        "--negative",
        type=int,
        default=5,
        help="negative words drawn per context pair from unigram^0.75 (default: %(default)s)",
    )
    p.add_argument(
        "--sample",
        type=float,
        default=1e-3,
        help="frequent-word subsampling threshold, 0 keeps every word (default: %(default)s)",
    )
    p.add_argument(
        "--min-count",
        type=int,
        default=5,
        help="words seen fewer times are dropped from the vocabulary (default: %(default)s)",
    )
    p.add_argument(
        "--alpha",
        type=float,
        default=0.025,
        help="starting learning rate, decayed linearly to --min-alpha (default: %(default)s)",
    )
    p.add_argument(
        "--min-alpha",
        type=float,
        default=0.0001,
        help="learning rate at the end of training (default: %(default)s)",
    )
    p.add_argument(
        "--epochs", type=int, default=5, help="passes over the corpus (default: %(default)s)"
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="training threads, lock-free as in word2vec.c (default: torch's thread count)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=1,
        help="seed of the initial vectors and the random draws (default: %(default)s)",
    )
    p.add_argument(
        "--words",
        default=",".join(DEFAULT_WORDS),
        help="comma-separated words whose neighbours to show (default: %(default)s)",
    )
    p.add_argument("--topn", type=int, default=5, help="neighbours per word (default: %(default)s)")
    p.add_argument("--out", default=None, help="save the vectors here (word2vec text format)")
    p.add_argument(
        "--compare-gensim",
        action="store_true",
        help="also train gensim's Word2Vec(sg=1) with the same parameters and show both",
    )
    p.add_argument(
        "--no-progress", action="store_true", help="hide the progress bar (e.g. in log files)"
    )
    return p


def _gensim_model(sentences: list[list[str]], m: Word2Vec) -> tuple[Any, float]:
    try:
        from gensim.models import Word2Vec as GensimWord2Vec
    except ImportError as exc:
        raise RuntimeError("--compare-gensim needs gensim: pip install gensim") from exc
    g = GensimWord2Vec(
        vector_size=m.vector_size, window=m.window, negative=m.negative, sample=m.sample,
        min_count=m.min_count, alpha=m.alpha, min_alpha=m.min_alpha, epochs=m.epochs,
        workers=m.workers or torch.get_num_threads(), seed=m.seed, ns_exponent=m.ns_exponent,
        sg=1, hs=0,
    )  # fmt: skip
    g.build_vocab(sentences)
    t0 = time.perf_counter()
    g.train(sentences, total_examples=g.corpus_count, epochs=m.epochs)
    return g, time.perf_counter() - t0


def run(args: argparse.Namespace) -> None:
    """Runs ``pyssl word2vec``: trains, prints speed and neighbours, saves if asked."""
    for name in ("vector_size", "window", "negative", "min_count", "epochs", "topn"):
        if getattr(args, name) < 1:
            raise ValueError(
                f"--{name.replace('_', '-')}: expected >= 1, got {getattr(args, name)}"
            )
    sentences = load_sentences(args.data)
    model = Word2Vec(
        vector_size=args.vector_size, window=args.window, negative=args.negative,
        sample=args.sample, min_count=args.min_count, alpha=args.alpha, min_alpha=args.min_alpha,
        epochs=args.epochs, workers=args.workers, seed=args.seed, progress=not args.no_progress,
    )  # fmt: skip
    model.build_vocab(sentences)
    model.train(sentences)
    words = [w.strip().lower() for w in args.words.split(",") if w.strip()]
    print(
        f"pyssl word2vec: {len(model.wv)} words in the vocabulary, {model.corpus_words} corpus "
        f"words x {model.epochs} epochs in {model.train_seconds:.2f} s = "
        f"{model.words_per_second:,.0f} words/s on {model.workers or torch.get_num_threads()} "
        "thread(s)"
    )
    gensim_wv = None
    if args.compare_gensim:
        g, secs = _gensim_model(sentences, model)
        wps = model.corpus_words * model.epochs / max(secs, 1e-12)
        print(
            f"gensim Word2Vec(sg=1): {wps:,.0f} words/s on the same sentences "
            f"(pyssl / gensim = {model.words_per_second / wps:.2f}x)"
        )
        gensim_wv = g.wv
    for w in words:
        if w not in model.wv:
            print(f"{w}: not in the vocabulary")
            continue
        near = ", ".join(f"{n} {s:.2f}" for n, s in model.wv.most_similar(w, args.topn))
        print(f"{w}: {near}")
        if gensim_wv is not None and w in gensim_wv:
            gn = ", ".join(f"{n} {s:.2f}" for n, s in gensim_wv.most_similar(w, topn=args.topn))
            print(f"{' ' * len(w)}  gensim: {gn}")
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        model.wv.save_word2vec_format(args.out)
        print(f"vectors saved to {args.out}")
