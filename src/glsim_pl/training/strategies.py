"""DDP that works inside a Hydra multirun: child processes re-run *this job's* saved config, not the whole sweep.

Lightning's ``strategy=ddp`` (popen) starts ranks 1..N-1 by re-running the command line. Under Hydra it appends
``sys.argv[1:]`` plus ``hydra.run.dir=<run dir>``; in a multirun (``-m seed=1,10,100``) every child therefore
starts the *whole sweep* again, in the run-mode folder. ``HydraDDPStrategy`` re-launches each child with the job's
own composed config instead (``-cp <job>/.hydra -cn config.yaml hydra.run.dir=<job>``), so each sweep job starts
exactly its own DDP processes in its own folder. Under SLURM with one task per GPU, or with ``start_method=spawn``,
nothing is re-launched and this class behaves as Lightning's ``DDPStrategy``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from unittest import mock

import torch
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.strategies.launchers import subprocess_script

from glsim_pl.errors import UserError
from glsim_pl.training.run_guard import SAVED_CONFIG

__all__ = ["HydraDDPStrategy", "hydra_job_command"]


def hydra_job_command(local_rank: int) -> tuple[list[str], str]:
    """The command (and cwd) that re-runs the current Hydra job, as DDP rank ``local_rank``."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from hydra.utils import get_original_cwd

    import __main__

    hydra_cfg = HydraConfig.get()
    spec = getattr(__main__, "__spec__", None)
    command = [sys.executable, "-m", spec.name] if spec is not None else [sys.executable, os.path.abspath(sys.argv[0])]
    out = Path(hydra_cfg.runtime.output_dir)
    if hydra_cfg.output_subdir is None:
        if hydra_cfg.mode == RunMode.MULTIRUN:
            raise UserError("hydra.output_subdir=null with a multirun and trainer=ddp: DDP ranks need the saved config")
        command += sys.argv[1:]
    else:
        saved = out / SAVED_CONFIG  # where the run's staged config went when it started (run_guard)
        saved = saved if (saved / "config.yaml").is_file() else out / hydra_cfg.output_subdir
        command += ["-cp", str(saved), "-cn", "config.yaml"]
    command += [
        f'hydra.run.dir="{out}"',
        f"hydra.job.name={hydra_cfg.job.name}_rank{local_rank}",
        "hydra.output_subdir=null",
    ]
    return command, get_original_cwd()


_JOB_MARK = "GLSIM_DDP_JOB"  # set in rank 0 after it started its children: which job the DDP env belongs to
_DDP_ENV = ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", _JOB_MARK)


def _current_job() -> str:
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get().runtime.output_dir if HydraConfig.initialized() else ""


class _HydraJobLauncher(subprocess_script._SubprocessScriptLauncher):
    def _call_children_scripts(self) -> None:
        with mock.patch.object(subprocess_script, "_hydra_subprocess_cmd", hydra_job_command):
            super()._call_children_scripts()
        os.environ[_JOB_MARK] = _current_job()  # after the launch: the children do not inherit it


def _forget_previous_job() -> None:
    """Rank 0 of an earlier sweep job in this process left its DDP env and process group: drop them, so that
    this job starts (and rendezvous with) its own children instead of waiting for the old, finished ones."""
    if os.environ.get(_JOB_MARK) in (None, _current_job()):
        return
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    for key in _DDP_ENV:
        os.environ.pop(key, None)


class HydraDDPStrategy(DDPStrategy):
    """``DDPStrategy`` whose popen launcher re-runs the current Hydra job (see the module docstring)."""

    def _configure_launcher(self) -> None:
        _forget_previous_job()
        super()._configure_launcher()
        if isinstance(self._launcher, subprocess_script._SubprocessScriptLauncher):
            self._launcher = _HydraJobLauncher(self.cluster_environment, self.num_processes, self.num_nodes)
