"""The same figures, images, config and resumed runs in every tracker of a run (TensorBoard, CSV, W&B, MLflow)."""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from lightning.pytorch.loggers import CSVLogger, Logger, MLFlowLogger, TensorBoardLogger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import OmegaConf
from torch import Tensor

from glsim_pl.utils.logging import RankedLogger

if TYPE_CHECKING:
    from matplotlib.figure import Figure


# -- the same figures, images and config in every active tracker ---------------------------------------------------
def _rgb_uint8(image: Tensor | np.ndarray) -> np.ndarray:
    """(3, H, W) float tensor in [0, 1] or (H, W, 3) uint8 array -> (H, W, 3) uint8 array."""
    if isinstance(image, Tensor):
        return (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return np.asarray(image, dtype=np.uint8)


@rank_zero_only
def log_image(loggers: Sequence[Logger], tag: str, image: Tensor | np.ndarray, step: int = 0) -> None:
    """Send one RGB image to each tracker's image API: TensorBoard ``add_image``, W&B ``log_image``, MLflow
    ``log_image`` (artifact ``<tag>/step_<step>.png``). CSV has no image API; the files on disk stand for it."""
    if not loggers:
        return
    array = _rgb_uint8(image)
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(tag, array, step, dataformats="HWC")
        elif isinstance(logger, WandbLogger):
            logger.log_image(key=tag, images=[array], step=step)
        elif isinstance(logger, MLFlowLogger):
            logger.experiment.log_image(logger.run_id, array, artifact_file=f"{tag}/step_{step:06d}.png")


@rank_zero_only
def log_figure(loggers: Sequence[Logger], tag: str, fig: Figure, step: int = 0) -> None:
    """Send a matplotlib figure to each tracker (TensorBoard ``add_figure``, else as an image)."""
    if not loggers:
        return

    from glsim_pl.plots import figure_to_array

    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_figure(tag, fig, step, close=False)
        elif isinstance(logger, WandbLogger | MLFlowLogger):
            log_image([logger], tag, figure_to_array(fig), step)


@rank_zero_only
def log_run_config(loggers: Sequence[Logger], config: dict[str, Any], protocol: dict[str, Any]) -> None:
    """The resolved config and the evaluation protocol as hyperparameters (``config/...``, ``protocol/...``) in
    every tracker, plus ``config.yaml`` as a text/artifact where the tracker keeps files."""
    if not loggers:
        return
    text = OmegaConf.to_yaml(OmegaConf.create(config))
    for logger in loggers:
        logger.log_hyperparams({"config": config, "protocol": protocol})
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_text("config", "```yaml\n" + text + "```", 0)
        elif isinstance(logger, MLFlowLogger):
            logger.experiment.log_text(logger.run_id, text, "config.yaml")
        elif isinstance(logger, WandbLogger):
            (Path(logger.experiment.dir) / "config_resolved.yaml").write_text(text)  # synced with the run's files


def describe_loggers(loggers: Sequence[Logger]) -> list[str]:
    """One line per tracker saying where its records are (for the end-of-run summary)."""
    lines = []
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            lines.append(f"tensorboard: tensorboard --logdir {logger.log_dir}")
        elif isinstance(logger, WandbLogger):
            run = logger.experiment
            offline = getattr(run.settings, "mode", "") == "offline" or os.environ.get("WANDB_MODE") == "offline"
            hint = f" (offline: wandb sync {Path(run.dir).parent})" if offline else f" ({run.url})"
            lines.append(f"wandb: {Path(run.dir).parent}{hint}")
        elif isinstance(logger, MLFlowLogger):
            lines.append(f"mlflow: mlflow ui --backend-store-uri {logger._tracking_uri} (run {logger.run_id})")
        elif isinstance(logger, CSVLogger):
            lines.append(f"csv: {logger.log_dir}/metrics.csv")
    return lines


@rank_zero_only
def finish_trackers(loggers: Sequence[Logger]) -> None:
    """End the W&B run (Lightning leaves it open until exit): a sweep's next job in this process would otherwise
    log into it. The other trackers close in ``finalize``."""
    if any(isinstance(logger, WandbLogger) for logger in loggers):
        import wandb

        wandb.finish()


# -- a resumed run continues its TensorBoard and CSV runs --------------------------------------------------------------
def _newest_version(root: Path) -> int | None:
    versions = [int(m.group(1)) for p in root.glob("version_*") if (m := re.fullmatch(r"version_(\d+)", p.name))]
    return max(versions, default=None)


class _ContinuedCSVWriter(ExperimentWriter):
    """Lightning's CSV writer deletes an existing ``metrics.csv``; this one keeps its rows logged before ``step``
    (later rows are the work being redone) and appends to them."""

    def __init__(self, log_dir: str, step: int) -> None:
        self._resume_step = step
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        path = Path(self.metrics_file_path)
        if not path.is_file():
            return
        with path.open(newline="") as file:
            reader = csv.DictReader(file)
            keys, rows = list(reader.fieldnames or []), list(reader)
        kept = [row for row in rows if row.get("step") in (None, "") or float(row["step"]) < self._resume_step]
        if len(kept) < len(rows):
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            with tmp.open("w", newline="") as file:
                writer = csv.DictWriter(file, fieldnames=keys)
                writer.writeheader()
                writer.writerows(kept)
            os.replace(tmp, path)
        self.metrics_keys = sorted(keys)


def continue_logger_runs(loggers: Sequence[Logger], checkpoint: str | Path | None, step: int = 0) -> None:
    """Point every TensorBoard and CSV logger of a run resumed from ``checkpoint`` at the newest version folder it
    finds instead of a new ``version_<n+1>``: TensorBoard hides the old events from the resumed step on
    (``purge_step``), CSV drops its rows from that step on; both then continue. Call before anything is logged.

    Logs the step it resumes from: a line (console, ``train.log``) and ``resume/from_step`` in every tracker.
    """
    if checkpoint is None:
        return
    continued = []
    for logger in loggers:
        if not isinstance(logger, TensorBoardLogger | CSVLogger) or logger._experiment is not None:
            continue
        root = Path(logger.root_dir)
        if logger._version is None:
            newest = _newest_version(root)
            if newest is None:
                continue  # first run in this folder (a checkpoint from elsewhere): a fresh version_0
            logger._version = newest
        if not Path(logger.log_dir).is_dir():
            continue
        if isinstance(logger, TensorBoardLogger):
            logger._kwargs["purge_step"] = step
        elif rank_zero_only.rank == 0:
            logger._experiment = _ContinuedCSVWriter(logger.log_dir, step)
        continued.append(logger.log_dir)
    where = f"; continuing {', '.join(continued)}" if continued else ""
    RankedLogger(__name__).info(f"resuming from {checkpoint} at step {step}{where}")
    for logger in loggers:
        logger.log_metrics({"resume/from_step": step}, step=step)


__all__ = [
    "continue_logger_runs",
    "describe_loggers",
    "finish_trackers",
    "log_figure",
    "log_image",
    "log_run_config",
]
