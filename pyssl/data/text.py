"""Text: CPython's ``pydoc_data.topics`` (English prose shipped with Python) or users' plain-text
files, a word-level tokenizer and fixed-length token sequences with a held-out split."""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

_WORD = re.compile(r"[a-z]+|[0-9]+|[^\sa-z0-9]")


class WordTokenizer:
    """Lower-cased words, numbers and single punctuation marks; the ``vocab_size - 3`` most
    frequent tokens of the text it is built from, plus ``[PAD]`` (0), ``[UNK]`` (1) and
    ``[MASK]`` (2). Ties in frequency are broken alphabetically, so a text gives one vocabulary."""

    PAD, UNK, MASK = 0, 1, 2
    SPECIALS = ("[PAD]", "[UNK]", "[MASK]")

    def __init__(self, vocab: list[str]):
        if list(vocab[:3]) != list(self.SPECIALS):
            raise ValueError(f"vocab: must start with {self.SPECIALS}")
        self.vocab = list(vocab)
        self.index = {w: i for i, w in enumerate(self.vocab)}

    @classmethod
    def build(cls, texts: list[str], vocab_size: int = 4096) -> WordTokenizer:
        if vocab_size <= len(cls.SPECIALS):
            raise ValueError(f"vocab_size: expected > {len(cls.SPECIALS)}, got {vocab_size}")
        counts = Counter(t for text in texts for t in cls.split(text))
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        words = [w for w, _ in ranked[: vocab_size - len(cls.SPECIALS)]]
        return cls([*cls.SPECIALS, *words])

    @staticmethod
    def split(text: str) -> list[str]:
        return _WORD.findall(text.lower())

    def __len__(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> list[int]:
        return [self.index.get(t, self.UNK) for t in self.split(text)]

    def decode(self, ids: list[int] | Tensor) -> str:
        return " ".join(self.vocab[int(i)] for i in ids)


@dataclass
class TextData:
    """Token sequences ``int64 [N, seq_len]`` (no padding: each row is a window of running
    text) and the tokenizer that made them."""

    tokens: Tensor
    tokenizer: WordTokenizer
    name: str

    def __len__(self) -> int:
        return int(self.tokens.shape[0])


def load_corpus() -> list[str]:
    """CPython's pydoc topics (the text of ``help('topic')``: about 300 documents of English
    prose on the language), one string per topic, in a fixed order."""
    from pydoc_data.topics import topics

    return [topics[k] for k in sorted(topics)]


def read_text_files(path: str) -> list[str]:
    """The ``.txt`` files of a folder (sorted by name) or one text file, one string each."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file or folder")
    if os.path.isdir(path):
        files = sorted(os.path.join(path, f) for f in os.listdir(path) if f.endswith(".txt"))
    else:
        files = [path]
    docs = []
    for f in files:
        with open(f, encoding="utf-8", errors="replace") as fh:
            docs.append(fh.read())
    if not any(d.strip() for d in docs):
        raise ValueError(f"{path}: no text found (looked for .txt files)")
    return docs


def _windows(docs: list[str], tok: WordTokenizer, seq_len: int) -> Tensor:
    ids = [i for d in docs for i in tok.encode(d)]
    n = len(ids) // seq_len
    return torch.tensor(ids[: n * seq_len], dtype=torch.int64).reshape(n, seq_len)


def load_text(
    data: str = "pydoc",
    *,
    seq_len: int = 64,
    vocab_size: int = 4096,
    test_fraction: float = 0.1,
    seed: int = 0,
) -> tuple[TextData, TextData]:
    """Train and held-out token sequences of ``"pydoc"`` (:func:`load_corpus`) or a text file or
    folder. The documents are split (a seeded permutation; ``test_fraction`` of them held out,
    at least one) before the tokenizer is built from the training documents only, so held-out
    text is unseen. A single document is split at ``1 - test_fraction`` of its length."""
    if seq_len < 2:
        raise ValueError(f"seq_len: expected >= 2, got {seq_len}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction: expected in (0, 1), got {test_fraction}")
    docs = load_corpus() if data == "pydoc" else read_text_files(data)
    if len(docs) == 1:
        cut = int(len(docs[0]) * (1 - test_fraction))
        train_docs, test_docs = [docs[0][:cut]], [docs[0][cut:]]
    else:
        order = np.random.default_rng(seed).permutation(len(docs))
        k = max(1, int(round(len(docs) * test_fraction)))
        test_docs = [docs[i] for i in sorted(order[:k])]
        train_docs = [docs[i] for i in sorted(order[k:])]
    tok = WordTokenizer.build(train_docs, vocab_size)
    train, test = _windows(train_docs, tok, seq_len), _windows(test_docs, tok, seq_len)
    if len(train) == 0 or len(test) == 0:
        raise ValueError(f"{data}: too little text for sequences of {seq_len} tokens")
    name = "pydoc" if data == "pydoc" else os.path.basename(os.path.normpath(data))
    return TextData(train, tok, f"{name}-train"), TextData(test, tok, f"{name}-test")
