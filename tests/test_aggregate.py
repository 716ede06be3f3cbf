"""Seeds -> results/<experiment>.md/.csv: each job's metrics.json, then mean ± std beside the paper's number."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from glsim_pl.aggregate import main
from glsim_pl.analysis.aggregate import aggregate
from glsim_pl.errors import UserError
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
    assert sorted(p.name for p in paths) == ["glsim_cub_vit_b16." + e for e in ("csv", "md", "png", "svg", "tex")]
    rows = list(csv.DictReader((tmp_path / "results" / "glsim_cub_vit_b16.csv").open()))
    assert len(rows) == 1
    assert float(rows[0]["acc1_mean"]) == pytest.approx(91.0)
    assert float(rows[0]["acc1_std"]) == pytest.approx(1.0)  # sample std over the 3 seeds
    assert float(rows[0]["delta_paper"]) == pytest.approx(91.0 - 90.93)
    assert rows[0]["seeds"] == "1 10 100"
    md = (tmp_path / "results" / "glsim_cub_vit_b16.md").read_text()
    assert "| 91.00 ± 1.00 | n/a | n/a | 90.93 ± 0.24 | +0.07 |" in md  # no macro / cost recorded: n/a
    assert "Protocol (every row): train: official train (all of it)" in md


def _sweep_job(root: Path, num: int, method: str, selector: str | None, seed: int, acc: float, **extra) -> None:
    overrides = [f"method={method}", *([f"method.selector={selector}"] if selector else []), f"seed={seed}",
                 "dataset=folder", "dataset.root=/data/birds", "logger=csv"]  # fmt: skip
    protocol = {"train_split": "first 0.8 of train/class", "selection_split": "val", "test_split": "test split",
                "epochs": 1}  # fmt: skip
    config = {"method": {"method": method, "selector": selector or "none"}}
    metrics = {"test/acc1": acc, "test/acc1_macro": acc - 0.1}
    _fake_job(root, num, seed, acc, experiment=None, overrides=overrides, paper=None,
              config=config, **{"protocol": protocol, **extra}, metrics=metrics,
              cost={"gflops": 35.0 if method == "glsim" else 17.6, "fit_img_s": 100.0})  # fmt: skip


def _crashed_job(root: Path, num: int, overrides: list[str], error: str) -> None:
    job = root / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (job / "failed.json").write_text(json.dumps({"overrides": overrides, "seed": 2, "error": error}))


def test_paper_table_of_a_method_x_selector_sweep_with_a_crashed_job(tmp_path: Path, capsys) -> None:
    """Rows labelled by what differs only (method, selector; not the dataset or logger), Δ vs the ViT row, cost
    columns, the crashed job and the seed it leaves missing listed under the table; CSV and LaTeX agree."""
    sweep = tmp_path / "sweep"
    jobs = [("glsim", "gls", 1, 0.60), ("glsim", "gls", 2, 0.62), ("glsim", "rollout", 1, 0.55),
            ("glsim", "rollout", 2, 0.57), ("vit", None, 1, 0.50)]  # fmt: skip
    for num, job in enumerate(jobs):
        _sweep_job(sweep, num, *job)
    vit2 = ["method=vit", "seed=2", "dataset=folder", "dataset.root=/data/birds", "logger=csv"]
    _crashed_job(sweep, 5, vit2, "UserError: dataset.root=/data/birds: no such folder")
    aggregate(sweep, tmp_path / "results", name="sel", formats=["png"])
    printed = capsys.readouterr().out
    md = (tmp_path / "results" / "sel.md").read_text()
    header = "| method | method.selector | n | top-1 (%) | macro top-1 (%) | GFLOPs/img | fit img/s | Δ top-1 |"
    assert header in printed and header in md
    assert "| glsim | gls | 2 | 61.00 ± 1.41 | 51.00 ± 1.41 | 35.00 | 100.0 | +10.00 |" in md  # Δ over seed 1
    assert "| glsim | rollout | 2 | 56.00 ± 1.41 | 46.00 ± 1.41 | 35.00 | 100.0 | +5.00 |" in md
    assert "| vit | — | 1 | 50.00 | 40.00 | 17.60 | 100.0 | baseline |" in md
    assert "dataset.root" not in md.split("## Jobs")[0].split("Failed")[0]  # the same in every row: no label
    assert "paper (%)" not in md  # no paper row, no paper column
    assert f"- `{sweep / '5'}` (method=vit seed=2 dataset=folder dataset.root=/data/birds logger=csv): UserError: " \
           "dataset.root=/data/birds: no such folder" in md  # fmt: skip
    assert "- missing:" not in md  # the crashed job is listed as failed, not as missing
    assert "Protocol (every row): train: first 0.8 of train/class; select: val; test: test split; 1 ep." in md
    rows = {(r["method"], r["method.selector"]): r for r in csv.DictReader((tmp_path / "results" / "sel.csv").open())}
    assert float(rows[("glsim", "gls")]["delta"]) == pytest.approx(10.0)
    assert rows[("vit", "—")]["baseline"] == "True"
    tex = (tmp_path / "results" / "sel.tex").read_text()
    assert tex.startswith("\\begin{tabular}{llrrrrrr}\n\\toprule\nmethod & method.selector & n & top-1 (\\%)")
    assert "glsim & gls & 2 & 61.00 $\\pm$ 1.41 & 51.00 $\\pm$ 1.41 & 35.00 & 100.0 & +10.00 \\\\" in tex
    assert "\\midrule" in tex and tex.rstrip().endswith("\\bottomrule\n\\end{tabular}")


def test_baseline_flag_and_a_protocol_column_when_rows_differ(tmp_path: Path) -> None:
    sweep = tmp_path / "s"
    _sweep_job(sweep, 0, "glsim", "gls", 1, 0.6)
    _sweep_job(sweep, 1, "glsim", "gls", 2, 0.6)
    _sweep_job(sweep, 2, "glsim", "rollout", 1, 0.5, protocol={"train_split": "all of train", "epochs": 1})
    aggregate(sweep, tmp_path / "r", name="t", formats=[], baseline="method.selector=rollout", quiet=True)
    md = (tmp_path / "r" / "t.md").read_text()
    assert "| Δ top-1 | protocol |" in md
    assert "| gls | 2 | 60.00 ± 0.00 | 50.00 ± 0.00 | 35.00 | 100.0 | +10.00 | train: first 0.8" in md  # method: same
    assert "- missing: method.selector=rollout seed=2" in md  # the sweep stopped before it
    with pytest.raises(UserError, match="--baseline 'method=vit' matches 0 rows"):
        aggregate(sweep, tmp_path / "r", formats=[], baseline="method=vit", quiet=True)


def test_bad_sweep_dirs_give_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="no such directory"):
        main([str(tmp_path / "missing")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="no metrics.json found"):
        main([str(tmp_path / "empty")])
    (tmp_path / "bad" / "0").mkdir(parents=True)
    (tmp_path / "bad" / "0" / "metrics.json").write_text(json.dumps({"metrics": {"val/acc1": 0.5}}))
    with pytest.raises(SystemExit, match=r"no job has 'test/acc1' \(1 failed: no 'test/acc1' in its metrics.json"):
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
        assert record["tested_checkpoint"] == str(tmp_path / "sweep" / str(num) / "checkpoints" / "last.ckpt")  # no val
        assert len(record["git_commit"]) >= 7
    aggregate(tmp_path / "sweep", tmp_path / "results", name="smoke")
    md = (tmp_path / "results" / "smoke.md").read_text()
    assert "| smoke_reproduce | 2 |" in md  # a single row is named after its experiment
    assert "## Resolved config" in md
    assert json.loads((tmp_path / "sweep" / "0" / "metrics.json").read_text())["cost"]["gflops"] > 0


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


def test_protocol_names_the_official_test_split_only_for_benchmarks(make_cfg) -> None:
    from glsim_pl.analysis.run_record import protocol

    assert protocol(make_cfg("dataset=cub", tiny=False))["test_split"] == "official test"
    assert protocol(make_cfg("dataset=folder", tiny=False))["test_split"] == "test split"
    assert protocol(make_cfg())["test_split"] == "test split"  # synthetic


def test_a_seed_run_twice_counts_once_and_delta_uses_the_seeds_both_rows_have(tmp_path: Path) -> None:
    """Seed 11 run twice (the second a resume that completed): one result, the newer; the ViT baseline lacks seed 12,
    so GLSim's Δ is over seed 11 alone, and the note says so."""
    sweep = tmp_path / "sweep"
    _sweep_job(sweep, 0, "glsim", "gls", 11, 0.70)
    _sweep_job(sweep, 1, "glsim", "gls", 12, 0.80)
    _sweep_job(sweep, 2, "vit", None, 11, 0.60)
    _sweep_job(sweep, 3, "glsim", "gls", 11, 0.75)  # the same setting and seed again
    record = json.loads((sweep / "3" / "metrics.json").read_text())
    record["overrides"].append(f"ckpt_path={sweep / '0' / 'checkpoints' / 'last.ckpt'}")  # the resumed run
    (sweep / "3" / "metrics.json").write_text(json.dumps(record))
    os.utime(sweep / "0" / "metrics.json", (1_000_000_000, 1_000_000_000))  # the first one is the older
    aggregate(sweep, tmp_path / "r", name="t", formats=[], quiet=True)
    md = (tmp_path / "r" / "t.md").read_text()
    assert "| glsim | gls | 2 | 77.50 ± 3.54 | 67.50 ± 3.54 | 35.00 | 100.0 | +15.00 |" in md  # 11 (0.75), 12
    assert f"kept the newest, `{sweep / '3'}`; left out `{sweep / '0'}`" in md
    assert "method.selector=gls has seeds 11 12, the baseline 11; its Δ is over seeds 11 only." in md
    rows = list(csv.DictReader((tmp_path / "r" / "t.csv").open()))
    assert [(r["n"], r["seeds"], r["delta_seeds"]) for r in rows] == [("2", "11 12", "11"), ("1", "11", "")]


def test_fit_img_s_of_a_resumed_run_counts_only_the_steps_it_trained(make_cfg, tmp_path: Path, monkeypatch) -> None:
    """Epoch 1, then a resume for epoch 2: the record's img/s is the images of the steps this process trained over its
    own fit time (not every step since the start), and the table shows that number."""
    import glsim_pl.train as train_module

    fit_seconds: list[float] = []
    real = train_module.write_run_record

    def spy(cfg, trainer, metrics, wall_time_s, fit_seconds_=None, *rest):
        fit_seconds.append(fit_seconds_)
        return real(cfg, trainer, metrics, wall_time_s, fit_seconds_, *rest)

    monkeypatch.setattr(train_module, "write_run_record", spy)
    run = tmp_path / "sweep" / "0"
    quiet = ["logger=none", "callbacks.crop_visualizer=null", "callbacks.per_class_csv=null", "test=false"]
    step = lambda: torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    train(make_cfg(*quiet, "trainer.max_epochs=1", output_dir=run))
    resumed_at = step()
    (run / "metrics.json").unlink()
    train(make_cfg(*quiet, "trainer.max_epochs=2", "ckpt_path=last", output_dir=run))
    assert 0 < resumed_at < step()
    img_s = json.loads((run / "metrics.json").read_text())["cost"]["fit_img_s"]
    assert img_s == round((step() - resumed_at) * 8 / fit_seconds[-1], 2)  # batch 8, one process
    aggregate(run.parent, tmp_path / "r", name="t", formats=[], metric="val/acc1", quiet=True)
    assert float(next(csv.DictReader((tmp_path / "r" / "t.csv").open()))["img_s"]) == pytest.approx(img_s)
