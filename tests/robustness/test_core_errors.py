"""Errors from the C++ side are Python exceptions with messages, never aborts.

Every entry point of the compiled core that the ops launch is driven directly, bypassing the
Python checks: the arguments of a real launch (recorded while the ops of ``cases.py`` run) are
mutated one at a time (a dimension added, a wrong dtype, a transposed layout, a null pointer
on a non-empty tensor, each size grown or shrunk, integer arguments negative or huge) and the
call must either raise ``ValueError`` with a message or, where the mutation is still a valid
input, return. A crash fails the whole run; ``tools/sanitize.sh`` runs this module under ASan,
which also catches an out-of-bounds access on the mutations that are accepted.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from robustness.cases import CASES

from pyssl.ops import _backend


class _Recorder:
    """Stands in for the compiled module while the ops run: records the arguments of the first
    CPU launch of every entry point (each View mapped back to the tensor it pins), then calls
    the real one."""

    def __init__(self, core: Any, seen: dict[tuple[str, str], tuple[Any, ...]]):
        self._core, self._seen = core, seen

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._core, name)
        if not name.endswith("_cpu"):
            return attr
        family, seen = name[: -len("_cpu")], self._seen

        class Family:
            def __getattr__(self, fn: str) -> Any:
                def run(*args: Any) -> Any:
                    if (family, fn) not in seen:
                        seen[(family, fn)] = tuple(
                            _tensor_of(a) if isinstance(a, type(_backend._C.View())) else a
                            for a in args
                        )
                    return getattr(attr, fn)(*args)

                return run

        return Family()


def _tensor_of(v: Any) -> torch.Tensor | None:
    owner = getattr(v, "owner", None)
    return None if owner is None else owner.clone()


def record_launches() -> dict[tuple[str, str], tuple[Any, ...]]:
    """The arguments of one CPU launch of every (family, entry point) the ops use."""
    seen: dict[tuple[str, str], tuple[Any, ...]] = {}
    core = _backend._C
    _backend._C = _Recorder(core, seen)
    try:
        for case in CASES.values():
            case(0)
    finally:
        _backend._C = core
    return seen


LAUNCHES = record_launches()


def call(family: str, fn: str, args: list[Any]) -> None:
    views = [_backend.view(a) if a is None or isinstance(a, torch.Tensor) else a for a in args]
    getattr(getattr(_backend._C, f"{family}_cpu"), fn)(*views)


def null_view(t: torch.Tensor) -> Any:
    return _backend._C.View(0, _backend._DTYPES[t.dtype], list(t.shape), list(t.stride()))


def wrong_dtype(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.int32) if t.dtype.is_floating_point else t.to(torch.float32)


# integer arguments that are raw addresses, not sizes: the core cannot check them (the Python
# layer derives them from the tensors it passes beside them), so they are not mutated
ADDRESSES = {("augment", "augment_view"): {0}}


def mutations(args: tuple[Any, ...], addresses: set[int] = frozenset()):  # type: ignore[assignment]
    """(description, mutated args, must_raise) for every argument."""
    for i, a in enumerate(args):
        if i in addresses:
            continue

        def at(x, i=i):
            return [*args[:i], x, *args[i + 1 :]]

        if isinstance(a, torch.Tensor):
            # a one-element scalar (logit_scale, its gradient) may have any shape
            yield f"arg {i}: one more dimension", at(a.unsqueeze(0)), a.numel() != 1
            yield f"arg {i}: dtype {a.dtype} -> other kind", at(wrong_dtype(a)), True
            if a.dim() >= 2 and a.shape[-1] > 1 and a.shape[-2] > 1:
                t = a.transpose(-1, -2).contiguous().transpose(-1, -2)
                yield f"arg {i}: column-major", at(t), True
            if a.numel() > 0 and a.dim() > 0:  # a 0-dim null View is how None crosses over
                yield f"arg {i}: null pointer", at(null_view(a)), True
            for d in range(a.dim()):
                for delta in (1, -1):
                    shape = list(a.shape)
                    shape[d] += delta
                    if shape[d] >= 0:
                        yield (
                            f"arg {i}: size {d} {delta:+d}",
                            at(torch.zeros(shape, dtype=a.dtype)),
                            False,
                        )
        elif isinstance(a, bool) or a is None:
            continue
        elif isinstance(a, int):
            for v in (-1, 0, 2**40):
                yield f"arg {i}: int {v}", at(v), False


@pytest.mark.parametrize("key", sorted(LAUNCHES), ids=lambda k: f"{k[0]}.{k[1]}")
def test_core_entry_point_raises_value_errors_never_crashes(key):
    family, fn = key
    args = LAUNCHES[key]
    call(family, fn, list(args))  # the recorded launch itself is valid
    raised = 0
    for what, mutated, must_raise in mutations(args, ADDRESSES.get(key, set())):
        try:
            call(family, fn, mutated)
        except (ValueError, TypeError) as e:  # TypeError: pybind11 refusing an argument type
            assert str(e), f"{fn}, {what}: empty message"
            raised += 1
        else:
            assert not must_raise, f"{fn}, {what}: accepted"
    assert raised > 0


def test_every_op_family_is_driven():
    families = {family for family, _ in LAUNCHES}
    assert families == {"masking", "contrastive", "augment", "text"}, families
    assert len(LAUNCHES) >= 12  # forward and backward entry points of every family
