"""Triton kernels and launchers for the text family: BERT-style token masking and the chunked
language-model loss over ``logits = hidden @ weight.T + bias`` that is never stored.

* :func:`mask_tokens`: one program per block of tokens, drawing from the counter-based generator
  of ``csrc/text/text.h`` (murmur3's finaliser over (seed, stream, counter), uint32 arithmetic):
  the same masks as the C++ kernel, bit for bit, for one seed.
* :func:`lm_loss_forward`: the labelled rows (gathered by the launcher, ``M`` of ``N``) against
  the vocabulary in ``[BLOCK_M, BLOCK_N]`` tiles (``tl.dot`` over H in BLOCK_D chunks, fp32
  accumulation), an online log-sum-exp per row over each program's share of the vocabulary
  (``SPLIT`` shares per row block, merged by the launcher in share order), and the target's
  logit picked from the tile that holds it.
* :func:`lm_loss_backward`: two kernels recompute the tiles (FlashAttention-2 style) and form
  ``G = g (softmax - onehot)`` in the tile: one owns ``dhidden`` rows (programs over row blocks
  x H slices, loop over the vocabulary), one owns ``dweight`` / ``dbias`` rows (programs over
  vocabulary blocks x H slices, loop over the rows). No atomics: results are reproducible for a
  given configuration.

FLOPs: the forward is ``2*M*V*H``; each backward kernel recomputes ``s`` once per H slice
(``ceil(H / BLOCK_DO)`` slices) besides its ``2*M*V*H`` gradient product. Memory besides the
outputs: the gathered rows (``M x H``) and ``3 * SPLIT * M`` statistics.

Under ``TRITON_INTERPRET=1`` (the CPU test path) the launchers accept CPU tensors and use one
small tile (16 x 16, BLOCK_D 16) so that test shapes take several tiles; bfloat16 tiles are
widened before ``tl.dot`` there (the interpreter multiplies their raw bits; see
``pyssl.kernels.triton.contrastive``).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from pyssl.kernels.triton.contrastive import _dot

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
_FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)
IGNORE = tl.constexpr(-100)

# ------------------------------------------------------------------------------ token masking


@triton.jit
def _fmix32(h):
    h ^= h >> 16
    h = h * 0x85EBCA6B
    h ^= h >> 13
    h = h * 0xC2B2AE35
    h ^= h >> 16
    return h


@triton.jit
def _draw_bits(s0, s1, stream: tl.constexpr, i):
    """csrc/text/text.h's draw_bits: uint32 in, uint32 out (arithmetic wraps mod 2^32)."""
    h = _fmix32(i * 0x9E3779B1 + s0)
    key: tl.constexpr = (stream * 0x85EBCA77) & 0xFFFFFFFF
    h = _fmix32(h ^ (s1 + key))
    return _fmix32(h + i)


@triton.jit
def _uniform(bits):
    return (bits >> 8).to(tl.float32) * (1.0 / 16777216.0)


@triton.jit
def _mask_tokens_kernel(
    ids_ptr, special_ptr, word_ptr, masked_ptr, labels_ptr, n, T, s0, s1, vocab, mask_id,
    prob, mr, rr,
    HAS_SPECIAL: tl.constexpr, HAS_WORDS: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < n
    ids = tl.load(ids_ptr + offs, mask=ok, other=0)
    t = offs % T
    if HAS_WORDS:
        w = tl.load(word_ptr + offs, mask=ok, other=-1)
    else:
        w = t.to(tl.int64)
    chosen = w >= 0
    if HAS_SPECIAL:
        sp = tl.load(special_ptr + offs, mask=ok, other=1)
        chosen = chosen & (sp == 0)
    seed0 = s0.to(tl.uint32)
    seed1 = s1.to(tl.uint32)
    counter = (offs - t + tl.maximum(w, 0)).to(tl.uint32)
    u_choose = _uniform(_draw_bits(seed0, seed1, 0, counter))
    chosen = chosen & (u_choose < prob)
    pos = offs.to(tl.uint32)
    u_class = _uniform(_draw_bits(seed0, seed1, 1, pos))
    rand = ((_draw_bits(seed0, seed1, 2, pos).to(tl.uint64) * vocab.to(tl.uint64)) >> 32).to(
        tl.int64
    )
    out = tl.where(u_class < mr, mask_id.to(tl.int64), tl.where(u_class < mr + rr, rand, ids))
    tl.store(masked_ptr + offs, tl.where(chosen, out, ids), mask=ok)
    tl.store(labels_ptr + offs, tl.where(chosen, ids, IGNORE), mask=ok)


def _check(ok: bool, msg: str, exc: type[Exception] = ValueError) -> None:
    if not ok:
        raise exc(msg)


def _check_ids(t: object, name: str, shape: torch.Size | None, dtype: torch.dtype) -> None:
    _check(isinstance(t, torch.Tensor), f"{name}: expected a tensor", TypeError)
    assert isinstance(t, torch.Tensor)
    _check(t.dtype == dtype, f"{name}: expected {dtype}, got {t.dtype}", TypeError)
    _check(t.is_contiguous(), f"{name}: expected a contiguous tensor")
    if shape is not None:
        _check(t.shape == shape, f"{name}: expected shape {tuple(shape)}, got {tuple(t.shape)}")


def mask_tokens(
    input_ids: torch.Tensor,
    special: torch.Tensor | None,
    word_ids: torch.Tensor | None,
    seed: int,
    vocab_size: int,
    mask_token_id: int,
    prob: float,
    mask_replace_prob: float,
    random_replace_prob: float,
    masked: torch.Tensor,
    labels: torch.Tensor,
) -> None:
    """The C++ ``mask_tokens`` entry point's contract (``csrc/text/text.h``) on CUDA tensors.
    Token ids are not range-checked here (that needs a device sync): the op layer does it."""
    _check_ids(input_ids, "input_ids", None, torch.int64)
    _check(input_ids.dim() == 2, "input_ids: expected [B, T]")
    shape = input_ids.shape
    if special is not None:
        _check_ids(special, "special_tokens_mask", shape, torch.bool)
    if word_ids is not None:
        _check_ids(word_ids, "word_ids", shape, torch.int64)
    _check_ids(masked, "masked", shape, torch.int64)
    _check_ids(labels, "labels", shape, torch.int64)
    _check(1 <= vocab_size < 2**32, "vocab_size: expected 1 <= vocab_size < 2^32")
    n = input_ids.numel()
    _check(n < 2**31, "input_ids: at most 2^31 tokens per call")
    if n == 0:
        return
    block = 1024
    _mask_tokens_kernel[(triton.cdiv(n, block),)](
        input_ids,
        special.view(torch.uint8) if special is not None else input_ids,
        word_ids if word_ids is not None else input_ids,
        masked,
        labels,
        n,
        shape[1],
        seed & 0xFFFFFFFF,
        (seed >> 32) & 0xFFFFFFFF,
        vocab_size,
        mask_token_id,
        float(torch.tensor(prob, dtype=torch.float32)),
        float(torch.tensor(mask_replace_prob, dtype=torch.float32)),
        float(torch.tensor(random_replace_prob, dtype=torch.float32)),
        HAS_SPECIAL=special is not None,
        HAS_WORDS=word_ids is not None,
        BLOCK=block,
    )


# --------------------------------------------------------------------------------- LM loss


@triton.jit
def _logit_tile(
    h_ptr, w_ptr, b_ptr, row0, col0, M, V, H,
    HAS_BIAS: tl.constexpr, ACC: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """logits of rows [row0, +BLOCK_M) and vocabulary rows [col0, +BLOCK_N): -inf outside."""
    r = row0 + tl.arange(0, BLOCK_M)
    c = col0 + tl.arange(0, BLOCK_N)
    dd = tl.arange(0, BLOCK_D)
    r_ok = r < M
    c_ok = c < V
    a_ptrs = h_ptr + (r.to(tl.int64)[:, None] * H + dd[None, :])
    bt_ptrs = w_ptr + (c.to(tl.int64)[None, :] * H + dd[:, None])
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=ACC)
    for d0 in range(0, H, BLOCK_D):
        d_ok = dd < H - d0
        a = tl.load(a_ptrs, mask=r_ok[:, None] & d_ok[None, :], other=0)
        bt = tl.load(bt_ptrs, mask=d_ok[:, None] & c_ok[None, :], other=0)
        acc = _dot(a, bt, acc)
        a_ptrs += BLOCK_D
        bt_ptrs += BLOCK_D
    if HAS_BIAS:
        acc += tl.load(b_ptr + c, mask=c_ok, other=0).to(ACC)[None, :]
    return tl.where(r_ok[:, None] & c_ok[None, :], acc, float("-inf"))


@triton.jit
def _lm_fwd_kernel(
    h_ptr, w_ptr, b_ptr, y_ptr, M, V, H, span, m_ptr, l_ptr, t_ptr,
    HAS_BIAS: tl.constexpr, ACC: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """Per row of this row block, over vocabulary share pid1 ([pid1 * span, +span)): running
    (max, sum exp) and the target's logit (0 if the target is not in the share)."""
    pid = tl.program_id(0)
    share = tl.program_id(1)
    row0 = pid * BLOCK_M
    rows = row0 + tl.arange(0, BLOCK_M)
    r_ok = rows < M
    y = tl.load(y_ptr + rows, mask=r_ok, other=-1)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=ACC)
    l_i = tl.zeros([BLOCK_M], dtype=ACC)
    tgt = tl.zeros([BLOCK_M], dtype=ACC)
    start = share * span
    end = tl.minimum(start + span, V)
    for col0 in range(start, end, BLOCK_N):
        s = _logit_tile(h_ptr, w_ptr, b_ptr, row0, col0, M, end, H, HAS_BIAS, ACC,
                        BLOCK_M, BLOCK_N, BLOCK_D)  # fmt: skip
        cols = col0 + tl.arange(0, BLOCK_N)
        hit = cols[None, :] == y[:, None]
        tgt += tl.sum(tl.where(hit, s, 0.0), axis=1)
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)
        l_i = l_i * tl.exp(m_i - m_ref) + tl.sum(tl.exp(s - m_ref[:, None]), axis=1)
        m_i = m_new
    out = share.to(tl.int64) * M + rows
    tl.store(m_ptr + out, m_i, mask=r_ok)
    tl.store(l_ptr + out, l_i, mask=r_ok)
    tl.store(t_ptr + out, tgt, mask=r_ok)


@triton.jit
def _g_tile(
    h_ptr, w_ptr, b_ptr, y_ptr, lse_ptr, g_ptr, row0, col0, M, V, H,
    HAS_BIAS: tl.constexpr, ACC: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """G = g_r (exp(s - lse_r) - [c == y_r]) on one tile (0 outside the rows and columns)."""
    rows = row0 + tl.arange(0, BLOCK_M)
    cols = col0 + tl.arange(0, BLOCK_N)
    r_ok = rows < M
    s = _logit_tile(h_ptr, w_ptr, b_ptr, row0, col0, M, V, H, HAS_BIAS, ACC,
                    BLOCK_M, BLOCK_N, BLOCK_D)  # fmt: skip
    lse = tl.load(lse_ptr + rows, mask=r_ok, other=0.0)
    g = tl.load(g_ptr + rows, mask=r_ok, other=0.0)
    y = tl.load(y_ptr + rows, mask=r_ok, other=-1)
    p = tl.exp(s - lse[:, None])  # 0 where s = -inf (outside)
    p = p - tl.where(cols[None, :] == y[:, None], 1.0, 0.0)
    return p * g[:, None]


@triton.jit
def _lm_bwd_dh_kernel(
    h_ptr, w_ptr, b_ptr, y_ptr, lse_ptr, g_ptr, dh_ptr, M, V, H,
    HAS_BIAS: tl.constexpr, ACC: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DO: tl.constexpr,
):  # fmt: skip
    """dh[rows, dslice] = sum over the vocabulary of G @ w[:, dslice]."""
    row0 = tl.program_id(0) * BLOCK_M
    d0 = tl.program_id(1) * BLOCK_DO
    rows = row0 + tl.arange(0, BLOCK_M)
    do = d0 + tl.arange(0, BLOCK_DO)
    acc = tl.zeros([BLOCK_M, BLOCK_DO], dtype=ACC)
    for col0 in range(0, V, BLOCK_N):
        g = _g_tile(h_ptr, w_ptr, b_ptr, y_ptr, lse_ptr, g_ptr, row0, col0, M, V, H, HAS_BIAS,
                    ACC, BLOCK_M, BLOCK_N, BLOCK_D)  # fmt: skip
        cols = col0 + tl.arange(0, BLOCK_N)
        w = tl.load(
            w_ptr + cols.to(tl.int64)[:, None] * H + do[None, :],
            mask=(cols < V)[:, None] & (do < H)[None, :],
            other=0,
        )
        acc = _dot(g.to(w.dtype), w, acc)
    ok = (rows < M)[:, None] & (do < H)[None, :]
    tl.store(dh_ptr + rows.to(tl.int64)[:, None] * H + do[None, :], acc, mask=ok)


@triton.jit
def _lm_bwd_dw_kernel(
    h_ptr, w_ptr, b_ptr, y_ptr, lse_ptr, g_ptr, dw_ptr, db_ptr, M, V, H,
    HAS_BIAS: tl.constexpr, WANT_DW: tl.constexpr, WANT_DB: tl.constexpr, ACC: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DO: tl.constexpr,
):  # fmt: skip
    """dw[cols, dslice] = sum over the rows of G^T @ h[:, dslice]; db[cols] = column sums of G
    (by the programs of the first slice)."""
    col0 = tl.program_id(0) * BLOCK_N
    dslice = tl.program_id(1)
    d0 = dslice * BLOCK_DO
    cols = col0 + tl.arange(0, BLOCK_N)
    do = d0 + tl.arange(0, BLOCK_DO)
    acc = tl.zeros([BLOCK_N, BLOCK_DO], dtype=ACC)
    gsum = tl.zeros([BLOCK_N], dtype=ACC)
    for row0 in range(0, M, BLOCK_M):
        g = _g_tile(h_ptr, w_ptr, b_ptr, y_ptr, lse_ptr, g_ptr, row0, col0, M, V, H, HAS_BIAS,
                    ACC, BLOCK_M, BLOCK_N, BLOCK_D)  # fmt: skip
        rows = row0 + tl.arange(0, BLOCK_M)
        if WANT_DW:
            h = tl.load(
                h_ptr + rows.to(tl.int64)[:, None] * H + do[None, :],
                mask=(rows < M)[:, None] & (do < H)[None, :],
                other=0,
            )
            acc = _dot(tl.trans(g).to(h.dtype), h, acc)
        if WANT_DB:
            gsum += tl.sum(g, axis=0)
    if WANT_DW:
        ok = (cols < V)[:, None] & (do < H)[None, :]
        tl.store(dw_ptr + cols.to(tl.int64)[:, None] * H + do[None, :], acc, mask=ok)
    if WANT_DB:
        if dslice == 0:
            tl.store(db_ptr + cols, gsum, mask=cols < V)


def _blocks(dtype: torch.dtype, h: int) -> tuple[int, int, int, int]:
    """(BLOCK_M, BLOCK_N, BLOCK_D, BLOCK_DO)."""
    if INTERPRET:
        return 16, 16, 16, 16
    if dtype == torch.float64:
        return 32, 32, 32, 64
    return 64, 64, 64 if dtype != torch.float32 else 32, 128


def _check_loss(
    hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, labels: torch.Tensor
) -> None:
    for name, t in (("hidden", hidden), ("weight", weight)):
        _check(isinstance(t, torch.Tensor), f"{name}: expected a tensor", TypeError)
        _check(t.dim() == 2, f"{name}: expected a 2-D tensor")
        _check(t.dtype in _FLOAT_DTYPES, f"{name}: expected a floating dtype", TypeError)
        _check(t.is_contiguous(), f"{name}: expected a contiguous tensor")
    _check(weight.dtype == hidden.dtype, "weight: dtype differs from hidden's", TypeError)
    _check(weight.shape[1] == hidden.shape[1], "weight: hidden size differs from hidden's")
    _check(weight.shape[0] >= 1, "weight: expected at least one vocabulary row")
    if bias is not None:
        _check(bias.shape == (weight.shape[0],) and bias.dtype == hidden.dtype,
               "bias: expected [V] of hidden's dtype")  # fmt: skip
    _check_ids(labels, "labels", torch.Size([hidden.shape[0]]), torch.int64)
    for name, t in (("weight", weight), ("labels", labels)):
        _check(t.device == hidden.device, f"{name}: on another device than hidden")


def _gather(hidden: torch.Tensor, labels: torch.Tensor, ignore_index: int):  # type: ignore[no-untyped-def]
    rows = (labels != ignore_index).nonzero().flatten()
    return (
        rows,
        hidden.index_select(0, rows).contiguous(),
        labels.index_select(0, rows).contiguous(),
    )


def _acc(dtype: torch.dtype) -> tl.dtype:
    return tl.float64 if dtype == torch.float64 else tl.float32


def lm_loss_forward(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    labels: torch.Tensor,
    ignore_index: int,
    loss: torch.Tensor,
    lse: torch.Tensor,
) -> None:
    """The C++ ``lm_loss_forward`` contract (``csrc/text/text.h``): per-row loss and
    log-sum-exp (0 where unlabelled), in the statistics dtype. Labels are not range-checked
    here (a device sync): the op layer does it."""
    _check_loss(hidden, weight, bias, labels)
    rows, hs, ys = _gather(hidden, labels, ignore_index)
    m_rows, v, h = hs.shape[0], weight.shape[0], hidden.shape[1]
    loss.zero_()
    lse.zero_()
    if m_rows == 0:
        return
    bm, bn, bd, _ = _blocks(hidden.dtype, h)
    splits = max(1, min(triton.cdiv(v, bn), 64 // triton.cdiv(m_rows, bm) or 1))
    span = triton.cdiv(triton.cdiv(v, splits), bn) * bn
    splits = triton.cdiv(v, span)
    part = torch.empty((3, splits, m_rows), device=hidden.device, dtype=lse.dtype)
    _lm_fwd_kernel[(triton.cdiv(m_rows, bm), splits)](
        hs, weight, bias if bias is not None else hs, ys, m_rows, v, h, span,
        part[0], part[1], part[2],
        HAS_BIAS=bias is not None, ACC=_acc(hidden.dtype),
        BLOCK_M=bm, BLOCK_N=bn, BLOCK_D=bd,
    )  # fmt: skip
    m, l_sum, tgt = part[0], part[1], part[2]
    top = m.max(0).values
    total = (l_sum * torch.exp(m - top)).sum(0)
    row_lse = top + torch.log(total)
    lse.index_copy_(0, rows, row_lse)
    loss.index_copy_(0, rows, row_lse - tgt.sum(0))


def lm_loss_backward(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    labels: torch.Tensor,
    ignore_index: int,
    lse: torch.Tensor,
    grad: torch.Tensor,
    dhidden: torch.Tensor | None,
    dweight: torch.Tensor | None,
    dbias: torch.Tensor | None,
) -> None:
    """The C++ ``lm_loss_backward`` contract: gradients of ``sum_n grad[n] * loss[n]``."""
    _check_loss(hidden, weight, bias, labels)
    rows, hs, ys = _gather(hidden, labels, ignore_index)
    m_rows, v, h = hs.shape[0], weight.shape[0], hidden.shape[1]
    bm, bn, bd, bdo = _blocks(hidden.dtype, h)
    acc = _acc(hidden.dtype)
    row_lse = lse.index_select(0, rows).contiguous()
    row_g = grad.index_select(0, rows).to(lse.dtype).contiguous()
    b_arg = bias if bias is not None else hs
    if dhidden is not None:
        dhidden.zero_()
        if m_rows:
            dh = torch.empty_like(hs)
            grid = (triton.cdiv(m_rows, bm), triton.cdiv(h, bdo))
            _lm_bwd_dh_kernel[grid](
                hs, weight, b_arg, ys, row_lse, row_g, dh, m_rows, v, h,
                HAS_BIAS=bias is not None, ACC=acc,
                BLOCK_M=bm, BLOCK_N=bn, BLOCK_D=bd, BLOCK_DO=bdo,
            )  # fmt: skip
            dhidden.index_copy_(0, rows, dh)
    want_dw, want_db = dweight is not None, dbias is not None
    if not (want_dw or want_db):
        return
    if m_rows == 0:
        for t in (dweight, dbias):
            if t is not None:
                t.zero_()
        return
    db32 = torch.empty(v, device=hidden.device, dtype=lse.dtype) if want_db else lse
    grid = (triton.cdiv(v, bn), triton.cdiv(h, bdo) if want_dw else 1)
    _lm_bwd_dw_kernel[grid](
        hs, weight, b_arg, ys, row_lse, row_g, dweight if want_dw else hs, db32, m_rows, v, h,
        HAS_BIAS=bias is not None, WANT_DW=want_dw, WANT_DB=want_db, ACC=acc,
        BLOCK_M=bm, BLOCK_N=bn, BLOCK_D=bd, BLOCK_DO=bdo,
    )  # fmt: skip
    if dbias is not None:
        dbias.copy_(db32)
