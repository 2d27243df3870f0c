"""Masked language modelling: the loss against Hugging Face's collator + BertForMaskedLM loss
written out, special tokens, training, gradients through the tied head, bad input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from method_helpers import encoder_grads, train

from pyssl import models, ops
from pyssl.methods import MLM, build

V, MASK, PAD, CLS = 40, 1, 0, 2


def encoder() -> models.TextEncoder:
    torch.manual_seed(0)
    return models.TextEncoder(V, max_len=16, dim=16, depth=1, heads=2, pad_token_id=PAD)


def corpus(n: int = 8, t: int = 12, seed: int = 0) -> torch.Tensor:
    """Sequences [CLS] a a+1 a+2 ... (a learnable pattern), two padding positions at the end."""
    g = torch.Generator().manual_seed(seed)
    start = torch.randint(3, V - t, (n, 1), generator=g)
    ids = start + torch.arange(t)
    ids[:, 0] = CLS
    ids[:, -2:] = PAD
    return ids


def test_loss_matches_collator_and_bert_head() -> None:
    m = MLM(encoder(), mask_token_id=MASK, special_token_ids=[CLS])
    ids = corpus()
    m.generator = torch.Generator().manual_seed(3)
    loss = m.loss([ids])
    special = (ids == PAD) | (ids == CLS) | (ids == MASK)
    masked, labels = ops.mask_tokens(
        ids,
        vocab_size=V,
        mask_token_id=MASK,
        special_tokens_mask=special,
        generator=torch.Generator().manual_seed(3),
    )
    assert (labels[special] == -100).all() and (labels != -100).any()
    logits = m.encoder.lm_logits(m.encoder.forward_tokens(masked))
    want = F.cross_entropy(logits.view(-1, V), labels.view(-1), ignore_index=-100)
    torch.testing.assert_close(loss, want, rtol=1e-5, atol=1e-6)


def test_trains_through_the_tied_head() -> None:
    m = MLM(encoder(), mask_token_id=MASK, special_token_ids=[CLS], mlm_probability=0.3)
    m.generator = torch.Generator().manual_seed(0)
    ids = corpus()
    loss = m.loss([ids])
    assert torch.isfinite(loss)
    loss.backward()
    assert encoder_grads(m) > 0 and m.encoder.tok_embed.weight.grad.abs().sum() > 0
    m.zero_grad()
    losses = train(m, lambda step: [ids], steps=15, lr=1e-2)
    assert sum(losses[-3:]) / 3 < losses[0] - 0.3, losses
    correct, total = m.masked_accuracy(ids, torch.Generator().manual_seed(1))
    assert 0 < total and 0 <= correct <= total


def test_nothing_chosen_gives_a_zero_with_gradient() -> None:
    m = MLM(encoder(), mask_token_id=MASK, mlm_probability=0.0)
    loss = m.loss([corpus()])
    assert loss.item() == 0.0 and loss.requires_grad
    assert m.masked_accuracy(corpus()) == (0, 0)


def test_build_and_bad_input() -> None:
    m = build("mlm", vocab_size=V, max_len=16, dim=16, depth=1, heads=2, mask_token_id=MASK)
    assert m.modality == "text" and m.encoder.out_dim == 16 and m.encoder.max_len == 16
    assert m.mlm_probability == 0.15 and m.mask_replace_prob == 0.8
    with pytest.raises(TypeError, match="vocab_size"):
        build("mlm", mask_token_id=MASK)
    with pytest.raises(TypeError, match="TextEncoder"):
        MLM(models.ResNet((1,), width=4), mask_token_id=MASK)
    with pytest.raises(ValueError, match="mask_token_id"):
        MLM(encoder(), mask_token_id=V)
    with pytest.raises(ValueError, match="must not exceed 1"):
        MLM(encoder(), mask_token_id=MASK, mask_replace_prob=0.8, random_replace_prob=0.3)
    with pytest.raises(ValueError, match="int64 token ids"):
        m.loss([torch.randn(2, 5)])
    with pytest.raises(NotImplementedError, match="no image augmentation"):
        m.default_augment(32, 3)


def test_bfloat16_autocast() -> None:
    m = MLM(encoder(), mask_token_id=MASK, mlm_probability=0.3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = m.loss([corpus()])
    assert torch.isfinite(loss)
    loss.backward()
    assert encoder_grads(m) > 0
