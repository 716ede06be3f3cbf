"""Stop (or skip) on a non-finite loss or gradient norm; never checkpoint weights that a non-finite step produced.

``guard.nonfinite``:

- ``stop`` (default): the run ends with one message (step, epoch, learning rate, loss, gradient norm), exit status
  1, no test stage, no ``metrics.json``; ``last.ckpt`` keeps the last good weights. Without a per-step host
  sync: each step writes one row (loss, gradient norm) into a small device buffer -- one asynchronous copy on
  CUDA, step / epoch / lr stay on the host. The buffer is read -- one sync -- every
  ``check_every_n_steps`` steps (default: ``trainer.log_every_n_steps``, when Lightning logs anyway), at each
  validation start and epoch end, and in ``on_save_checkpoint``, which Lightning calls before it writes any
  checkpoint: a bad step between two checks is therefore caught before its weights could be saved.
- ``skip``: a step whose loss or gradient norm is non-finite is not applied (its gradients are dropped, so the
  optimizer leaves every parameter and its momentum untouched; the LR schedule still advances). Skipped steps are
  counted (``train/skipped_steps``, saved in checkpoints) and each one is logged. Deciding per step needs the
  flag on the host: one sync per step, the price of this mode.
- ``off``: no checks.

Under fp16 mixed precision (a ``GradScaler``), inf/NaN gradients are the scaler's normal signal to lower its
scale (it skips those steps itself), so only the loss is checked there.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch import Tensor

from glsim_pl.errors import UserError
from glsim_pl.utils.logging import RankedLogger

__all__ = ["DivergenceError", "DivergenceGuard"]

log = RankedLogger(__name__)
_MODES = ("stop", "skip", "off")


def _offer_norm(pl_module: Any, norm: Tensor) -> None:
    """The module's clipping may reuse the norm (``GLSimLitModule.configure_gradient_clipping``)."""
    if pl_module is not None:
        pl_module.precomputed_grad_norm = norm


class DivergenceError(UserError):
    """Training produced a non-finite loss or gradient norm (``guard.nonfinite=stop``)."""


class DivergenceGuard(Callback):
    """See the module docstring.

    Args:
        nonfinite: ``stop``, ``skip`` or ``off``.
        check_every_n_steps: steps between host-side checks in ``stop`` mode (None: ``trainer.log_every_n_steps``).
    """

    def __init__(self, nonfinite: Literal["stop", "skip", "off"] = "stop", check_every_n_steps: int | None = None):
        if nonfinite not in _MODES:
            raise UserError(f"guard.nonfinite={nonfinite!r}: expected one of {', '.join(_MODES)}")
        self.mode, self.check_every_n_steps = nonfinite, check_every_n_steps
        self.skipped = 0
        self._loss_ok: Tensor | None = None  # sum of the losses since the last optimizer step (device)
        self._last_loss: Tensor | None = None
        self._rows: Tensor | None = None  # (n, 3) loss sum, last loss, grad norm of the steps since the last check
        self._filled = 0  # rows of _rows in use
        self._where: list[tuple[int, int, float]] = []  # (step, epoch, lr) of each row, on the host
        self._first: tuple[float, ...] | None = None  # (step, epoch, lr, loss, grad norm) of the first bad step

    @property
    def state_key(self) -> str:
        return "DivergenceGuard"

    def state_dict(self) -> dict[str, Any]:
        return {"skipped": self.skipped}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.skipped = int(state_dict.get("skipped", 0))

    # -- per step: device-side bookkeeping -------------------------------------------------------------------
    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: Tensor) -> None:
        if self.mode == "off":
            return
        loss = loss.detach().float().mean()
        # a sum stays non-finite once any micro-batch's loss is: one op per backward instead of a check
        self._loss_ok = loss if self._loss_ok is None else self._loss_ok + loss
        self._last_loss = loss

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        if self.mode == "off" or self._last_loss is None:
            return
        has_scaler = getattr(trainer.precision_plugin, "scaler", None) is not None
        loss_sum, self._loss_ok = self._loss_ok, None
        lr = float(optimizer.param_groups[0]["lr"])
        if self.mode == "skip":
            norm = self._grad_norm(optimizer)
            _offer_norm(pl_module, norm)
            ok = torch.isfinite(loss_sum) if has_scaler else torch.isfinite(loss_sum) & torch.isfinite(norm)
            self._skip_if_bad(trainer, optimizer, ok, lr, norm)
            return
        # stop: one row (loss sum, last loss, grad norm) per step into a device buffer, read at the next check;
        # under a GradScaler non-finite gradients are the scaler's business, so the norm is not even computed
        if has_scaler:
            norm = self._last_loss.new_zeros(())
        else:
            norm = self._grad_norm(optimizer)
            _offer_norm(pl_module, norm)
            norm = norm.float()
        if self._rows is None or self._filled == len(self._rows):
            if self._rows is not None:
                self._check(trainer)  # full: read it now (and start over)
            every = self.check_every_n_steps or trainer.log_every_n_steps or 1
            self._rows = self._last_loss.new_zeros((max(int(every), 1) + 1, 3))
        torch.stack([loss_sum, self._last_loss, norm], out=self._rows[self._filled])
        self._where.append((trainer.global_step + 1, trainer.current_epoch, lr))
        self._filled += 1

    def _grad_norm(self, optimizer: torch.optim.Optimizer) -> Tensor:
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        return torch.nn.utils.get_total_norm(grads) if grads else self._last_loss.new_zeros(())

    def _skip_if_bad(
        self, trainer: L.Trainer, optimizer: torch.optim.Optimizer, ok: Tensor, lr: float, norm: Tensor
    ) -> None:
        if bool(trainer.strategy.reduce_boolean_decision(bool(ok), all=True)):
            return
        for group in optimizer.param_groups:
            for p in group["params"]:
                p.grad = None  # optimizers leave parameters without a gradient (and their state) untouched
        self.skipped += 1
        log.warning(f"guard.nonfinite=skip: skipped step {trainer.global_step + 1} (epoch {trainer.current_epoch}, "
                    f"lr {lr:.3g}, loss {float(self._last_loss):.4g}, grad norm {float(norm):.4g}); "
                    f"{self.skipped} skipped so far")  # fmt: skip

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if self.mode == "skip":
            pl_module.log("train/skipped_steps", float(self.skipped), on_step=True, on_epoch=False)
        elif self.mode == "stop":
            every = self.check_every_n_steps or trainer.log_every_n_steps or 1
            if trainer.global_step % every == 0:
                self._check(trainer)

    # -- host-side checks --------------------------------------------------------------------------------------
    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        """Lightning calls this before writing any checkpoint: refuse to save weights from a non-finite step."""
        self._check(trainer)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking and trainer.state.fn == "fit":
            self._check(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check(trainer)

    def _check(self, trainer: L.Trainer) -> None:
        if self.mode != "stop":
            return
        bad_here = False
        if self._filled:
            rows, where = self._rows[: self._filled], self._where
            finite = torch.isfinite(rows[:, 0]) & torch.isfinite(rows[:, 2])  # (n,)
            self._filled, self._where = 0, []
            if not bool(finite.all()):  # the one host sync per check
                k = int((~finite).nonzero()[0, 0])
                loss, norm = rows[k, 1].item(), rows[k, 2].item()
                self._first = (*where[k], loss, norm)
                bad_here = True
        if not trainer.strategy.reduce_boolean_decision(bad_here or self._first is not None, all=False):
            return
        raise DivergenceError(self._message(trainer))

    def _message(self, trainer: L.Trainer) -> str:
        step, epoch, lr, loss, norm = self._first if self._first is not None else [math.nan] * 5
        where = (f"at step {int(step)} (epoch {int(epoch)}, lr {lr:.3g}): loss {loss:.4g}, grad norm {norm:.4g}"
                 if math.isfinite(step) else "on another rank")  # fmt: skip
        last = _last_checkpoint(trainer)
        kept = f"the last good checkpoint is {last}" if last else "no checkpoint was written before it"
        return (f"training diverged: non-finite loss or gradient {where}; stopped without saving these weights, "
                f"{kept}. Lower optim.lr (or raise optim.warmup_steps), or set guard.nonfinite=skip to skip such "
                "steps")  # fmt: skip


def _last_checkpoint(trainer: L.Trainer) -> str | None:
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.dirpath:
            last = Path(callback.dirpath) / f"{callback.CHECKPOINT_NAME_LAST}{callback.FILE_EXTENSION}"
            if last.is_file():
                return str(last)
    return None
