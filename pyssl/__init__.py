"""pyssl: fast self-supervised learning. Compiled kernels for the hot paths of SSL recipes
(masked patches, contrastive losses, augmentation, masked tokens) behind a thin PyTorch API."""

from pyssl import ops
from pyssl._version import __version__

__all__ = ["__version__", "ops"]
