"""The pretraining loop: one SSL method, one in-memory dataset, a step-indexed schedule.

Everything random in a step is a function of ``(seed, step)``: the epoch's permutation comes
from a generator seeded by ``(seed, epoch)`` and the augmentation's from one seeded by
``(seed, step)`` (under DDP each process applies its slice of the global batch's draws).
With the model, the optimiser, the global RNG states (which a method may draw from, e.g. MLM
masking) and the step restored from a checkpoint, a resumed run computes exactly the steps an
uninterrupted run would have.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from pyssl import distributed
from pyssl.augment import Augment
from pyssl.data import ImageData, TextData
from pyssl.data.mnist1d import SeriesData
from pyssl.train import checkpoint
from pyssl.train.optim import cosine_lr, default_lr, make_optimizer

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
PRECISIONS = ("auto", "fp32", "bf16")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX): there bf16 autocast
    roughly halves a conv net's step time; elsewhere it is emulated and slower than fp32."""
    # private probes (torch >= 2.3); an older torch reports no bf16 rather than failing
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def resolve_precision(precision: str, device: str | torch.device) -> str:
    """``"fp32"`` or ``"bf16"`` for ``precision`` on ``device``: ``"auto"`` is bf16 on a CUDA
    device with native bf16 (Ampere and later) and on a CPU with bf16 instructions
    (:func:`cpu_has_native_bf16`), fp32 on anything else, where bf16 would be emulated."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected 'auto', 'fp32' or 'bf16', got {precision!r}")
    if precision != "auto":
        return precision
    device = torch.device(device)
    if device.type == "cpu":
        return "bf16" if cpu_has_native_bf16() else "fp32"
    # native bf16 only: pre-Ampere GPUs emulate it, slower than fp32. The current device is the
    # one this process trains on (the CLI sets it to LOCAL_RANK under torchrun).
    if (
        device.type == "cuda"
        and torch.cuda.is_available()
        and torch.cuda.is_bf16_supported(including_emulation=False)
    ):
        return "bf16"
    return "fp32"


@dataclass
class PretrainConfig:
    """Hyper-parameters of :func:`pretrain`. ``batch_size`` is the global batch (split over
    processes under DDP); ``steps`` (when set) overrides ``epochs``; ``checkpoint_every`` 0
    writes a checkpoint only at the end; ``clip_grad`` 0 turns clipping off. ``lr`` ``None``
    takes the optimiser's default (:func:`pyssl.train.optim.default_lr`: AdamW 2e-3, LARS
    ``0.3 * batch / 256``). ``precision`` ``"bf16"`` runs forward and loss under bfloat16
    autocast, ``"fp32"`` does not, ``"auto"`` picks bf16 where the device has bf16 arithmetic
    (:func:`resolve_precision`) and fp32 elsewhere.
    :func:`pretrain` resolves ``lr`` and ``precision`` and records the resolved values in the
    checkpoint."""

    epochs: float = 10.0
    steps: int | None = None
    batch_size: int = 256
    optimizer: str = "adamw"
    lr: float | None = None
    weight_decay: float = 1e-4
    warmup_steps: int = 10
    min_lr: float = 0.0
    clip_grad: float = 3.0
    precision: str = "auto"
    seed: int = 0
    checkpoint_every: int = 0
    log_every: int = 10
    progress: bool = True

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size: expected >= 1, got {self.batch_size}")
        if self.steps is None and self.epochs <= 0:
            raise ValueError(f"epochs: expected > 0, got {self.epochs}")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps: expected >= 1, got {self.steps}")
        if self.lr is not None and self.lr <= 0:
            raise ValueError(f"lr: expected > 0, got {self.lr}")
        if self.optimizer not in ("adamw", "lars"):
            raise ValueError(f"optimizer: expected 'adamw' or 'lars', got {self.optimizer!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"precision: expected 'auto', 'fp32' or 'bf16', got {self.precision!r}"
            )
        if self.warmup_steps < 0 or self.checkpoint_every < 0 or self.clip_grad < 0:
            raise ValueError("warmup_steps, checkpoint_every and clip_grad must be >= 0")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PretrainConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def derived_seed(*parts: int) -> int:
    """A 63-bit seed mixed from integers (numpy's SeedSequence): distinct tuples give
    independent streams."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint64)[0] >> 1)


def batch_rows(n: int, batch: int, step: int, seed: int) -> Tensor:
    """Rows of the global batch of ``step``: epoch ``step // (n // batch)`` is a permutation of
    ``range(n)`` seeded by ``(seed, epoch)``, cut into ``n // batch`` batches (the ragged tail
    is dropped)."""
    per_epoch = n // batch
    epoch, i = divmod(step, per_epoch)
    g = torch.Generator().manual_seed(derived_seed(seed, 0, epoch))
    perm = torch.randperm(n, generator=g)
    return perm[i * batch : (i + 1) * batch]


class _LossModule(nn.Module):
    # DDP synchronises gradients of what its forward computes; the methods expose loss().
    def __init__(self, method: nn.Module):
        super().__init__()
        self.method = method

    def forward(self, views: list[Tensor]) -> Tensor:
        return self.method.loss(views)  # type: ignore[operator]


def _views(
    data: ImageData | TextData | SeriesData,
    rows: Tensor,
    local: slice,
    augment: Callable | None,
    g: torch.Generator,
    device: torch.device,
) -> list[Tensor]:
    """This process's views of the global batch ``rows``. A ``pyssl.augment`` recipe draws the
    parameters of the whole global batch and applies only this process's slice, so a DDP run
    sees exactly the views of one process holding the whole batch; another callable augments
    the global batch and is sliced."""
    if isinstance(data, TextData):
        return [data.tokens[rows[local]].to(device)]
    if isinstance(data, SeriesData):
        # the raw series and a seed from this step's generator: the method (TS2Vec) crops and
        # masks inside its loss, drawing from a generator it seeds with it
        seed = torch.randint(2**62, (1,), generator=g)
        return [data.x[rows[local]].to(device), seed.to(device)]
    assert augment is not None
    if isinstance(augment, Augment):
        params = augment.sample(data.images[rows], g)
        views = augment.apply(data.images[rows[local]], [p[local] for p in params])
    else:
        views = [v[local] for v in augment(data.images[rows], generator=g)]
    return [v.to(device) for v in views]


def _tqdm() -> Any:
    from tqdm import tqdm  # a runtime dependency

    return tqdm


def _open_metrics(path: str, start: int) -> Any:
    # a resumed run recomputes the steps after its checkpoint: drop their records
    kept = []
    if start and os.path.exists(path):
        with open(path) as fh:
            kept = [line for line in fh if line.strip() and json.loads(line)["step"] <= start]
    fh = open(path, "w")
    fh.writelines(kept)
    return fh


def total_steps(cfg: PretrainConfig, n: int) -> int:
    """Steps of the run: ``cfg.steps`` or ``ceil(epochs * (n // batch))``."""
    if cfg.steps is not None:
        return cfg.steps
    return max(1, int(np.ceil(cfg.epochs * (n // cfg.batch_size))))


def pretrain(
    method: nn.Module,
    data: ImageData | TextData | SeriesData,
    cfg: PretrainConfig,
    out_dir: str,
    *,
    resume: bool = False,
    augment: Callable | None = None,
    method_args: dict[str, Any] | None = None,
    device: str | torch.device = "cpu",
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Pretrains ``method`` (an ``SSLMethod``: ``loss(views)``, ``on_step_end(step, total)``,
    ``default_augment(image_size, channels)``) on ``data`` without its labels.

    Writes into ``out_dir``: ``checkpoint.pt`` (every ``cfg.checkpoint_every`` steps and at the
    end; model, optimiser, step, RNG states, config, ``method_args`` — the keyword arguments
    that rebuild the method with ``pyssl.methods.build``) and ``metrics.jsonl`` (one JSON
    object per ``cfg.log_every`` steps: step, epoch, loss, lr, samples/s). ``resume=True``
    continues from ``out_dir/checkpoint.pt`` when it exists. Under an initialised
    ``torch.distributed`` process group the method runs in DDP, each process taking its slice
    of the global batch, and only rank 0 writes. ``augment`` replaces the method's
    ``default_augment`` for images; ``stop_after`` ends the call after that many steps of this
    call (the schedule still spans the whole run). Returns a summary dict."""
    n = len(data)
    if n < 2:
        raise ValueError(f"data: {data.name} holds {n} samples; pretraining needs at least 2")
    world, rank = distributed.world_size(), distributed.rank()
    batch = min(cfg.batch_size, n)
    if batch % world:
        raise ValueError(f"batch_size: {batch} is not divisible by the {world} processes")
    device = torch.device(device)
    cfg = PretrainConfig.from_dict(
        {
            **asdict(cfg),
            "batch_size": batch,
            "lr": cfg.lr if cfg.lr is not None else default_lr(cfg.optimizer, batch),
            "precision": resolve_precision(cfg.precision, device),
        }
    )
    assert cfg.lr is not None
    base_lr = cfg.lr
    total = total_steps(cfg, n)
    method.to(device)
    if isinstance(data, ImageData) and augment is None:
        augment = method.default_augment(int(data.images.shape[-1]), int(data.images.shape[1]))  # type: ignore[operator]
    opt = make_optimizer(method, cfg.optimizer, base_lr, cfg.weight_decay)
    name = str(getattr(method, "name", type(method).__name__))
    ckpt_path = os.path.join(out_dir, CHECKPOINT)
    start = 0
    if resume and os.path.exists(ckpt_path):
        state = checkpoint.load(ckpt_path, require=checkpoint.RESUME_KEYS)
        if state.get("method") != name:
            raise checkpoint.CheckpointError(
                f"{ckpt_path}: a {state.get('method')!r} checkpoint, this run is {name!r}"
            )
        checkpoint.load_model_state(method, state["model"], ckpt_path)
        start = checkpoint.restore_training_state(opt, state, ckpt_path)
    if rank == 0:
        os.makedirs(out_dir, exist_ok=True)

    model: nn.Module = _LossModule(method)
    if world > 1:
        model = nn.parallel.DistributedDataParallel(model)
    local = slice(rank * (batch // world), (rank + 1) * (batch // world))

    def save(step: int) -> None:
        if rank != 0:
            return
        checkpoint.save(
            ckpt_path,
            {
                "method": name,
                "method_args": method_args or {},
                "modality": "series"
                if isinstance(data, SeriesData)
                else "text"
                if isinstance(data, TextData)
                else "image",
                "config": asdict(cfg),
                "data": data.name,
                "model": method.state_dict(),
                "optimizer": opt.state_dict(),
                "step": step,
                "total_steps": total,
                "rng": checkpoint.rng_state(),
            },
        )

    bar = None
    if cfg.progress and rank == 0:
        tqdm = _tqdm()
        bar = tqdm(
            total=total, initial=start, desc=f"pretrain {name}", unit="step", dynamic_ncols=True
        )
    metrics = _open_metrics(os.path.join(out_dir, METRICS), start) if rank == 0 else None
    per_epoch = n // batch
    end = total if stop_after is None else min(total, start + stop_after)
    loss_value, t_run, seen = float("nan"), 0.0, 0
    method.train()
    try:
        for step in range(start, end):
            t0 = time.perf_counter()
            lr = cosine_lr(step, total, base_lr, cfg.warmup_steps, cfg.min_lr)
            for group in opt.param_groups:
                group["lr"] = lr
            rows = batch_rows(n, batch, step, cfg.seed)
            g = torch.Generator().manual_seed(derived_seed(cfg.seed, 1, step))
            views = _views(data, rows, local, augment, g, device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
                loss = model(views)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.clip_grad > 0:
                nn.utils.clip_grad_norm_(method.parameters(), cfg.clip_grad)
            opt.step()
            method.on_step_end(step, total)  # type: ignore[operator]
            loss_value = float(loss.detach())
            if not np.isfinite(loss_value):
                raise FloatingPointError(
                    f"loss is {loss_value} at step {step}; lower --lr or turn on clipping"
                )
            dt = time.perf_counter() - t0
            t_run += dt
            seen += batch
            done = step + 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss_value:.4f}", samples_s=f"{batch / dt:.0f}")
            if metrics is not None and (done % cfg.log_every == 0 or done == total):
                rec = {
                    "step": done,
                    "epoch": round(done / per_epoch, 3),
                    "loss": loss_value,
                    "lr": lr,
                    "samples_per_s": round(batch / dt, 1),
                }
                metrics.write(json.dumps(rec) + "\n")
                metrics.flush()
            if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done != total:
                save(done)
        if end == total or stop_after is not None:
            save(end)
    finally:
        if bar is not None:
            bar.close()
        if metrics is not None:
            metrics.close()
    return {
        "method": name,
        "steps": total,
        "ran_steps": end - start,
        "final_loss": loss_value,
        "lr": base_lr,
        "precision": cfg.precision,
        "seconds": t_run,
        "samples_per_s": seen / t_run if t_run > 0 else float("nan"),
        "checkpoint": ckpt_path,
    }
