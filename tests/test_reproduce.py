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


def _fake_multirun(calls: list[list[str]], val: dict[float, float], test: dict[float, float], best=None, fail=()):
    """Stands in for `python -m glsim_pl.train -m ...`: one metrics.json per job of the sweep (val: after the last
    epoch, best: the best epoch's); a job whose folder already holds a run, or whose (lr, seed) is in ``fail``,
    leaves no result (refused / failed) and the multirun exits 1."""

    def run(overrides: list[str], sweep: Path) -> int:
        calls.append(overrides)
        values = dict(o.split("=", 1) for o in overrides)
        code = 0
        for num, (lr, seed) in enumerate((float(lr), s) for lr in values["optim.lr"].split(",")
                                         for s in values["seed"].split(",")):  # fmt: skip
            job = sweep / str(num)
            if job.exists() or (lr, int(seed)) in fail:
                code = 1
                continue
            job.mkdir(parents=True)
            if "test=false" in overrides:
                metrics = {"val/acc1": val[lr], "val/acc1_best": (best or val)[lr]}
            else:
                metrics = {"test/acc1": test[lr] + int(seed) / 1e4}
            record = {"experiment": values["experiment"], "seed": int(seed), "metrics": metrics,
                      "overrides": [f"experiment={values['experiment']}", f"seed={seed}", f"optim.lr={lr}"],
                      "config": {"optim": {"lr": lr}}, "protocol": {"epochs": 1}}  # fmt: skip
            (job / "metrics.json").write_text(json.dumps(record))
        return code

    return run


def test_both_stages_write_the_chosen_lr_and_every_stage1_result(tmp_path: Path, monkeypatch) -> None:
    calls: list[list[str]] = []
    val = {0.03: 0.40, 0.01: 0.55, 0.003: 0.55, 0.001: 0.50}
    monkeypatch.setattr(rp, "_multirun", _fake_multirun(calls, val, {0.003: 0.6, 0.01: 0.1}))
    chosen = rp.reproduce(["exp_a"], "row", tmp_path / "runs", tmp_path / "res", extra=["trainer.max_epochs=1"])
    stage1 = {"0.001": 0.5, "0.003": 0.55, "0.01": 0.55, "0.03": 0.4}
    assert chosen == {"exp_a": {"lr": 0.003, "stage1": stage1, "select": "final", "failed": []}}
    stage1, stage2 = calls
    assert stage1 == ["experiment=exp_a", "optim.lr=0.03,0.01,0.003,0.001", "seed=1", "dataset.protocol=val",
                      "test=false", "trainer.max_epochs=1"]  # fmt: skip
    assert stage2 == ["experiment=exp_a", "seed=1,10,100", "optim.lr=0.003", "trainer.max_epochs=1"]
    assert json.loads((tmp_path / "res" / "row_lr.json").read_text())["exp_a"]["lr"] == 0.003
    md = (tmp_path / "res" / "row.md").read_text()
    assert "| exp_a | 3 | 60.37 ± 0.55 |" in md  # stage 2 only: the LR runs are not rows; the row is named
    assert "| exp_a | 40.00 | 55.00 | 55.00 | 50.00 | 0.003 |" in md
    assert "best val/acc1 after the last epoch (official)" in md and "Failed jobs" not in md
    assert "| optim.lr | n | val/acc1" not in md
    lr_md = (tmp_path / "res" / "row_lr.md").read_text()
    assert "| 0.003 | 1 | 55.00 |" in lr_md and "`val/acc1`" in lr_md


def test_stage1_reads_the_final_epoch_by_default_and_the_best_epoch_on_request(tmp_path: Path, monkeypatch) -> None:
    val, best = {0.03: 0.40, 0.01: 0.50, 0.003: 0.45, 0.001: 0.30}, {0.03: 0.60, 0.01: 0.50, 0.003: 0.45, 0.001: 0.3}
    test = {0.03: 0.5, 0.01: 0.5}
    for select, lr in (("final", 0.01), ("best", 0.03)):
        monkeypatch.setattr(rp, "_multirun", _fake_multirun([], val, test, best))
        chosen = rp.reproduce(["exp_a"], select, tmp_path / select, tmp_path / "res", select=select)
        assert chosen["exp_a"]["lr"] == lr and chosen["exp_a"]["select"] == select
    assert "best val/acc1_best, the best epoch" in (tmp_path / "res" / "best.md").read_text()


def test_rerun_into_a_used_dir_is_refused_and_a_failed_job_is_listed_with_exit_1(tmp_path: Path, monkeypatch) -> None:
    """An earlier run's results are never shown as this invocation's: a used --dir is refused before anything runs;
    a job of this invocation that failed is listed and the command exits 1."""
    monkeypatch.setattr(rp, "_multirun", _fake_multirun([], {}, {0.001: 0.5, 0.003: 0.9}))
    runs, res = tmp_path / "runs", tmp_path / "res"
    rp.main(["--experiments", "exp_a", "--name", "row", "--lr", "0.001", "--dir", str(runs), "--out", str(res)])
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(SystemExit) as info:
        rp.main(["--experiments", "exp_a", "--name", "row", "--lr", "0.003", "--dir", str(runs), "--out", str(res)])
    assert str(info.value.code).startswith(f"error: --dir {runs} already holds runs")
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    monkeypatch.setattr(rp, "_multirun", _fake_multirun([], {}, {0.003: 0.9}, fail={(0.003, 10)}))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        rp.main(["--experiments", "exp_a", "--name", "row", "--lr", "0.003", "--seeds", "1,10", "--out", str(res)])
    assert "error: some jobs failed" in str(info.value.code)
    fresh = list((tmp_path / "multirun" / "reproduce" / "row").iterdir())  # the default: a new dated folder
    assert len(fresh) == 1 and fresh[0] != runs
    md = (res / "row.md").read_text()
    assert "| exp_a | 1 | 90.01 |" in md and "1 of 2 jobs left no result" in md


def test_a_given_lr_skips_stage_1(tmp_path: Path, monkeypatch) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr(rp, "_multirun", _fake_multirun(calls, {}, {0.01: 0.5}))
    chosen = rp.reproduce(["exp_a"], "row", tmp_path / "runs", tmp_path / "res", lr=0.01, seeds="1,2")
    assert chosen == {"exp_a": {"lr": 0.01, "stage1": None, "select": "given", "failed": []}}
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
