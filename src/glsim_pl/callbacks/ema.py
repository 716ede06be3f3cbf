"""An exponential moving average of the weights (``ema.decay``): validation, the best checkpoint and test use it.

Lightning's ``EMAWeightAveraging`` keeps the average, swaps it in for every validation epoch and writes it as the
checkpoint's ``state_dict`` (the training weights go to ``current_model_state``, so a resume continues both). Its
``on_load_checkpoint`` would, outside fit too, put the training weights back; then ``trainer.test(ckpt_path=best)``
would test other weights than validation selected. Here a checkpoint read for test / validate / predict keeps its
``state_dict``: the average.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import EMAWeightAveraging
from lightning.pytorch.trainer.states import TrainerFn

__all__ = ["WeightEMA"]


class WeightEMA(EMAWeightAveraging):
    """EMA of every parameter and buffer, updated after each optimizer step: avg = decay * avg + (1 - decay) * w."""

    def __init__(self, decay: float) -> None:
        super().__init__(decay=decay, use_buffers=True)

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if trainer.state.fn == TrainerFn.FITTING:  # a resume: the average and the training weights both come back
            super().on_load_checkpoint(trainer, pl_module, checkpoint)
