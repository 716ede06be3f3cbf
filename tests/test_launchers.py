"""Hydra launchers: the SLURM (submitit) and local-parallel (joblib) configs compose; submitit_local runs a sweep."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf


def test_slurm_launcher_composes_one_task_per_gpu(make_cfg) -> None:
    cfg = make_cfg("hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2", tiny=False)
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"].endswith("submitit_launcher.SlurmLauncher")
    assert launcher["gpus_per_node"] == launcher["tasks_per_node"] == 4
    assert launcher["nodes"] == 2
    assert launcher["cpus_per_task"] == cfg.dataset.num_workers
    assert launcher["timeout_min"] > 0
    assert launcher["max_num_timeout"] == 0  # Lightning requeues, not submitit


def test_plugin_launchers_compose(make_cfg) -> None:
    local = make_cfg("hydra/launcher=submitit_local", tiny=False).hydra.launcher
    assert local._target_.endswith("submitit_launcher.LocalLauncher")
    parallel = make_cfg("hydra/launcher=parallel", tiny=False).hydra.launcher
    assert parallel._target_.endswith("joblib_launcher.JoblibLauncher")
    assert parallel.n_jobs == 2


@pytest.mark.slow
def test_submitit_local_runs_a_two_point_sweep(tmp_path: Path) -> None:
    sweep = tmp_path / "multirun"
    cmd = [sys.executable, "-m", "glsim_pl.train", "-m", "hydra/launcher=submitit_local",
           "hydra.launcher.timeout_min=10",
           "experiment=smoke_reproduce", "seed=1,2", "trainer.max_epochs=1", "dataset.train_size=40",
           "dataset.test_size=20", f"hydra.sweep.dir={sweep}"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seeds = sorted(json.loads(p.read_text())["seed"] for p in sweep.glob("*/metrics.json"))
    assert seeds == [1, 2]
    assert list(sweep.glob(".submitit/*"))  # really went through submitit


def test_slurm_signal_before_the_time_limit_is_the_one_lightning_requeues_on() -> None:
    code = (
        "import glsim_pl.train\n"
        "from submitit.slurm.slurm import _make_sbatch_string\n"
        "print(_make_sbatch_string(command='x', folder='/tmp/f', signal_delay_s=120))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "SUBMITIT_PREEMPT_SIGNAL"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "--signal=USR1@120" in out.stdout
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    assert SLURMEnvironment().requeue_signal == signal.SIGUSR1
