"""pyssl.data: the embedded digits and pydoc corpus, image folders, text files, the tokenizer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from pyssl.data import (
    WordTokenizer,
    image_folder,
    load_corpus,
    load_digits,
    load_images,
    load_text,
    read_text_files,
    to_float,
)


def test_digits_split_is_fixed_stratified_and_disjoint():
    train, test = load_digits("train"), load_digits("test")
    assert train.images.shape == (1347, 3, 32, 32) and train.images.dtype == torch.uint8
    assert test.images.shape == (450, 3, 32, 32)
    assert torch.equal(train.images[:, 0], train.images[:, 2])  # grey replicated to RGB
    # every class in both splits in the proportion of the whole set
    counts = torch.bincount(test.labels, minlength=10)
    assert counts.min() >= 43 and counts.max() <= 47
    again = load_digits("train")
    assert torch.equal(again.images, train.images) and torch.equal(again.labels, train.labels)
    other = load_digits("train", seed=1)
    assert not torch.equal(other.labels, train.labels)
    every = load_digits("all")
    assert len(every) == len(train) + len(test) == 1797
    # the pixels are sklearn's 8x8 scans: 0..16 mapped to 0..255 (white background to 0)
    assert int(train.images.max()) == 255 and int(train.images.min()) == 0


def test_digits_options_and_errors():
    one = load_digits("test", image_size=16, channels=1)
    assert one.images.shape == (450, 1, 16, 16)
    with pytest.raises(ValueError, match="split"):
        load_digits("val")
    with pytest.raises(ValueError, match="channels"):
        load_digits(channels=2)
    with pytest.raises(ValueError, match="test_fraction"):
        load_digits(test_fraction=1.0)


def test_to_float_normalises_per_channel():
    x = torch.tensor([0, 255], dtype=torch.uint8).reshape(1, 1, 1, 2).expand(1, 3, 1, 2)
    y = to_float(x, (0.5, 0.0, 0.5), (0.5, 1.0, 0.25))
    torch.testing.assert_close(y[0, :, 0, 1], torch.tensor([1.0, 1.0, 2.0]))
    torch.testing.assert_close(y[0, :, 0, 0], torch.tensor([-1.0, 0.0, -2.0]))
    with pytest.raises(ValueError, match="images"):
        to_float(torch.zeros(3, 4, 4))


def _png(path, value, size=(12, 8)):
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path)


def test_image_folder_with_class_subfolders(tmp_path):
    for c, v in (("cat", 10), ("dog", 200)):
        (tmp_path / c).mkdir()
        for i in range(2):
            _png(tmp_path / c / f"{i}.png", v + i)
    (tmp_path / "notes.txt").write_text("ignored")
    d = image_folder(str(tmp_path), image_size=6)
    assert d.classes == ["cat", "dog"] and d.labels.tolist() == [0, 0, 1, 1]
    assert d.images.shape == (4, 3, 6, 6) and d.images.dtype == torch.uint8
    assert d.images[0].unique().tolist() == [10] and d.images[3].unique().tolist() == [201]


def test_unlabeled_image_folder(tmp_path):
    for i in range(3):
        _png(tmp_path / f"{i}.jpg", 50 * i, size=(20, 30))
    d = load_images(str(tmp_path), image_size=8)
    assert d.labels is None and len(d) == 3 and d.images.shape[-2:] == (8, 8)


def test_image_folder_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        image_folder(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images found"):
        image_folder(str(tmp_path / "empty"))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "a.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="not a readable image"):
        image_folder(str(tmp_path / "broken"))


def test_tokenizer_vocabulary_and_round_trip():
    tok = WordTokenizer.build(["the cat sat. The cat ran!", "a dog"], vocab_size=6)
    assert tok.vocab[:3] == ["[PAD]", "[UNK]", "[MASK]"]
    assert tok.vocab[3:] == ["cat", "the", "!"]  # by count, ties alphabetically
    ids = tok.encode("The cat flew")
    assert ids == [4, 3, WordTokenizer.UNK]
    assert tok.decode(ids) == "the cat [UNK]"
    with pytest.raises(ValueError, match="vocab_size"):
        WordTokenizer.build(["x"], vocab_size=3)


def test_pydoc_corpus_split_holds_out_whole_documents():
    docs = load_corpus()
    assert len(docs) > 50 and sum(map(len, docs)) > 100_000
    train, test = load_text(seq_len=32, vocab_size=1000)
    assert train.tokens.shape[1] == test.tokens.shape[1] == 32
    assert len(train) > 5 * len(test) > 0
    assert int(train.tokens.max()) < 1000 and train.tokenizer is test.tokenizer
    # the held-out text has words the training text never showed (built from train only)
    assert (test.tokens == WordTokenizer.UNK).any()
    again, _ = load_text(seq_len=32, vocab_size=1000)
    assert torch.equal(again.tokens, train.tokens)


def test_plain_text_files(tmp_path):
    (tmp_path / "a.txt").write_text("one two three four five six seven eight nine ten " * 20)
    (tmp_path / "b.txt").write_text("alpha beta gamma delta " * 20)
    train, test = load_text(str(tmp_path), seq_len=8, test_fraction=0.5)
    assert len(train) > 0 and len(test) > 0
    assert len(read_text_files(str(tmp_path / "a.txt"))) == 1
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no text"):
        load_text(str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError):
        load_text(str(tmp_path / "missing.txt"))
