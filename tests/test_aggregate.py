"""Seeds -> results/<experiment>.md/.csv: each job's metrics.json, then mean ± std beside the paper's number."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from glsim_pl.aggregate import aggregate, main
from glsim_pl.train import train


def _fake_job(root: Path, num: int, seed: int, acc: float, experiment: str = "glsim_cub_vit_b16", **extra) -> None:
    job = root / str(num)
    job.mkdir(parents=True)
    record = {
        "experiment": experiment, "seed": seed, "overrides": [f"experiment={experiment}", f"seed={seed}"],
        "metrics": {"test/acc1": acc}, "wall_time_s": 10.0, "device": "cpu x1", "git_commit": "abc",
        "protocol": {"train_split": "official train (all of it)", "epochs": 50},
        "paper": {"acc1": 90.93, "std": 0.24, "source": "Table 4"}, "config": {"seed": seed}, **extra,
    }  # fmt: skip
    (job / "metrics.json").write_text(json.dumps(record))


def test_mean_std_over_seeds_beside_the_paper(tmp_path: Path) -> None:
    for num, (seed, acc) in enumerate([(1, 0.90), (10, 0.91), (100, 0.92)]):
        _fake_job(tmp_path / "sweep", num, seed, acc)
    paths = aggregate(tmp_path / "sweep", tmp_path / "results", formats=["png", "svg"])
    assert sorted(p.name for p in paths) == ["glsim_cub_vit_b16." + e for e in ("csv", "md", "png", "svg")]
    with Image.open(tmp_path / "results" / "glsim_cub_vit_b16.png") as image:
        assert image.size == (750, 675)  # one setting: 5 x 4.5 in at 150 dpi
    rows = list(csv.DictReader((tmp_path / "results" / "glsim_cub_vit_b16.csv").open()))
    assert len(rows) == 1
    assert float(rows[0]["acc1_mean"]) == pytest.approx(91.0)
    assert float(rows[0]["acc1_std"]) == pytest.approx(1.0)  # sample std over the 3 seeds
    assert float(rows[0]["delta"]) == pytest.approx(91.0 - 90.93)
    assert rows[0]["seeds"] == "1 10 100"
    assert rows[0]["epochs"] == "50"
    md = (tmp_path / "results" / "glsim_cub_vit_b16.md").read_text()
    assert "| 91.00 ± 1.00 | 90.93 ± 0.24 | +0.07 |" in md
    assert "train split: official train (all of it)" in md


def test_settings_other_than_seed_are_separate_rows(tmp_path: Path) -> None:
    for num, (lr, seed, acc) in enumerate([(0.01, 1, 0.5), (0.01, 10, 0.7), (0.003, 1, 0.2)]):
        _fake_job(tmp_path / "s", num, seed, acc, experiment="sweep", paper=None,
                  overrides=[f"optim.lr={lr}", f"seed={seed}"])  # fmt: skip
    aggregate(tmp_path / "s", tmp_path / "r", formats=[])
    assert not (tmp_path / "r" / "sweep.png").exists()  # formats=[]: tables only
    rows = {r["setting"]: r for r in csv.DictReader((tmp_path / "r" / "sweep.csv").open())}
    assert set(rows) == {"optim.lr=0.01", "optim.lr=0.003"}
    assert float(rows["optim.lr=0.01"]["acc1_mean"]) == pytest.approx(60.0)
    assert rows["optim.lr=0.003"]["acc1_std"] == ""  # one seed: no std
    assert rows["optim.lr=0.01"]["paper_acc1"] == ""


def test_bad_sweep_dirs_give_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="no such directory"):
        main([str(tmp_path / "missing")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="no metrics.json found"):
        main([str(tmp_path / "empty")])
    (tmp_path / "bad" / "0").mkdir(parents=True)
    (tmp_path / "bad" / "0" / "metrics.json").write_text(json.dumps({"metrics": {"val/acc1": 0.5}}))
    with pytest.raises(SystemExit, match=r"bad/0/metrics.json: no 'test/acc1'"):
        main([str(tmp_path / "bad")])


def test_train_writes_metrics_json_that_aggregates(make_cfg, tmp_path: Path) -> None:
    """The python equivalent of `make smoke-reproduce`: two seeds of the smoke experiment, then the aggregation."""
    for num, seed in enumerate([1, 10]):
        cfg = make_cfg("experiment=smoke_reproduce", f"seed={seed}", "dataset.train_size=16", "dataset.test_size=10",
                       "trainer.max_epochs=1", "logger=none", output_dir=tmp_path / "sweep" / str(num))  # fmt: skip
        metrics = train(cfg)
        record = json.loads((tmp_path / "sweep" / str(num) / "metrics.json").read_text())
        assert record["metrics"]["test/acc1"] == pytest.approx(metrics["test/acc1"])
        assert record["seed"] == seed
        assert record["device"] == "cpu x1"
        assert record["wall_time_s"] > 0
        assert record["protocol"]["selection_split"].startswith("none")
        assert record["protocol"]["epochs"] == 1
        assert record["config"]["dataset"]["protocol"] == "paper"
        assert len(record["git_commit"]) >= 7
    aggregate(tmp_path / "sweep", tmp_path / "results", name="smoke")
    md = (tmp_path / "results" / "smoke.md").read_text()
    assert "| 1 10 |" in md
    assert "## Resolved config" in md


@pytest.mark.slow
def test_smoke_reproduce_multirun_end_to_end(tmp_path: Path) -> None:
    """What `make smoke-reproduce` runs: a real Hydra multirun over seeds, then `python -m glsim_pl.aggregate`."""
    sweep = tmp_path / "multirun"
    run = lambda *a: subprocess.run([sys.executable, "-m", *a], cwd=tmp_path, capture_output=True, text=True)
    proc = run("glsim_pl.train", "-m", "experiment=smoke_reproduce", "seed=1,10", "trainer.max_epochs=1",
               "dataset.train_size=100", "dataset.test_size=40", f"hydra.sweep.dir={sweep}")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = run("glsim_pl.aggregate", str(sweep), "--out", str(tmp_path / "results"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = list(csv.DictReader((tmp_path / "results" / "smoke_reproduce.csv").open()))
    assert rows[0]["n"] == "2"
    assert rows[0]["seeds"] == "1 10"
