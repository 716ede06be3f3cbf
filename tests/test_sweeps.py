"""Multiruns over method x selector x seed: the ViT baseline once per seed, identical jobs merged in one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from glsim_pl.config.sweeper import drop_unused_overrides, merge_jobs
from glsim_pl.config.validate import validate_config
from glsim_pl.errors import UserError
from tests.helpers.configs import TINY_SYNTHETIC, compose_cfg

SWEEP = [["method=glsim", "method=vit"], ["method.selector=gls", "method.selector=rollout"], ["seed=1", "seed=2"]]


def _jobs() -> list[list[str]]:
    return [[m, s, seed] for m in SWEEP[0] for s in SWEEP[1] for seed in SWEEP[2]]


def _composer(tmp_path: Path):
    def compose(job: list[str]) -> dict:
        plain = OmegaConf.to_container(compose_cfg(job, tmp_path / "run"), resolve=False)
        plain.pop("hydra")
        return plain

    return compose


def test_method_x_selector_x_seed_gives_4_glsim_and_2_vit_jobs(tmp_path: Path) -> None:
    unique, line = merge_jobs(_jobs(), _composer(tmp_path))
    assert unique == [
        ["method=glsim", "method.selector=gls", "seed=1"], ["method=glsim", "method.selector=gls", "seed=2"],
        ["method=glsim", "method.selector=rollout", "seed=1"], ["method=glsim", "method.selector=rollout", "seed=2"],
        ["method=vit", "seed=1"], ["method=vit", "seed=2"],
    ]  # fmt: skip
    assert line == "sweep: 8 jobs -> 6, identical composed configs merged (method=vit ignores method.selector=rollout)"


def test_repeated_jobs_merge_and_nothing_else(tmp_path: Path) -> None:
    unique, line = merge_jobs([["seed=1"], ["seed=2"], ["seed=1"]], _composer(tmp_path))
    assert unique == [["seed=1"], ["seed=2"]]
    assert "repeated: seed=1" in line
    assert merge_jobs([["seed=1"], ["seed=2"]], _composer(tmp_path)) == ([["seed=1"], ["seed=2"]], "")


def test_only_the_glsim_keys_of_a_vit_job_are_dropped() -> None:
    job = ["method=vit", "method.selector=psm", "method.top_o=4", "optim.lr=0.1"]
    assert drop_unused_overrides("vit", job) == (["method=vit", "optim.lr=0.1"], job[1:3])
    assert drop_unused_overrides("glsim", job) == (job, [])


def test_a_single_vit_run_with_a_selector_is_an_error(tmp_path: Path) -> None:
    cfg = compose_cfg([*TINY_SYNTHETIC, "method=vit", "method.selector=rollout"], tmp_path / "run")
    with pytest.raises(UserError, match="method.selector='rollout' with method=vit"):
        validate_config(cfg)


def test_the_default_sweeper_is_the_merging_one_and_hparams_search_still_optuna(tmp_path: Path) -> None:
    assert compose_cfg([], tmp_path).hydra.sweeper._target_ == "hydra_plugins.glsim_pl_sweeper.MergingSweeper"
    optuna = compose_cfg(["hparams_search=lr_grid"], tmp_path).hydra.sweeper._target_
    assert optuna == "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"


@pytest.mark.slow
def test_the_sweep_runs_6_jobs_and_aggregates(tmp_path: Path) -> None:
    """The real multirun (Hydra's launcher, one process) and the aggregation over it."""
    sweep = tmp_path / "multirun"
    cmd = [sys.executable, "-m", "glsim_pl.train", "-m", "method=glsim,vit", "method.selector=gls,rollout", "seed=1,2",
           *TINY_SYNTHETIC, "logger=csv", "callbacks.crop_visualizer=null", f"hydra.sweep.dir={sweep}"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "sweep: 8 jobs -> 6" in proc.stdout + proc.stderr
    records = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/metrics.json"))]
    methods = [(r["config"]["method"]["method"], r["config"]["method"]["selector"], r["seed"]) for r in records]
    assert sorted(methods) == sorted([("glsim", "gls", 1), ("glsim", "gls", 2), ("glsim", "rollout", 1),
                                      ("glsim", "rollout", 2), ("vit", "none", 1), ("vit", "none", 2)])  # fmt: skip
    out = subprocess.run([sys.executable, "-m", "glsim_pl.aggregate", str(sweep), "--out", str(tmp_path / "res")],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Δ top-1" in out.stdout and "GFLOPs" in out.stdout


def test_a_failed_job_writes_its_error_line(tmp_path: Path) -> None:
    from glsim_pl.analysis.aggregate import load_jobs
    from glsim_pl.analysis.run_record import write_failure

    cfg = compose_cfg(["seed=3"], tmp_path / "sweep" / "0")
    (tmp_path / "sweep" / "0" / ".hydra").mkdir(parents=True)
    (tmp_path / "sweep" / "0" / ".hydra" / "overrides.yaml").write_text("- seed=3\n")
    write_failure(cfg, UserError("dataset.root=/x: no such folder\nmore detail"))
    record = json.loads((tmp_path / "sweep" / "0" / "failed.json").read_text())
    assert record["error"] == "UserError: dataset.root=/x: no such folder" and record["seed"] == 3
    with pytest.raises(UserError, match=r"no job has 'test/acc1' \(1 failed: UserError: dataset.root=/x"):
        load_jobs(tmp_path / "sweep")


@pytest.mark.slow
def test_a_failing_job_does_not_stop_the_sweep_and_the_sweep_exits_1(tmp_path: Path) -> None:
    sweep = tmp_path / "multirun"
    cmd = [sys.executable, "-m", "glsim_pl.train", "-m", "dataset=folder", f"dataset.root={tmp_path / 'none'}",
           "seed=1,2", "trainer.accelerator=cpu", f"hydra.sweep.dir={sweep}"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1
    assert sorted(p.parent.name for p in sweep.glob("*/failed.json")) == ["0", "1"]  # the second job still ran
    assert "sweep: 2 job(s) failed" in proc.stdout + proc.stderr
