"""Per-class figures: confusion matrix heat map, the most confused class pairs, per-class accuracy.

Each ``*_figure`` takes plain numbers and returns a Figure; the data they show comes from functions tested
on their own (:func:`top_confused_pairs`, :func:`row_normalised`, :func:`sorted_accuracy`).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.colors import PowerNorm
from matplotlib.figure import Figure

from glsim_pl.plots import FONT, ellipsize, new_figure, tick_indices

__all__ = [
    "confused_pairs_figure",
    "confusion_figure",
    "per_class_accuracy_figure",
    "row_normalised",
    "sorted_accuracy",
    "top_confused_pairs",
    "write_pairs_csv",
]

MAX_TICK_LABELS = 60  # class-name labels per confusion axis; more than this and 7 pt text overlaps at 16 in


def row_normalised(confusion: Any) -> np.ndarray:
    """(K, K) counts (rows = true class) -> rows that sum to 1 (empty rows stay 0)."""
    counts = np.asarray(confusion, dtype=np.float64)
    return counts / np.clip(counts.sum(1, keepdims=True), 1, None)


def top_confused_pairs(confusion: Any, class_names: Sequence[str], k: int = 20) -> list[dict[str, Any]]:
    """The ``k`` largest off-diagonal cells, most mistakes first (ties: higher rate of the true class first).

    Returns:
        rows with ``rank, true_id, true_name, pred_id, pred_name, count, rate`` (rate = count / that true class's
        test images); only pairs with at least one mistake.
    """
    counts = np.asarray(confusion, dtype=np.int64)
    support = np.clip(counts.sum(1), 1, None)
    off = counts.copy()
    np.fill_diagonal(off, 0)
    true_ids, pred_ids = np.nonzero(off)
    values = off[true_ids, pred_ids]
    rates = values / support[true_ids]
    order = np.lexsort((pred_ids, true_ids, -rates, -values))[:k]  # last key sorts first
    return [
        {"rank": r + 1, "true_id": int(true_ids[i]), "true_name": str(class_names[true_ids[i]]),
         "pred_id": int(pred_ids[i]), "pred_name": str(class_names[pred_ids[i]]), "count": int(values[i]),
         "rate": float(rates[i])}
        for r, i in enumerate(order)
    ]  # fmt: skip


def write_pairs_csv(pairs: Sequence[dict[str, Any]], path: Path) -> Path:
    """The ranked pairs as CSV (header even when there are no mistakes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = ["rank", "true_id", "true_name", "pred_id", "pred_name", "count", "rate"]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows({**p, "rate": f"{p['rate']:.6f}"} for p in pairs)
    return path


def confusion_figure(confusion: Any, class_names: Sequence[str], normalize: bool = True,
                     max_labels: int = MAX_TICK_LABELS) -> Figure:  # fmt: skip
    """Heat map (rows = true, columns = predicted) with a colour bar; cell values printed up to 20 classes.

    Sized with the class count (6 in at 10 classes, 16 in from 400 on: about 4 px per cell at 555 classes);
    tick labels are thinned to at most ``max_labels`` per axis and long names are shortened in the middle.
    """
    counts = np.asarray(confusion, dtype=np.float64)
    k = counts.shape[0]
    values = row_normalised(counts) if normalize else counts
    side = float(np.clip(6 + k / 40, 6, 16))
    fig, (ax,) = new_figure(side + 1.2, side)
    # many classes: most off-diagonal cells are tiny; a square-root scale keeps the confusions visible
    norm = PowerNorm(0.5, vmin=0, vmax=1 if normalize else None) if k > 50 else None
    image = ax.imshow(values, cmap="Blues", interpolation="nearest", norm=norm,
                      **({} if norm else {"vmin": 0, "vmax": 1 if normalize else None}))  # fmt: skip
    bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02)
    scale = " (square-root colour scale)" if norm else ""
    bar.set_label(("fraction of the true class" if normalize else "test images") + scale, fontsize=FONT)
    ticks = tick_indices(k, max_labels)
    size = FONT - 1 if k <= 30 else max(5, FONT - 3)
    labels = [ellipsize(class_names[i], 24) for i in ticks]
    ax.set_xticks(ticks, labels, rotation=90, fontsize=size)
    ax.set_yticks(ticks, labels, fontsize=size)
    if k <= 20:
        for i, j in np.ndindex(k, k):
            if counts[i, j]:
                text = f"{values[i, j]:.2f}" if normalize else f"{int(counts[i, j])}"
                ax.text(j, i, text, ha="center", va="center", fontsize=FONT - 2,
                        color="white" if values[i, j] > 0.6 * values.max() else "black")  # fmt: skip
    acc = np.trace(counts) / max(counts.sum(), 1)
    shown = "" if len(ticks) == k else f", every {ticks[1] - ticks[0]}th class named"
    ax.set_title(f"Confusion matrix: {k} classes, top-1 {100 * acc:.2f}%{shown}", fontsize=FONT + 1)
    ax.set_xlabel("predicted class", fontsize=FONT)
    ax.set_ylabel("true class", fontsize=FONT)
    return fig


def confused_pairs_figure(pairs: Sequence[dict[str, Any]]) -> Figure:
    """Ranked horizontal bars, most confused pair on top: ``true → predicted``, mistakes and rate."""
    n = max(len(pairs), 1)
    fig, (ax,) = new_figure(8, 1.2 + 0.3 * n)
    labels = [f"{ellipsize(p['true_name'])} → {ellipsize(p['pred_name'])}" for p in pairs]
    counts = [p["count"] for p in pairs]
    ax.barh(range(len(pairs)), counts, color="tab:red")
    ax.set_yticks(range(len(pairs)), labels, fontsize=FONT - 1)
    ax.invert_yaxis()
    for i, p in enumerate(pairs):
        ax.text(p["count"], i, f" {p['count']} ({100 * p['rate']:.1f}%)", va="center", fontsize=FONT - 2)
    ax.set_xlabel("test images of the true class predicted as the other (share of that class)", fontsize=FONT)
    ax.set_title(f"Most confused class pairs (top {len(pairs)})" if pairs else "No mistakes", fontsize=FONT + 1)
    ax.margins(x=0.15)
    return fig


def sorted_accuracy(acc: Sequence[float], class_names: Sequence[str]) -> list[tuple[str, float]]:
    """(name, accuracy) from worst to best (ties in class order); NaN (no test images) dropped."""
    pairs = [(str(n), float(a)) for n, a in zip(class_names, acc, strict=True) if not np.isnan(a)]
    return sorted(pairs, key=lambda p: p[1])


def per_class_accuracy_figure(acc: Sequence[float], class_names: Sequence[str],
                              max_labels: int = MAX_TICK_LABELS, worst: int = 25) -> Figure:  # fmt: skip
    """Per-class top-1 sorted worst to best with the macro mean as a line, every class named up to ``max_labels``
    classes; beyond that the names would overlap, so a second panel names the ``worst`` classes instead."""
    ranked = sorted_accuracy(acc, class_names)
    k = len(ranked)
    values = np.array([100 * a for _, a in ranked])
    many = k > max_labels
    width = 14.0 if many else float(np.clip(3 + k / 5, 6, 14))
    fig, axes = new_figure(width, 5.0, ncols=2 if many else 1)
    ax = axes[0]
    ax.bar(range(k), values, width=1.0 if many else 0.8, color="tab:blue")
    mean = float(values.mean()) if k else float("nan")
    ax.axhline(mean, color="tab:orange", linestyle="--", linewidth=1, label=f"macro mean {mean:.2f}%")
    if many:
        ax.set_xlabel("classes, sorted by accuracy (rank)", fontsize=FONT)
    else:
        ax.set_xticks(range(k), [ellipsize(n) for n, _ in ranked], rotation=90, fontsize=FONT - 1)
        ax.set_xlabel("class (sorted by accuracy)", fontsize=FONT)
    ax.set_ylim(0, 100)
    ax.set_xlim(-0.6, k - 0.4)
    ax.set_ylabel("test top-1 (%)", fontsize=FONT)
    ax.set_title(f"Per-class test accuracy ({k} classes)", fontsize=FONT + 1)
    ax.legend(fontsize=FONT - 1, loc="lower right")
    if many:
        low = ranked[:worst]
        axes[1].barh(range(len(low)), [100 * a for _, a in low], color="tab:red")
        axes[1].set_yticks(range(len(low)), [ellipsize(n, 28) for n, _ in low], fontsize=FONT - 2)
        axes[1].invert_yaxis()
        axes[1].set_xlim(0, 100)
        axes[1].set_xlabel("test top-1 (%)", fontsize=FONT)
        axes[1].set_title(f"The {len(low)} worst classes", fontsize=FONT + 1)
    return fig
