"""The evaluation protocols and the report against independent computations: weighted kNN
(cosine, k=20) against a brute-force loop, the linear probe against scikit-learn's logistic
regression, and the markdown table's mean ± std over seeds."""

from __future__ import annotations

import json
import math
import statistics

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from pyssl.cli import main
from pyssl.train import knn_accuracy, logistic_regression
from pyssl.train.report import markdown_table


def blobs(n: int, classes: int, dim: int, seed: int, spread: float = 1.5):
    """Overlapping Gaussian classes: neither protocol is perfect on them, so the predictions
    near the boundaries decide the accuracy."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 1.0, (classes, dim))
    y = rng.integers(0, classes, n)
    x = centres[y] + spread * rng.normal(0.0, 1.0, (n, dim))
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.int64)


def brute_force_knn(xtr, ytr, xte, k, temperature, classes):
    """One test row at a time, in float64 Python arithmetic: cosine similarity to every
    training row, the k most similar vote with weight exp(sim / temperature)."""
    a, b = xtr.double().numpy(), xte.double().numpy()
    preds = []
    for q in b:
        sims = [float(q @ t / (np.linalg.norm(q) * np.linalg.norm(t))) for t in a]
        nearest = sorted(range(len(a)), key=lambda i: -sims[i])[:k]
        votes = [0.0] * classes
        for i in nearest:
            votes[int(ytr[i])] += math.exp(sims[i] / temperature)
        preds.append(max(range(classes), key=lambda c: votes[c]))
    return torch.tensor(preds)


@pytest.mark.parametrize("n_train", [200, 12])  # k=20 nearest of 200; all 12 when fewer than k
def test_weighted_knn_matches_brute_force(n_train):
    x, y = blobs(n_train + 80, 4, 6, seed=n_train)
    xtr, ytr, xte, yte = x[:n_train], y[:n_train], x[n_train:], y[n_train:]
    preds = brute_force_knn(xtr, ytr, xte, k=20, temperature=0.07, classes=4)
    acc = knn_accuracy(xtr, ytr, xte, yte, num_classes=4)
    assert acc == pytest.approx(float((preds == yte).double().mean()), abs=1e-7)
    assert 0.3 < acc < 1.0  # a test with both hits and misses
    # every prediction agrees, not just their count: scored against the brute-force labels
    assert knn_accuracy(xtr, ytr, xte, preds, num_classes=4) == 1.0


def test_knn_temperature_and_k_change_the_vote():
    x, y = blobs(300, 3, 5, seed=3)
    xtr, ytr, xte = x[:200], y[:200], x[200:]
    for k, t in [(1, 0.07), (5, 0.5), (20, 1.0)]:
        preds = brute_force_knn(xtr, ytr, xte, k=k, temperature=t, classes=3)
        assert knn_accuracy(xtr, ytr, xte, preds, k=k, temperature=t, num_classes=3) == 1.0


@pytest.mark.parametrize("l2", [1e-3, 1e-1])
def test_linear_probe_matches_scikit_learn(l2):
    x, y = blobs(400, 5, 8, seed=int(1 / l2))
    x = x * torch.linspace(0.1, 10.0, 8) + 3.0  # unequal scales and an offset: standardised
    xtr, ytr, xte, yte = x[:250], y[:250], x[250:], y[250:]
    # pyssl minimises mean cross-entropy + l2/2 ||W||^2 on features standardised with the
    # training statistics; scikit-learn minimises C * sum cross-entropy + 1/2 ||W||^2, the
    # same objective scaled by C * n when C = 1 / (l2 * n); neither penalises the bias
    mu, sd = xtr.double().mean(0), xtr.double().std(0, unbiased=False)
    ztr, zte = ((xtr - mu) / sd).numpy(), ((xte - mu) / sd).numpy()
    sk = LogisticRegression(C=1.0 / (l2 * len(xtr)), tol=1e-10, max_iter=10_000)
    sk.fit(ztr, ytr.numpy())
    preds = torch.tensor(sk.predict(zte))
    acc = logistic_regression(xtr, ytr, xte, yte, l2=l2, num_classes=5)
    assert acc == pytest.approx(float((preds == yte).double().mean()), abs=1e-9)
    assert 0.3 < acc < 1.0
    assert logistic_regression(xtr, ytr, xte, preds, l2=l2, num_classes=5) == 1.0


def _records(model, protocol, per_fraction):
    return [
        {"model": model, "protocol": protocol, "label_fraction": f, "seed": s, "test_accuracy": a}
        for f, accs in per_fraction.items()
        for s, a in enumerate(accs)
    ]


def test_markdown_table_gives_mean_and_std_over_seeds():
    recs = _records("simclr", "linear", {0.1: [0.91, 0.95, 0.96], 1.0: [0.97, 0.98, 0.99]})
    recs += _records("raw-pixels", "linear", {0.1: [0.9]})
    lines = markdown_table(recs).splitlines()
    assert lines[0] == "| model | protocol | seeds | 10% labels | 100% labels |"
    assert lines[1] == "|---|---|---|---|---|"
    m, sd = statistics.mean([91, 95, 96]), statistics.stdev([91, 95, 96])  # sample std
    assert lines[2] == f"| simclr | linear | 3 | {m:.1f} ± {sd:.1f} | 98.0 ± 1.0 |"
    assert lines[3] == "| raw-pixels | linear | 1 | 90.0 | - |"  # one seed: no spread


def test_report_command_merges_seeds_from_several_run_folders(capsys, tmp_path):
    for seed, acc in enumerate([0.5, 0.6, 0.7]):
        run = tmp_path / f"seed{seed}"
        run.mkdir()
        rec = {"model": "byol", "protocol": "knn", "label_fraction": 0.2, "seed": seed,
               "test_accuracy": acc}  # fmt: skip
        (run / "report.json").write_text(json.dumps([rec]))
    runs = [str(tmp_path / f"seed{s}") for s in range(3)]
    assert main(["report", *runs, "--out", str(tmp_path / "rep")]) == 0
    row = "| byol | knn | 3 | 60.0 ± 10.0 |"
    assert row in capsys.readouterr().out
    assert row in (tmp_path / "rep" / "report.md").read_text()
    assert (tmp_path / "rep" / "accuracy.png").stat().st_size > 1000
