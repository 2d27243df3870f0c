"""pyssl's functional API: torch.library custom ops over the compiled kernels.

Each op validates its arguments, then runs on the backend its tensors' device selects (see
:func:`explain`): C++ for CPU tensors, Triton for CUDA tensors, CUDA C++ on request, the eager
reference as a fallback that warns once.
"""

from pyssl.ops._backend import BACKENDS, Explanation, explain
from pyssl.ops.colour import lab_to_rgb, rgb_to_lab
from pyssl.ops.contrastive import clip_loss, info_nce, moco_loss, nt_xent, siglip_loss
from pyssl.ops.masking import (
    MaskingResult,
    gather_patches,
    masked_patch_loss,
    patchify,
    random_masking,
    restore_masked,
    unpatchify,
)
from pyssl.ops.pretext import jigsaw_permutations, jigsaw_shuffle, rotations
from pyssl.ops.text import (
    causal_lm_loss,
    mask_tokens,
    mask_tokens_numpy,
    masked_lm_loss,
    span_mask,
    time_mask,
)

__all__ = [
    "BACKENDS",
    "Explanation",
    "MaskingResult",
    "clip_loss",
    "explain",
    "info_nce",
    "moco_loss",
    "nt_xent",
    "siglip_loss",
    "gather_patches",
    "masked_patch_loss",
    "patchify",
    "random_masking",
    "restore_masked",
    "unpatchify",
    "lab_to_rgb",
    "rgb_to_lab",
    "jigsaw_permutations",
    "jigsaw_shuffle",
    "rotations",
    "causal_lm_loss",
    "mask_tokens",
    "mask_tokens_numpy",
    "masked_lm_loss",
    "span_mask",
    "time_mask",
]
