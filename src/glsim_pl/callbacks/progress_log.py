"""Plain progress lines for logs that are files (``nohup``, SLURM, CI), where a terminal progress bar shows nothing
until the run ends. Every ``every_n_steps`` optimizer steps or ``every_n_seconds`` seconds, whichever comes first::

    step 40/400 (epoch 2/10) loss 2.2817 lr 0.00842 96.3 img/s ETA 0:03:12

and at the end of each training epoch the epoch's training loss and validation metrics::

    epoch 2/10 done in 0:00:21: train/loss 2.2790 val/acc1 0.2500 val/acc1_macro 0.2333 val/acc5 0.7000 val/loss 2.2610

Both go through Python logging (the ``glsim_pl`` loggers): to the console and to ``<run dir>/train.log``. The loss is
the mean over the steps since the previous line (rank 0's batches), the epoch's training loss the images-weighted mean
of rank 0's steps (the ``train/loss_epoch`` the module logs, which reaches ``callback_metrics`` only after the
callbacks' epoch-end hooks). Per step the callback compares an int, reads the
clock and keeps a reference to the (device) loss; the losses are read back to the host, one sync, only when a line is
printed.
"""

from __future__ import annotations

import math
import sys
import time
from collections import deque
from datetime import timedelta
from typing import Any

import lightning as L
import torch

from glsim_pl.errors import UserError
from glsim_pl.utils.logging import RankedLogger

__all__ = ["ProgressLog", "progress_bar_callbacks", "progress_lines_on"]

log = RankedLogger(__name__)

_MAX_PENDING = 10_000  # losses kept between two lines (bounds memory when lines are far apart)


def progress_lines_on(lines: Any) -> bool:
    """``progress.lines``: ``auto`` (on when stdout is not a terminal), ``true`` or ``false``."""
    value = str(lines).lower()
    if value == "auto":
        return not (hasattr(sys.stdout, "isatty") and sys.stdout.isatty())
    if value in ("true", "false"):
        return value == "true"
    raise UserError(f"progress.lines={lines!r}: expected auto, true or false")


def _clock(seconds: float) -> str:
    return str(timedelta(seconds=round(seconds)))


def step_loss(outputs: Any, trainer: L.Trainer) -> torch.Tensor | None:
    """The training step's loss tensor, detached (still on the device: nothing is read back), or None.

    With gradient accumulation Lightning hands the callbacks the loss divided by ``accumulate_grad_batches`` (the
    share it back-propagates); the batch's own loss, the one ``train/loss`` logs, is that times the accumulation.
    """
    loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
    if not isinstance(loss, torch.Tensor):
        return None
    accumulation = int(getattr(trainer, "accumulate_grad_batches", 1) or 1)
    return loss.detach() * accumulation if accumulation > 1 else loss.detach()


def _batch_size(batch: Any) -> int:
    first = batch[0] if isinstance(batch, list | tuple) else batch
    return int(first.shape[0]) if isinstance(first, torch.Tensor) else 0


class ProgressLog(L.Callback):
    """Log a progress line every ``every_n_steps`` optimizer steps or ``every_n_seconds``, and one line per epoch.

    Args:
        every_n_steps: optimizer steps between lines (``None`` or 0: no step trigger).
        every_n_seconds: seconds between lines (``None`` or 0: no time trigger).
    """

    def __init__(self, every_n_steps: int | None = 100, every_n_seconds: float | None = 60.0) -> None:
        for key, value in (("every_n_steps", every_n_steps), ("every_n_seconds", every_n_seconds)):
            if value is not None and (not isinstance(value, int | float) or value < 0):
                raise UserError(f"progress.{key}={value!r}: expected a number >= 0 or null")
        self.every_n_steps = int(every_n_steps or 0)
        self.every_n_seconds = float(every_n_seconds or 0.0)
        self._losses: deque[torch.Tensor] = deque(maxlen=_MAX_PENDING)
        self._epoch_loss: torch.Tensor | None = None  # sum of loss x images this epoch (on the device)
        self._epoch_images = 0

    # -- clocks ---------------------------------------------------------------------------------------------------
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        now = time.monotonic()
        self._fit_start, self._fit_start_step = now, trainer.global_step  # after a resume: the restored step
        self._window_start, self._window_images, self._last_step = now, 0, trainer.global_step
        self._epoch_start, self._val_ran = now, False  # a mid-epoch resume starts without on_train_epoch_start
        self._epoch_loss, self._epoch_images = None, 0
        self._total: float | None = None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_start = self._window_start = time.monotonic()  # img/s counts training time only
        self._window_images = 0
        self._val_ran = False
        self._epoch_loss, self._epoch_images = None, 0

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._val_ran = True

    # -- per step: nothing read from the device --------------------------------------------------------------------
    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not trainer.is_global_zero:
            return
        images = _batch_size(batch)
        if (loss := step_loss(outputs, trainer)) is not None:
            self._losses.append(loss)
            weighted = loss.float() * images
            self._epoch_loss = weighted if self._epoch_loss is None else self._epoch_loss + weighted
            self._epoch_images += images
        self._window_images += images
        step = trainer.global_step
        if step == self._last_step:  # gradient accumulation: no optimizer step yet
            return
        due_step = self.every_n_steps and step % self.every_n_steps == 0
        now = time.monotonic()
        if due_step or (self.every_n_seconds and now - self._window_start >= self.every_n_seconds):
            self._print_step(trainer, step, now)

    def _print_step(self, trainer: L.Trainer, step: int, now: float) -> None:
        if self._total is None:  # read once the loaders exist (after a resume restored their position)
            self._total = float(trainer.estimated_stepping_batches)
        loss = torch.stack(list(self._losses)).float().mean().item() if self._losses else float("nan")
        self._losses.clear()
        lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else float("nan")
        images_per_s = self._window_images * trainer.world_size / max(now - self._window_start, 1e-9)
        parts = [f"step {step}/{int(self._total)}" if math.isfinite(self._total) else f"step {step}"]
        if trainer.max_epochs and trainer.max_epochs > 0:
            parts.append(f"(epoch {trainer.current_epoch + 1}/{trainer.max_epochs})")
        parts += [f"loss {loss:.4f}", f"lr {float(lr):.4g}", f"{images_per_s:.1f} img/s"]
        done = step - self._fit_start_step
        if done > 0 and math.isfinite(self._total):
            parts.append(f"ETA {_clock((self._total - step) * (now - self._fit_start) / done)}")
        log.info(" ".join(parts))
        self._window_start, self._window_images, self._last_step = now, 0, step

    # -- per epoch -------------------------------------------------------------------------------------------------
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Runs after the epoch's validation (Lightning validates inside the training epoch)."""
        if not trainer.is_global_zero:
            return
        metrics = trainer.callback_metrics
        parts = []
        if self._epoch_loss is not None and self._epoch_images:
            parts.append(f"train/loss {float(self._epoch_loss) / self._epoch_images:.4f}")
        if self._val_ran:
            parts += [f"{k} {float(v):.4f}" for k, v in sorted(metrics.items()) if k.startswith("val/")]
        total = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        took = _clock(time.monotonic() - self._epoch_start)
        log.info(f"epoch {trainer.current_epoch + 1}{total} done in {took}: " + " ".join(parts))


def display_callbacks(progress: Any, trainer_cfg: Any, cuda: bool, callbacks: list[Any]) -> tuple[list[Any], dict]:
    """What the run prints while it trains: plain lines (``progress.lines``) in place of the progress bar, or the
    bar; the model summary without unmeasured FLOPs. Returns (callbacks to add, Trainer keyword overrides)."""
    from lightning.pytorch.callbacks import ModelSummary, ProgressBar

    from glsim_pl.callbacks.model_summary import ParameterSummary
    from glsim_pl.callbacks.progress_log import progress_bar_callbacks

    progress = dict(progress or {})
    added, overrides = [], {}
    unknown = sorted(set(progress) - {"lines", "every_n_steps", "every_n_seconds"})
    if unknown:
        raise UserError(f"progress.{unknown[0]}: unknown key (expected lines, every_n_steps, every_n_seconds)")
    if progress_lines_on(progress.pop("lines", "auto")):
        added.append(ProgressLog(**progress))
        if not any(isinstance(c, ProgressBar) for c in callbacks):  # a bar the user configured stays
            overrides["enable_progress_bar"] = False
    else:
        added += progress_bar_callbacks(trainer_cfg, cuda, callbacks)  # no per-step host read of the loss on CUDA
    if trainer_cfg.get("enable_model_summary", True) and not any(isinstance(c, ModelSummary) for c in callbacks):
        added.append(ParameterSummary())
        overrides["enable_model_summary"] = False  # Lightning would add its own (and say it skipped it)
    return added, overrides


def progress_bar_callbacks(trainer_cfg: Any, cuda: bool, callbacks: list[Any]) -> list[Any]:
    """On CUDA, a progress bar that reads its (tensor) metrics every ``log_every_n_steps`` steps, not every step.

    Lightning's default bar refreshes each step and turns the logged loss into a Python float there: a host sync
    per step. CPU runs keep the default bar (nothing to overlap with).
    """
    from lightning.pytorch.callbacks import ProgressBar, TQDMProgressBar

    has_bar = any(isinstance(c, ProgressBar) for c in callbacks)
    if not cuda or has_bar or not trainer_cfg.get("enable_progress_bar", True):
        return []
    return [TQDMProgressBar(refresh_rate=max(int(trainer_cfg.get("log_every_n_steps") or 50), 1))]
