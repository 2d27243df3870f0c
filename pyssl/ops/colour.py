"""sRGB <-> CIELAB colour conversion (the colourisation pretext's hot path).

Anchor: kornia's ``kornia.color.rgb_to_lab`` / ``lab_to_rgb`` and scikit-image's ``rgb2lab`` /
``lab2rgb``, whose conventions these ops keep (see :mod:`pyssl.reference.colour`):

* sRGB transfer function of IEC 61966-2-1 (linear below 0.04045, ``((c + 0.055) / 1.055)^2.4``
  above), the 6-digit sRGB -> XYZ matrix, D65 white ``(0.95047, 1, 1.08883)``;
* CIE ``f(t)`` with the 6/29 linear segment; ``L`` in [0, 100], ``a``/``b`` unbounded;
* back to RGB: ``f(Z)`` clamped at 0 and, with ``clip=True`` (the default, as kornia's),
  the result clamped to [0, 1].

Deliberate difference: the exact CIE constants ``(6/29)^3`` and ``1 / (3 (6/29)^2)`` where kornia
and scikit-image round them to 0.008856 and 7.787 (below 4e-7 in ``f``).

Images are ``[..., 3, H, W]`` (channels third from last; any number of leading dims, at least
none: ``[3, H, W]`` works) of float32, bfloat16, float16 or float64. The math runs in float32
(float64 for float64) and the result comes back in the input dtype. CPU tensors run the C++
kernel (OpenMP), CUDA tensors the Triton kernel; there is no CUDA C++ kernel yet. Gradients:
the closed-form vector-Jacobian products of :mod:`pyssl.reference.colour` (custom ops
``pyssl::rgb_to_lab_backward`` / ``pyssl::lab_to_rgb_backward``): a C++ kernel for CPU tensors,
the eager closed form in float32 (float64 for float64) elsewhere (no Triton backward yet);
returned in the input dtype. Not twice differentiable.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pyssl.ops._backend import check_backend_arg, launch, resolve
from pyssl.reference import colour as ref

_FLOATS = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def _check_image(t: object, name: str) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in _FLOATS:
        raise TypeError(
            f"{name}: expected a float32/bfloat16/float16/float64 tensor, got {t.dtype}"
        )
    if t.dim() < 3:
        raise ValueError(f"{name}: expected [..., 3, H, W], got shape {tuple(t.shape)}")
    if t.shape[-3] != 3:
        raise ValueError(
            f"{name}: expected 3 channels at dim -3 ([..., 3, H, W]), got shape {tuple(t.shape)}"
        )
    return t


def _resolve(op: str, t: Tensor, backend: str | None) -> str:
    check_backend_arg(backend)
    if backend == "cuda":
        raise ValueError(
            f"{op}: backend='cuda' cannot run: there are no CUDA C++ kernels for the colour ops "
            "(Triton covers CUDA tensors)"
        )
    return resolve(op, t.device, backend)


def _acc(t: Tensor) -> Tensor:
    return t if t.dtype == torch.float64 else t.float()


def _planes(t: Tensor) -> Tensor:
    """``[..., 3, H, W]`` -> contiguous ``[N, 3, H*W]``."""
    return t.contiguous().reshape(-1, 3, t.shape[-2] * t.shape[-1])


def _run(fn: str, x: Tensor, backend: str, *extra: object) -> Tensor:
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    if x.numel():
        launch(
            "colour",
            fn,
            backend,
            _planes(x),
            *extra,
            out.view(-1, 3, out.shape[-2] * out.shape[-1]),
        )
    return out


# ----------------------------------------------------------------------------------- ops


@torch.library.custom_op("pyssl::rgb_to_lab", mutates_args=())
def _rgb_to_lab(img: Tensor, backend: str) -> Tensor:
    if backend == "reference":
        return ref.rgb_to_lab(_acc(img)).to(img.dtype)
    return _run("rgb_to_lab", img, backend)


@_rgb_to_lab.register_fake
def _rgb_to_lab_fake(img: Tensor, backend: str) -> Tensor:
    return torch.empty_like(img, memory_format=torch.contiguous_format)


@torch.library.custom_op("pyssl::lab_to_rgb", mutates_args=())
def _lab_to_rgb(lab: Tensor, clip: bool, backend: str) -> Tensor:
    if backend == "reference":
        return ref.lab_to_rgb(_acc(lab), clip).to(lab.dtype)
    return _run("lab_to_rgb", lab, backend, clip)


@_lab_to_rgb.register_fake
def _lab_to_rgb_fake(lab: Tensor, clip: bool, backend: str) -> Tensor:
    return torch.empty_like(lab, memory_format=torch.contiguous_format)


@torch.library.custom_op("pyssl::rgb_to_lab_backward", mutates_args=())
def _rgb_to_lab_backward(img: Tensor, grad: Tensor, backend: str) -> Tensor:
    grad = grad.to(img.dtype)
    if backend == "cpu":
        out = torch.empty_like(img, memory_format=torch.contiguous_format)
        if img.numel():
            flat = out.view(-1, 3, out.shape[-2] * out.shape[-1])
            launch("colour", "rgb_to_lab_backward", "cpu", _planes(img), _planes(grad), flat)
        return out
    # Triton / reference: the eager closed form (no Triton backward kernel yet)
    return ref.rgb_to_lab_backward(_acc(img), _acc(grad)).to(img.dtype)


@_rgb_to_lab_backward.register_fake
def _rgb_to_lab_backward_fake(img: Tensor, grad: Tensor, backend: str) -> Tensor:
    return torch.empty_like(img, memory_format=torch.contiguous_format)


@torch.library.custom_op("pyssl::lab_to_rgb_backward", mutates_args=())
def _lab_to_rgb_backward(lab: Tensor, grad: Tensor, clip: bool, backend: str) -> Tensor:
    grad = grad.to(lab.dtype)
    if backend == "cpu":
        out = torch.empty_like(lab, memory_format=torch.contiguous_format)
        if lab.numel():
            flat = out.view(-1, 3, out.shape[-2] * out.shape[-1])
            launch("colour", "lab_to_rgb_backward", "cpu", _planes(lab), _planes(grad), clip, flat)
        return out
    return ref.lab_to_rgb_backward(_acc(lab), _acc(grad), clip).to(lab.dtype)


@_lab_to_rgb_backward.register_fake
def _lab_to_rgb_backward_fake(lab: Tensor, grad: Tensor, clip: bool, backend: str) -> Tensor:
    return torch.empty_like(lab, memory_format=torch.contiguous_format)


def _rgb_setup(ctx, inputs, output):  # type: ignore[no-untyped-def]
    ctx.save_for_backward(inputs[0])
    ctx.backend = inputs[1]


def _rgb_backward(ctx, grad):  # type: ignore[no-untyped-def]
    (img,) = ctx.saved_tensors
    return _rgb_to_lab_backward(img, grad, ctx.backend), None


def _lab_setup(ctx, inputs, output):  # type: ignore[no-untyped-def]
    ctx.save_for_backward(inputs[0])
    ctx.clip = inputs[1]
    ctx.backend = inputs[2]


def _lab_backward(ctx, grad):  # type: ignore[no-untyped-def]
    (lab,) = ctx.saved_tensors
    return _lab_to_rgb_backward(lab, grad, ctx.clip, ctx.backend), None, None


_rgb_to_lab.register_autograd(_rgb_backward, setup_context=_rgb_setup)
_lab_to_rgb.register_autograd(_lab_backward, setup_context=_lab_setup)


def rgb_to_lab(img: Tensor, *, backend: str | None = None) -> Tensor:
    """sRGB to CIELAB, as ``kornia.color.rgb_to_lab`` / ``skimage.color.rgb2lab``.

    Args:
        img: ``[..., 3, H, W]`` float32/bfloat16/float16/float64 sRGB, nominally in [0, 1]
            (values outside follow the same formulas: linear segment below 0.04045).
        backend: ``None`` (CPU: C++, CUDA: Triton), ``"cpu"``, ``"triton"`` or ``"reference"``.

    Returns:
        ``[..., 3, H, W]`` in ``img``'s dtype: channel 0 ``L`` in [0, 100], channels 1, 2 ``a``,
        ``b`` (D65 white, so sRGB grey has ``a = b = 0`` up to the matrix rounding, ~1e-4).
        Differentiable (closed-form backward in float32).
    """
    img = _check_image(img, "img")
    return _rgb_to_lab(img, _resolve("rgb_to_lab", img, backend))


def lab_to_rgb(lab: Tensor, *, clip: bool = True, backend: str | None = None) -> Tensor:
    """CIELAB to sRGB, as ``kornia.color.lab_to_rgb`` (``clip=True`` its default) /
    ``skimage.color.lab2rgb``.

    Args:
        lab: ``[..., 3, H, W]`` float32/bfloat16/float16/float64, channels ``L, a, b``.
        clip: clamp the result to [0, 1]. Out-of-gamut colours (and ``Z < 0``, whose ``f(Z)``
            is always clamped at 0, as kornia and scikit-image do) otherwise come back outside.
        backend: as :func:`rgb_to_lab`.

    Returns:
        ``[..., 3, H, W]`` sRGB in ``lab``'s dtype. Differentiable; the gradient through the
        clamps is ``torch.clamp``'s.
    """
    lab = _check_image(lab, "lab")
    if not isinstance(clip, bool):
        raise TypeError(f"clip: expected a bool, got {type(clip).__name__}")
    return _lab_to_rgb(lab, clip, _resolve("lab_to_rgb", lab, backend))


__all__ = ["lab_to_rgb", "rgb_to_lab"]
