"""The ``pyssl`` command (also ``python -m pyssl``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def info() -> str:
    """Version, compiled backends, threads and Triton availability, as text."""
    import torch

    import pyssl
    from pyssl.ops import _backend

    lines = [
        f"pyssl {pyssl.__version__} (distribution pyssl-kernels)",
        f"torch {torch.__version__}",
    ]
    core = _backend._C
    if core is None:
        lines.append(f"compiled core: MISSING ({_backend.CORE_ERROR})")
    else:
        lines.append("compiled core: pyssl._C")
        lines.append(
            f"  CPU kernels: yes (OpenMP {'on' if core.openmp else 'off'}, "
            f"{core.num_threads()} threads; torch uses {torch.get_num_threads()})"
        )
        archs = core.cuda_archs or "-"
        lines.append(
            f"  CUDA kernels: {'yes, architectures ' + archs if core.cuda else 'not built'}"
        )
    why = _backend.triton_error()
    if why is None:
        import triton

        lines.append(f"triton: {triton.__version__} importable")
    else:
        lines.append(f"triton: no ({why})")
    gpu = torch.cuda.is_available()
    lines.append(f"CUDA device: {torch.cuda.get_device_name(0) if gpu else 'none'}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pyssl", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="version, compiled backends, threads, Triton")
    demo = sub.add_parser("demo", help="MAE masking of a real photograph, saved as a PNG")
    demo.add_argument("--out", default="mae_demo.png", help="PNG to write (default: %(default)s)")
    demo.add_argument("--mask-ratio", type=float, default=0.75)
    demo.add_argument("--patch-size", type=int, default=16)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument(
        "--image",
        default="china.jpg",
        help="scikit-learn sample image name or a path to an image file",
    )
    args = parser.parse_args(argv)
    if args.command == "info":
        print(info())
    elif args.command == "demo":
        from pyssl.demo import mae_demo

        print(
            mae_demo(
                args.out,
                image=args.image,
                mask_ratio=args.mask_ratio,
                patch_size=args.patch_size,
                seed=args.seed,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
