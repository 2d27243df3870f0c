"""MNIST-1D: the vectorised port against the ``mnist1d`` package's own generator, the split and
layout, and bad arguments."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pyssl.data.mnist1d import DEFAULTS, SeriesData, load_mnist1d, make_dataset, templates

mnist1d_data = pytest.importorskip(
    "mnist1d.data", reason="the mnist1d package (the generator this port follows) is missing"
)


def _package(**overrides: object) -> dict[str, np.ndarray]:
    args = mnist1d_data.get_dataset_args()
    for k, v in overrides.items():
        setattr(args, k, v)
    # the package seeds numpy's global (legacy) state; leave it as found
    state = np.random.get_state()  # noqa: NPY002
    try:
        return mnist1d_data.make_dataset(args)
    finally:
        np.random.set_state(state)  # noqa: NPY002


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"seed": 7, "num_samples": 1200},
        {"shuffle_seq": True, "num_samples": 600},
        {"max_translation": 5, "padding": [0, 3], "final_seq_length": 17, "num_samples": 300},
    ],
)
def test_matches_package(overrides: dict[str, object]) -> None:
    ref = _package(**overrides)
    ours = make_dataset(**overrides)
    for k in ("y", "y_test"):
        np.testing.assert_array_equal(ours[k], ref[k])
    for k in ("x", "x_test", "t"):
        # the same draws and the same float64 arithmetic (np.interp's, scipy's gaussian
        # filter): bit for bit
        np.testing.assert_array_equal(ours[k], ref[k])


def test_templates_match_package() -> None:
    ref = mnist1d_data.get_templates()
    x, t = templates()
    np.testing.assert_array_equal(x, ref["x"])
    np.testing.assert_array_equal(t, ref["t"])


def test_default_split_and_layout() -> None:
    tr, te = load_mnist1d("train"), load_mnist1d("test")
    assert isinstance(tr, SeriesData)
    assert tr.x.shape == (4000, 1, 40) and te.x.shape == (1000, 1, 40)
    assert tr.x.dtype == torch.float32 and tr.labels is not None and tr.labels.dtype == torch.int64
    ref = _package()
    np.testing.assert_allclose(tr.x[:, 0].numpy(), ref["x"].astype(np.float32), atol=1e-6)
    np.testing.assert_array_equal(te.labels.numpy(), ref["y_test"])  # type: ignore[union-attr]
    # every class present in both splits; the set is centred with unit std over both
    assert set(tr.labels.tolist()) == set(range(10))
    whole = torch.cat([tr.x, te.x]).double()
    assert abs(float(whole.mean())) < 1e-6 and abs(float(whole.std(unbiased=False)) - 1) < 1e-6


def test_does_not_touch_global_rng() -> None:
    # the package's generator draws from numpy's global state; the port must not
    np.random.seed(3)  # noqa: NPY002
    before = np.random.rand()  # noqa: NPY002
    np.random.seed(3)  # noqa: NPY002
    make_dataset(num_samples=100)
    assert np.random.rand() == before  # noqa: NPY002


def test_subset() -> None:
    tr = load_mnist1d("train", num_samples=100)
    s = tr.subset(torch.tensor([3, 1]))
    assert torch.equal(s.x, tr.x[[3, 1]]) and torch.equal(s.labels, tr.labels[[3, 1]])  # type: ignore[index]


@pytest.mark.parametrize(
    ("kwargs", "exc", "name"),
    [
        ({"num_samples": 5}, ValueError, "num_samples"),
        ({"num_samples": 100.0}, TypeError, "num_samples"),
        ({"train_split": 1.0}, ValueError, "train_split"),
        ({"padding": (10, 2)}, ValueError, "padding"),
        ({"shear_scale": -1.0}, ValueError, "shear_scale"),
        ({"template_len": 10}, ValueError, "template_len"),
        ({"num_sample": 100}, TypeError, "num_sample"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], exc: type, name: str) -> None:
    with pytest.raises(exc, match=name):
        make_dataset(**kwargs)


def test_bad_split_and_series() -> None:
    with pytest.raises(ValueError, match="split"):
        load_mnist1d("val")
    with pytest.raises(ValueError, match="x"):
        SeriesData(torch.zeros(4, 40), None, [], "bad")
    with pytest.raises(ValueError, match="labels"):
        SeriesData(torch.zeros(4, 1, 40), torch.zeros(3, dtype=torch.int64), [], "bad")


def test_defaults_are_the_packages() -> None:
    ref = mnist1d_data.get_dataset_args(as_dict=True)
    for k, v in DEFAULTS.items():
        assert (list(v) if isinstance(v, tuple) else v) == ref[k], k
