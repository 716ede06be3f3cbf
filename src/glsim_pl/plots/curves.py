"""Training curves of one run: loss, validation top-1 and learning rate against the optimizer step.

The input is the history :class:`glsim_pl.callbacks.TrainingCurves` keeps (and writes as ``training_curves.json``)::

    {"train": {"step": [...], "loss": [...], "lr": [...]}, "val": {"step": [...], "acc1": [...], "loss": [...]}}
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from glsim_pl.plots import FONT, new_figure

__all__ = ["moving_average", "training_curves_figure"]


def moving_average(values: Sequence[float], window: int) -> np.ndarray:
    """Trailing mean over ``window`` points (shorter at the start), same length as ``values``."""
    x = np.asarray(values, dtype=np.float64)
    if window <= 1 or len(x) == 0:
        return x
    csum = np.cumsum(np.insert(x, 0, 0.0))
    lo = np.maximum(np.arange(1, len(x) + 1) - window, 0)
    return (csum[1:] - csum[lo]) / (np.arange(1, len(x) + 1) - lo)


def training_curves_figure(history: dict[str, Any], title: str | None = None) -> Figure:
    """Three panels: train loss (raw, light; trailing mean over ~2% of the steps, dark) and val loss; val top-1 (%);
    learning rate. Missing series (no validation, no steps yet) leave their panel with a note."""
    train, val = history.get("train", {}), history.get("val", {})
    fig, (ax_loss, ax_acc, ax_lr) = new_figure(10.0, 3.0, ncols=3)
    steps, loss = train.get("step", []), train.get("loss", [])
    if steps:
        ax_loss.plot(steps, loss, color="tab:blue", alpha=0.3, linewidth=0.8, label="train (per step)")
        window = max(1, len(steps) // 50)
        if window > 1:
            ax_loss.plot(steps, moving_average(loss, window), color="tab:blue", linewidth=1.5,
                         label=f"train (mean of {window})")  # fmt: skip
    if val.get("step") and val.get("loss"):
        ax_loss.plot(val["step"], val["loss"], "o-", color="tab:orange", markersize=3, label="val")
    if val.get("step") and val.get("acc1"):
        ax_acc.plot(val["step"], [100 * a for a in val["acc1"]], "o-", color="tab:green", markersize=3, label="val")
        best = int(np.argmax(val["acc1"]))
        ax_acc.annotate(f"best {100 * val['acc1'][best]:.1f}", (val["step"][best], 100 * val["acc1"][best]),
                        textcoords="offset points", xytext=(0, 6), ha="center", fontsize=FONT - 1)  # fmt: skip
        ax_acc.margins(y=0.15)
    else:
        ax_acc.text(0.5, 0.5, "no validation", ha="center", va="center", transform=ax_acc.transAxes, fontsize=FONT)
    if steps and train.get("lr"):
        ax_lr.plot(steps, train["lr"], color="tab:purple", linewidth=1.2)
    for ax, name in ((ax_loss, "loss"), (ax_acc, "val top-1 (%)"), (ax_lr, "learning rate")):
        ax.set_xlabel("optimizer step", fontsize=FONT)
        ax.set_ylabel(name, fontsize=FONT)
        ax.grid(alpha=0.3)
    ax_loss.ticklabel_format(axis="y", useOffset=False)
    if ax_loss.get_legend_handles_labels()[0]:
        ax_loss.legend(fontsize=FONT - 2)
    if title:
        fig.suptitle(title, fontsize=FONT + 1)
    return fig
