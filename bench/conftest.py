"""Setup shared by the bench_*.py files (never part of the test run: testpaths = ["tests"]).

The benchmarks time the working tree's pyssl when its core is built there (pyssl/_C*.so, as in
development), otherwise the installed pyssl; on 2 threads.
"""

from __future__ import annotations

import hashlib
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)  # for `import ceilings`

import ceilings  # noqa: E402

ceilings.use_working_tree_if_built()

import torch  # noqa: E402

import pyssl  # noqa: E402
from pyssl.ops import _backend  # noqa: E402

THREADS = 2
torch.set_num_threads(THREADS)

# Timing the eager fallback against itself would be meaningless: a missing core is an error.
if _backend._C is None:
    raise RuntimeError(
        f"{_backend.CORE_ERROR}; pyssl was imported from {os.path.dirname(pyssl.__file__)}. "
        "Build the core (or symlink the built pyssl/_C*.so) before benchmarking."
    )


def core_build(path: str) -> str:
    """A short hash of the compiled core, so runs of different builds are never mixed."""
    try:
        with open(os.path.realpath(path), "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()[:12]
    except OSError:
        return "?"


def pytest_benchmark_update_machine_info(config, machine_info):  # type: ignore[no-untyped-def]
    machine_info["torch"] = torch.__version__
    machine_info["torch_threads"] = torch.get_num_threads()
    machine_info["os_cpu_count"] = os.cpu_count()
    machine_info["pyssl"] = getattr(pyssl, "__version__", "?")
    machine_info["pyssl_path"] = os.path.dirname(pyssl.__file__)
    core = getattr(_backend._C, "__file__", "?")
    machine_info["pyssl_core"] = core
    machine_info["pyssl_core_build"] = core_build(core)
    machine_info["loadavg_at_end"] = list(os.getloadavg())
