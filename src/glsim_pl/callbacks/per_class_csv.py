"""Write the test per-class top-1 accuracy to a CSV (class_id, class_name, acc1, support) and a sorted bar chart
(``test_per_class_acc.png``, also sent to the active trackers as ``test/per_class_acc``)."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch

from glsim_pl.plots import check_formats, save_figure
from glsim_pl.plots.classes import per_class_accuracy_figure
from glsim_pl.utils.logging import RankedLogger
from glsim_pl.utils.trackers import log_figure

__all__ = ["PerClassAccuracyCSV"]

log = RankedLogger(__name__)


class PerClassAccuracyCSV(L.Callback):
    """After each test run, ``<dirpath>/<filename>`` gets one row per class; rank 0 writes it.

    Args:
        dirpath: output folder (the run's output dir).
        filename: CSV file name; the chart is named after it (``.png`` and the other ``figure_formats``).
        figure_formats: any of png, pdf, svg; empty: no chart.
    """

    def __init__(self, dirpath: str, filename: str = "test_per_class_acc.csv",
                 figure_formats: Sequence[str] = ("png",)) -> None:  # fmt: skip
        self.path = Path(dirpath) / filename
        self.figure_formats = check_formats(figure_formats) if figure_formats else []

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Compute on every rank (it syncs), write on rank 0."""
        metric = getattr(pl_module, "test_per_class", None)
        if metric is None or not metric.update_count:
            return
        acc = metric.compute().float().cpu()
        with metric.sync_context():  # compute() puts the rank's own counts back; the support is every rank's
            support = (metric.tp + metric.fn).cpu() if hasattr(metric, "tp") else torch.full_like(acc, float("nan"))
        metric.reset()
        if not trainer.is_global_zero:
            return
        names = pl_module.hparams.get("class_names") or [str(i) for i in range(len(acc))]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["class_id", "class_name", "acc1", "support"])
            for k, (name, a, n) in enumerate(zip(names, acc.tolist(), support.tolist(), strict=True)):
                writer.writerow([k, name, f"{a:.6f}", int(n)])
        log.info(f"per-class test accuracy -> {self.path}")
        if self.figure_formats:
            fig = per_class_accuracy_figure(acc.tolist(), names)
            save_figure(fig, self.path.with_suffix(""), self.figure_formats)
            log_figure(trainer.loggers, "test/per_class_acc", fig, trainer.global_step)
