"""Backend choice, tensor views for the compiled core, and ``explain``.

Every op runs on one of four backends:

* ``cpu``: the C++ kernels of ``pyssl._C`` (OpenMP), for CPU tensors;
* ``triton``: the Triton kernels of ``pyssl.kernels.triton``, the default for CUDA tensors;
* ``cuda``: the CUDA C++ kernels of ``pyssl._C``, opt-in with ``backend="cuda"``;
* ``reference``: the eager PyTorch code of ``pyssl.reference``, the fallback. Falling back
  warns once per op, since a silent slow path is a bug.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import warnings
from dataclasses import dataclass, field
from functools import cache
from types import ModuleType
from typing import Any

import torch

BACKENDS = ("cpu", "triton", "cuda", "reference")

try:
    from pyssl import _C  # type: ignore[attr-defined]

    CORE_ERROR: str | None = None
except ImportError as exc:  # the package was imported from a source tree that was never built
    _C = None
    CORE_ERROR = f"the compiled core pyssl._C is not importable ({exc})"

_DTYPES: dict[torch.dtype, Any] = {}
if _C is not None:
    _DTYPES = {
        torch.float32: _C.DType.float32,
        torch.float16: _C.DType.float16,
        torch.bfloat16: _C.DType.bfloat16,
        torch.float64: _C.DType.float64,
        torch.int64: _C.DType.int64,
        torch.int32: _C.DType.int32,
        torch.uint8: _C.DType.uint8,
        torch.bool: _C.DType.bool,
    }


@cache
def triton_error() -> str | None:
    """Why Triton cannot be used, or None when it can."""
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed (CUDA builds of torch bring it; or pip install triton)"
    try:
        importlib.import_module("triton")
    except Exception as exc:  # a broken install must not break pyssl's import
        return f"triton failed to import ({exc})"
    return None


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def view(t: torch.Tensor | None) -> Any:
    """A core View of a tensor (an empty View for None). The View holds a reference to the
    tensor, so ``view(torch.empty(...))`` passed straight into a kernel cannot point at freed
    memory (the sanitizer build found that use-after-free in a test)."""
    if t is None:
        return _C.View()
    v = _C.View(t.data_ptr(), _DTYPES[t.dtype], list(t.shape), list(t.stride()))
    v.owner = t
    return v


_threads = 0


def _sync_threads() -> None:
    # The core follows torch.set_num_threads so one knob sets both thread pools.
    global _threads
    n = torch.get_num_threads()
    if n != _threads:
        _C.set_num_threads(n)
        _threads = n


_CONTRASTIVE_OPS = ("info_nce", "nt_xent", "clip_loss", "siglip_loss", "moco_loss")
_TEXT_OPS = ("mask_tokens", "lm_loss", "masked_lm_loss", "causal_lm_loss")


_COLOUR_OPS = ("rgb_to_lab", "lab_to_rgb")
_PRETEXT_OPS = ("rotations", "jigsaw_shuffle")


def family_of(op: str) -> str:
    """The op family (a row of files) an op name belongs to."""
    if op.startswith("augment"):
        return "augment"
    if op in _TEXT_OPS:
        return "text"
    if op in _COLOUR_OPS:
        return "colour"
    if op in _PRETEXT_OPS:
        return "pretext"
    return "contrastive" if op.startswith("contrastive") or op in _CONTRASTIVE_OPS else "masking"


def unavailable(backend: str, device: torch.device, family: str = "masking") -> str | None:
    """Why ``backend`` cannot run ``family``'s ops on tensors of ``device`` (None when it
    can)."""
    if backend == "reference":
        return None
    if backend == "cpu":
        if device.type != "cpu":
            return f"the C++ CPU kernels take CPU tensors, these are on {device}"
        return CORE_ERROR
    if backend == "triton":
        if device.type != "cuda" and not (_interpreting() and device.type == "cpu"):
            return f"Triton kernels take CUDA tensors, these are on {device}"
        return triton_error()
    if backend == "cuda":
        if device.type != "cuda":
            return f"the CUDA C++ kernels take CUDA tensors, these are on {device}"
        if CORE_ERROR:
            return CORE_ERROR
        if not _C.cuda:
            return "pyssl was built without CUDA (rebuild with -Ccmake.define.PYSSL_CUDA=ON)"
        if not hasattr(_C, f"{family}_cuda"):
            return f"there are no CUDA C++ kernels for the {family} ops (Triton covers them)"
        return None
    return f"unknown backend {backend!r}; expected one of {BACKENDS}"


def default_order(device: torch.device) -> tuple[str, ...]:
    """The backends tried, in order, when none is asked for."""
    if device.type == "cuda":
        return ("triton", "cuda", "reference")
    return ("cpu", "reference")


_warned: set[str] = set()


def resolve(op: str, device: torch.device, backend: str | None) -> str:
    """The backend that runs ``op`` on ``device``; raises if an asked-for one cannot."""
    family = family_of(op)
    if backend is not None:
        why = unavailable(backend, device, family)
        if why:
            raise ValueError(f"{op}: backend={backend!r} cannot run: {why}")
        return backend
    for name in default_order(device):
        why = unavailable(name, device, family)
        if why is None:
            if name == "reference" and op not in _warned:
                _warned.add(op)
                reasons = "; ".join(
                    f"{b}: {unavailable(b, device, family)}" for b in default_order(device)[:-1]
                )
                warnings.warn(
                    f"pyssl.{op} falls back to the slow eager reference ({reasons})",
                    RuntimeWarning,
                    stacklevel=4,
                )
            return name
    raise AssertionError("the reference backend is always available")


def check_backend_arg(backend: str | None) -> None:
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"backend: expected None or one of {BACKENDS}, got {backend!r}")


@dataclass
class Explanation:
    """Which backend an op would run on, and why each other backend would not."""

    op: str
    backend: str
    reasons: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        lines = [f"{self.op}: runs on {self.backend!r}"]
        lines += [f"  {b}: {why}" for b, why in self.reasons.items()]
        return "\n".join(lines)


def explain(op: str, *args: Any, backend: str | None = None) -> Explanation:
    """Names the backend that ``op`` would run for these arguments and the reasons the others
    would not (like xformers' ``not_supported_reasons``)."""
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    device = tensors[0].device if tensors else torch.device("cpu")
    chosen = resolve(op, device, backend)
    reasons = {}
    for b in BACKENDS:
        if b == chosen:
            continue
        why = unavailable(b, device, family_of(op))
        if why is None:
            order = default_order(device)
            why = "slower fallback" if b == "reference" else "available; not the default here"
            if b in order and order.index(b) > order.index(chosen) and b != "reference":
                why = f"available; {chosen!r} comes first"
        reasons[b] = why
    return Explanation(op, chosen, reasons)


@cache
def _triton_module(family: str) -> ModuleType:
    return importlib.import_module(f"pyssl.kernels.triton.{family}")


def launch(family: str, fn: str, backend: str, *args: Any) -> None:
    """Runs launcher ``fn`` of ``family`` on the compiled backends. Tensor and None arguments
    become views for the C++ core; CUDA C++ launches also get the current stream."""
    if backend == "triton":
        getattr(_triton_module(family), fn)(*args)
        return
    converted = [view(a) if a is None or isinstance(a, torch.Tensor) else a for a in args]
    if backend == "cpu":
        _sync_threads()
        getattr(getattr(_C, f"{family}_cpu"), fn)(*converted)
    elif backend == "cuda":
        device = next(a.device for a in args if isinstance(a, torch.Tensor))
        stream = torch.cuda.current_stream(device).cuda_stream
        getattr(getattr(_C, f"{family}_cuda"), fn)(*converted, stream)
    else:
        raise AssertionError(f"launch() does not run backend {backend!r}")
