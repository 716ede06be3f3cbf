"""Lightning's plain-text model summary, without the FLOPs column and the "Total Flops: 0" line when the FLOPs were
not measured (Lightning measures them only for a module with an ``example_input_array``; the cost table of
``python -m glsim_pl.bench model`` is where this project reports FLOPs)."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.callbacks import ModelSummary
from lightning.pytorch.utilities.model_summary.model_summary import _format_summary_table

from glsim_pl.utils.logging import RankedLogger

__all__ = ["ParameterSummary"]

log = RankedLogger("lightning.pytorch.callbacks.model_summary")


class ParameterSummary(ModelSummary):
    """``ModelSummary`` (same arguments) that leaves out FLOPs it did not count."""

    @staticmethod
    def summarize(
        summary_data: list[tuple[str, list[str]]],
        total_parameters: int,
        trainable_parameters: int,
        model_size: float,
        total_training_modes: dict[str, int],
        total_flops: int,
        **summarize_kwargs: Any,
    ) -> None:
        if total_flops:
            ModelSummary.summarize(summary_data, total_parameters, trainable_parameters, model_size,
                                   total_training_modes, total_flops, **summarize_kwargs)  # fmt: skip
            return
        columns = [column for column in summary_data if column[0] != "FLOPs"]
        table = _format_summary_table(total_parameters, trainable_parameters, model_size, total_training_modes, 0,
                                      *columns)  # fmt: skip
        lines = table.splitlines()
        log.info("\n" + "\n".join(line for line in lines if not line.rstrip().endswith("Total Flops")))
