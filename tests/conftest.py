"""Shared test setup."""

import os
import shutil
import sys

# With no GPU, Triton kernels run under the interpreter; the variable must be set before triton
# (or torch, which may import it) is imported.
if "TRITON_INTERPRET" not in os.environ and shutil.which("nvidia-smi") is None:
    os.environ["TRITON_INTERPRET"] = "1"

# torch.compile's on-disk cache can serve a graph compiled against an older schema of a pyssl
# custom op (seen with pyssl::lm_loss_train); each test session compiles into its own directory.
if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
    import tempfile

    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="pyssl-tests-inductor-")

sys.path.insert(0, os.path.dirname(__file__))  # for `import helpers`

import pyssl  # noqa: E402
from pyssl.ops import _backend  # noqa: E402

# The tests exist to check the compiled kernels: a missing core is an error, never a skip.
if _backend._C is None:
    raise RuntimeError(
        f"{_backend.CORE_ERROR}; pyssl was imported from {os.path.dirname(pyssl.__file__)}. "
        "Install it (pip install '.[test]', or pip install -e . for development) and run "
        "`pytest` (not `python -m pytest`, which puts the unbuilt source tree first)."
    )


def pytest_addoption(parser):
    parser.addoption(
        "--run-slow",
        action="store_true",
        help="also run the tests marked slow (full sizes; CI runs them in a step of their own)",
    )


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-slow"):
        return
    import pytest

    skip = pytest.mark.skip(reason="slow (full size): run with --run-slow; CI runs it separately")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
