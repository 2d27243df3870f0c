"""Masked-token pretext tasks written as their sources write them; the ground truth of the tests.

* :func:`mask_tokens_hf`: Hugging Face's ``DataCollatorForLanguageModeling.torch_mask_tokens``
  (several full-size Bernoulli draws), with its whole-word option over ``word_ids``.
* :func:`mask_tokens_counter`: the same law drawn from pyssl's counter-based generator, in eager
  PyTorch; the kernels must reproduce it bit for bit.
* :func:`span_mask`: SpanBERT's span sampler (truncated geometric lengths, redrawn overruns).
* :func:`compute_mask_indices`: wav2vec 2.0's ``_compute_mask_indices`` (Hugging Face
  transformers), with a ``numpy.random.Generator`` in place of the global numpy state.
* :func:`masked_lm_loss` / :func:`masked_lm_loss_gathered` / :func:`causal_lm_loss`: eager
  ``F.linear`` + ``F.cross_entropy`` over every position, or over the labelled rows only.
"""

from __future__ import annotations

import bisect
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE = -100
_M32 = 0xFFFFFFFF


def mask_tokens_hf(
    input_ids: Tensor,
    *,
    vocab_size: int,
    mask_token_id: int,
    mlm_probability: float = 0.15,
    mask_replace_prob: float = 0.8,
    random_replace_prob: float = 0.1,
    special_tokens_mask: Tensor | None = None,
    word_ids: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """``DataCollatorForLanguageModeling.torch_mask_tokens``: choose each token with probability
    ``mlm_probability`` (each word, when ``word_ids`` is given: ``-1`` marks no word), never a
    special token; of the chosen, ``mask_replace_prob`` become the mask token,
    ``random_replace_prob`` a uniformly random id and the rest stay; labels are -100 elsewhere."""
    labels = input_ids.clone()
    inputs = input_ids.clone()
    if word_ids is None:
        probability_matrix = torch.full(labels.shape, mlm_probability)
        masked_indices = torch.bernoulli(probability_matrix, generator=generator).bool()
        allowed = torch.ones_like(masked_indices)
    else:
        # one draw per (row, word id); every token of the word takes it
        per_word = torch.bernoulli(torch.full(labels.shape, mlm_probability), generator=generator)
        allowed = word_ids >= 0
        masked_indices = per_word.bool().gather(1, word_ids.clamp(min=0))
    if special_tokens_mask is not None:
        allowed = allowed & ~special_tokens_mask.bool()
    masked_indices = masked_indices & allowed
    labels[~masked_indices] = IGNORE
    indices_replaced = (
        torch.bernoulli(torch.full(labels.shape, mask_replace_prob), generator=generator).bool()
        & masked_indices
    )
    inputs[indices_replaced] = mask_token_id
    if mask_replace_prob == 1 or random_replace_prob == 0:
        return inputs, labels
    remaining = 1 - mask_replace_prob
    random_prob = random_replace_prob / remaining
    indices_random = (
        torch.bernoulli(torch.full(labels.shape, random_prob), generator=generator).bool()
        & masked_indices
        & ~indices_replaced
    )
    random_words = torch.randint(vocab_size, labels.shape, dtype=torch.long, generator=generator)
    inputs[indices_random] = random_words[indices_random]
    return inputs, labels


def _fmix32(h: Tensor) -> Tensor:
    h = h ^ (h >> 16)
    h = (h * 0x85EBCA6B) & _M32
    h = h ^ (h >> 13)
    h = (h * 0xC2B2AE35) & _M32
    return h ^ (h >> 16)


def draw_bits(seed: int, stream: int, counter: Tensor) -> Tensor:
    """The 32 random bits (in int64) of the counter-based generator of ``csrc/text/text.h``."""
    s0, s1 = seed & _M32, (seed >> 32) & _M32
    i = counter.to(torch.int64) & _M32
    h = _fmix32((i * 0x9E3779B1 + s0) & _M32)
    h = _fmix32(h ^ ((s1 + stream * 0x85EBCA77) & _M32))
    return _fmix32((h + i) & _M32)


def mask_tokens_counter(
    input_ids: Tensor,
    seed: int,
    *,
    vocab_size: int,
    mask_token_id: int,
    mlm_probability: float = 0.15,
    mask_replace_prob: float = 0.8,
    random_replace_prob: float = 0.1,
    special_tokens_mask: Tensor | None = None,
    word_ids: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """:func:`mask_tokens_hf`'s law, drawn from the counter-based generator (see
    ``csrc/text/text.h``): the eager twin of the kernels."""
    b, t = input_ids.shape
    pos = torch.arange(b * t, device=input_ids.device).view(b, t)
    w = word_ids if word_ids is not None else torch.arange(t, device=pos.device).expand(b, t)
    row = torch.arange(b, device=pos.device)[:, None] * t
    scale = 1.0 / 16777216.0
    u_choose = (draw_bits(seed, 0, row + w.clamp(min=0)) >> 8).to(torch.float32) * scale
    chosen = (u_choose < torch.tensor(mlm_probability, dtype=torch.float32)) & (w >= 0)
    if special_tokens_mask is not None:
        chosen &= ~special_tokens_mask.bool()
    u_class = (draw_bits(seed, 1, pos) >> 8).to(torch.float32) * scale
    mr = torch.tensor(mask_replace_prob, dtype=torch.float32)
    rr = torch.tensor(random_replace_prob, dtype=torch.float32)
    # floor(bits * vocab_size / 2**32), as the kernel's uint64 product, in two int64 halves
    # (the whole product overflows int64 once vocab_size > 2**31)
    bits = draw_bits(seed, 2, pos)
    random_ids = (bits * (vocab_size >> 16) + ((bits * (vocab_size & 0xFFFF)) >> 16)) >> 16
    out = torch.where(
        u_class < mr, mask_token_id, torch.where(u_class < mr + rr, random_ids, input_ids)
    )
    return torch.where(chosen, out, input_ids), torch.where(chosen, input_ids, IGNORE)


def span_length_cdf(p: float, max_span: int) -> list[float]:
    """SpanBERT's span-length law as a CDF over ``1..max_span``: ``len_distrib = [p * (1 - p)
    ** (i - 1) for i in 1..max_span]`` renormalised to sum 1 (``PairWithSpanMaskingScheme``),
    i.e. ``F(l) = (1 - (1 - p)^l) / (1 - (1 - p)^max_span)``, evaluated with ``expm1`` and
    ``log1p`` (exact for tiny ``p``, and ``F(max_span) = 1`` exactly)."""
    a = math.log1p(-p) if p < 1.0 else -math.inf
    denom = math.expm1(max_span * a)
    return [math.expm1(n * a) / denom for n in range(1, max_span + 1)]


def span_mask(
    length: int,
    rng: np.random.Generator,
    *,
    budget: int,
    p: float = 0.2,
    max_span: int = 10,
    allowed: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """SpanBERT's span sampler for one sequence (``PairWithSpanMaskingScheme.mask``, in tokens):
    until ``budget`` tokens are chosen, draw a span length from Geometric(p) truncated to
    ``1..max_span`` and renormalised (``np.random.choice(lens, p=len_distrib)``: one uniform
    against the CDF), cut it to the remaining budget, and draw a uniform start; a span that
    would leave the sequence or touch a disallowed or chosen token is redrawn (SpanBERT instead
    cuts it at the end of the sequence and lets it run over chosen tokens). After ``50 *
    length`` draws the rest of the budget becomes one-token spans on uniformly chosen free
    tokens (a partial Fisher-Yates shuffle), so ``min(budget, free tokens)`` are chosen.
    Returns (chosen [length] bool, span id [length] int64, -1 outside spans)."""
    chosen = np.zeros(length, dtype=np.bool_)
    span_id = np.full(length, -1, dtype=np.int64)
    ok = np.ones(length, dtype=np.bool_) if allowed is None else allowed.astype(np.bool_)
    cdf = span_length_cdf(p, max_span)
    count, spans = 0, 0
    for _ in range(50 * length):
        if count >= budget:
            break
        span = min(1 + bisect.bisect_right(cdf, rng.random()), budget - count)
        start = int(rng.integers(0, length))
        if start + span > length:
            continue
        if not all(ok[k] and not chosen[k] for k in range(start, start + span)):
            continue
        for k in range(start, start + span):
            chosen[k] = True
            span_id[k] = spans
        count += span
        spans += 1
    if count < budget:
        free = [k for k in range(length) if ok[k] and not chosen[k]]
        need = min(budget - count, len(free))
        for k in range(need):  # a partial Fisher-Yates shuffle
            j = k + int(rng.integers(0, len(free) - k))
            free[k], free[j] = free[j], free[k]
            chosen[free[k]] = True
            span_id[free[k]] = spans
            spans += 1
    return chosen, span_id


def compute_mask_indices(
    shape: tuple[int, int],
    mask_prob: float,
    mask_length: int,
    rng: np.random.Generator,
    lengths: np.ndarray | None = None,
    min_masks: int = 0,
) -> np.ndarray:
    """wav2vec 2.0's ``_compute_mask_indices`` (transformers), ``attention_mask`` given as
    per-row ``lengths``: ``int(mask_prob * length / mask_length + eps)`` spans per row (one
    ``eps ~ U[0, 1)`` for the batch: probabilistic rounding), at least ``min_masks``, starts
    drawn without replacement from ``[0, length - mask_length]``, overlaps allowed.

    transformers pads every row's start list to the full-length row's span count with a dummy
    start (the row's first start, or ``T - 1`` in a row with none), so a padded row that draws
    no span gets frame ``T - 1`` masked; this definition, like :func:`pyssl.ops.time_mask`,
    leaves such a row unmasked."""
    batch_size, sequence_length = shape
    if mask_length < 1:
        raise ValueError("mask_length: has to be bigger than 0")
    if mask_length > sequence_length:
        raise ValueError("mask_length: has to be smaller than sequence_length")
    epsilon = rng.random()

    def compute_num_masked_span(input_length: int) -> int:
        num_masked_span = int(mask_prob * input_length / mask_length + epsilon)
        num_masked_span = max(num_masked_span, min_masks)
        if num_masked_span * mask_length > sequence_length:
            num_masked_span = sequence_length // mask_length
        if input_length - (mask_length - 1) < num_masked_span:
            num_masked_span = max(input_length - (mask_length - 1), 0)
        return num_masked_span

    input_lengths = list(lengths) if lengths is not None else [sequence_length] * batch_size
    mask = np.zeros((batch_size, sequence_length), dtype=np.bool_)
    for b, input_length in enumerate(input_lengths):
        n = compute_num_masked_span(int(input_length))
        candidates = list(range(max(int(input_length) - (mask_length - 1), 0)))
        # a partial Fisher-Yates shuffle: n starts without replacement
        for k in range(n):
            j = k + int(rng.integers(0, len(candidates) - k))
            candidates[k], candidates[j] = candidates[j], candidates[k]
        for start in candidates[:n]:
            for off in range(mask_length):
                mask[b, min(start + off, sequence_length - 1)] = True
    return mask


def masked_lm_loss(
    hidden: Tensor,
    weight: Tensor,
    labels: Tensor,
    bias: Tensor | None = None,
    ignore_index: int = IGNORE,
    reduction: str = "mean",
) -> Tensor:
    """BERT's MLM head loss as Hugging Face computes it: logits over the whole vocabulary for
    every position, then ``cross_entropy`` with ``ignore_index``."""
    logits = F.linear(hidden, weight, bias)
    loss = F.cross_entropy(
        logits.reshape(-1, weight.shape[0]),
        labels.reshape(-1),
        ignore_index=ignore_index,
        reduction=reduction,
    )
    return loss.view(labels.shape) if reduction == "none" else loss


def masked_lm_loss_gathered(
    hidden: Tensor,
    weight: Tensor,
    labels: Tensor,
    bias: Tensor | None = None,
    ignore_index: int = IGNORE,
) -> Tensor:
    """The usual optimisation: gather the labelled positions first, then linear + cross-entropy
    (mean) over those rows only."""
    flat = labels.reshape(-1)
    keep = flat != ignore_index
    rows = hidden.reshape(-1, hidden.shape[-1])[keep]
    return F.cross_entropy(F.linear(rows, weight, bias), flat[keep])


def causal_lm_loss(
    hidden: Tensor,
    weight: Tensor,
    labels: Tensor,
    bias: Tensor | None = None,
    ignore_index: int = IGNORE,
    reduction: str = "mean",
) -> Tensor:
    """Hugging Face's causal-LM loss: position t predicts label t + 1
    (``shift_logits = logits[..., :-1, :]``, ``shift_labels = labels[..., 1:]``)."""
    logits = F.linear(hidden[..., :-1, :], weight, bias)
    loss = F.cross_entropy(
        logits.reshape(-1, weight.shape[0]),
        labels[..., 1:].reshape(-1),
        ignore_index=ignore_index,
        reduction=reduction,
    )
    return loss.view(labels[..., 1:].shape) if reduction == "none" else loss
