"""Atomic checkpoints: written to a temporary file in the same folder, flushed, then renamed
over the target (``os.replace``), so a run killed at any moment leaves either the previous
checkpoint or the new one, never a torn file."""

from __future__ import annotations

import os
import random
import tempfile
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

FORMAT = "pyssl-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable, not a pyssl checkpoint, or not matching
    the model it is loaded into."""


def save(path: str, state: dict[str, Any]) -> None:
    """Writes ``state`` (plus the format tag) to ``path`` atomically."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".pt", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save({"format": FORMAT, "version": VERSION, **state}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# what a checkpoint needs for each use: rebuilding the model, and resuming its training
MODEL_KEYS = ("method", "model")
RESUME_KEYS = ("method", "model", "optimizer", "step", "rng")


def load(path: str, require: Sequence[str] = ()) -> dict[str, Any]:
    """Reads a checkpoint written by :func:`save`. Raises ``FileNotFoundError`` when ``path``
    does not exist and :class:`CheckpointError` when it is not a readable pyssl checkpoint or
    lacks one of the keys ``require`` names (e.g. :data:`MODEL_KEYS`, :data:`RESUME_KEYS`)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # any unpickling/zip failure means a corrupt or foreign file
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a pyssl checkpoint")
    if state.get("version") != VERSION:
        raise CheckpointError(
            f"{path}: checkpoint version {state.get('version')}, expected {VERSION}"
        )
    missing = [k for k in require if k not in state]
    if missing:
        raise CheckpointError(f"{path}: the checkpoint lacks {', '.join(map(repr, missing))}")
    if "model" in require and not isinstance(state["model"], dict):
        raise CheckpointError(f"{path}: the checkpoint's 'model' is not a state dict")
    return state


def restore_training_state(
    optimizer: torch.optim.Optimizer, state: dict[str, Any], path: str
) -> int:
    """Loads the optimiser state and the RNG states of a checkpoint (read with
    ``require=RESUME_KEYS``) and returns its step; a malformed entry raises
    :class:`CheckpointError` naming it."""
    try:
        optimizer.load_state_dict(state["optimizer"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(
            f"{path}: the optimiser state does not fit this run's optimiser ({exc})"
        ) from None
    try:
        step = int(state["step"])
    except (TypeError, ValueError):
        raise CheckpointError(f"{path}: 'step' is not an integer: {state['step']!r}") from None
    try:
        set_rng_state(state["rng"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(
            f"{path}: malformed RNG state ({type(exc).__name__}: {exc})"
        ) from None
    return step


def load_model_state(model: torch.nn.Module, state: dict[str, Any], path: str) -> None:
    """Loads ``state`` into ``model`` strictly; a missing, extra or differently shaped tensor
    raises :class:`CheckpointError` naming the first one."""
    own = model.state_dict()
    for k, v in state.items():
        if k not in own:
            raise CheckpointError(f"{path}: checkpoint has {k!r}, which the model lacks")
        if own[k].shape != v.shape:
            raise CheckpointError(
                f"{path}: {k!r} has shape {list(v.shape)} in the checkpoint, "
                f"{list(own[k].shape)} in the model"
            )
    missing = [k for k in own if k not in state]
    if missing:
        raise CheckpointError(
            f"{path}: checkpoint lacks {missing[0]!r} (and {len(missing) - 1} more)"
        )
    model.load_state_dict(state)


def rng_state() -> dict[str, Any]:
    """The global RNG states a training step may draw from: torch (CPU, and CUDA when present),
    numpy, python."""
    out: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),  # noqa: NPY002 (the legacy global state)
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])  # noqa: NPY002
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
