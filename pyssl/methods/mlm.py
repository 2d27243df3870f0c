"""BERT-style masked language modelling (Devlin et al. 2019).

Anchor: Hugging Face's ``DataCollatorForLanguageModeling`` (the 80/10/10 masking, here
:func:`pyssl.ops.mask_tokens`) and ``BertForMaskedLM`` (the LM head tied to the token
embedding, its loss here :func:`pyssl.ops.masked_lm_loss`, which never forms the full logits).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from pyssl.methods.base import SSLMethod, check_unit
from pyssl.models.text import TextEncoder


class MLM(SSLMethod):
    """Masked language modelling over a :class:`~pyssl.models.TextEncoder`:
    ``loss([input_ids])`` masks the ids (BERT's 80/10/10 of ``mlm_probability`` of the
    positions, special tokens never chosen), encodes them and scores the tied LM head at the
    chosen positions only.

    Args:
        encoder: the text encoder (its ``pad_token_id``, when set, is a special token).
        mask_token_id: the ``[MASK]`` id.
        mlm_probability, mask_replace_prob, random_replace_prob: BERT's 0.15 / 0.8 / 0.1
            (published values, kept: they do not depend on the data's size).
        special_token_ids: ids never masked (``[CLS]``, ``[SEP]``, ``[PAD]``, ...).

    ``generator`` (optional) draws the masks, for reproducible runs.
    """

    name = "mlm"
    modality = "text"
    num_views = 1
    encoder: TextEncoder

    def __init__(
        self,
        encoder: nn.Module,
        *,
        mask_token_id: int,
        mlm_probability: float = 0.15,
        mask_replace_prob: float = 0.8,
        random_replace_prob: float = 0.1,
        special_token_ids: Iterable[int] = (),
    ) -> None:
        super().__init__()
        if not isinstance(encoder, TextEncoder):
            raise TypeError(
                f"encoder: MLM needs a pyssl.models.TextEncoder, got {type(encoder).__name__}"
            )
        vocab = encoder.vocab_size
        if not isinstance(mask_token_id, int) or not 0 <= mask_token_id < vocab:
            raise ValueError(
                f"mask_token_id: expected an id in [0, {vocab}), got {mask_token_id!r}"
            )
        check_unit("mlm_probability", mlm_probability, closed=True)
        check_unit("mask_replace_prob", mask_replace_prob, closed=True)
        check_unit("random_replace_prob", random_replace_prob, closed=True)
        if mask_replace_prob + random_replace_prob > 1:
            raise ValueError(
                "mask_replace_prob + random_replace_prob: must not exceed 1, got "
                f"{mask_replace_prob + random_replace_prob}"
            )
        special = sorted(set(special_token_ids) | {mask_token_id})
        if encoder.pad_token_id is not None:
            special = sorted(set(special) | {encoder.pad_token_id})
        if any(not 0 <= s < vocab for s in special):
            raise ValueError(f"special_token_ids: every id must lie in [0, {vocab}), got {special}")
        self.encoder = encoder
        self.mask_token_id = mask_token_id
        self.mlm_probability = float(mlm_probability)
        self.mask_replace_prob = float(mask_replace_prob)
        self.random_replace_prob = float(random_replace_prob)
        self.register_buffer("special_ids", torch.tensor(special, dtype=torch.int64))
        self.generator: torch.Generator | None = None

    special_ids: Tensor

    def mask(self, ids: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """``(masked_ids, labels)`` of :func:`pyssl.ops.mask_tokens` (labels -100 where not
        chosen)."""
        from pyssl.ops import mask_tokens

        return mask_tokens(
            ids,
            vocab_size=self.encoder.vocab_size,
            mask_token_id=self.mask_token_id,
            mlm_probability=self.mlm_probability,
            mask_replace_prob=self.mask_replace_prob,
            random_replace_prob=self.random_replace_prob,
            special_tokens_mask=torch.isin(ids, self.special_ids),
            generator=generator if generator is not None else self.generator,
        )

    def masked_loss(self, masked_ids: Tensor, labels: Tensor) -> Tensor:
        """Mean cross-entropy of the tied LM head at the positions ``labels`` names."""
        from pyssl.ops import masked_lm_loss

        hidden = self.encoder.lm_hidden(self.encoder.forward_tokens(masked_ids))
        if not bool((labels != -100).any()):  # nothing chosen: a zero that keeps the graph
            return hidden.sum() * 0.0
        # under autocast the hidden states come out in low precision; cast the head as a
        # Linear layer would be cast
        weight = self.encoder.lm_weight.to(hidden.dtype)
        return masked_lm_loss(hidden, weight, labels, bias=self.encoder.lm_bias.to(hidden.dtype))

    def loss(self, views: list[Tensor]) -> Tensor:
        (ids,) = self._check_views(views)
        if ids.dim() != 2 or ids.dtype != torch.int64:
            raise ValueError(
                f"views[0]: expected int64 token ids [B, T], got {ids.dtype} {tuple(ids.shape)}"
            )
        return self.masked_loss(*self.mask(ids))

    @torch.no_grad()
    def masked_accuracy(
        self, ids: Tensor, generator: torch.Generator | None = None
    ) -> tuple[int, int]:
        """``(correct, total)``: how many of the chosen positions the LM head's arg-max
        predicts (the original token), after masking ``ids`` as in training."""
        masked, labels = self.mask(ids, generator)
        chosen = labels != -100
        if not bool(chosen.any()):
            return 0, 0
        hidden = self.encoder.forward_tokens(masked)[chosen]
        pred = self.encoder.lm_logits(hidden).argmax(-1)
        return int((pred == labels[chosen]).sum()), int(chosen.sum())
