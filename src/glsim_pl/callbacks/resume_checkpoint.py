"""``ModelCheckpoint`` whose ``last.ckpt`` follows every epoch, not only the epochs that improved the monitor.

Lightning 2.6 writes ``last.ckpt`` at an epoch end only when a top-k checkpoint was written at the same step, so
with ``save_top_k: 1`` a run killed after an epoch that did not improve ``val/acc1`` resumes from the last
*improving* epoch and repeats (different) work. Resuming must continue from the latest epoch end.
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

__all__ = ["ResumeCheckpoint"]


class ResumeCheckpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` (same arguments), plus ``last.ckpt`` at every epoch end when ``save_last``."""

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._save_last_if_missing(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._save_last_if_missing(trainer)

    def _save_last_if_missing(self, trainer: L.Trainer) -> None:
        # _should_skip_saving_checkpoint: sanity check, not fitting, or a checkpoint already written at this step
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
