"""hparams_search=<name>: Hydra's Optuna sweeper over the official LR grid and GLSim's selector knobs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra.types import RunMode
from omegaconf import OmegaConf

from tests.helpers.configs import TINY_SYNTHETIC

SWEEPER = "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"


def test_lr_grid_is_the_official_grid_on_validation(make_cfg) -> None:
    cfg = make_cfg("hparams_search=lr_grid", tiny=False)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_ == SWEEPER
    assert sweeper.sampler._target_ == "optuna.samplers.GridSampler"
    assert sweeper.direction == "maximize"
    assert sweeper.params["optim.lr"] == "choice(0.03, 0.01, 0.003, 0.001)"
    assert sweeper.n_trials == 4
    assert cfg.optimized_metric == "val/acc1_best"  # selection on validation, never on test
    assert cfg.hydra.mode == RunMode.MULTIRUN  # no -m needed


def test_glsim_selector_search_is_seeded_tpe(make_cfg) -> None:
    cfg = make_cfg("hparams_search=glsim_selector", tiny=False)
    sweeper = cfg.hydra.sweeper
    assert sweeper.sampler._target_ == "optuna.samplers.TPESampler"
    assert sweeper.sampler.seed is not None
    assert set(sweeper.params) == {"method.top_o", "method.sim_metric"}
    assert sweeper.params["method.sim_metric"] == "choice(cos, l1, l2)"
    assert cfg.method.method == "glsim"


def test_search_composes_with_the_slurm_launcher(make_cfg) -> None:
    cfg = make_cfg("hparams_search=lr_grid", "hydra/launcher=slurm", "trainer=gpu", tiny=False)
    assert cfg.hydra.sweeper._target_ == SWEEPER
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"].endswith("submitit_launcher.SlurmLauncher")
    assert launcher["tasks_per_node"] == cfg.trainer.devices


@pytest.mark.slow
def test_two_trial_lr_search_on_the_synthetic_set(tmp_path: Path) -> None:
    """A real Optuna study through Hydra (basic launcher): two grid trials, each a normal run, best params saved."""
    sweep = tmp_path / "multirun"
    cmd = [sys.executable, "-m", "glsim_pl.train", "hparams_search=lr_grid", "hydra.sweeper.n_trials=2",
           *TINY_SYNTHETIC, "dataset.train_size=40", "dataset.test_size=10", "logger=none",
           f"hydra.sweep.dir={sweep}"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/metrics.json"))]
    lrs = sorted(r["config"]["optim"]["lr"] for r in records)
    assert len(lrs) == 2 and len(set(lrs)) == 2
    assert set(lrs) <= {0.03, 0.01, 0.003, 0.001}
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["name"] == "optuna"
    assert best["best_value"] == pytest.approx(max(r["metrics"]["val/acc1_best"] for r in records))
    assert best["best_params"]["optim.lr"] in lrs
