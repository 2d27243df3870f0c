"""Masked-token pretext ops: BERT-style token masking, SpanBERT spans, wav2vec 2.0 time masks,
and fused masked / causal language-model losses that never hold the full logits.

Anchors: Hugging Face's ``DataCollatorForLanguageModeling`` (token masking, whole-word masking),
SpanBERT (span masking), transformers' wav2vec 2.0 ``_compute_mask_indices`` (time masks), and
``F.linear`` + ``F.cross_entropy(ignore_index=-100)`` for the losses (see
``pyssl.reference.text``).

Token masking draws from a counter-based generator seeded once per call from ``generator`` (or
torch's global one): a token's fate depends on the seed and its position only, so results are
the same on every backend and for every thread count. The law is Hugging Face's; the random
stream is not (see :func:`mask_tokens`).

The losses never hold the full logits. Under autograd with a ``"mean"`` or ``"sum"``
reduction the CPU kernel computes the loss and its gradients in one sweep: 128 labelled rows
at a time against the whole vocabulary (one ``[V, 128]`` block of logits), 3 matmuls of
``2*M*V*H`` FLOPs for M labelled rows, as eager; the gradients are stored and scaled by the
upstream scalar in the backward. Otherwise (``"none"``, no grad, GPU) the forward sweeps the
vocabulary in chunks with an online log-sum-exp and the backward recomputes each tile (4
matmuls). Inputs in float32,
bfloat16, float16 (float64 too), accumulation in float32, gradients in the input dtype.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from pyssl.ops._backend import check_backend_arg, launch, resolve
from pyssl.reference import text as ref

_FLOATS = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
_SEED_BOUND = 2**63 - 1

# ----------------------------------------------------------------------------- validation


def _check_prob(p: object, name: str) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)):
        raise TypeError(f"{name}: expected a float, got {type(p).__name__}")
    if not 0.0 <= float(p) <= 1.0:
        raise ValueError(f"{name}: expected a probability in [0, 1], got {p}")
    return float(p)


def _check_int(v: object, name: str, lo: int, hi: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise TypeError(f"{name}: expected an int, got {type(v).__name__}")
    if v < lo or (hi is not None and v >= hi):
        bound = f"[{lo}, {hi})" if hi is not None else f">= {lo}"
        raise ValueError(f"{name}: expected a value in {bound}, got {v}")
    return int(v)


def _check_ids(t: object, name: str, shape: torch.Size | None = None) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"{name}: expected an int64 (or int32) tensor, got {t.dtype}")
    if shape is None and t.dim() != 2:
        raise ValueError(f"{name}: expected a [B, T] tensor, got shape {tuple(t.shape)}")
    if shape is not None and t.shape != shape:
        raise ValueError(f"{name}: shape {tuple(t.shape)} differs from input_ids' {tuple(shape)}")
    return t


def _check_replace(mask_replace_prob: object, random_replace_prob: object) -> tuple[float, float]:
    mr = _check_prob(mask_replace_prob, "mask_replace_prob")
    rr = _check_prob(random_replace_prob, "random_replace_prob")
    if mr + rr > 1.0 + 1e-12:
        raise ValueError(
            "random_replace_prob: mask_replace_prob + random_replace_prob must not exceed 1, "
            f"got {mr} + {rr}"
        )
    return mr, rr


def _draw_seed(generator: torch.Generator | None) -> Tensor:
    """One 63-bit seed from ``generator`` (or the global generator), as a CPU int64 tensor."""
    device = generator.device if generator is not None else torch.device("cpu")
    seed = torch.randint(0, _SEED_BOUND, (), generator=generator, device=device)
    return seed.cpu()


# --------------------------------------------------------------------------- token masking


@torch.library.custom_op("pyssl::mask_tokens", mutates_args=())
def _mask_tokens(
    input_ids: Tensor,
    special: Tensor | None,
    word_ids: Tensor | None,
    seed: Tensor,
    vocab_size: int,
    mask_token_id: int,
    prob: float,
    mask_replace_prob: float,
    random_replace_prob: float,
    backend: str,
) -> tuple[Tensor, Tensor]:
    ids = input_ids.contiguous().to(torch.int64)
    sp = special.contiguous().to(torch.bool) if special is not None else None
    wid = word_ids.contiguous().to(torch.int64) if word_ids is not None else None
    s = int(seed)
    if backend != "cpu":  # the C++ kernel checks the ranges itself
        bad = (ids < 0) | (ids >= vocab_size)
        if bool(bad.any()):
            raise ValueError(f"input_ids: token ids must lie in [0, {vocab_size})")
        if wid is not None and bool(((wid < -1) | (wid >= max(ids.shape[1], 1))).any()):
            raise ValueError("word_ids: word ids must lie in [-1, T)")
    if backend == "reference":
        masked, labels = ref.mask_tokens_counter(
            ids,
            s,
            vocab_size=vocab_size,
            mask_token_id=mask_token_id,
            mlm_probability=prob,
            mask_replace_prob=mask_replace_prob,
            random_replace_prob=random_replace_prob,
            special_tokens_mask=sp,
            word_ids=wid,
        )
        return masked.to(input_ids.dtype), labels.to(input_ids.dtype)
    masked = torch.empty_like(ids)
    labels = torch.empty_like(ids)
    launch(
        "text",
        "mask_tokens",
        backend,
        ids,
        sp,
        wid,
        s,
        vocab_size,
        mask_token_id,
        prob,
        mask_replace_prob,
        random_replace_prob,
        masked,
        labels,
    )
    return masked.to(input_ids.dtype), labels.to(input_ids.dtype)


@_mask_tokens.register_fake
def _mask_tokens_fake(
    input_ids, special, word_ids, seed, vocab_size, mask_token_id, prob, mr, rr, backend
):  # type: ignore[no-untyped-def]  # noqa: E501
    return torch.empty_like(input_ids), torch.empty_like(input_ids)


def mask_tokens(
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
    backend: str | None = None,
) -> tuple[Tensor, Tensor]:
    """BERT's masked-LM corruption with the semantics of Hugging Face's
    ``DataCollatorForLanguageModeling`` (``torch_mask_tokens``).

    Each token is chosen with probability ``mlm_probability``, never where
    ``special_tokens_mask`` is true. Of the chosen tokens, ``mask_replace_prob`` become
    ``mask_token_id``, ``random_replace_prob`` a uniformly random id in ``[0, vocab_size)``
    (special ids included, as in Hugging Face) and the rest stay as they are.

    Args:
        input_ids: ``[B, T]`` int64 (or int32) token ids in ``[0, vocab_size)``.
        special_tokens_mask: ``[B, T]`` bool (or 0/1 ints): tokens that are never chosen
            (padding, [CLS], [SEP]).
        word_ids: ``[B, T]`` int64: whole-word masking. Tokens with one word id in ``[0, T)``
            are chosen together (one draw per word); ``-1`` marks a token of no word (never
            chosen). The 80/10/10 split is still drawn per token, as in Hugging Face.
        generator: the ``torch.Generator`` one 63-bit seed is drawn from.

    Returns:
        ``(masked_ids, labels)``, both of ``input_ids``' shape and dtype; ``labels`` is the
        original id where a token was chosen and -100 elsewhere.

    Differences from Hugging Face: one uniform decides the 80/10/10 class (the same law as its
    two Bernoulli draws), and all draws come from pyssl's counter-based generator, so the masks
    differ draw for draw from the collator's for the same seed (the tests compare the laws).
    """
    check_backend_arg(backend)
    ids = _check_ids(input_ids, "input_ids")
    v = _check_int(vocab_size, "vocab_size", 1, 2**32)
    if ids.dtype == torch.int32 and v > 2**31:
        raise ValueError(
            f"vocab_size: int32 input_ids hold ids below 2**31, got vocab_size={v} (pass int64 ids)"
        )
    m = _check_int(mask_token_id, "mask_token_id", 0, v)
    p = _check_prob(mlm_probability, "mlm_probability")
    mr, rr = _check_replace(mask_replace_prob, random_replace_prob)
    sp = None
    if special_tokens_mask is not None:
        if not isinstance(special_tokens_mask, Tensor):
            raise TypeError("special_tokens_mask: expected a torch.Tensor")
        if special_tokens_mask.shape != ids.shape:
            raise ValueError(
                f"special_tokens_mask: shape {tuple(special_tokens_mask.shape)} differs from "
                f"input_ids' {tuple(ids.shape)}"
            )
        sp = special_tokens_mask
    wid = _check_ids(word_ids, "word_ids", ids.shape) if word_ids is not None else None
    return _mask_tokens(
        ids,
        sp,
        wid,
        _draw_seed(generator),
        v,
        m,
        p,
        mr,
        rr,
        resolve("mask_tokens", ids.device, backend),
    )


def mask_tokens_numpy(
    input_ids: np.ndarray,
    *,
    vocab_size: int,
    mask_token_id: int,
    mlm_probability: float = 0.15,
    mask_replace_prob: float = 0.8,
    random_replace_prob: float = 0.1,
    special_tokens_mask: np.ndarray | None = None,
    word_ids: np.ndarray | None = None,
    rng: np.random.Generator | int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`mask_tokens` on numpy arrays, for DataLoader workers: the same C++ kernel and the
    same draws. ``rng`` (a ``numpy.random.Generator``, or an int seed of one) gives one 63-bit
    seed ``s = rng.integers(0, 2**63 - 1)``; the result equals ``mask_tokens(...,
    generator=torch.Generator().manual_seed(s))`` on the same arrays as tensors."""
    raw = np.asarray(input_ids)
    if not np.issubdtype(raw.dtype, np.integer):
        raise TypeError(f"input_ids: expected an integer array, got {raw.dtype}")
    ids = np.ascontiguousarray(raw, dtype=np.int64)
    if ids.ndim != 2:
        raise ValueError(f"input_ids: expected a [B, T] array, got shape {ids.shape}")
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    seed = int(gen.integers(0, _SEED_BOUND))
    t = torch.from_numpy(ids)
    # contiguous copies: torch.from_numpy refuses negative strides (a reversed view)
    sp = (
        torch.from_numpy(np.ascontiguousarray(special_tokens_mask))
        if special_tokens_mask is not None
        else None
    )
    wid = torch.from_numpy(np.ascontiguousarray(word_ids)) if word_ids is not None else None
    g = torch.Generator().manual_seed(seed)
    masked, labels = mask_tokens(
        t,
        vocab_size=vocab_size,
        mask_token_id=mask_token_id,
        mlm_probability=mlm_probability,
        mask_replace_prob=mask_replace_prob,
        random_replace_prob=random_replace_prob,
        special_tokens_mask=sp,
        word_ids=wid,
        generator=g,
        backend="cpu",
    )
    return masked.numpy(), labels.numpy()


def _replace(
    ids: Tensor,
    chosen: Tensor,
    cls_u: Tensor,
    random_ids: Tensor,
    mask_token_id: int,
    mr: float,
    rr: float,
) -> tuple[Tensor, Tensor]:
    out = torch.where(cls_u < mr, mask_token_id, torch.where(cls_u < mr + rr, random_ids, ids))
    return torch.where(chosen, out, ids), torch.where(chosen, ids, ref.IGNORE)


def span_mask(
    input_ids: Tensor,
    *,
    vocab_size: int,
    mask_token_id: int,
    mlm_probability: float = 0.15,
    p: float = 0.2,
    max_span: int = 10,
    mask_replace_prob: float = 0.8,
    random_replace_prob: float = 0.1,
    special_tokens_mask: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """SpanBERT's span masking (``PairWithSpanMaskingScheme``, its span-level replacement).

    Per row of ``n`` non-special tokens, the budget is ``round(mlm_probability * n)`` tokens
    (half up). Until it is spent, a span length is drawn from SpanBERT's law, Geometric(``p``)
    truncated to ``1..max_span`` and renormalised (``P(l)`` proportional to
    ``p (1 - p)^(l - 1)``; mean 3.8 for the defaults), cut to the remaining budget, and a start
    is drawn uniformly. As in SpanBERT, the 80/10/10 replacement is drawn per span: a span
    becomes all mask tokens, all random tokens, or stays.

    Deliberate differences from SpanBERT:

    * overruns and overlaps are **rejected**, not truncated: a span that would leave the row or
      touch a special or already chosen token is redrawn (length and start). SpanBERT only
      redraws when the start is already masked; it cuts the span at the end of the sentence
      and lets it run over masked tokens, then merges touching spans into one before drawing
      their replacement. Here spans are disjoint, each keeps its drawn length (unless cut to
      the budget) and touching spans draw their replacements separately; the accepted lengths
      follow the law conditioned on fitting (a length ``l`` span fits ``T - l + 1`` starts of
      an empty row), slightly shorter than the drawn law in crowded rows.
    * lengths count tokens (SpanBERT counts whole words), and the budget is rounded half up
      (SpanBERT takes ``ceil(mask_ratio * len)``).
    * every row reaches its budget exactly: after ``50 * T`` draws (rows with a high
      ``mlm_probability`` or many special tokens) the rest of the budget is chosen as
      one-token spans on uniformly drawn free tokens (never an endless loop, no warning).

    The spans are drawn on the host by a numba sampler (``pyssl.samplers.span_mask_batch``)
    from a ``numpy`` generator seeded from ``generator``, draw for draw as
    :func:`pyssl.reference.text.span_mask`.

    Args:
        input_ids: ``[B, T]`` int64 (or int32) token ids in ``[0, vocab_size)``.
        mlm_probability: the share of each row's non-special tokens to choose, in ``[0, 1]``.
        p: the geometric parameter, in ``(0, 1]``; ``max_span``: the longest span, ``>= 1``.
        special_tokens_mask: ``[B, T]`` bool (or 0/1 ints) tensor: tokens never chosen.

    Returns ``(masked_ids, labels)`` as :func:`mask_tokens`.
    """
    from pyssl import samplers

    ids = _check_ids(input_ids, "input_ids")
    v = _check_int(vocab_size, "vocab_size", 1)
    m = _check_int(mask_token_id, "mask_token_id", 0, v)
    prob = _check_prob(mlm_probability, "mlm_probability")
    pg = _check_prob(p, "p")
    if pg == 0.0:
        raise ValueError("p: the geometric parameter must be in (0, 1], got 0")
    ms = _check_int(max_span, "max_span", 1)
    mr, rr = _check_replace(mask_replace_prob, random_replace_prob)
    if bool(((ids < 0) | (ids >= v)).any()):
        raise ValueError(f"input_ids: token ids must lie in [0, {v})")
    b, t = ids.shape
    allowed = np.ones((b, t), dtype=np.bool_)
    if special_tokens_mask is not None:
        if not isinstance(special_tokens_mask, Tensor):
            raise TypeError(
                "special_tokens_mask: expected a torch.Tensor, got "
                f"{type(special_tokens_mask).__name__}"
            )
        if special_tokens_mask.shape != ids.shape:
            raise ValueError(
                f"special_tokens_mask: shape {tuple(special_tokens_mask.shape)} differs from "
                f"input_ids' {tuple(ids.shape)}"
            )
        allowed = ~special_tokens_mask.bool().cpu().numpy()
    rng = np.random.default_rng(int(_draw_seed(generator)))
    chosen, span_id = samplers.span_mask_batch(allowed, prob, pg, ms, rng)
    n_spans = int(span_id.max()) + 1 if span_id.size else 0
    cls_span = rng.random((b, max(n_spans, 1)))
    cls_u = np.take_along_axis(cls_span, np.maximum(span_id, 0), axis=1)
    random_ids = rng.integers(0, v, size=(b, t))
    dev = ids.device
    masked, labels = _replace(
        ids.to(torch.int64),
        torch.from_numpy(chosen).to(dev),
        torch.from_numpy(cls_u).to(dev),
        torch.from_numpy(random_ids).to(dev),
        m,
        mr,
        rr,
    )
    return masked.to(ids.dtype), labels.to(ids.dtype)


def time_mask(
    shape: tuple[int, int],
    mask_prob: float,
    mask_length: int,
    min_masks: int = 0,
    lengths: Tensor | np.ndarray | None = None,
    *,
    rng: np.random.Generator | int | None = None,
) -> np.ndarray:
    """wav2vec 2.0's time masking (transformers' ``_compute_mask_indices``) as a ``[B, T]``
    bool array, drawn by a numba sampler.

    Per row of valid length ``L`` (``lengths``, else ``T``): ``int(mask_prob * L / mask_length
    + eps)`` spans (one ``eps ~ U[0, 1)`` per call: probabilistic rounding), at least
    ``min_masks``, at most ``T // mask_length`` and ``L - mask_length + 1``; span starts drawn
    without replacement from ``[0, L - mask_length]``; spans may overlap; nothing at or beyond
    ``L`` is masked. Bit-identical to :func:`pyssl.reference.text.compute_mask_indices` for the
    same ``rng`` (a ``numpy.random.Generator`` or a seed).

    Differences from transformers: (1) a row that draws no span stays unmasked. transformers
    pads each row's list of starts to the span count of a full-length row with a dummy start,
    which in a row with no span is ``T - 1``, so such a padded row (``L < T``, e.g. shorter
    than ``mask_length`` or rounded down to 0 spans) gets frame ``T - 1``, a padding frame,
    masked; here nothing at or beyond ``L`` ever is. (2) The draws come from ``rng``, not the
    global numpy state, and the starts are a partial Fisher-Yates shuffle rather than
    ``np.random.choice(..., replace=False)``: the same law, other masks for one seed.
    """
    from pyssl import samplers

    if not (isinstance(shape, (tuple, list)) and len(shape) == 2):
        raise ValueError(f"shape: expected (batch, time), got {shape!r}")
    b = _check_int(shape[0], "shape[0]", 0)
    t = _check_int(shape[1], "shape[1]", 1)
    mp = _check_prob(mask_prob, "mask_prob")
    ml = _check_int(mask_length, "mask_length", 1)
    if ml > t:
        raise ValueError(f"mask_length: {ml} exceeds the sequence length {t}")
    mm = _check_int(min_masks, "min_masks", 0)
    if lengths is None:
        lens = np.full(b, t, dtype=np.int64)
    else:
        lens = np.asarray(lengths.cpu() if isinstance(lengths, Tensor) else lengths).astype(
            np.int64
        )
        if lens.shape != (b,):
            raise ValueError(f"lengths: expected {b} entries, got shape {lens.shape}")
        if (lens < 0).any() or (lens > t).any():
            raise ValueError(f"lengths: expected values in [0, {t}]")
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    return samplers.time_mask_batch(b, t, mp, ml, mm, lens, gen)


# ------------------------------------------------------------------------ language-model loss


def _stat_dtype(t: Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _check_labels_range(labels: Tensor, ignore_index: int, vocab: int) -> None:
    bad = (labels != ignore_index) & ((labels < 0) | (labels >= vocab))
    if bool(bad.any()):
        first = int(labels[bad][0])
        raise ValueError(
            f"labels: label {first} is neither ignore_index ({ignore_index}) nor in [0, {vocab})"
        )


@torch.library.custom_op("pyssl::lm_loss", mutates_args=())
def _lm_loss(
    hidden: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    labels: Tensor,
    ignore_index: int,
    backend: str,
) -> tuple[Tensor, Tensor]:
    hidden, weight, labels = hidden.contiguous(), weight.contiguous(), labels.contiguous()
    bias = bias.contiguous() if bias is not None else None
    dt = _stat_dtype(hidden)
    if backend != "cpu":  # the C++ kernels check the labels themselves
        _check_labels_range(labels, ignore_index, weight.shape[0])
    if backend == "reference":
        keep = labels != ignore_index
        logits = torch.nn.functional.linear(
            hidden.to(dt), weight.to(dt), None if bias is None else bias.to(dt)
        )
        lse = torch.where(keep, torch.logsumexp(logits, 1), 0)
        target = logits.gather(1, torch.where(keep, labels, 0)[:, None])[:, 0]
        return torch.where(keep, lse - target, 0), lse
    loss = hidden.new_empty(hidden.shape[0], dtype=dt)
    lse = torch.empty_like(loss)
    launch(
        "text", "lm_loss_forward", backend, hidden, weight, bias, labels, ignore_index, loss, lse
    )
    return loss, lse


@_lm_loss.register_fake
def _lm_loss_fake(hidden, weight, bias, labels, ignore_index, backend):  # type: ignore[no-untyped-def]
    loss = hidden.new_empty(hidden.shape[0], dtype=_stat_dtype(hidden))
    return loss, torch.empty_like(loss)


@torch.library.custom_op("pyssl::lm_loss_backward", mutates_args=())
def _lm_loss_backward(
    hidden: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    labels: Tensor,
    ignore_index: int,
    lse: Tensor,
    grad: Tensor,
    want_dh: bool,
    want_dw: bool,
    want_db: bool,
    backend: str,
) -> tuple[Tensor, Tensor, Tensor]:
    hidden, weight, labels = hidden.contiguous(), weight.contiguous(), labels.contiguous()
    bias = bias.contiguous() if bias is not None else None
    grad, lse = grad.contiguous(), lse.contiguous()
    if backend == "reference":
        dt = _stat_dtype(hidden)
        keep = labels != ignore_index
        hh, ww = hidden.to(dt), weight.to(dt)
        logits = torch.nn.functional.linear(hh, ww, None if bias is None else bias.to(dt))
        g = torch.exp(logits - lse[:, None])
        g[torch.arange(len(labels)), torch.where(keep, labels, 0)] -= keep.to(dt)
        g = torch.where(keep[:, None], g * grad[:, None], 0)
        return (
            (g @ ww).to(hidden.dtype) if want_dh else hidden.new_empty(0),
            (g.T @ hh).to(weight.dtype) if want_dw else weight.new_empty(0),
            g.sum(0).to(hidden.dtype) if want_db else hidden.new_empty(0),
        )
    dh, dw, db = _lm_loss_backward_fake(
        hidden, weight, bias, labels, ignore_index, lse, grad, want_dh, want_dw, want_db, backend
    )
    launch(
        "text",
        "lm_loss_backward",
        backend,
        hidden,
        weight,
        bias,
        labels,
        ignore_index,
        lse,
        grad.to(lse.dtype),
        dh if want_dh else None,
        dw if want_dw else None,
        db if want_db else None,
    )
    return dh, dw, db


@_lm_loss_backward.register_fake
def _lm_loss_backward_fake(
    hidden, weight, bias, labels, ignore_index, lse, grad, want_dh, want_dw, want_db, backend
):  # type: ignore[no-untyped-def]  # noqa: E501
    return (
        torch.empty_like(hidden) if want_dh else hidden.new_empty(0),
        torch.empty_like(weight) if want_dw else weight.new_empty(0),
        hidden.new_empty(weight.shape[0]) if want_db else hidden.new_empty(0),
    )


def _lm_setup(ctx, inputs, output):  # type: ignore[no-untyped-def]
    hidden, weight, bias, labels, ignore_index, backend = inputs
    _, lse = output
    ctx.save_for_backward(hidden, weight, bias, labels, lse)
    ctx.meta = (ignore_index, backend)
    ctx.mark_non_differentiable(lse)


def _lm_grad(ctx, grad_loss, _grad_lse):  # type: ignore[no-untyped-def]
    hidden, weight, bias, labels, lse = ctx.saved_tensors
    ignore_index, backend = ctx.meta
    need = ctx.needs_input_grad
    dh, dw, db = _lm_loss_backward(
        hidden,
        weight,
        bias,
        labels,
        ignore_index,
        lse,
        grad_loss,
        need[0],
        need[1],
        bias is not None and need[2],
        backend,
    )
    return (
        dh if need[0] else None,
        dw if need[1] else None,
        db if bias is not None and need[2] else None,
        None,
        None,
        None,
    )


_lm_loss.register_autograd(_lm_grad, setup_context=_lm_setup)


@torch.library.custom_op("pyssl::lm_loss_train", mutates_args=())
def _lm_loss_train(
    hidden: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    labels: Tensor,
    ignore_index: int,
    mean: bool,
    want_dh: bool,
    want_dw: bool,
    want_db: bool,
    backend: str,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The summed (or mean) loss, the rows' log-sum-exp and the loss's gradients, computed in
    the forward: the CPU kernel sweeps the logits once (3 matmuls, no recomputation). The
    autograd formula scales the stored gradients by the upstream scalar."""
    hidden, weight, labels = hidden.contiguous(), weight.contiguous(), labels.contiguous()
    bias = bias.contiguous() if bias is not None else None
    count = (labels != ignore_index).sum()
    if backend != "cpu":
        rows, lse = _lm_loss(hidden, weight, bias, labels, ignore_index, backend)
        total = rows.sum() / count if mean else rows.sum()
        keep = (labels != ignore_index).to(lse.dtype)
        grad = keep / count if mean else keep
        dh, dw, db = _lm_loss_backward(
            hidden,
            weight,
            bias,
            labels,
            ignore_index,
            lse,
            grad,
            want_dh,
            want_dw,
            want_db,
            backend,
        )
        return total, lse, dh, dw, db
    dt = _stat_dtype(hidden)
    rows = hidden.new_empty(hidden.shape[0], dtype=dt)
    lse = torch.empty_like(rows)
    _, _, dh, dw, db = _lm_loss_train_fake(
        hidden, weight, bias, labels, ignore_index, mean, want_dh, want_dw, want_db, backend
    )
    launch(
        "text",
        "lm_loss_fused",
        backend,
        hidden,
        weight,
        bias,
        labels,
        ignore_index,
        mean,
        rows,
        lse,
        dh if want_dh else None,
        dw if want_dw else None,
        db if want_db else None,
    )
    total = rows.sum() / count if mean else rows.sum()
    return total, lse, dh, dw, db


@_lm_loss_train.register_fake
def _lm_loss_train_fake(
    hidden, weight, bias, labels, ignore_index, mean, want_dh, want_dw, want_db, backend
):  # type: ignore[no-untyped-def]  # noqa: E501
    dt = _stat_dtype(hidden)
    return (
        hidden.new_empty((), dtype=dt),
        hidden.new_empty(hidden.shape[0], dtype=dt),
        torch.empty_like(hidden) if want_dh else hidden.new_empty(0),
        torch.empty_like(weight) if want_dw else weight.new_empty(0),
        hidden.new_empty(weight.shape[0]) if want_db else hidden.new_empty(0),
    )


def _lm_train_setup(ctx, inputs, output):  # type: ignore[no-untyped-def]
    hidden, weight, bias, labels, ignore_index, mean, want_dh, want_dw, want_db, backend = inputs
    _, lse, dh, dw, db = output
    ctx.save_for_backward(hidden, weight, bias, labels, lse)
    # The stored gradients serve the first backward, scaled in place (no second copy of
    # dweight); a second backward through the graph (retain_graph) recomputes instead.
    ctx.grads = [dh, dw, db]
    ctx.meta = (ignore_index, mean, want_dh, want_dw, want_db, backend)
    ctx.mark_non_differentiable(lse, dh, dw, db)
    ctx.set_materialize_grads(False)  # no zero-filled [V, H] "gradient" of the dweight output


def _lm_train_grad(ctx, grad_total, _glse, _gh, _gw, _gb):  # type: ignore[no-untyped-def]
    hidden, weight, bias, labels, lse = ctx.saved_tensors
    ignore_index, mean, want_dh, want_dw, want_db, backend = ctx.meta
    if grad_total is None:
        grad_total = torch.zeros((), dtype=lse.dtype, device=lse.device)
    if ctx.grads is not None:
        dh, dw, db = ctx.grads
        ctx.grads = None
        g = grad_total.to(hidden.dtype)
        # In place in eager (no second [V, H] buffer for dweight). Traced (AOT autograd under
        # torch.compile or opcheck) the stored gradients are fake/functional tensors that can
        # also be outputs of the forward graph: a backward graph cannot update those in place,
        # so it scales out of place (the compiler plans the buffers there).
        traced = type(lse) is not Tensor or torch.compiler.is_compiling()
        dh = (dh * g if traced else dh.mul_(g)) if want_dh else None
        dw = (dw * g if traced else dw.mul_(g)) if want_dw else None
        db = (db * g if traced else db.mul_(g)) if want_db else None
    else:
        keep = labels != ignore_index
        per_row = grad_total.to(lse.dtype) / keep.sum() if mean else grad_total.to(lse.dtype)
        grad = torch.where(keep, per_row, 0)
        dh, dw, db = _lm_loss_backward(
            hidden,
            weight,
            bias,
            labels,
            ignore_index,
            lse,
            grad,
            want_dh,
            want_dw,
            want_db,
            backend,
        )
    return (
        dh if want_dh else None,
        dw if want_dw else None,
        db if want_db else None,
        None,
        None,
        None,
        None,
        None,
        None,
        None,
    )


_lm_loss_train.register_autograd(_lm_train_grad, setup_context=_lm_train_setup)


def _check_lm_args(
    hidden: object, weight: object, labels: object, bias: object, reduction: object
) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    for name, t in (("hidden", hidden), ("weight", weight), ("labels", labels)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    assert isinstance(hidden, Tensor) and isinstance(weight, Tensor) and isinstance(labels, Tensor)
    if hidden.dtype not in _FLOATS:
        raise TypeError(
            f"hidden: expected a float32/bfloat16/float16/float64 tensor, got {hidden.dtype}"
        )
    if weight.dtype != hidden.dtype:
        raise TypeError(f"weight: dtype {weight.dtype} differs from hidden's {hidden.dtype}")
    if hidden.dim() < 1:
        raise ValueError("hidden: expected a [..., H] tensor")
    if weight.dim() != 2:
        raise ValueError(f"weight: expected a [V, H] tensor, got shape {tuple(weight.shape)}")
    if weight.shape[1] != hidden.shape[-1]:
        raise ValueError(
            f"weight: hidden size {weight.shape[1]} differs from hidden's {hidden.shape[-1]}"
        )
    if weight.shape[0] == 0 or hidden.shape[-1] == 0:
        raise ValueError("weight: expected V >= 1 and H >= 1")
    if labels.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"labels: expected an int64 tensor, got {labels.dtype}")
    if labels.shape != hidden.shape[:-1]:
        raise ValueError(
            f"labels: shape {tuple(labels.shape)} differs from hidden's leading shape "
            f"{tuple(hidden.shape[:-1])}"
        )
    for name, t in (("weight", weight), ("labels", labels)):
        if t.device != hidden.device:
            raise ValueError(f"{name}: on {t.device}, but hidden is on {hidden.device}")
    b = None
    if bias is not None:
        if not isinstance(bias, Tensor):
            raise TypeError(f"bias: expected a torch.Tensor, got {type(bias).__name__}")
        if bias.shape != (weight.shape[0],):
            raise ValueError(f"bias: expected shape ({weight.shape[0]},), got {tuple(bias.shape)}")
        if bias.dtype != hidden.dtype or bias.device != hidden.device:
            raise TypeError("bias: expected hidden's dtype and device")
        b = bias
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction: expected 'mean', 'sum' or 'none', got {reduction!r}")
    return hidden, weight, labels.to(torch.int64), b


def masked_lm_loss(
    hidden: Tensor,
    weight: Tensor,
    labels: Tensor,
    *,
    bias: Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    backend: str | None = None,
) -> Tensor:
    """Cross-entropy of ``hidden @ weight.T + bias`` at the labelled positions, never holding
    the ``[B*T, V]`` logits (nor the ``[labelled, V]`` ones).

    Equals ``F.cross_entropy(F.linear(hidden, weight, bias).view(-1, V), labels.view(-1),
    ignore_index=ignore_index, reduction=reduction)`` (Hugging Face's BERT MLM head loss).

    Args:
        hidden: ``[..., H]`` (e.g. ``[B, T, H]``) float32/bfloat16/float16/float64.
        weight: ``[V, H]`` output embedding (often tied to the input embedding), hidden's dtype.
        labels: int64 of hidden's leading shape; ``ignore_index`` where there is no target.
        bias: optional ``[V]``.
        reduction: ``"mean"`` over the labelled positions (NaN when there are none, as torch),
            ``"sum"``, or ``"none"`` (per position, 0 where ignored).

    Gradients flow to ``hidden``, ``weight`` and ``bias`` (in their dtype, accumulated in
    float32). The loss is in hidden's dtype.
    """
    check_backend_arg(backend)
    h, w, lab, b = _check_lm_args(hidden, weight, labels, bias, reduction)
    if not isinstance(ignore_index, int) or isinstance(ignore_index, bool):
        raise TypeError(f"ignore_index: expected an int, got {type(ignore_index).__name__}")
    flat = h.reshape(-1, h.shape[-1])
    be = resolve("lm_loss", h.device, backend)
    need = [t.requires_grad for t in (h, w)] + [b is not None and b.requires_grad]
    if reduction != "none" and torch.is_grad_enabled() and any(need):
        total, _, _, _, _ = _lm_loss_train(
            flat, w, b, lab.reshape(-1), ignore_index, reduction == "mean", *need, be
        )
        return total.to(h.dtype)
    rows, _ = _lm_loss(flat, w, b, lab.reshape(-1), ignore_index, be)
    if reduction == "none":
        return rows.view(lab.shape).to(h.dtype)
    total = rows.sum()
    if reduction == "sum":
        return total.to(h.dtype)
    count = (lab != ignore_index).sum()
    return (total / count).to(h.dtype)


def causal_lm_loss(
    hidden: Tensor,
    weight: Tensor,
    labels: Tensor,
    *,
    bias: Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    backend: str | None = None,
) -> Tensor:
    """Next-token cross-entropy: :func:`masked_lm_loss` with the labels shifted by one, as
    Hugging Face's causal-LM heads compute it (position ``t`` predicts ``labels[..., t + 1]``;
    the last position predicts nothing).

    ``hidden`` is ``[..., T, H]`` and ``labels`` ``[..., T]``; ``reduction="none"`` returns
    ``[..., T - 1]``.
    """
    check_backend_arg(backend)
    h, w, lab, b = _check_lm_args(hidden, weight, labels, bias, reduction)
    if h.dim() < 2 or h.shape[-2] < 1:
        raise ValueError("hidden: expected a [..., T, H] tensor with T >= 1")
    shifted = torch.cat([lab[..., 1:], torch.full_like(lab[..., :1], ignore_index)], dim=-1)
    loss = masked_lm_loss(
        h, w, shifted, bias=b, ignore_index=ignore_index, reduction=reduction, backend=backend
    )
    return loss[..., :-1] if reduction == "none" else loss
