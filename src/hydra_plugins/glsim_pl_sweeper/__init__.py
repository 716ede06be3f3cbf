"""``hydra/sweeper=merging`` (glsim_pl's default): Hydra's basic sweeper that composes every job first and runs jobs
with identical composed configs once (:mod:`glsim_pl.config.sweeper`). Hydra imports plugin packages at
start-up, so this one imports glsim_pl (torch) only when it sweeps."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.types import Override
from hydra.core.utils import JobStatus
from omegaconf import OmegaConf

__all__ = ["MergingSweeper"]

log = logging.getLogger("glsim_pl.config.sweeper")


class MergingSweeper(BasicSweeper):
    """Options as Hydra's basic sweeper (``max_batch_size``, ``params``)."""

    def split_arguments(self, overrides: list[Override], max_batch_size: int | None) -> list[list[list[str]]]:
        from glsim_pl.config.sweeper import merge_jobs

        jobs = [job for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]
        unique, line = merge_jobs(jobs, self._compose)
        if line:
            log.info(line)
        size = max_batch_size or len(unique) or 1
        return [unique[i : i + size] for i in range(0, len(unique), size)]

    def sweep(self, arguments: list[str]) -> Any:
        """Hydra's sweep; then, if jobs failed (each wrote ``failed.json``, the others ran), exit 1 naming them."""
        returns = super().sweep(arguments)
        failed = []
        for job in (r for batch in returns for r in batch):
            folder = OmegaConf.select(job.hydra_cfg, "hydra.runtime.output_dir") if job.hydra_cfg else None
            refused = job.status == JobStatus.COMPLETED and isinstance(job.return_value, dict)
            if refused:  # the folder holds another run: it says why, it wrote nothing there
                failed.append(f"{folder} (refused: {job.return_value.get('failed')})")
            elif folder and (Path(folder) / "failed.json").is_file():
                failed.append(f"{folder}/failed.json")
        if failed:
            log.error(f"sweep: {len(failed)} job(s) failed: {'; '.join(failed)}")
            raise SystemExit(1)
        return returns

    def _compose(self, job: list[str]) -> dict[str, Any]:
        """The job's config as Hydra will launch it, without the ``hydra`` node (job numbers and folders differ)."""
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(job))
        plain = OmegaConf.to_container(cfg, resolve=False)
        plain.pop("hydra", None)
        return plain
