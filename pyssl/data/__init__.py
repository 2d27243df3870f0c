"""Datasets that ship with the install (scikit-learn's ``digits``, CPython's ``pydoc_data``
topics) and loaders for users' own images and text.

Images are held in memory as ``uint8`` tensors ``[N, C, H, W]`` (what the ``pyssl.augment``
recipes take); text as token ids ``int64 [N, L]``.
"""

from pyssl.data.images import ImageData, image_folder, load_digits, load_images, to_float
from pyssl.data.text import TextData, WordTokenizer, load_corpus, load_text, read_text_files

__all__ = [
    "ImageData",
    "TextData",
    "WordTokenizer",
    "image_folder",
    "load_corpus",
    "load_digits",
    "load_images",
    "load_text",
    "read_text_files",
    "to_float",
]
