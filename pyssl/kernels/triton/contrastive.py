"""Triton kernels and launchers for the contrastive family: memory-linear log-sum-exp and
sigmoid losses over a similarity matrix ``s = scale * q @ k.T`` that is never stored.

The kernels tile ``s`` in [BLOCK_M, BLOCK_N] blocks (``tl.dot`` over D in BLOCK_D chunks, fp32
accumulation) and keep only per-row (per-column) statistics: an online log-sum-exp in the
forward, FlashAttention-2 style recomputation of the tiles in the backward. What they serve:

* InfoNCE / CLIP / MoCo: ``loss_i = lse_j(s_ij) - s_i,pos`` (row and column log-sum-exp);
* NT-Xent (SimCLR): ``q = k = [z1; z2]`` with the self-similarity ``j == i`` excluded
  (``exclude_offset = 0``), lightly's ``NTXentLoss``;
* SigLIP: ``sum_ij -log_sigmoid(y_ij (s_ij + bias))``, open_clip's ``SigLipLoss`` (before its
  division by N).

Only the per-pair part lives here: the positives' logits in the forward, the means and the
op-level autograd belong to ``pyssl.ops.contrastive``. The backward does take the positives
(int64 indices): their one-hot is subtracted inside each tile of probabilities, before the
tile is rounded to the inputs' dtype for the matmul, so for 16-bit inputs G keeps the
precision of ``softmax - onehot`` where a positive's probability is near 1 (see
:func:`lse_backward` for what bounds the gradient's precision). Each launcher writes into
preallocated outputs and returns ``None``; it checks shapes, dtypes, devices and contiguity
(no device work) and raises ``TypeError`` (wrong type or dtype) or ``ValueError`` (wrong
shape, device, layout) naming the argument.

Dtypes. ``q`` and ``k`` are float32, bfloat16, float16 or float64, of one dtype. Products are
accumulated in float32 (fp32 inputs use ``input_precision="ieee"``, no TF32, so results match an
fp32 reference), or in float64 for float64 inputs (``tl.dot`` on fp64 tiles): float64 is fully
supported, mainly so that ``gradcheck`` can run. The *statistics dtype* is float32, or float64
for float64 inputs: the dtype of ``row_lse``/``col_lse``, ``row_w``/``col_w``, ``dscale``,
``dbias`` and ``loss``. ``dq``/``dk`` have the inputs' dtype. ``scale``, ``bias`` and ``grad``
are Python numbers or 0-dim float tensors on the inputs' device; a tensor is read inside the
kernel, so ``torch.compile`` does not specialise on its value (a Python float scale with float64
inputs is also passed as a tensor, since a kernel scalar argument is float32).

Memory. Besides the outputs: the forward with both row and column statistics runs at most
``P = 4 x (number of SMs)`` programs, each looping over its share of the row blocks and
folding the column log-sum-exps of its rows into its own row of a ``[P, M]`` buffer of the
statistics dtype (on an H100, ``528 * M * 4`` bytes: O(M) whatever N is), merged in a fixed
order by a second small kernel; the backward keeps one ``[N]`` (or ``[M]``) partial per row
for ``dscale`` and ``dbias``; the single-pass backward (below) keeps a ``[rows, D]`` buffer of
the statistics dtype for the gradient it accumulates with atomics, and, when D is wider than
one accumulator, another for its own side's partial sums. Nothing is ``N x M``.

FLOPs. The forward is one ``2*N*M*D`` pass, whichever statistics are asked for (the
column-only case runs the row kernel on ``(k, q)``). When both ``dq`` and ``dk`` are wanted,
the backward is one pass, FlashAttention-2 style (:func:`_grad_fused_kernel`): one program
per block of rows of the longer side (the columns, k, on a tie), looping over the blocks of
the other side; per tile it recomputes ``s`` once (``2*N*M*D``), forms G, accumulates its own
side's gradient in float32 (float64) registers, and adds ``G.T @ rows`` to the other side's
gradient with ``tl.atomic_add`` into a buffer of the statistics dtype that is rounded to the
inputs' dtype at the end (``2*N*M*D`` each): forward + backward ``8*N*M*D``. For D wider than
one accumulator (128 columns, 64 for float64) the program walks D in chunks while it holds
the tile of G, keeping its own side's partial sums in a float32 buffer of rows only it
touches, so ``s`` is still recomputed once, at any D. With one of ``dq``/``dk`` (MoCo: no
gradient into the queue) or only the scalars, one launch per wanted side, without atomics
(:func:`_grad_kernel`; for wider D the same single-pass kernel without its atomic side), also
one recomputation: forward + backward ``6*N*M*D``. The deterministic path (below) is that
launch once per side: ``s`` is recomputed twice, forward + backward ``10*N*M*D``.

Determinism. Every output element but the single-pass backward's atomically accumulated
gradient is owned by one program and every reduction runs in a fixed order, so for a given
kernel configuration the results are bitwise reproducible. The atomic adds of the single-pass
backward land in an order that depends on scheduling, so that gradient (dq, or dk when
N > M) may differ in its last bits between runs; under
``torch.use_deterministic_algorithms(True)`` the launchers take the two-launch path instead,
which has no atomics (FlashAttention does the same). On the GPU the configuration comes from
``triton.autotune`` (keyed on N, M, D, the dtypes and the constexpr switches, cached per
process): the tile shape fixes the summation order, so two processes that pick different
configurations may differ in the last bits.

Numerics. Excluded pairs, padding, and fully excluded rows are handled with ``-inf`` and
guarded maxima: a row with no admissible column gets ``-inf``, never NaN. All exponentials are
of non-positive arguments (``s - max`` or ``s - lse``), so large scales (100 and beyond) in
bfloat16 stay finite. ``-log_sigmoid(x) = max(-x, 0) + log1p(exp(-|x|))`` with an accurate
``log1p`` (Goldberg's ``log(u) * t / (u - 1)``; Triton has no portable ``log1p``). As in
FlashAttention, the backward rounds the tile of pair weights G to the inputs' dtype for its
second ``tl.dot`` (fp32 inputs: no rounding); for float16 that needs ``|G| < 65504``: the
sigmoid path applies ``grad`` after the dots (so a loss scaler's factor never overflows G), the
log-sum-exp path has ``|G| <= |row_w| + |col_w|``.

Triton 3.9's interpreter (the CPU test path) differs from the compiler in two places that
matter here, each worked around where it occurs without changing the compiled code: its
``tl.dot`` multiplies bfloat16 tiles as their raw uint16 bits, so under the interpreter (only)
bfloat16 tiles are widened to float32 before the dot (:func:`_dot`); and it rounds float32 to
bfloat16 by truncation, where compiled Triton rounds to nearest even (the tests allow for it).
Under ``TRITON_INTERPRET=1`` one small configuration is used instead of autotuning.
"""

from __future__ import annotations

import functools
import numbers
import os

import torch
import triton
import triton.language as tl

try:
    from torch.library import wrap_triton  # lets torch.library.triton_op trace the launches
except ImportError:  # torch < 2.6: plain launches (no triton_op there either)

    def wrap_triton(kernel):  # type: ignore[no-redef]
        return kernel


INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
_INTERPRETER = tl.constexpr(INTERPRET)  # read by _dot; False in any compiled kernel

_FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)

# --------------------------------------------------------------------------------------------
# autotune configurations: (BLOCK_M, BLOCK_N, num_warps, num_stages)
#
# The forward is bound by the tile matmul and, for D <= 128 in 16-bit dtypes, by the
# exponentials (two per element when row and column statistics are both wanted). The backward
# also holds a [BLOCK_M, BLOCK_DO <= 128] float32 accumulator and converts G to a dot operand,
# so it wants 8 warps and narrower column blocks; the single-pass backward ("bwd_fused") holds
# that accumulator and, per D chunk, a [BLOCK_N, BLOCK_DO] float32 tile of the other side's
# gradient for its atomic add, which leaves fewer tiles. These are the tiles that compile
# without register spills for bf16 at D = 128 (ptxas of triton 3.9, checked for sm_80 and
# sm_90: the forward with both statistics at 96-200 registers, the backward at 118-254, the
# single-pass backward at 176-254; on sm_80 its 64 x 64 and 128 x 32 tiles spill, on sm_90 its
# 128 x 64 tile does); no timing on a GPU has ranked them yet, which is what the autotuner is
# for. Every block is >= 16, the
# smallest tl.dot. A configuration that does not fit (shared memory for float32/float64 tiles)
# is dropped by the autotuner (OutOfResources).

_CONFIGS = {
    # A100 (sm_80, also taken for sm_86/sm_89): 164 KB shared memory, pipelines of 2-3 stages
    "sm80": {
        "fwd": [(64, 64, 4, 3), (64, 64, 8, 3), (128, 64, 8, 3), (64, 128, 8, 3), (128, 32, 8, 2)],
        "bwd": [(64, 64, 8, 3), (64, 32, 8, 3), (64, 32, 4, 2), (128, 32, 8, 2)],
        "bwd_fused": [(64, 32, 8, 2), (64, 32, 8, 3)],
    },
    # H100 (sm_90 and later): 228 KB shared memory, deeper pipelines, wgmma on 4-warp groups
    "sm90": {
        "fwd": [(64, 64, 8, 3), (128, 64, 8, 3), (128, 64, 8, 4), (64, 128, 8, 4), (128, 32, 8, 4)],
        "bwd": [(64, 64, 8, 3), (64, 32, 8, 4), (128, 32, 8, 3), (64, 128, 8, 3)],
        "bwd_fused": [(64, 64, 8, 2), (64, 64, 8, 3), (128, 32, 8, 2), (64, 32, 8, 3)],
    },
    # the interpreter: one small tile, so that the test shapes take several tiles per loop
    "interpret": {"fwd": [(16, 16, 1, 1)], "bwd": [(16, 16, 1, 1)], "bwd_fused": [(16, 16, 1, 1)]},
}


def _triton_configs(rows: list[tuple[int, int, int, int]]) -> list[triton.Config]:
    return [
        triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s)
        for bm, bn, w, s in rows
    ]


# --------------------------------------------------------------------------------------------
# shared device helpers


@triton.jit
def _dot(a, b, acc):
    """``acc + a @ b`` with float32 (float64) accumulation; IEEE products for float32 and
    float64 tiles (no TF32)."""
    if _INTERPRETER and a.dtype == tl.bfloat16:
        # triton 3.9's interpreter multiplies bfloat16 tiles as their raw uint16 bits
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    if a.dtype == tl.float32 or a.dtype == tl.float64:
        return tl.dot(a, b, acc, input_precision="ieee")
    else:
        return tl.dot(a, b, acc)


@triton.jit
def _load_scalar(ptr, val, FROM_PTR: tl.constexpr, ACC: tl.constexpr):
    """A scalar argument: read from a 0-dim tensor, or passed by value."""
    if FROM_PTR:
        return tl.load(ptr).to(ACC)
    else:
        return tl.cast(val, ACC)


@triton.jit
def _sim_tile(
    a_blk, b_blk, a_left, b_left, D,
    ACC: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """The raw products ``a_blk[r] . b_blk[c]`` as a [BLOCK_M, BLOCK_N] ACC tile, D walked in
    BLOCK_D chunks. ``a_blk``/``b_blk`` point at the tile's first row of each input (64-bit
    pointers: the row offsets may pass 2**31); ``a_left``/``b_left`` rows remain there; rows,
    columns and d out of range read as 0. Per-element offsets are 32-bit."""
    r = tl.arange(0, BLOCK_M)
    c = tl.arange(0, BLOCK_N)
    dd = tl.arange(0, BLOCK_D)
    r_ok = r < a_left
    c_ok = c < b_left
    a_ptrs = a_blk + (r[:, None] * D + dd[None, :])
    bt_ptrs = b_blk + (c[None, :] * D + dd[:, None])  # b read transposed: [BLOCK_D, BLOCK_N]
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=ACC)
    for d0 in range(0, D, BLOCK_D):
        d_ok = dd < D - d0
        a = tl.load(a_ptrs, mask=r_ok[:, None] & d_ok[None, :], other=0)
        bt = tl.load(bt_ptrs, mask=d_ok[:, None] & c_ok[None, :], other=0)
        acc = _dot(a, bt, acc)
        a_ptrs += BLOCK_D
        bt_ptrs += BLOCK_D
    return acc


@triton.jit
def _admissible(
    rows, cols, NA, NB, off, HAS_EXCLUDE: tl.constexpr
):  # fmt: skip
    """In range, and not the excluded pair ``col == row + off`` (int32 indices)."""
    ok = (rows < NA)[:, None] & (cols < NB)[None, :]
    if HAS_EXCLUDE:
        ok = ok & (cols[None, :] != rows[:, None] + off)
    return ok


@triton.jit
def _lse_of(m, total):
    """m + log(total): the log-sum-exp of an online (max, sum of exp(x - max)) pair; -inf where
    nothing was summed (no log(0) is evaluated)."""
    empty = total == 0
    return tl.where(empty, float("-inf"), m + tl.log(tl.where(empty, 1.0, total)))


@triton.jit
def _pos_index(pos_ptr, idx, idx_ok, NB):
    """The int64 positives pos[idx] as int32 indices into [0, NB), -1 (matching no index)
    where a value is outside [0, NB) or idx is out of range: the clamp happens in int64, so
    no value wraps around onto a valid index."""
    pos = tl.load(pos_ptr + idx, mask=idx_ok, other=-1)
    return tl.where((pos >= 0) & (pos < NB), pos, -1).to(tl.int32)


@triton.jit
def _log1p(t):
    """log(1 + t), accurate for small t (Goldberg): exact where 1 + t rounds to 1."""
    u = 1.0 + t
    exact = u == 1.0
    return tl.where(exact, t, tl.log(u) * (t / tl.where(exact, 1.0, u - 1.0)))


@triton.jit
def _softplus_neg(x):
    """-log_sigmoid(x) = log(1 + exp(-x)) = max(-x, 0) + log1p(exp(-|x|)), stable."""
    return tl.maximum(-x, 0.0) + _log1p(tl.exp(-tl.abs(x)))


@triton.jit
def _sigmoid(x):
    """sigmoid(x) with no overflow: exp of a non-positive argument only."""
    e = tl.exp(-tl.abs(x))
    return tl.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


@triton.jit
def _g_tile(
    raw, scale, bias, rows, cols, NA, NB, off, a_lse, a_w, a_pos, b_lse_ptr, b_w_ptr, b_pos_ptr,
    SIGMOID: tl.constexpr, HAS_EXCLUDE: tl.constexpr, HAS_A: tl.constexpr, HAS_B: tl.constexpr,
    HAS_A_POS: tl.constexpr, HAS_B_POS: tl.constexpr, ACC: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """The [BLOCK_M, BLOCK_N] tile of pair weights G = dL/ds (ACC) from the raw products
    ``raw = a_rows . b_cols`` (see :func:`_grad_kernel` for the formulas); 0 off the admissible
    set. a_lse, a_w, a_pos: the rows' statistics, loaded by the caller (read only with HAS_A,
    HAS_A_POS); the columns' are loaded here from their pointers (HAS_B, HAS_B_POS). For the
    sigmoid loss G is H, without its factor grad."""
    s = raw * scale
    if SIGMOID:
        ok = _admissible(rows, cols, NA, NB, 0, False)
        diag = cols[None, :] == rows[:, None]
        z = s + bias
        sg = _sigmoid(tl.where(diag, -z, z))  # sigmoid(-y z)
        G = tl.where(diag, -sg, sg)  # H; times g by the caller
    else:
        ok = _admissible(rows, cols, NA, NB, off, HAS_EXCLUDE)
        col_ok = cols < NB
        G = tl.zeros([BLOCK_M, BLOCK_N], dtype=ACC)
        if HAS_A:
            p = tl.exp(s - a_lse[:, None])
            if HAS_A_POS:
                p = tl.where(cols[None, :] == a_pos[:, None], p - 1.0, p)
            G += a_w[:, None] * p
        if HAS_B:
            b_lse = tl.load(b_lse_ptr + cols, mask=col_ok, other=0).to(ACC)
            b_w = tl.load(b_w_ptr + cols, mask=col_ok, other=0).to(ACC)
            p = tl.exp(s - b_lse[None, :])
            if HAS_B_POS:
                b_pos = _pos_index(b_pos_ptr, cols, col_ok, NA)
                p = tl.where(rows[:, None] == b_pos[None, :], p - 1.0, p)
            G += b_w[None, :] * p
    return tl.where(ok, G, 0.0)  # a select: an overflowed exp off the admissible set is dropped


@triton.jit
def _row_stats(
    a_lse_ptr, a_w_ptr, a_pos_ptr, rows, row_ok, NB, HAS_A: tl.constexpr,
    HAS_A_POS: tl.constexpr, ACC: tl.constexpr, BLOCK_M: tl.constexpr,
):  # fmt: skip
    """(a_lse, a_w, a_pos) of a block of rows for :func:`_g_tile`: loaded with HAS_A
    (HAS_A_POS), placeholders (never read) otherwise."""
    a_lse = tl.zeros([BLOCK_M], dtype=ACC)
    a_w = a_lse
    a_pos = rows
    if HAS_A:
        a_lse = tl.load(a_lse_ptr + rows, mask=row_ok, other=0).to(ACC)
        a_w = tl.load(a_w_ptr + rows, mask=row_ok, other=0).to(ACC)
        if HAS_A_POS:
            a_pos = _pos_index(a_pos_ptr, rows, row_ok, NB)
    return a_lse, a_w, a_pos


# --------------------------------------------------------------------------------------------
# kernels


@triton.jit
def _lse_fwd_kernel(
    a_ptr, b_ptr, NA, NB, D, scale_ptr, scale_val, off,
    row_lse_ptr, col_part_ptr, count_ptr,
    HAS_EXCLUDE: tl.constexpr, SCALE_PTR: tl.constexpr, WITH_COLS: tl.constexpr,
    ACC: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """row_lse[i] = logsumexp_j s_ij over admissible j, s = scale * a @ b.T, by an online
    log-sum-exp over the column blocks. Program p takes the row blocks p, p + P, p + 2P, ...
    (P programs). With WITH_COLS, it also folds the log-sum-exp of each column over its rows
    into its own row of col_part[P, NB] (filled with -inf by the launcher), so the partial
    buffer is P x NB whatever NA is; count[0] = P for the merge kernel."""
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    scale = _load_scalar(scale_ptr, scale_val, SCALE_PTR, ACC)
    part_row = col_part_ptr + pid.to(tl.int64) * NB
    for row0 in range(pid * BLOCK_M, NA, nprog * BLOCK_M):
        rows = row0 + tl.arange(0, BLOCK_M)
        a_blk = a_ptr + tl.cast(row0, tl.int64) * D
        b_blk = b_ptr
        m_i = tl.full([BLOCK_M], float("-inf"), dtype=ACC)
        l_i = tl.zeros([BLOCK_M], dtype=ACC)
        for col0 in range(0, NB, BLOCK_N):
            cols = col0 + tl.arange(0, BLOCK_N)
            raw = _sim_tile(a_blk, b_blk, NA - row0, NB - col0, D, ACC, BLOCK_M, BLOCK_N, BLOCK_D)
            b_blk += BLOCK_N * D
            ok = _admissible(rows, cols, NA, NB, off, HAS_EXCLUDE)
            s = tl.where(ok, raw * scale, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, axis=1))
            m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)  # a row with nothing yet: no NaN
            l_i = l_i * tl.exp(m_i - m_ref) + tl.sum(tl.exp(s - m_ref[:, None]), axis=1)
            m_i = m_new
            if WITH_COLS:
                c_max = tl.max(s, axis=0)
                c_ref = tl.where(c_max == float("-inf"), 0.0, c_max)
                c_sum = tl.sum(tl.exp(s - c_ref[None, :]), axis=0)
                # the previous row block's store to these columns must be visible to every
                # thread of this program before it is read back
                tl.debug_barrier()
                old = tl.load(part_row + cols, mask=cols < NB, other=float("-inf"))
                c_new = tl.maximum(c_max, old)
                c_new = tl.where(c_new == float("-inf"), 0.0, c_new)
                total = c_sum * tl.exp(c_ref - c_new) + tl.exp(old - c_new)
                tl.store(part_row + cols, _lse_of(c_new, total), mask=cols < NB)
        lse = _lse_of(m_i, l_i)
        tl.store(row_lse_ptr + rows, lse.to(row_lse_ptr.dtype.element_ty), mask=rows < NA)
    if WITH_COLS:
        if pid == 0:
            tl.store(count_ptr, nprog)


@triton.jit
def _lse_merge_kernel(part_ptr, count_ptr, out_ptr, M, BLOCK: tl.constexpr):
    """out[j] = logsumexp over r < count of part[r, j], merged in row-block order."""
    ACC: tl.constexpr = part_ptr.dtype.element_ty
    cols = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = cols < M
    count = tl.load(count_ptr)
    m = tl.full([BLOCK], float("-inf"), dtype=ACC)
    acc = tl.zeros([BLOCK], dtype=ACC)
    ptrs = part_ptr + cols
    for _ in range(0, count):
        x = tl.load(ptrs, mask=ok, other=float("-inf"))
        ptrs += M  # pointer arithmetic: 64-bit
        m_new = tl.maximum(m, x)
        m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)
        acc = acc * tl.exp(m - m_ref) + tl.exp(x - m_ref)
        m = m_new
    lse = _lse_of(m, acc)
    tl.store(out_ptr + cols, lse.to(out_ptr.dtype.element_ty), mask=ok)


@triton.jit
def _sigmoid_fwd_kernel(
    a_ptr, b_ptr, NA, NB, D, scale_ptr, scale_val, bias_ptr, bias_val, part_ptr,
    SCALE_PTR: tl.constexpr, BIAS_PTR: tl.constexpr,
    ACC: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """part[i] = sum_j -log_sigmoid(y_ij (s_ij + bias)), y = +1 on the diagonal, -1 off it."""
    row0 = tl.program_id(0) * BLOCK_M
    rows = row0 + tl.arange(0, BLOCK_M)
    scale = _load_scalar(scale_ptr, scale_val, SCALE_PTR, ACC)
    bias = _load_scalar(bias_ptr, bias_val, BIAS_PTR, ACC)
    a_blk = a_ptr + row0.to(tl.int64) * D
    b_blk = b_ptr
    total = tl.zeros([BLOCK_M], dtype=ACC)
    for col0 in range(0, NB, BLOCK_N):
        cols = col0 + tl.arange(0, BLOCK_N)
        raw = _sim_tile(a_blk, b_blk, NA - row0, NB - col0, D, ACC, BLOCK_M, BLOCK_N, BLOCK_D)
        b_blk += BLOCK_N * D
        ok = _admissible(rows, cols, NA, NB, 0, False)
        z = raw * scale + bias
        yz = tl.where(cols[None, :] == rows[:, None], z, -z)
        total += tl.sum(tl.where(ok, _softplus_neg(yz), 0.0), axis=1)
    tl.store(part_ptr + rows, total, mask=rows < NA)


@triton.jit
def _grad_kernel(
    a_ptr, b_ptr, NA, NB, D, scale_ptr, scale_val, bias_ptr, bias_val, grad_ptr, off,
    a_lse_ptr, a_w_ptr, a_pos_ptr, b_lse_ptr, b_w_ptr, b_pos_ptr, da_ptr, part_ptr,
    SIGMOID: tl.constexpr, HAS_EXCLUDE: tl.constexpr, HAS_A: tl.constexpr, HAS_B: tl.constexpr,
    HAS_A_POS: tl.constexpr, HAS_B_POS: tl.constexpr,
    SCALE_PTR: tl.constexpr, BIAS_PTR: tl.constexpr, WRITE_D: tl.constexpr,
    WRITE_PART: tl.constexpr, ACC: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DO: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """Gradient with respect to the rows of ``a`` of a loss with pair weights G (dL/ds):

    * log-sum-exp (SIGMOID False): G_ij = a_w_i (exp(s_ij - a_lse_i) - [j == a_pos_i]) [HAS_A]
      + b_w_j (exp(s_ij - b_lse_j) - [i == b_pos_j]) [HAS_B], 0 for excluded pairs
      (col == row + off), positives included; each one-hot only with HAS_A_POS (HAS_B_POS).
      The one-hot is subtracted from the float32 (float64) tile, before G is rounded for the
      dot: the rounding costs an ulp of |G|, not of |a_w P|, where P_i,pos is near 1;
    * sigmoid: G_ij = grad * H_ij, H_ij = (-y_ij) * sigmoid(-y_ij (s_ij + bias)), y = +1 on
      the diagonal; grad is factored out of the tiles (|H| <= 1 fits any dot dtype, float16
      included, whatever a loss scaler makes of grad) and applied once at the end.

    da[rows, dout] = scale * sum_j G_ij b[j, dout] (WRITE_D), and per-row partials
    part[i] = sum_j G_ij (a_i . b_j), part[NA + i] = sum_j G_ij (sigmoid) (WRITE_PART; written
    by the programs with pid_d == 0). G is symmetric under a <-> b, so the same kernel on
    (b, a) with the roles of the statistics swapped and -off gives db. Program
    (row block, BLOCK_DO slice of D): the tiles of s would be recomputed per slice, so the
    launcher runs it with D <= BLOCK_DO only (one slice; wider D goes to
    :func:`_grad_fused_kernel`). No atomics: one launch per side is the deterministic backward,
    and the backward when only one side's gradient (or only the partials) is wanted."""
    row0 = tl.program_id(0) * BLOCK_M
    pid_d = tl.program_id(1)
    r = tl.arange(0, BLOCK_M)
    rows = row0 + r
    row_ok = rows < NA
    scale = _load_scalar(scale_ptr, scale_val, SCALE_PTR, ACC)
    bias = scale  # a placeholder: the sigmoid loss alone reads a bias
    if SIGMOID:
        bias = _load_scalar(bias_ptr, bias_val, BIAS_PTR, ACC)
        g = tl.load(grad_ptr).to(ACC)
    a_lse, a_w, a_pos = _row_stats(
        a_lse_ptr, a_w_ptr, a_pos_ptr, rows, row_ok, NB, HAS_A, HAS_A_POS, ACC, BLOCK_M
    )
    dout = pid_d * BLOCK_DO + tl.arange(0, BLOCK_DO)
    dout_ok = dout < D
    acc = tl.zeros([BLOCK_M, BLOCK_DO], dtype=ACC)
    dot_part = tl.zeros([BLOCK_M], dtype=ACC)
    sum_part = tl.zeros([BLOCK_M], dtype=ACC)
    c = tl.arange(0, BLOCK_N)
    a_blk = a_ptr + row0.to(tl.int64) * D
    b_blk = b_ptr
    for col0 in range(0, NB, BLOCK_N):
        cols = col0 + c
        col_ok = cols < NB
        raw = _sim_tile(a_blk, b_blk, NA - row0, NB - col0, D, ACC, BLOCK_M, BLOCK_N, BLOCK_D)
        G = _g_tile(
            raw, scale, bias, rows, cols, NA, NB, off, a_lse, a_w, a_pos, b_lse_ptr, b_w_ptr,
            b_pos_ptr, SIGMOID, HAS_EXCLUDE, HAS_A, HAS_B, HAS_A_POS, HAS_B_POS, ACC, BLOCK_M,
            BLOCK_N,
        )  # fmt: skip
        if WRITE_D:
            b = tl.load(
                b_blk + (c[:, None] * D + dout[None, :]),
                mask=col_ok[:, None] & dout_ok[None, :],
                other=0,
            )
            acc = _dot(G.to(b.dtype), b, acc)
        if WRITE_PART:
            dot_part += tl.sum(G * raw, axis=1)
            if SIGMOID:
                sum_part += tl.sum(G, axis=1)
        b_blk += BLOCK_N * D
    if SIGMOID:
        dot_part = dot_part * g
        sum_part = sum_part * g
        scale = scale * g
    if WRITE_D:
        da = (acc * scale).to(da_ptr.dtype.element_ty)
        da_ptrs = da_ptr + row0.to(tl.int64) * D + (r[:, None] * D + dout[None, :])
        tl.store(da_ptrs, da, mask=row_ok[:, None] & dout_ok[None, :])
    if WRITE_PART:
        if pid_d == 0:
            tl.store(part_ptr + rows, dot_part, mask=row_ok)
            if SIGMOID:
                tl.store(part_ptr + NA + rows, sum_part, mask=row_ok)


@triton.jit
def _grad_fused_kernel(
    a_ptr, b_ptr, NA, NB, D, scale_ptr, scale_val, bias_ptr, bias_val, grad_ptr, off,
    a_lse_ptr, a_w_ptr, a_pos_ptr, b_lse_ptr, b_w_ptr, b_pos_ptr, da_ptr, da_acc_ptr,
    db_acc_ptr, part_ptr,
    SIGMOID: tl.constexpr, HAS_EXCLUDE: tl.constexpr, HAS_A: tl.constexpr, HAS_B: tl.constexpr,
    HAS_A_POS: tl.constexpr, HAS_B_POS: tl.constexpr,
    SCALE_PTR: tl.constexpr, BIAS_PTR: tl.constexpr, SPLIT_D: tl.constexpr,
    WRITE_DB: tl.constexpr, WRITE_PART: tl.constexpr, ACC: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_DO: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """Both gradients in one pass (FlashAttention-2's backward): the pair weights G of
    :func:`_grad_kernel` (same switches, same formulas: :func:`_g_tile`), each tile of s
    recomputed once. Program: one block of BLOCK_M rows of ``a``, looping over the blocks of
    ``b``; per tile, with G held in registers, D walked in BLOCK_DO chunks:

    * da[rows] += G @ b[cols]: its own rows, in a [BLOCK_M, BLOCK_DO] ACC accumulator when
      D <= BLOCK_DO (SPLIT_D False; stored as ``scale * acc`` in da's dtype at the end), else
      added into its own rows of the ACC buffer da_acc [NA, D], which no other program touches
      (load, add, store; a barrier per tile orders them), scaled and rounded into da at the end;
    * with WRITE_DB, db_acc[cols] += scale * G.T @ a[rows]: ``tl.atomic_add`` into the ACC
      buffer db_acc [NB, D] (zeroed by the launcher, which rounds it into db afterwards), so
      db's sums land in a scheduling-dependent order. Without it (one side's gradient, D
      wider than BLOCK_DO: SPLIT_D) the kernel has no atomics, and is what replaces
      :func:`_grad_kernel`'s recomputation of s per slice of D.

    The sigmoid loss's grad multiplies the tile sums, never G (as in :func:`_grad_kernel`).
    part[i] (and part[NA + i] for the sigmoid loss) are the per-row partials of
    :func:`_grad_kernel`, for the rows of ``a`` (WRITE_PART)."""
    row0 = tl.program_id(0) * BLOCK_M
    r = tl.arange(0, BLOCK_M)
    rows = row0 + r
    row_ok = rows < NA
    scale = _load_scalar(scale_ptr, scale_val, SCALE_PTR, ACC)
    bias = scale  # a placeholder: the sigmoid loss alone reads a bias
    g_scale = scale  # the factor of the gradient sums: scale, times grad for the sigmoid loss
    if SIGMOID:
        bias = _load_scalar(bias_ptr, bias_val, BIAS_PTR, ACC)
        g = tl.load(grad_ptr).to(ACC)
        g_scale = scale * g
    a_lse, a_w, a_pos = _row_stats(
        a_lse_ptr, a_w_ptr, a_pos_ptr, rows, row_ok, NB, HAS_A, HAS_A_POS, ACC, BLOCK_M
    )
    c = tl.arange(0, BLOCK_N)
    dd = tl.arange(0, BLOCK_DO)
    acc = tl.zeros([BLOCK_M, BLOCK_DO], dtype=ACC)
    dot_part = tl.zeros([BLOCK_M], dtype=ACC)
    sum_part = tl.zeros([BLOCK_M], dtype=ACC)
    a_blk = a_ptr + row0.to(tl.int64) * D
    da_acc_blk = da_acc_ptr + row0.to(tl.int64) * D
    b_blk = b_ptr
    db_acc_blk = db_acc_ptr
    for col0 in range(0, NB, BLOCK_N):
        cols = col0 + c
        col_ok = cols < NB
        raw = _sim_tile(a_blk, b_blk, NA - row0, NB - col0, D, ACC, BLOCK_M, BLOCK_N, BLOCK_D)
        G = _g_tile(
            raw, scale, bias, rows, cols, NA, NB, off, a_lse, a_w, a_pos, b_lse_ptr, b_w_ptr,
            b_pos_ptr, SIGMOID, HAS_EXCLUDE, HAS_A, HAS_B, HAS_A_POS, HAS_B_POS, ACC, BLOCK_M,
            BLOCK_N,
        )  # fmt: skip
        if WRITE_PART:
            dot_part += tl.sum(G * raw, axis=1)
            if SIGMOID:
                sum_part += tl.sum(G, axis=1)
        Gd = G.to(a_ptr.dtype.element_ty)
        if WRITE_DB:
            Gt = tl.trans(Gd)
        if SPLIT_D:
            # the previous tile's stores to this program's rows of da_acc must be visible to
            # every thread of the program before they are read back
            tl.debug_barrier()
        for d0 in range(0, D, BLOCK_DO):  # one chunk unless SPLIT_D
            d_ok = dd < D - d0
            b_mask = col_ok[:, None] & d_ok[None, :]
            a_mask = row_ok[:, None] & d_ok[None, :]
            b_offs = c[:, None] * D + (d0 + dd)[None, :]
            a_offs = r[:, None] * D + (d0 + dd)[None, :]
            b = tl.load(b_blk + b_offs, mask=b_mask, other=0)
            if SPLIT_D:
                part = tl.load(da_acc_blk + a_offs, mask=a_mask, other=0)
                tl.store(da_acc_blk + a_offs, _dot(Gd, b, part), mask=a_mask)
            else:
                acc = _dot(Gd, b, acc)
            if WRITE_DB:
                a = tl.load(a_blk + a_offs, mask=a_mask, other=0)
                db = _dot(Gt, a, tl.zeros([BLOCK_N, BLOCK_DO], dtype=ACC))
                tl.atomic_add(db_acc_blk + b_offs, db * g_scale, mask=b_mask, sem="relaxed")
        b_blk += BLOCK_N * D
        db_acc_blk += BLOCK_N * D
    if SPLIT_D:
        tl.debug_barrier()
        for d0 in range(0, D, BLOCK_DO):
            d_ok = dd < D - d0
            a_mask = row_ok[:, None] & d_ok[None, :]
            a_offs = r[:, None] * D + (d0 + dd)[None, :]
            part = tl.load(da_acc_blk + a_offs, mask=a_mask, other=0)
            da = (part * g_scale).to(da_ptr.dtype.element_ty)
            tl.store(da_ptr + row0.to(tl.int64) * D + a_offs, da, mask=a_mask)
    else:
        d_ok = dd < D
        da = (acc * g_scale).to(da_ptr.dtype.element_ty)
        da_ptrs = da_ptr + row0.to(tl.int64) * D + (r[:, None] * D + dd[None, :])
        tl.store(da_ptrs, da, mask=row_ok[:, None] & d_ok[None, :])
    if WRITE_PART:
        if SIGMOID:
            dot_part = dot_part * g
            sum_part = sum_part * g
            tl.store(part_ptr + NA + rows, sum_part, mask=row_ok)
        tl.store(part_ptr + rows, dot_part, mask=row_ok)


@triton.jit
def _sum_kernel(part_ptr, L, out_ptr, BLOCK: tl.constexpr):
    """out = sum of part[0:L], one program, fixed order."""
    acc = tl.zeros([BLOCK], dtype=part_ptr.dtype.element_ty)
    for i0 in range(0, L, BLOCK):
        i = i0 + tl.arange(0, BLOCK)
        acc += tl.load(part_ptr + i, mask=i < L, other=0)
    tl.store(out_ptr, tl.sum(acc, axis=0).to(out_ptr.dtype.element_ty))


def _tuned(
    kernel, phase: str, key: list[str], reset_to_zero: list[str] | None = None
) -> dict[str, triton.runtime.Autotuner]:
    """One autotuned launcher per configuration set (sm80, sm90, interpret) of one kernel;
    ``reset_to_zero``: the buffers it accumulates into, zeroed before each timed trial (and
    after the last), so that autotuning does not add into them."""
    return {
        arch: triton.autotune(
            configs=_triton_configs(cfg[phase]), key=key, reset_to_zero=reset_to_zero
        )(kernel)
        for arch, cfg in _CONFIGS.items()
    }


_LSE_FWD = _tuned(_lse_fwd_kernel, "fwd", ["NA", "NB", "D", "HAS_EXCLUDE", "WITH_COLS"])
_SIGMOID_FWD = _tuned(_sigmoid_fwd_kernel, "fwd", ["NA", "NB", "D"])
_GRAD = _tuned(
    _grad_kernel,
    "bwd",
    [
        "NA",
        "NB",
        "D",
        "SIGMOID",
        "HAS_EXCLUDE",
        "HAS_A",
        "HAS_B",
        "HAS_A_POS",
        "HAS_B_POS",
        "WRITE_D",
        "WRITE_PART",
    ],  # fmt: skip
)
_GRAD_FUSED = _tuned(
    _grad_fused_kernel,
    "bwd_fused",
    [
        "NA",
        "NB",
        "D",
        "SIGMOID",
        "HAS_EXCLUDE",
        "HAS_A",
        "HAS_B",
        "HAS_A_POS",
        "HAS_B_POS",
        "SPLIT_D",
        "WRITE_DB",
        "WRITE_PART",
    ],  # fmt: skip
    reset_to_zero=["da_acc_ptr", "db_acc_ptr"],
)


# --------------------------------------------------------------------------------------------
# launchers


@functools.cache
def _cuda_arch(index: int) -> str:
    major, _ = torch.cuda.get_device_capability(index)
    return "sm90" if major >= 9 else "sm80"


def _arch(device: torch.device) -> str:
    """The configuration set: the interpreter's, or by compute capability (queried at the first
    launch, when CUDA is initialised anyway; never at import, which would break forked
    DataLoader workers)."""
    if INTERPRET:
        return "interpret"
    return _cuda_arch(device.index if device.index is not None else torch.cuda.current_device())


def _col_programs(device: torch.device) -> int:
    """How many programs the forward with column statistics runs at most, and so the rows of
    its partial column buffer: 4 per SM keeps every SM busy at any N while the buffer stays
    O(M); under the interpreter 2, so that the tests take the multi-block loop."""
    if INTERPRET or device.type != "cuda":
        return 2
    return 4 * torch.cuda.get_device_properties(device).multi_processor_count


def _stats_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _acc(dtype: torch.dtype) -> tl.dtype:
    return tl.float64 if dtype == torch.float64 else tl.float32


def _pow2(n: int, lo: int, hi: int) -> int:
    return max(lo, min(triton.next_power_of_2(max(n, 1)), hi))


def _blocks(d: int, dtype: torch.dtype) -> tuple[int, int]:
    """(BLOCK_D, BLOCK_DO): the chunk of D per tl.dot when forming s, and the slice of D whose
    gradient one program accumulates. Under the interpreter both are small, so the test shapes
    take several chunks."""
    if INTERPRET:
        return _pow2(d, 16, 32), _pow2(d, 16, 32)
    size = dtype.itemsize
    return _pow2(d, 16, 128 // size), _pow2(d, 16, 64 if size == 8 else 128)


def _check(ok: bool, msg: str, exc: type[Exception] = ValueError) -> None:
    if not ok:
        raise exc(msg)


def _check_inputs(q: object, k: object) -> tuple[int, int, int]:
    for name, t in (("q", q), ("k", k)):
        _check(isinstance(t, torch.Tensor), f"{name}: expected a tensor, got {type(t)}", TypeError)
        assert isinstance(t, torch.Tensor)
        _check(t.dim() == 2, f"{name}: expected a 2-D tensor [rows, D], got {tuple(t.shape)}")
        _check(
            t.dtype in _FLOAT_DTYPES,
            f"{name}: expected dtype float32, bfloat16, float16 or float64, got {t.dtype}",
            TypeError,
        )
        _check(t.is_contiguous(), f"{name}: expected a contiguous tensor")
    assert isinstance(q, torch.Tensor) and isinstance(k, torch.Tensor)
    _check(k.dtype == q.dtype, f"k: expected q's dtype {q.dtype}, got {k.dtype}", TypeError)
    _check(k.device == q.device, f"k: expected q's device {q.device}, got {k.device}")
    _check(
        INTERPRET or q.device.type == "cuda",
        f"q: expected a CUDA tensor (CPU tensors run only under TRITON_INTERPRET=1), got "
        f"{q.device}",
    )
    n, d = q.shape
    m, dk = k.shape
    _check(dk == d, f"k: expected D={d} columns like q, got {dk}")
    _check(d >= 1, "q: expected D >= 1 columns")
    # row indices and in-tile offsets (row * D within a tile) are 32-bit
    _check(d < 2**24, f"q: expected D < 2**24 columns, got {d}")
    _check(n < 2**30, f"q: expected fewer than 2**30 rows, got {n}")
    _check(m < 2**30, f"k: expected fewer than 2**30 rows, got {m}")
    return n, m, d


def _check_tensor(
    name: str, t: object, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    _check(isinstance(t, torch.Tensor), f"{name}: expected a tensor, got {type(t)}", TypeError)
    assert isinstance(t, torch.Tensor)
    _check(t.dtype == dtype, f"{name}: expected dtype {dtype}, got {t.dtype}", TypeError)
    _check(tuple(t.shape) == shape, f"{name}: expected shape {shape}, got {tuple(t.shape)}")
    _check(t.device == device, f"{name}: expected device {device}, got {t.device}")
    _check(t.is_contiguous(), f"{name}: expected a contiguous tensor")
    return t


def _scalar(
    name: str, x: object, device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor | None, float]:
    """(tensor, value) kernel arguments for a scalar: a 0-dim float tensor is read in-kernel; a
    Python number is passed by value (as a tensor for float64 inputs: kernel floats are fp32)."""
    if isinstance(x, torch.Tensor):
        _check(x.dim() == 0, f"{name}: expected a 0-dim tensor, got shape {tuple(x.shape)}")
        _check(
            x.dtype in _FLOAT_DTYPES,
            f"{name}: expected a float32/float64/bfloat16/float16 tensor, got {x.dtype}",
            TypeError,
        )
        _check(x.device == device, f"{name}: expected device {device}, got {x.device}")
        return x, 1.0
    if not isinstance(x, (numbers.Real, torch.SymFloat)) or isinstance(x, bool):
        raise TypeError(f"{name}: expected a float or a 0-dim tensor, got {type(x)}")
    if dtype == torch.float64:
        return torch.tensor(float(x), dtype=torch.float64, device=device), 1.0
    return None, float(x)


def _check_exclude(exclude_offset: object, has_exclude: object) -> None:
    _check(
        isinstance(exclude_offset, (numbers.Integral, torch.SymInt))
        and not isinstance(exclude_offset, bool),
        f"exclude_offset: expected an int, got {type(exclude_offset)}",
        TypeError,
    )
    _check(
        isinstance(has_exclude, bool),
        f"has_exclude: expected a bool, got {type(has_exclude)}",
        TypeError,
    )


def _exclude_args(off: int, has_exclude: bool, n: int, m: int) -> tuple[int, bool]:
    """An offset that excludes no pair (outside (-N, M)) is dropped: it may not fit int32."""
    if not has_exclude or not -n < off < m:
        return 0, False
    return off, True


def _launch_sum(part: torch.Tensor, length: int, out: torch.Tensor) -> None:
    block = 256 if INTERPRET else 1024
    wrap_triton(_sum_kernel)[(1,)](part, length, out, BLOCK=block)


def lse_forward(
    q: torch.Tensor,
    k: torch.Tensor,
    scale: float | torch.Tensor,
    exclude_offset: int,
    has_exclude: bool,
    row_lse: torch.Tensor | None,
    col_lse: torch.Tensor | None,
) -> None:
    """Row and column log-sum-exp of ``s = scale * q @ k.T`` without forming ``s``.

    q [N, D], k [M, D] contiguous, one float dtype; scale a float or a 0-dim float tensor on
    q's device. With ``has_exclude``, the pairs ``j == i + exclude_offset`` are left out (NT-Xent:
    ``q = k = [z1; z2]``, offset 0 drops the self-similarity). Writes, each skipped when None:
    row_lse [N] = ``logsumexp_j s_ij``, col_lse [M] = ``logsumexp_i s_ij``, over the admissible
    pairs, in the statistics dtype (float32; float64 for float64 inputs); ``-inf`` for a row
    (column) with no admissible pair, e.g. M == 0. Matches ``torch.logsumexp`` of the masked
    matrix along dim 1 (0).
    """
    n, m, d = _check_inputs(q, k)
    sdt = _stats_dtype(q.dtype)
    if row_lse is not None:
        _check_tensor("row_lse", row_lse, (n,), sdt, q.device)
    if col_lse is not None:
        _check_tensor("col_lse", col_lse, (m,), sdt, q.device)
    scale_t, scale_v = _scalar("scale", scale, q.device, q.dtype)
    _check_exclude(exclude_offset, has_exclude)
    off, has_ex = _exclude_args(exclude_offset, has_exclude, n, m)
    if row_lse is None and col_lse is None:
        return
    arch = _arch(q.device)
    block_d, _ = _blocks(d, q.dtype)
    # unused pointer arguments get an output (never read): no input looks written to a tracer
    spare = row_lse if row_lse is not None else col_lse

    def launch(a, b, na, nb, o, out, part=None, count=None):  # row statistics of (a, b)
        if part is None:
            grid = lambda meta: (triton.cdiv(na, meta["BLOCK_M"]),)  # noqa: E731
        else:  # at most one program per partial row; each loops over its row blocks
            grid = lambda meta: (min(triton.cdiv(na, meta["BLOCK_M"]), part.shape[0]),)  # noqa: E731
        wrap_triton(_LSE_FWD[arch])[grid](
            a, b, na, nb, d, spare if scale_t is None else scale_t, scale_v, o, out,
            spare if part is None else part, spare if count is None else count,
            HAS_EXCLUDE=has_ex, SCALE_PTR=scale_t is not None, WITH_COLS=part is not None,
            ACC=_acc(q.dtype), BLOCK_D=block_d,
        )  # fmt: skip

    if row_lse is not None and col_lse is not None and n > 0 and m > 0:
        # one pass: the row statistics, plus per-program partial column log-sum-exps, a
        # [P, M] buffer with P bounded by the device (not by N), merged in a fixed order
        min_block_m = min(c[0] for c in _CONFIGS[arch]["fwd"])
        programs = min(triton.cdiv(n, min_block_m), _col_programs(q.device))
        part = torch.full((programs, m), float("-inf"), dtype=sdt, device=q.device)
        count = torch.empty((), dtype=torch.int32, device=q.device)
        launch(q, k, n, m, off, row_lse, part, count)
        block = 32 if INTERPRET else 128
        wrap_triton(_lse_merge_kernel)[(triton.cdiv(m, block),)](
            part, count, col_lse, m, BLOCK=block
        )
        return
    if row_lse is not None and n > 0:
        launch(q, k, n, m, off, row_lse)
    if col_lse is not None and m > 0:  # the column statistics of (q, k): row statistics of (k, q)
        launch(k, q, m, n, -off, col_lse)


def lse_backward(
    q: torch.Tensor,
    k: torch.Tensor,
    scale: float | torch.Tensor,
    exclude_offset: int,
    has_exclude: bool,
    row_lse: torch.Tensor | None,
    row_w: torch.Tensor | None,
    row_pos: torch.Tensor | None,
    col_lse: torch.Tensor | None,
    col_w: torch.Tensor | None,
    col_pos: torch.Tensor | None,
    dq: torch.Tensor | None,
    dk: torch.Tensor | None,
    dscale: torch.Tensor | None,
) -> None:
    """Backward of the cross-entropy loss
    ``sum_i row_w_i (row_lse_i - s_i,row_pos_i) + sum_j col_w_j (col_lse_j - s_col_pos_j,j)``
    through ``s = scale * q @ k.T`` (InfoNCE/CLIP/MoCo/NT-Xent); a positive given as None
    drops its logit (the loss is then the log-sum-exp terms alone).

    With ``P_ij = exp(s_ij - row_lse_i)`` and ``C_ij = exp(s_ij - col_lse_j)``, the pair
    weights are ``G_ij = row_w_i (P_ij - [j == row_pos_i]) + col_w_j (C_ij - [i == col_pos_j])``
    on admissible pairs and 0 on excluded ones (as in :func:`lse_forward`). The row terms are
    skipped when ``row_lse``/``row_w`` are None, the column terms when ``col_lse``/``col_w``
    are; ``row_pos`` (``col_pos``) is checked whenever given and used only with the row
    (column) terms.

    Precision. The one-hot is subtracted inside the tile, in the statistics dtype, before G is
    rounded to the inputs' dtype for the matmul: for 16-bit inputs G's rounding error is then
    an ulp of ``|w (P - onehot)|``, small where the positive's probability is near 1, where a
    subtraction after the matmul would leave an ulp of ``|w P|``, about ``|w|``, in every such
    row (for float32 inputs, which are not rounded, the two places measure alike). The limit
    that remains is the statistic: ``row_lse`` is a float32 number within ``eps32 * |lse|`` of
    the exact value, a relative error of every ``P_ij``. Eager ``F.cross_entropy`` has no such
    term (its log_softmax is exact for the top logit), so at large logits (``|s|`` ~ 400:
    unnormalised features, scale 20) a row's gradient can be ~1000x less accurate than eager
    float32's, while staying within ``eps32 * |lse|`` relative to ``|w P|``.

    row_lse, row_w [N] and col_lse, col_w [M] are in the statistics dtype; row_pos [N] and
    col_pos [M] are int64 (or None). A positive that is also an excluded pair
    (``row_pos_i == i + exclude_offset``) stays excluded: G is 0 there, its one-hot included.
    A positive outside ``[0, M)`` (row_pos) or ``[0, N)`` (col_pos), e.g. an ignore index of
    -100, matches no pair: that row (column) gets the log-sum-exp term alone; nothing is read
    out of bounds. Writes, each skipped when None: dq [N, D] = ``scale * G @ k`` and
    dk [M, D] = ``scale * G.T @ q`` in q's dtype, dscale (0-dim, statistics dtype) =
    ``sum_ij G_ij (q_i . k_j)``.

    Launches and determinism. With both dq and dk, the tiles of ``s`` are recomputed once: one
    kernel over the row blocks of the longer side (k on a tie) adds the other side's gradient
    (dq when M >= N) with ``tl.atomic_add`` into a float32 (float64) ``[rows, D]`` buffer,
    rounded to q's dtype at the end, so that gradient's last bits may vary from run to run;
    forward + backward is ``8*N*M*D`` FLOPs. When
    ``torch.are_deterministic_algorithms_enabled()`` is True (as under
    ``torch.use_deterministic_algorithms(True)``), two kernels without atomics compute dq and
    dk instead, each recomputing ``s`` (``10*N*M*D``): bitwise reproducible, as FlashAttention
    does it. With one of dq/dk, one kernel without atomics (``6*N*M*D``).
    """
    n, m, d = _check_inputs(q, k)
    sdt = _stats_dtype(q.dtype)
    dev = q.device
    _check((row_lse is None) == (row_w is None), "row_lse, row_w: give both or neither")
    _check((col_lse is None) == (col_w is None), "col_lse, col_w: give both or neither")
    if row_lse is not None:
        _check_tensor("row_lse", row_lse, (n,), sdt, dev)
        _check_tensor("row_w", row_w, (n,), sdt, dev)
    if col_lse is not None:
        _check_tensor("col_lse", col_lse, (m,), sdt, dev)
        _check_tensor("col_w", col_w, (m,), sdt, dev)
    if row_pos is not None:
        _check_tensor("row_pos", row_pos, (n,), torch.int64, dev)
    if col_pos is not None:
        _check_tensor("col_pos", col_pos, (m,), torch.int64, dev)
    _check_exclude(exclude_offset, has_exclude)
    off, has_ex = _exclude_args(exclude_offset, has_exclude, n, m)
    row_pos = row_pos if row_w is not None else None  # only the row terms use it
    col_pos = col_pos if col_w is not None else None
    _run_grad(
        q, k, n, m, d, scale, None, None, off, has_ex,
        (row_lse, row_w, row_pos), (col_lse, col_w, col_pos), dq, dk, dscale, None,
    )  # fmt: skip


def sigmoid_forward(
    q: torch.Tensor,
    k: torch.Tensor,
    scale: float | torch.Tensor,
    bias: float | torch.Tensor,
    loss: torch.Tensor,
) -> None:
    """SigLIP's pairwise loss, summed: ``loss = sum_ij -log_sigmoid(y_ij (s_ij + bias))`` with
    ``s = scale * q @ k.T``, ``y_ij = +1`` if ``i == j`` else ``-1`` (open_clip's
    ``SigLipLoss`` on one process, before its division by N; N != M allowed: the diagonal is
    ``i == j < min(N, M)``).

    q [N, D], k [M, D]; scale, bias floats or 0-dim float tensors; loss a 0-dim tensor of the
    statistics dtype. Stable for any logit: ``-log_sigmoid(x) = max(-x, 0) + log1p(exp(-|x|))``.
    """
    n, m, d = _check_inputs(q, k)
    sdt = _stats_dtype(q.dtype)
    _check_tensor("loss", loss, (), sdt, q.device)
    scale_t, scale_v = _scalar("scale", scale, q.device, q.dtype)
    bias_t, bias_v = _scalar("bias", bias, q.device, q.dtype)
    part = torch.empty((n,), dtype=sdt, device=q.device)
    if n > 0:
        block_d, _ = _blocks(d, q.dtype)
        grid = lambda meta: (triton.cdiv(n, meta["BLOCK_M"]),)  # noqa: E731
        wrap_triton(_SIGMOID_FWD[_arch(q.device)])[grid](
            q, k, n, m, d, part if scale_t is None else scale_t, scale_v,
            part if bias_t is None else bias_t, bias_v, part,
            SCALE_PTR=scale_t is not None, BIAS_PTR=bias_t is not None,
            ACC=_acc(q.dtype), BLOCK_D=block_d,
        )  # fmt: skip
    _launch_sum(part, n, loss)


def sigmoid_backward(
    q: torch.Tensor,
    k: torch.Tensor,
    scale: float | torch.Tensor,
    bias: float | torch.Tensor,
    grad: torch.Tensor,
    dq: torch.Tensor | None,
    dk: torch.Tensor | None,
    dscale: torch.Tensor | None,
    dbias: torch.Tensor | None,
) -> None:
    """Gradients of :func:`sigmoid_forward`'s loss times ``grad`` (a 0-dim float tensor):
    ``G_ij = grad * (-y_ij) * sigmoid(-y_ij (s_ij + bias))``; writes, each skipped when None,
    dq [N, D] = ``scale * G @ k``, dk [M, D] = ``scale * G.T @ q`` (q's dtype),
    dscale = ``sum_ij G_ij (q_i . k_j)`` and dbias = ``sum_ij G_ij`` (0-dim, statistics dtype).

    Launches and determinism as in :func:`lse_backward`: with dq and dk, one pass whose
    atomically accumulated gradient (dq when M >= N) may vary in its last bits, unless
    ``torch.are_deterministic_algorithms_enabled()``, which takes two kernels without atomics.
    """
    n, m, d = _check_inputs(q, k)
    _check(
        isinstance(grad, torch.Tensor),
        f"grad: expected a 0-dim tensor, got {type(grad)}",
        TypeError,
    )
    _scalar("grad", grad, q.device, q.dtype)  # its shape, dtype and device
    _run_grad(
        q, k, n, m, d, scale, bias, grad, 0, False, (None, None, None), (None, None, None), dq,
        dk, dscale, dbias,
    )  # fmt: skip


def _run_grad(
    q, k, n, m, d, scale, bias, grad, off, has_ex, row_stats, col_stats, dq, dk, dscale, dbias
) -> None:  # type: ignore[no-untyped-def]
    """The backward's launches, then the fixed-order sums of the dscale/dbias partials.

    * dq and dk both wanted, and deterministic algorithms not asked for: one launch of
      :func:`_grad_fused_kernel` (one recomputation of s), its programs over the row blocks of
      the longer side (k on a tie), the other side's gradient accumulated with atomics;
    * otherwise one launch per wanted side, dq on (q, k) and dk on (k, q), no atomics (the
      deterministic path; with one side, also the one-recomputation path):
      :func:`_grad_kernel` when D fits one accumulator (or only the partials are wanted),
      else :func:`_grad_fused_kernel` without its atomic side, which walks D while it holds
      each tile of G instead of recomputing s per slice of D.

    row_stats/col_stats are (lse, w, pos) triples; a launch on (k, q) swaps them, positives
    included: on (k, q) col_pos_j names a column of q for row j of k, which is what the
    kernels' a_pos means."""
    sdt = _stats_dtype(q.dtype)
    dev = q.device
    sigmoid = grad is not None
    if dq is not None:
        _check_tensor("dq", dq, (n, d), q.dtype, dev)
    if dk is not None:
        _check_tensor("dk", dk, (m, d), q.dtype, dev)
    if dscale is not None:
        _check_tensor("dscale", dscale, (), sdt, dev)
    if dbias is not None:
        _check_tensor("dbias", dbias, (), sdt, dev)
    scale_t, scale_v = _scalar("scale", scale, dev, q.dtype)
    bias_t, bias_v = (None, 0.0) if not sigmoid else _scalar("bias", bias, dev, q.dtype)
    outs = [t for t in (dq, dk, dscale, dbias) if t is not None]
    if not outs:
        return
    arch = _arch(dev)
    block_d, block_do = _blocks(d, q.dtype)
    want_part = dscale is not None or dbias is not None
    fused = (
        dq is not None
        and dk is not None
        and n > 0
        and m > 0
        and not torch.are_deterministic_algorithms_enabled()
    )
    # the partials come from the rows the (first) launch owns: q's, unless the single pass owns
    # k's, or only dk is wanted
    part_from_q = (n > m) if fused else (dq is not None or dk is None)
    part_len = n if part_from_q else m
    part = torch.empty((2 if sigmoid else 1, part_len), dtype=sdt, device=dev)
    spare = outs[0]  # for unused pointer arguments (never read): no input looks written to
    or_spare = lambda t: spare if t is None else t  # noqa: E731

    def args(a, b, na, nb, o, a_stats, b_stats):  # the leading arguments of both kernels
        a_lse, a_w, a_pos = a_stats
        b_lse, b_w, b_pos = b_stats
        flags = dict(
            SIGMOID=sigmoid, HAS_EXCLUDE=has_ex, HAS_A=a_lse is not None,
            HAS_B=b_lse is not None, HAS_A_POS=a_pos is not None, HAS_B_POS=b_pos is not None,
            SCALE_PTR=scale_t is not None, BIAS_PTR=bias_t is not None, ACC=_acc(q.dtype),
            BLOCK_D=block_d, BLOCK_DO=block_do,
        )  # fmt: skip
        return (
            a, b, na, nb, d, or_spare(scale_t), scale_v, or_spare(bias_t), bias_v,
            or_spare(grad), o, or_spare(a_lse), or_spare(a_w), or_spare(a_pos), or_spare(b_lse),
            or_spare(b_w), or_spare(b_pos),
        ), flags  # fmt: skip

    def single_pass(a, b, na, nb, o, a_stats, b_stats, da, db, write_part):
        """da (and db, with atomics, when given) from one recomputation of s."""
        split = d > block_do
        db_acc = torch.zeros((nb, d), dtype=sdt, device=dev) if db is not None else None
        da_acc = torch.zeros((na, d), dtype=sdt, device=dev) if split else None
        # an unused buffer argument (never read) gets the other one: the autotuner zeroes both
        da_acc = db_acc if da_acc is None else da_acc
        db_acc = da_acc if db_acc is None else db_acc
        lead, flags = args(a, b, na, nb, o, a_stats, b_stats)
        grid = lambda meta: (triton.cdiv(na, meta["BLOCK_M"]),)  # noqa: E731
        wrap_triton(_GRAD_FUSED[arch])[grid](
            *lead, da, da_acc, db_acc, part, SPLIT_D=split, WRITE_DB=db is not None,
            WRITE_PART=write_part, **flags,
        )  # fmt: skip
        if db is not None:
            db.copy_(db_acc)  # rounded to the inputs' dtype once every program has added to it

    def one_side(a, b, na, nb, o, a_stats, b_stats, da, write_part):
        write_d = da is not None
        if na == 0 or not (write_d or write_part):
            return
        if write_d and d > block_do:
            single_pass(a, b, na, nb, o, a_stats, b_stats, da, None, write_part)
            return
        grid = lambda meta: (triton.cdiv(na, meta["BLOCK_M"]), 1)  # noqa: E731  # D <= BLOCK_DO
        lead, flags = args(a, b, na, nb, o, a_stats, b_stats)
        wrap_triton(_GRAD[arch])[grid](
            *lead, or_spare(da), part, WRITE_D=write_d, WRITE_PART=write_part, **flags
        )

    if fused:
        if part_from_q:
            single_pass(q, k, n, m, off, row_stats, col_stats, dq, dk, want_part)
        else:
            single_pass(k, q, m, n, -off, col_stats, row_stats, dk, dq, want_part)
    else:
        one_side(q, k, n, m, off, row_stats, col_stats, dq, want_part and part_from_q)
        one_side(k, q, m, n, -off, col_stats, row_stats, dk, want_part and not part_from_q)
    if dscale is not None:
        _launch_sum(part[0], part_len, dscale)
    if dbias is not None:
        _launch_sum(part[1], part_len, dbias)
