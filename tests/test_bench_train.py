"""``bench train`` runs the real training entry point with its probe (CPU smoke: tiny model, a few steps)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from glsim_pl.bench._jpeg_tree import write_cub_tree
from glsim_pl.bench._train_probe import busy_share
from glsim_pl.bench.train import _parser, main, render, run_one

SMOKE = ["--tiny", "--device", "cpu", "--size", "32", "--batch", "4", "--classes", "3", "--warmup", "1", "--steps",
         "2", "--profile-steps", "0", "--sync-steps", "0", "--workers", "0"]  # fmt: skip


def test_busy_share_is_the_union_of_kernel_intervals() -> None:
    assert busy_share([(0, 10), (5, 15), (20, 30), (22, 25)], 40.0) == pytest.approx(25 / 40)
    assert busy_share([], 10.0) == 0.0


def test_generated_tree_is_a_cub_layout_the_datamodule_reads(tmp_path: Path) -> None:
    from glsim_pl.data.datasets.birds import CUBDataModule

    root = write_cub_tree(tmp_path / "cub", 30, 3, (40, 30), workers=1)
    dm = CUBDataModule(root=str(root), num_classes=3, image_size=32, num_workers=0, protocol="paper")
    dm.check()
    dm.setup()
    assert len(dm.data_train) == 27 and len(dm.data_test) == 3  # 90 % train


def test_one_run_measures_the_lightning_loop_and_the_bare_loop(tmp_path: Path) -> None:
    args = _parser().parse_args([*SMOKE, "--out", str(tmp_path / "out"), "--root", str(tmp_path / "cub")])
    args.root = write_cub_tree(args.root, 60, 3, (64, 48), workers=1)
    row = run_one(args, "vit", False, tmp_path / "out" / "row.json")
    assert row["precision"] == "32-true" and row["batch"] == 4 and row["steps"] == 2
    assert row["img_s"] > 0 and row["bare_img_s"] > 0 and row["flops_per_step"] > 0
    assert len(row["per_round"]["ms_per_step"]) == row["rounds"] == 3  # bare windows between the real ones
    assert row["framework_ratio"] > 0 and 0 < row["loader_ms_per_step"] < row["ms_per_step"]
    assert "gpu_busy" not in row and row["mfu"] is None  # no GPU: no busy share, no matmul peak
    text = render([row], "header")
    assert "| vit | off |" in text


@pytest.mark.slow
def test_cli_runs_both_methods_in_child_processes(tmp_path: Path, capsys) -> None:
    main([*SMOKE, "--compile", "eager", "--out", str(tmp_path / "out"), "--root", str(tmp_path / "cub")])
    table = capsys.readouterr().out
    assert "| glsim | off |" in table and "| vit | off |" in table
    assert "GLSim/ViT training time ratio, compile off" in table
    rows = json.loads((tmp_path / "out" / "train_bench.json").read_text())["rows"]
    assert all("error" not in r for r in rows), rows


def test_lightning_floor_runs_its_rounds(capsys) -> None:
    from glsim_pl.bench import floor

    floor.main(
        ["--size", "32", "--warmup", "1", "--steps", "2", "--rounds", "2", "--callbacks", "2", "--module", "glsim"]
    )
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert "(glsim module)" in line and "2 idle callbacks" in line and "median of 2 rounds of 2 steps" in line
    assert float(line.split("bare / Lightning ")[1].split()[0]) > 0
    floor.main(["--size", "32", "--warmup", "1", "--steps", "2", "--rounds", "2", "--per-step", "log,metrics"])
    assert "(minimal module, per step: log+metrics)" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="--per-step"):
        floor.main(["--per-step", "loss"])
