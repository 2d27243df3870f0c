"""Puts this folder on the path for ``import method_helpers``; runs each test on one intra-op
thread (the tensors here are tiny: on a loaded machine, fanning them out to more threads costs
far more than it saves)."""

import os
import sys
from collections.abc import Iterator

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
