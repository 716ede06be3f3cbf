"""Save ``last.ckpt`` when the process is asked to stop (SIGTERM: SLURM pre-emption, ``scancel``, ``kill``).

Lightning's signal connector turns SIGTERM into ``trainer.received_sigterm`` and ends the fit with
``SIGTERMException`` right after the current training batch, without saving. This callback runs in that window
(``on_train_batch_end``) and writes a full checkpoint (weights, optimizer, LR schedule, loop position) to
``<output_dir>/checkpoints/last.ckpt``, so ``ckpt_path=last`` resumes where the run stopped. Under SLURM,
Lightning's ``SLURMEnvironment`` (auto-requeue) handles SIGUSR1 before the time limit on its own: it saves an
``hpc_ckpt_*.ckpt`` and requeues the job, which restores from it automatically. The write is atomic
(:class:`glsim_pl.training.checkpointing.AtomicCheckpointIO`) and refused after a non-finite step (the divergence
guard).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.exceptions import SIGTERMException

from glsim_pl.utils.logging import RankedLogger

__all__ = ["SigtermCheckpoint"]

log = RankedLogger(__name__)


class SigtermCheckpoint(Callback):
    """On SIGTERM, save ``<dirpath>/<filename>`` before Lightning stops the run."""

    def __init__(self, dirpath: str, filename: str = "last.ckpt") -> None:
        self.path = Path(dirpath) / filename
        self.saved = False

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if getattr(trainer, "received_sigterm", False):
            self._save(trainer)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        """The signal came after this callback's batch-end hook: Lightning stops with ``SIGTERMException``."""
        if isinstance(exception, SIGTERMException) and trainer.state.fn == "fit":
            self._save(trainer)

    def _save(self, trainer: L.Trainer) -> None:
        if self.saved:
            return
        trainer.save_checkpoint(self.path)  # every rank calls it (ranks stop together); rank 0 writes
        self.saved = True
        log.warning(f"SIGTERM: saved {self.path} at step {trainer.global_step}; resume with ckpt_path=last")
