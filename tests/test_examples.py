"""The scripts in examples/ run (shortened where they loop) and do what they say."""

from __future__ import annotations

import importlib.util
import os

import pytest

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


def load(name: str):
    path = os.path.join(EXAMPLES, f"{name}.py")
    if not os.path.exists(path):
        pytest.skip(f"{path}: examples/ is not part of this checkout")
    spec = importlib.util.spec_from_file_location(f"example_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_mae_masking_and_loss_in_a_plain_loop():
    losses = load("mae_plain_loop").main(steps=25, batch=32)
    assert len(losses) == 25
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5  # the reconstruction improves


def test_nt_xent_replaces_the_lightly_style_loss():
    # main() asserts equal value and gradients before training
    first, last = load("nt_xent_for_lightly").main(steps=12, batch=64)
    assert last < first


def test_augmentation_in_a_dataloader():
    shapes = load("augment_dataloader").main(batches=2, workers=1)
    assert shapes == [(128, 3, 32, 32)] * 2
