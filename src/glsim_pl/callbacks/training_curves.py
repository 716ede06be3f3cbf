"""At the end of fit: ``training_curves.png`` (loss, val top-1 and lr vs step) and ``training_curves.json`` (the
numbers) in the run folder, beside ``metrics.json``; the figure also goes to the trackers as ``train/curves``.

The history is kept here, not read back from a tracker, so it is the same with any logger, ``logger=none``
included. Per step it keeps a reference to the (device) loss and the current lr; the losses are read back to the
host once per epoch (one sync) and when a checkpoint is written, whose callback state holds the history: a resumed
run's curves cover the whole run.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch

from glsim_pl.callbacks.progress_log import step_loss
from glsim_pl.plots import check_formats, save_figure
from glsim_pl.plots.curves import training_curves_figure
from glsim_pl.utils.logging import RankedLogger
from glsim_pl.utils.trackers import log_figure

__all__ = ["TrainingCurves"]

log = RankedLogger(__name__)


class TrainingCurves(L.Callback):
    """Record train loss and lr per batch, val loss and top-1 per validation; write the figure at fit end (rank 0).

    Args:
        dirpath: output folder (the run folder).
        filename: stem of the figure (``.png`` and the other ``figure_formats``) and of the ``.json``.
        figure_formats: any of png, pdf, svg; empty: the JSON only.
    """

    def __init__(self, dirpath: str, filename: str = "training_curves", figure_formats: Sequence[str] = ("png",)):
        self.stem = Path(dirpath) / filename
        self.figure_formats = check_formats(figure_formats) if figure_formats else []
        self.train: dict[str, list] = {"step": [], "loss": [], "lr": []}
        self.val: dict[str, list] = {"step": [], "acc1": [], "loss": []}
        self._pending: list[torch.Tensor] = []

    # -- per step: references only ---------------------------------------------------------------------------------
    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not trainer.is_global_zero:
            return
        loss = step_loss(outputs, trainer)
        if loss is None:
            return
        self._pending.append(loss)
        self.train["step"].append(trainer.global_step)
        lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else float("nan")
        self.train["lr"].append(lr)  # a tensor lr (capturable optimizers) is read at the flush

    def _flush(self) -> None:
        if self._pending:
            self.train["loss"] += torch.stack(self._pending).float().cpu().tolist()
            self._pending = []
        self.train["lr"] = [float(v) for v in self.train["lr"]]

    # -- per epoch -------------------------------------------------------------------------------------------------
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._flush()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or trainer.state.fn != "fit":
            return
        metrics = trainer.callback_metrics
        if "val/acc1" not in metrics:
            return
        self.val["step"].append(trainer.global_step)
        self.val["acc1"].append(float(metrics["val/acc1"]))
        self.val["loss"].append(float(metrics.get("val/loss", float("nan"))))

    # -- resume ----------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        self._flush()
        return {"train": {k: list(v) for k, v in self.train.items()}, "val": {k: list(v) for k, v in self.val.items()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.train = {k: list(v) for k, v in state_dict["train"].items()}
        self.val = {k: list(v) for k, v in state_dict["val"].items()}
        self._pending = []

    # -- the files -------------------------------------------------------------------------------------------------
    def history(self) -> dict[str, Any]:
        """The recorded series (what ``training_curves.json`` holds)."""
        self._flush()
        return {"train": self.train, "val": self.val}

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        history = self.history()
        self.stem.parent.mkdir(parents=True, exist_ok=True)
        self.stem.with_suffix(".json").write_text(json.dumps(history))
        if self.figure_formats:
            fig = training_curves_figure(history)
            paths = save_figure(fig, self.stem, self.figure_formats)
            log_figure(trainer.loggers, "train/curves", fig, trainer.global_step)
            log.info(f"training curves -> {paths[0]}")
