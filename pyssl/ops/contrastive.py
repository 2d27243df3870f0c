"""Memory-linear contrastive losses: InfoNCE, NT-Xent (SimCLR), CLIP, SigLIP and MoCo.

Anchors: lightly's ``NTXentLoss``, open_clip's ``ClipLoss`` and ``SigLipLoss``, MoCo's
``logits = cat([l_pos, l_neg])`` cross-entropy (see ``pyssl.reference.contrastive``).

Every softmax loss here is ``mean_i(lse_i - pos_i)`` where ``lse_i`` is the log-sum-exp of row
``i`` of the similarity matrix ``S = scale * Q @ K.T`` and ``pos_i`` the positive's logit. The
positive logits cost O(N*D) and are plain PyTorch; the log-sum-exp is one custom op whose kernels
tile ``S``, keep only per-row (and per-column) statistics in the forward and recompute the tiles
in the backward: no N x M buffer exists, extra memory is O((N + M) * D), and forward plus
backward cost 8*N*M*D FLOPs (one recomputation). SigLIP's pairwise log-sigmoid is the second
op. Inputs in float32, bfloat16, float16 (float64 too), accumulation in float32, gradients in
the input dtype.

Under ``torch.compile`` the checks that read tensor values (labels within ``[0, M)``, a positive
``logit_scale``) are skipped: they are data-dependent and would break the graph. There an
out-of-range label names no positive (its logit counts as 0) and a non-positive
``logit_scale`` is used as given; run the step once eagerly to have them checked. Every check of
types, shapes, dtypes and devices runs in both modes.
"""

from __future__ import annotations

import numbers

import torch
import torch.nn.functional as F
from torch import Tensor

from pyssl.ops._backend import check_backend_arg, launch, resolve

_FLOATS = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def _stat_dtype(t: Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _launch_scalars(backend: str, *scalars: Tensor) -> list[float | Tensor]:
    # The C++ CPU kernels take host doubles; the GPU kernels read a device scalar in-kernel so
    # that no value is synchronised to the host.
    if backend == "cpu":
        return [float(s) for s in scalars]
    return [s.contiguous() for s in scalars]


# ----------------------------------------------------------------- softmax cross-entropy op


def _excluded_pairs(q: Tensor, k: Tensor, exclude_offset: int) -> tuple[Tensor, Tensor]:
    i = torch.arange(q.shape[-2], device=q.device)
    j = i + exclude_offset
    ok = (j >= 0) & (j < k.shape[-2])
    return i[ok], j[ok]


def _groups(*tensors: Tensor | None) -> list[tuple[Tensor | None, ...]]:
    """The per-group slices of grouped (3-D features, 2-D statistics) tensors, or the tensors
    themselves as one group: the kernels take one [N, D] problem per launch."""
    q = tensors[0]
    assert q is not None
    if q.dim() == 2:
        return [tensors]
    return [tuple(None if t is None else t[g] for t in tensors) for g in range(q.shape[0])]


def _positive_logits(q: Tensor, k: Tensor, scale: Tensor, pos: Tensor | None, rows: bool) -> Tensor:
    """scale * q_i . k_pos[i] (rows) or scale * q_pos[j] . k_j (columns), in the stat dtype."""
    if pos is None:
        return q.new_zeros((), dtype=_stat_dtype(q))
    # a position out of range names no positive (as in the kernels): its logit counts as 0
    valid = (pos >= 0) & (pos < (k.shape[-2] if rows else q.shape[-2]))
    safe = torch.where(valid, pos, 0)
    if q.dim() == 3:  # groups: [G, N] dots, the positions shared by every group
        dots = _rowdot(q, k[:, safe]) if rows else _rowdot(q[:, safe], k)
        return torch.where(valid, scale.to(dots.dtype) * dots, 0)
    dots = torch.empty(pos.shape[0], dtype=_stat_dtype(q), device=q.device)
    # in chunks of rows: the gathered partners and their float32 copies stay a few MiB, not
    # several times the size of q (at N = 2**24 rows of bf16 D = 128 that was 28 GiB)
    for s in range(0, pos.shape[0], _POSITIVE_CHUNK):
        ids = safe[s : s + _POSITIVE_CHUNK]
        a, b = (q[s : s + ids.shape[0]], k[ids]) if rows else (q[ids], k[s : s + ids.shape[0]])
        dots[s : s + ids.shape[0]] = _rowdot(a, b)
    return torch.where(valid, scale.to(dots.dtype) * dots, 0)


_POSITIVE_CHUNK = 16384


@torch.library.custom_op("pyssl::contrastive_ce", mutates_args=())
def _ce(
    q: Tensor,
    k: Tensor,
    scale: Tensor,
    exclude_offset: int,
    has_exclude: bool,
    row_pos: Tensor | None,
    col_pos: Tensor | None,
    rows: bool,
    cols: bool,
    backend: str,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    q, k = q.contiguous(), k.contiguous()
    if backend == "reference":
        dt = _stat_dtype(q)
        s = scale.to(dt) * (q.to(dt) @ k.to(dt).transpose(-1, -2))
        if has_exclude:
            i, j = _excluded_pairs(q, k, exclude_offset)
            s[..., i, j] = -float("inf")
        row_lse = torch.logsumexp(s, -1) if rows else s.new_empty(0)
        col_lse = torch.logsumexp(s, -2) if cols else s.new_empty(0)
    else:
        _, _, row_lse, col_lse = _ce_fake(
            q, k, scale, exclude_offset, has_exclude, row_pos, col_pos, rows, cols, backend
        )
        (sc,) = _launch_scalars(backend, scale)
        for qg, kg, rg, cg in _groups(q, k, row_lse if rows else None, col_lse if cols else None):
            launch(
                "contrastive",
                "lse_forward",
                backend,
                qg,
                kg,
                sc,
                exclude_offset,
                has_exclude,
                rg,
                cg,
            )
    row_loss = row_lse - _positive_logits(q, k, scale, row_pos, True) if rows else row_lse.clone()
    col_loss = col_lse - _positive_logits(q, k, scale, col_pos, False) if cols else col_lse.clone()
    return row_loss, col_loss, row_lse, col_lse


@_ce.register_fake
def _ce_fake(q, k, scale, exclude_offset, has_exclude, row_pos, col_pos, rows, cols, backend):  # type: ignore[no-untyped-def]  # noqa: E501
    dt = _stat_dtype(q)
    row = q.new_empty(q.shape[:-1] if rows else (0,), dtype=dt)
    col = q.new_empty(k.shape[:-1] if cols else (0,), dtype=dt)
    return row, col, torch.empty_like(row), torch.empty_like(col)


def _if_weighted(t: Tensor | None, weight: Tensor | None) -> Tensor | None:
    """A side's statistics go to the kernels only when that side has weights."""
    return t.contiguous() if t is not None and weight is not None else None


@torch.library.custom_op("pyssl::contrastive_ce_backward", mutates_args=())
def _ce_backward(
    q: Tensor,
    k: Tensor,
    scale: Tensor,
    exclude_offset: int,
    has_exclude: bool,
    row_lse: Tensor,
    row_w: Tensor | None,
    row_pos: Tensor | None,
    col_lse: Tensor,
    col_w: Tensor | None,
    col_pos: Tensor | None,
    want_dq: bool,
    want_dk: bool,
    backend: str,
) -> tuple[Tensor, Tensor, Tensor]:
    q, k = q.contiguous(), k.contiguous()
    if backend == "reference":
        dt = _stat_dtype(q)
        qq, kk = q.to(dt), k.to(dt)
        dots = qq @ kk.transpose(-1, -2)
        s = scale.to(dt) * dots
        g = torch.zeros_like(s)
        rows_i = torch.arange(q.shape[-2], device=q.device)
        cols_j = torch.arange(k.shape[-2], device=q.device)
        if row_w is not None:
            p = torch.exp(s - row_lse[..., :, None])
            if row_pos is not None:  # the positive's one-hot (out-of-range: none)
                p = p - (cols_j[None, :] == row_pos[:, None]).to(dt)
            g = g + row_w.to(dt)[..., :, None] * p
        if col_w is not None:
            c = torch.exp(s - col_lse[..., None, :])
            if col_pos is not None:
                c = c - (rows_i[:, None] == col_pos[None, :]).to(dt)
            g = g + col_w.to(dt)[..., None, :] * c
        if has_exclude:
            i, j = _excluded_pairs(q, k, exclude_offset)
            g[..., i, j] = 0
        dq = (scale.to(dt) * g @ kk).to(q.dtype) if want_dq else q.new_empty(0)
        dk = (scale.to(dt) * g.transpose(-1, -2) @ qq).to(k.dtype) if want_dk else k.new_empty(0)
        return dq, dk, (g * dots).sum()
    dq, dk, dscale = _ce_backward_fake(
        q,
        k,
        scale,
        exclude_offset,
        has_exclude,
        row_lse,
        row_w,
        row_pos,
        col_lse,
        col_w,
        col_pos,
        want_dq,
        want_dk,
        backend,
    )
    (sc,) = _launch_scalars(backend, scale)
    # one launch per group (the positions are shared by every group); each writes its own
    # slot of the scale's gradient, summed after
    dscales = dscale.new_zeros(q.shape[0]) if q.dim() == 3 else dscale
    groups = _groups(
        q,
        k,
        _if_weighted(row_lse, row_w),
        _if_weighted(row_w, row_w),
        _if_weighted(col_lse, col_w),
        _if_weighted(col_w, col_w),
        dq if want_dq else None,
        dk if want_dk else None,
        dscales,
    )
    for qg, kg, rl, rw, cl, cw, dqg, dkg, dsg in groups:
        rp, cp = _if_weighted(row_pos, rw), _if_weighted(col_pos, cw)
        args = (qg, kg, sc, exclude_offset, has_exclude, rl, rw, rp, cl, cw, cp, dqg, dkg, dsg)
        launch("contrastive", "lse_backward", backend, *args)
    return dq, dk, dscales.sum() if q.dim() == 3 else dscale


@_ce_backward.register_fake
def _ce_backward_fake(
    q,
    k,
    scale,
    exclude_offset,
    has_exclude,
    row_lse,
    row_w,
    row_pos,
    col_lse,
    col_w,
    col_pos,
    want_dq,
    want_dk,
    backend,
):  # type: ignore[no-untyped-def]  # noqa: E501
    return (
        torch.empty_like(q) if want_dq else q.new_empty(0),
        torch.empty_like(k) if want_dk else k.new_empty(0),
        q.new_empty((), dtype=_stat_dtype(q)),
    )


def _ce_setup(ctx, inputs, output):  # type: ignore[no-untyped-def]
    q, k, scale, exclude_offset, has_exclude, row_pos, col_pos, rows, cols, backend = inputs
    _, _, row_lse, col_lse = output
    ctx.save_for_backward(q, k, scale, row_pos, col_pos, row_lse, col_lse)
    ctx.meta = (exclude_offset, has_exclude, rows, cols, backend)
    ctx.mark_non_differentiable(row_lse, col_lse)


def _ce_grad(ctx, grad_row, grad_col, _grad_row_lse, _grad_col_lse):  # type: ignore[no-untyped-def]
    q, k, scale, row_pos, col_pos, row_lse, col_lse = ctx.saved_tensors
    exclude_offset, has_exclude, rows, cols, backend = ctx.meta
    need = ctx.needs_input_grad
    dq, dk, dscale = _ce_backward(
        q,
        k,
        scale,
        exclude_offset,
        has_exclude,
        row_lse,
        grad_row if rows else None,
        row_pos,
        col_lse,
        grad_col if cols else None,
        col_pos,
        need[0],
        need[1],
        backend,
    )
    return (
        dq if need[0] else None,
        dk if need[1] else None,
        dscale.to(scale.dtype) if need[2] else None,
        None,
        None,
        None,
        None,
        None,
        None,
        None,
    )


_ce.register_autograd(_ce_grad, setup_context=_ce_setup)


def softmax_cross_entropy(
    q: Tensor,
    k: Tensor,
    scale: Tensor,
    *,
    rows: bool = True,
    cols: bool = False,
    row_pos: Tensor | None = None,
    col_pos: Tensor | None = None,
    exclude_offset: int | None = None,
    backend: str | None = None,
) -> tuple[Tensor, Tensor]:
    """Per-row and per-column cross-entropy of ``S = scale * q @ k.T`` without materialising S.

    ``row_loss[i] = logsumexp_j S_ij - S[i, row_pos[i]]`` and
    ``col_loss[j] = logsumexp_i S_ij - S[col_pos[j], j]`` (without a ``*_pos``, just the
    log-sum-exp). ``exclude_offset`` drops the pairs ``j == i + exclude_offset`` from every sum
    (0: the diagonal, NT-Xent's self-similarity). The positives' one-hot is subtracted inside
    the backward's tiles, so the gradient keeps the precision of ``softmax - onehot``. Results
    are float32 (float64 for float64 inputs); an unrequested side is an empty tensor.

    Grouped: ``q [G, N, D]``, ``k [G, M, D]`` are G independent problems in one call (the
    positions shared by every group), giving ``[G, N]`` / ``[G, M]`` losses; the kernels run
    once per group, without the per-call dispatch cost of G separate calls.

    A positive may not be an excluded pair (``row_pos[i] == i + exclude_offset`` or
    ``col_pos[j] == j - exclude_offset``): its logit would be subtracted from a log-sum-exp
    that leaves it out. Checked eagerly (one host read), not under ``torch.compile``.
    """
    if exclude_offset is not None and _checking_values():
        for name, pos, shift in (
            ("row_pos", row_pos, exclude_offset),
            ("col_pos", col_pos, -exclude_offset),
        ):
            if pos is not None:
                own = torch.arange(pos.shape[0], device=pos.device) + shift
                if bool((pos == own).any()):
                    raise ValueError(
                        f"{name}: a positive is the pair exclude_offset={exclude_offset} removes"
                    )
    return _softmax_ce(q, k, scale, rows, cols, row_pos, col_pos, exclude_offset, backend)


def _softmax_ce(
    q: Tensor,
    k: Tensor,
    scale: Tensor,
    rows: bool = True,
    cols: bool = False,
    row_pos: Tensor | None = None,
    col_pos: Tensor | None = None,
    exclude_offset: int | None = None,
    backend: str | None = None,
) -> tuple[Tensor, Tensor]:
    """:func:`softmax_cross_entropy` without the positives' check (the losses build positives
    that are never excluded, and a check would read the device on every call)."""
    row_loss, col_loss, _, _ = _ce(
        q,
        k,
        scale,
        exclude_offset or 0,
        exclude_offset is not None,
        row_pos,
        col_pos,
        rows,
        cols,
        resolve("contrastive_ce", q.device, backend),
    )
    return row_loss, col_loss


# ------------------------------------------------------------------------------- sigmoid op


@torch.library.custom_op("pyssl::contrastive_sigmoid", mutates_args=())
def _sigmoid(q: Tensor, k: Tensor, scale: Tensor, bias: Tensor, backend: str) -> Tensor:
    q, k = q.contiguous(), k.contiguous()
    if backend == "reference":
        dt = _stat_dtype(q)
        z = scale.to(dt) * (q.to(dt) @ k.to(dt).T) + bias.to(dt)
        y = 2 * torch.eye(q.shape[0], k.shape[0], device=q.device, dtype=dt) - 1
        return -F.logsigmoid(y * z).sum()
    loss = q.new_empty((), dtype=_stat_dtype(q))
    sc, bi = _launch_scalars(backend, scale, bias)
    launch("contrastive", "sigmoid_forward", backend, q, k, sc, bi, loss)
    return loss


@_sigmoid.register_fake
def _sigmoid_fake(q, k, scale, bias, backend):  # type: ignore[no-untyped-def]
    return q.new_empty((), dtype=_stat_dtype(q))


@torch.library.custom_op("pyssl::contrastive_sigmoid_backward", mutates_args=())
def _sigmoid_backward(
    q: Tensor,
    k: Tensor,
    scale: Tensor,
    bias: Tensor,
    grad: Tensor,
    want_dq: bool,
    want_dk: bool,
    backend: str,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    q, k = q.contiguous(), k.contiguous()
    if backend == "reference":
        dt = _stat_dtype(q)
        qq, kk = q.to(dt), k.to(dt)
        dots = qq @ kk.T
        z = scale.to(dt) * dots + bias.to(dt)
        y = 2 * torch.eye(q.shape[0], k.shape[0], device=q.device, dtype=dt) - 1
        g = grad.to(dt) * (-y * torch.sigmoid(-y * z))
        dq = (scale.to(dt) * g @ kk).to(q.dtype) if want_dq else q.new_empty(0)
        dk = (scale.to(dt) * g.T @ qq).to(k.dtype) if want_dk else k.new_empty(0)
        return dq, dk, (g * dots).sum(), g.sum()
    dq, dk, dscale, dbias = _sigmoid_backward_fake(
        q, k, scale, bias, grad, want_dq, want_dk, backend
    )
    sc, bi = _launch_scalars(backend, scale, bias)
    gr = grad.to(dscale.dtype).contiguous()
    launch(
        "contrastive",
        "sigmoid_backward",
        backend,
        q,
        k,
        sc,
        bi,
        gr,
        dq if want_dq else None,
        dk if want_dk else None,
        dscale,
        dbias,
    )
    return dq, dk, dscale, dbias


@_sigmoid_backward.register_fake
def _sigmoid_backward_fake(q, k, scale, bias, grad, want_dq, want_dk, backend):  # type: ignore[no-untyped-def]
    dt = _stat_dtype(q)
    return (
        torch.empty_like(q) if want_dq else q.new_empty(0),
        torch.empty_like(k) if want_dk else k.new_empty(0),
        q.new_empty((), dtype=dt),
        q.new_empty((), dtype=dt),
    )


def _sigmoid_setup(ctx, inputs, output):  # type: ignore[no-untyped-def]
    q, k, scale, bias, backend = inputs
    ctx.save_for_backward(q, k, scale, bias)
    ctx.backend = backend


def _sigmoid_grad(ctx, grad):  # type: ignore[no-untyped-def]
    q, k, scale, bias = ctx.saved_tensors
    need = ctx.needs_input_grad
    dq, dk, dscale, dbias = _sigmoid_backward(
        q, k, scale, bias, grad, need[0], need[1], ctx.backend
    )
    return (
        dq if need[0] else None,
        dk if need[1] else None,
        dscale.to(scale.dtype) if need[2] else None,
        dbias.to(bias.dtype) if need[3] else None,
        None,
    )


_sigmoid.register_autograd(_sigmoid_grad, setup_context=_sigmoid_setup)


# ------------------------------------------------------------------------------ validation


def _check_features(t: object, name: str) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if t.dim() != 2:
        raise ValueError(f"{name}: expected a [N, D] tensor, got shape {tuple(t.shape)}")
    if t.dtype not in _FLOATS:
        raise TypeError(
            f"{name}: expected a float32/bfloat16/float16/float64 tensor, got {t.dtype}"
        )
    if t.shape[0] == 0:
        raise ValueError(f"{name}: empty batch")
    if t.shape[1] == 0:
        raise ValueError(f"{name}: feature dimension D is 0")
    return t


def _check_pair(a: Tensor, an: str, b: Tensor, bn: str, same_n: bool = False) -> None:
    if a.device != b.device:
        raise ValueError(f"{bn}: on {b.device}, but {an} is on {a.device}")
    if a.dtype != b.dtype:
        raise TypeError(f"{bn}: dtype {b.dtype} differs from {an}'s {a.dtype}")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"{bn}: feature dimension {b.shape[1]} differs from {an}'s {a.shape[1]}")
    if same_n and a.shape[0] != b.shape[0]:
        raise ValueError(f"{bn}: {b.shape[0]} rows, but {an} has {a.shape[0]}")


def _checking_values() -> bool:
    # Value checks read tensors on the host; inside torch.compile they would break the graph.
    return not torch.compiler.is_compiling()


def check_temperature(temperature: object) -> float:
    """``temperature`` as a float: a ``TypeError`` for anything but a real number (a tensor
    belongs in ``logit_scale``), a ``ValueError`` unless it is positive and finite."""
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real):
        hint = " (pass a tensor as logit_scale)" if isinstance(temperature, Tensor) else ""
        raise TypeError(
            f"temperature: expected a positive number{hint}, got {type(temperature).__name__}"
        )
    t = float(temperature)
    if not 0 < t < float("inf"):
        raise ValueError(f"temperature: expected a positive finite number, got {temperature!r}")
    return t


def _scale_tensor(
    like: Tensor, temperature: object, logit_scale: Tensor | None, name: str = "logit_scale"
) -> Tensor:
    if logit_scale is None:
        t = check_temperature(temperature)
        return torch.tensor(1.0 / t, dtype=_stat_dtype(like), device=like.device)
    return _check_scalar(like, logit_scale, name, positive=True)


def _check_scalar(like: Tensor, value: object, name: str, positive: bool = False) -> Tensor:
    if not isinstance(value, Tensor):
        raise TypeError(f"{name}: expected a scalar torch.Tensor, got {type(value).__name__}")
    if value.numel() != 1:
        raise ValueError(f"{name}: expected a scalar tensor, got shape {tuple(value.shape)}")
    if value.device != like.device:
        raise ValueError(f"{name}: on {value.device}, but the features are on {like.device}")
    if not value.dtype.is_floating_point:
        raise TypeError(f"{name}: expected a float tensor, got {value.dtype}")
    if positive and _checking_values() and not bool((value > 0).all()):
        raise ValueError(f"{name}: expected a positive value, got {value.item()}")
    return value.reshape(())


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def _rowdot(a: Tensor, b: Tensor) -> Tensor:
    # dot products of matching rows, accumulated in float32 (float64 for float64)
    dt = _stat_dtype(a)
    return (a.to(dt) * b.to(dt)).sum(-1)


# ---------------------------------------------------------------------------------- losses


def info_nce(
    query: Tensor,
    key: Tensor,
    *,
    temperature: float = 0.1,
    logit_scale: Tensor | None = None,
    labels: Tensor | None = None,
    normalize: bool = False,
    reduction: str = "mean",
    gather: bool = False,
    backend: str | None = None,
) -> Tensor:
    """InfoNCE: cross-entropy of ``scale * query @ key.T`` against ``labels``.

    Args:
        query: ``[N, D]``; key: ``[M, D]`` (same dtype and device).
        temperature: ``scale = 1 / temperature`` unless ``logit_scale`` is given.
        logit_scale: a positive scalar tensor used as the multiplier (e.g. ``log_scale.exp()``);
            it receives a gradient. Its sign is checked eagerly only, not under
            ``torch.compile`` (a data-dependent check).
        labels: ``[N]`` int64 indices into ``key`` (default ``arange(N)``, which needs M >= N).
            Their range is checked eagerly only, not under ``torch.compile``; there an
            out-of-range label names no positive.
        normalize: L2-normalise query and key first (``F.normalize``, eps 1e-12).
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (per-row losses in float32).
        gather: compute the local rows against the keys of every process
            (:func:`pyssl.distributed.all_gather`), default labels offset by the rank.

    Returns:
        The loss in float32 (float64 for float64 inputs), as ``F.cross_entropy`` on the logits
        would give it, without the ``[N, M]`` logits.
    """
    check_backend_arg(backend)
    query = _check_features(query, "query")
    key = _check_features(key, "key")
    _check_pair(query, "query", key, "key")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction: expected 'mean', 'sum' or 'none', got {reduction!r}")
    scale = _scale_tensor(query, temperature, logit_scale)
    if normalize:
        query, key = F.normalize(query, dim=1), F.normalize(key, dim=1)
    offset = 0
    if gather:
        from pyssl import distributed

        offset = distributed.rank() * key.shape[0]
        key = distributed.all_gather(key)
    n, m = query.shape[0], key.shape[0]
    if labels is None:
        if n + offset > m:
            raise ValueError(f"labels: the default arange(N) needs M >= N; N = {n}, M = {m}")
        labels = torch.arange(offset, offset + n, device=query.device)
    else:
        if not isinstance(labels, Tensor) or labels.dtype != torch.int64:
            raise TypeError("labels: expected an int64 tensor")
        if labels.shape != (n,):
            raise ValueError(f"labels: expected shape ({n},), got {tuple(labels.shape)}")
        if labels.device != query.device:
            raise ValueError(f"labels: on {labels.device}, but query is on {query.device}")
        if _checking_values() and bool(((labels < 0) | (labels >= m)).any()):
            raise ValueError(f"labels: values must lie in [0, {m})")
    loss, _ = _softmax_ce(query, key, scale, row_pos=labels, backend=backend)
    return _reduce(loss, reduction)


def nt_xent(
    z1: Tensor,
    z2: Tensor,
    *,
    temperature: float = 0.5,
    normalize: bool = True,
    gather: bool = False,
    backend: str | None = None,
) -> Tensor:
    """SimCLR's NT-Xent over the 2N views, as lightly's ``NTXentLoss`` (no memory bank).

    Each view's positive is the other view of its sample; its similarity with itself is
    excluded; the mean over the 2N rows is returned (float32; float64 for float64 inputs).
    With ``gather``, every process's views are the negatives (lightly's
    ``gather_distributed=True``).

    ``z1``, ``z2`` may also be ``[G, N, D]``: G independent NT-Xent problems in one call (e.g.
    TS2Vec's one per timestamp), returning the mean of their losses, which equals
    ``torch.stack([nt_xent(z1[g], z2[g]) for g in range(G)]).mean()`` without G dispatches.
    """
    check_backend_arg(backend)
    if isinstance(z1, Tensor) and z1.dim() == 3:
        if gather:
            raise ValueError("gather: not supported with grouped [G, N, D] inputs")
        _check_groups(z1, z2)
    else:
        z1 = _check_features(z1, "z1")
        z2 = _check_features(z2, "z2")
        _check_pair(z1, "z1", z2, "z2", same_n=True)
    scale = _scale_tensor(z1, temperature, None)
    if normalize:
        z1, z2 = F.normalize(z1, dim=-1), F.normalize(z2, dim=-1)
    n = z1.shape[-2]
    idx = torch.arange(n, device=z1.device)
    if not gather:
        local = torch.cat([z1, z2], dim=-2)
        pos = torch.cat([idx + n, idx])  # each view's positive is the other view
        loss, _ = _softmax_ce(local, local, scale, row_pos=pos, exclude_offset=0, backend=backend)
        return loss.mean()
    from pyssl import distributed

    rank, world = distributed.rank(), distributed.world_size()
    keys = torch.cat([distributed.all_gather(z1), distributed.all_gather(z2)])
    first, second = rank * n, world * n + rank * n  # where this process's views sit in keys
    # the self-pair of a first view sits at key first + i, of a second view at second + i
    loss1, _ = _softmax_ce(
        z1, keys, scale, row_pos=idx + second, exclude_offset=first, backend=backend
    )
    loss2, _ = _softmax_ce(
        z2, keys, scale, row_pos=idx + first, exclude_offset=second, backend=backend
    )
    return torch.cat([loss1, loss2]).mean()


def _check_groups(z1: Tensor, z2: object) -> None:
    """Grouped NT-Xent inputs: two [G, N, D] tensors of one shape, each group a valid pair."""
    for name, z in (("z1", z1), ("z2", z2)):
        if not isinstance(z, Tensor) or z.dim() != 3:
            raise ValueError(
                f"{name}: grouped NT-Xent expects [G, N, D] tensors, got "
                f"{getattr(z, 'shape', type(z).__name__)}"
            )
        if z.shape[0] == 0:
            raise ValueError(f"{name}: no groups (G = 0)")
        _check_features(z[0], name)
    assert isinstance(z2, Tensor)
    if z1.shape != z2.shape:
        raise ValueError(f"z2: shape {tuple(z2.shape)} differs from z1's {tuple(z1.shape)}")
    _check_pair(z1[0], "z1", z2[0], "z2", same_n=True)


def clip_loss(
    image: Tensor,
    text: Tensor,
    logit_scale: Tensor,
    *,
    gather: bool = False,
    backend: str | None = None,
) -> Tensor:
    """CLIP's symmetric loss, open_clip's ``ClipLoss``: the mean of image->text and
    text->image cross-entropy of ``logit_scale * image @ text.T``. Features are used as given
    (open_clip normalises them in the model); ``logit_scale`` is the multiplier and receives a
    gradient (that it is positive is checked eagerly only, not under ``torch.compile``). With
    ``gather``, local rows against every process's features (open_clip's
    ``local_loss=True, gather_with_grad=True``)."""
    check_backend_arg(backend)
    image = _check_features(image, "image")
    text = _check_features(text, "text")
    _check_pair(image, "image", text, "text", same_n=True)
    scale = _check_scalar(image, logit_scale, "logit_scale", positive=True)
    idx = torch.arange(image.shape[0], device=image.device)
    if not gather:
        row, col = _softmax_ce(
            image, text, scale, rows=True, cols=True, row_pos=idx, col_pos=idx, backend=backend
        )
        return (row.mean() + col.mean()) / 2
    from pyssl import distributed

    all_image, all_text = distributed.all_gather(image), distributed.all_gather(text)
    labels = idx + distributed.rank() * image.shape[0]
    loss_i, _ = _softmax_ce(image, all_text, scale, row_pos=labels, backend=backend)
    loss_t, _ = _softmax_ce(text, all_image, scale, row_pos=labels, backend=backend)
    return (loss_i.mean() + loss_t.mean()) / 2


def siglip_loss(
    image: Tensor,
    text: Tensor,
    logit_scale: Tensor,
    logit_bias: Tensor,
    *,
    gather: bool = False,
    backend: str | None = None,
) -> Tensor:
    """SigLIP's pairwise sigmoid loss, open_clip's ``SigLipLoss``:
    ``-sum(log_sigmoid(labels * (logit_scale * image @ text.T + logit_bias))) / N`` with labels
    +1 on the diagonal and -1 elsewhere; gradients for both scalars (that ``logit_scale`` is
    positive is checked eagerly only, not under ``torch.compile``). With ``gather``, the local
    images against every process's texts (the positives on this rank's block)."""
    check_backend_arg(backend)
    image = _check_features(image, "image")
    text = _check_features(text, "text")
    _check_pair(image, "image", text, "text", same_n=True)
    scale = _check_scalar(image, logit_scale, "logit_scale", positive=True)
    bias = _check_scalar(image, logit_bias, "logit_bias")
    be = resolve("contrastive_sigmoid", image.device, backend)
    n = image.shape[0]
    if not gather:
        return _sigmoid(image, text, scale, bias, be) / n
    from pyssl import distributed

    # blocks of other ranks hold only negatives: -log_sigmoid(-z) = softplus(z); this rank's
    # block is the ordinary loss. Sum them all.
    rank = distributed.rank()
    texts = distributed.all_gather(text).split(n)
    total = _sigmoid(image, texts[rank], scale, bias, be)
    for r, t in enumerate(texts):
        if r != rank:
            total = total + _negatives_only(image, t, scale, bias, be)
    return total / n


def _negatives_only(image: Tensor, text: Tensor, scale: Tensor, bias: Tensor, be: str) -> Tensor:
    # sum_ij softplus(z_ij) = the sigmoid op's sum with the diagonal's sign flipped back:
    # loss_op = sum_{i != j} softplus(z) + sum_i softplus(-z_ii); add the diagonal difference.
    diag = scale * _rowdot(image, text) + bias
    return _sigmoid(image, text, scale, bias, be) + (F.softplus(diag) - F.softplus(-diag)).sum()


def moco_loss(
    query: Tensor,
    key: Tensor,
    queue: Tensor | None,
    *,
    temperature: float = 0.2,
    gather: bool = False,
    backend: str | None = None,
) -> Tensor:
    """MoCo's loss: cross-entropy over ``[q.k, q.queue] / temperature`` with the positive first.

    With a ``queue`` (MoCo v1/v2, ``moco/builder.py``): row ``i``'s logits are its own key
    ``q_i . k_i`` followed by ``q_i . queue``; the other keys of the batch are not negatives.
    With ``queue=None`` (MoCo v3's ``contrastive_loss``): row ``i``'s logits are
    ``q_i . key.T``, positive ``k_i``, the batch's other keys are the negatives; MoCo v3's
    ``* 2 * temperature`` factor is left to the caller (as :class:`pyssl.methods.MoCoV3` does).

    ``gather=True`` makes the loss equal to that of one process holding the whole batch (the
    mean over every process's rows, as DDP averages it):

    - without a queue, as MoCo v3: the keys of every process are gathered
      (:func:`pyssl.distributed.all_gather`, the gradient goes back to each key's owner) and
      row ``i``'s positive is key ``i + N * rank``;
    - with a queue, as MoCo v2: the loss is row-local (each positive is the process's own key,
      the negatives are the queue), so it already equals the one-process loss and nothing is
      communicated, provided the queue is the same on every process. MoCo keeps it so by
      enqueueing the gathered keys of every process (``_dequeue_and_enqueue``); pass
      ``all_gather(key)`` to :meth:`pyssl.losses.FeatureQueue.push`, or let
      :class:`pyssl.losses.MoCoLoss` do it. (Other processes' keys do not join the negatives:
      in the one-process batch they are not negatives either.)

    Args:
        query, key: ``[N, D]`` (used as given: MoCo normalises them in the model).
        queue: ``[K, D]`` negatives; no gradient flows to it. ``None``: in-batch negatives.

    Returns:
        The mean loss in float32 (float64 for float64 inputs).
    """
    check_backend_arg(backend)
    query = _check_features(query, "query")
    key = _check_features(key, "key")
    _check_pair(query, "query", key, "key", same_n=True)
    if queue is None:
        check_temperature(temperature)
        return info_nce(query, key, temperature=temperature, gather=gather, backend=backend)
    if not isinstance(queue, Tensor):
        raise TypeError(
            f"queue: expected a [K, D] torch.Tensor or None, got {type(queue).__name__}"
        )
    if queue.dim() != 2:
        raise ValueError(f"queue: expected a [K, D] tensor, got shape {tuple(queue.shape)}")
    if queue.shape[1] != query.shape[1]:
        raise ValueError(
            f"queue: width {queue.shape[1]} differs from the features' D = {query.shape[1]}"
        )
    queue = _check_features(queue, "queue")
    _check_pair(query, "query", queue, "queue")
    scale = _scale_tensor(query, temperature, None)
    # the positive is not among the queue's rows: log-sum-exp over the queue, then add it
    lse_neg, _ = _softmax_ce(query, queue.detach(), scale, backend=backend)
    pos = scale * _rowdot(query, key)
    return (torch.logaddexp(lse_neg, pos) - pos).mean()
