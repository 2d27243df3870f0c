"""Result records, the markdown table and the accuracy-against-label-fraction plot.

A record is ``{"model", "protocol", "label_fraction", "seed", "test_accuracy"}`` (``report.json``
holds a list of them)."""

from __future__ import annotations

import json
import os
import statistics
from collections import defaultdict
from typing import Any

REPORT = "report.json"
KEYS = ("model", "protocol", "label_fraction", "seed", "test_accuracy")


def read_records(path: str) -> list[dict[str, Any]]:
    """The records of ``path`` (a ``report.json`` or a run folder holding one). Raises
    ``FileNotFoundError`` or ``ValueError`` (malformed file) with the path in the message."""
    if os.path.isdir(path):
        path = os.path.join(path, REPORT)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path}: no such report (run `pyssl demo` or `pyssl finetune` first)"
        )
    try:
        with open(path) as fh:
            recs = json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(recs, list) or not all(
        isinstance(r, dict) and all(k in r for k in KEYS) for r in recs
    ):
        raise ValueError(f"{path}: expected a list of records with keys {', '.join(KEYS)}")
    return recs


def add_records(path: str, new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Merges ``new`` into the ``report.json`` at ``path`` (a record with the same model,
    protocol, fraction and seed is replaced) and writes it atomically; returns all records."""
    old = read_records(path) if os.path.exists(path) else []
    key = lambda r: (r["model"], r["protocol"], float(r["label_fraction"]), int(r["seed"]))  # noqa: E731
    merged = {key(r): r for r in old}
    merged.update({key(r): r for r in new})
    recs = sorted(merged.values(), key=key)
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(recs, fh, indent=1)
    os.replace(tmp, path)
    return recs


def summarise(records: list[dict[str, Any]]) -> dict[tuple[str, str], dict[float, list[float]]]:
    """``{(model, protocol): {fraction: [accuracies over seeds]}}``, in first-seen order."""
    out: dict[tuple[str, str], dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        out[(r["model"], r["protocol"])][float(r["label_fraction"])].append(
            float(r["test_accuracy"])
        )
    return out


def _cell(v: list[float]) -> str:
    if not v:
        return "-"
    if len(v) == 1:
        return f"{100 * v[0]:.1f}"
    return f"{100 * statistics.mean(v):.1f} ± {100 * statistics.stdev(v):.1f}"


def markdown_table(records: list[dict[str, Any]]) -> str:
    """Test accuracy (%) per model and protocol (rows) and label fraction (columns): the value,
    or mean ± standard deviation over seeds with the seed count."""
    s = summarise(records)
    fracs = sorted({f for per in s.values() for f in per})
    head = (
        "| model | protocol | seeds | " + " | ".join(f"{100 * f:g}% labels" for f in fracs) + " |"
    )
    rule = "|---|---|---|" + "---|" * len(fracs)
    rows = []
    for (model, protocol), per in s.items():
        n = max(len(v) for v in per.values())
        cells = " | ".join(_cell(per.get(f, [])) for f in fracs)
        rows.append(f"| {model} | {protocol} | {n} | {cells} |")
    return "\n".join([head, rule, *rows])


def plot(records: list[dict[str, Any]], path: str, title: str = "") -> None:
    """Test accuracy against label fraction (log axis), one line per model and protocol, with
    the spread over seeds as a band; saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for (model, protocol), per in summarise(records).items():
        fr = sorted(per)
        mean = [100 * statistics.mean(per[f]) for f in fr]
        sd = [100 * statistics.stdev(per[f]) if len(per[f]) > 1 else 0.0 for f in fr]
        x = [100 * f for f in fr]
        ax.plot(x, mean, marker="o", label=f"{model} ({protocol})")
        ax.fill_between(
            x, [m - d for m, d in zip(mean, sd)], [m + d for m, d in zip(mean, sd)], alpha=0.2
        )
    ax.set_xscale("log")
    ax.set_xlabel("labels used (% of the training set)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
