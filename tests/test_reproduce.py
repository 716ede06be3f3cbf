"""The official protocol: stage 1 picks the LR on val (ties -> smaller), stage 2 trains the seeds at it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from glsim_pl import reproduce as rp
from glsim_pl.errors import UserError


def test_best_val_top1_picks_the_lr_and_ties_go_to_the_smaller() -> None:
    assert rp.choose_lr({0.03: 0.5, 0.01: 0.7, 0.003: 0.6, 0.001: 0.2}) == 0.01
    assert rp.choose_lr({0.03: 0.7, 0.01: 0.7, 0.003: 0.6, 0.001: 0.7}) == 0.001
    with pytest.raises(UserError, match="stage 1 gave no validation result"):
        rp.choose_lr({})


def _fake_multirun(calls: list[list[str]], val: dict[float, float], test: dict[float, float]):
    """Stands in for `python -m glsim_pl.train -m ...`: one metrics.json per job of the sweep."""

    def run(overrides: list[str], sweep: Path) -> None:
        calls.append(overrides)
        values = dict(o.split("=", 1) for o in overrides)
        for num, (lr, seed) in enumerate((float(lr), s) for lr in values["optim.lr"].split(",")
                                         for s in values["seed"].split(",")):  # fmt: skip
            job = sweep / str(num)
            job.mkdir(parents=True)
            metrics = (
                {"val/acc1_best": val[lr]} if "test=false" in overrides else {"test/acc1": test[lr] + int(seed) / 1e4}
            )
            record = {"experiment": values["experiment"], "seed": int(seed), "metrics": metrics,
                      "overrides": [f"experiment={values['experiment']}", f"seed={seed}", f"optim.lr={lr}"],
                      "config": {"optim": {"lr": lr}}, "protocol": {"epochs": 1}}  # fmt: skip
            (job / "metrics.json").write_text(json.dumps(record))

    return run


def test_both_stages_write_the_chosen_lr_and_every_stage1_result(tmp_path: Path, monkeypatch) -> None:
    calls: list[list[str]] = []
    val = {0.03: 0.40, 0.01: 0.55, 0.003: 0.55, 0.001: 0.50}
    monkeypatch.setattr(rp, "_multirun", _fake_multirun(calls, val, {0.003: 0.6, 0.01: 0.1}))
    chosen = rp.reproduce(["exp_a"], "row", tmp_path / "runs", tmp_path / "res", extra=["trainer.max_epochs=1"])
    assert chosen == {"exp_a": {"lr": 0.003, "stage1": {"0.001": 0.5, "0.003": 0.55, "0.01": 0.55, "0.03": 0.4}}}
    stage1, stage2 = calls
    assert stage1 == ["experiment=exp_a", "optim.lr=0.03,0.01,0.003,0.001", "seed=1", "dataset.protocol=val",
                      "test=false", "trainer.max_epochs=1"]  # fmt: skip
    assert stage2 == ["experiment=exp_a", "seed=1,10,100", "optim.lr=0.003", "trainer.max_epochs=1"]
    assert json.loads((tmp_path / "res" / "row_lr.json").read_text())["exp_a"]["lr"] == 0.003
    md = (tmp_path / "res" / "row.md").read_text()
    assert "| (as configured) | 3 | 60.37 ± 0.55 |" in md  # stage 2 only: the LR runs are not rows
    assert "| exp_a | 40.00 | 55.00 | 55.00 | 50.00 | 0.003 |" in md
    assert "| optim.lr | n | val/acc1_best" not in md
    lr_md = (tmp_path / "res" / "row_lr.md").read_text()
    assert "| 0.003 | 1 | 55.00 |" in lr_md and "`val/acc1_best`" in lr_md


def test_a_given_lr_skips_stage_1(tmp_path: Path, monkeypatch) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr(rp, "_multirun", _fake_multirun(calls, {}, {0.01: 0.5}))
    chosen = rp.reproduce(["exp_a"], "row", tmp_path / "runs", tmp_path / "res", lr=0.01, seeds="1,2")
    assert chosen == {"exp_a": {"lr": 0.01, "stage1": None}}
    assert calls == [["experiment=exp_a", "seed=1,2", "optim.lr=0.01"]]
    assert not (tmp_path / "res" / "row_lr.md").exists()
    assert "| exp_a | — | — | — | — | 0.01 |" in (tmp_path / "res" / "row.md").read_text()


def test_cost_estimate_scales_with_the_data() -> None:
    cub, fixed = rp.gpu_hours("cub"), rp.gpu_hours("cub", stage1=False)
    assert fixed["row"] < cub["row"] and cub["glsim"] > cub["vit"]
    assert rp.gpu_hours("cub448")["row"] > cub["row"]
    assert "| cub | 3.9 | 1.6 | 5.6 | 2.6 |" in rp.cost_table()


@pytest.mark.slow
def test_smoke_reproduce_runs_both_stages(tmp_path: Path) -> None:
    """`make smoke-reproduce`, shrunk: 4 LR runs on train/val, 3 seeds on train/test, the results name the LR."""
    cmd = [sys.executable, "-m", "glsim_pl.reproduce", "--experiments", "smoke_reproduce", "--name", "smoke",
           "--dir", str(tmp_path / "runs"), "--out", str(tmp_path / "res"), "--", "dataset.train_size=100",
           "dataset.test_size=40", "trainer.max_epochs=1"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    chosen = json.loads((tmp_path / "res" / "smoke_lr.json").read_text())["smoke_reproduce"]
    assert chosen["lr"] in rp.GRID and len(chosen["stage1"]) == 4
    assert f"| {chosen['lr']} |" in (tmp_path / "res" / "smoke.md").read_text()
    assert len(list((tmp_path / "runs" / "smoke_reproduce" / "seeds").glob("*/metrics.json"))) == 3
