"""The GPU figures script runs end to end (CPU smoke: tiny model); it never invents numbers for a missing GPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from glsim_pl.bench.gpu import main


def test_cpu_smoke_run_measures_both_methods(tmp_path: Path, capsys) -> None:
    out = tmp_path / "gpu.json"
    main(["--device", "cpu", "--tiny", "--sizes", "32", "--batch", "2", "--repeats", "1", "--warmup", "0",
          "--precision", "fp32", "--json", str(out)])  # fmt: skip
    table = capsys.readouterr().out
    assert "| glsim | 32 |" in table
    assert "| vit | 32 |" in table
    rows = json.loads(out.read_text())["rows"]
    assert [r["method"] for r in rows] == ["vit", "glsim"]
    assert all(r["train_img_s"] > 0 and r["eval_img_s"] > 0 and r["latency_ms"] > 0 for r in rows)
    assert all(r["peak_mem_gib"] is None for r in rows)  # no GPU: no memory figure
    assert rows[1]["params_m"] > rows[0]["params_m"]  # GLSim adds the aggregator


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_without_gpu_is_one_clear_error() -> None:
    with pytest.raises(SystemExit, match="no CUDA device"):
        main(["--device", "cuda"])


def test_gpu_check_parity_section_smoke(capsys) -> None:
    from glsim_pl.bench.gpu_check import main as gpu_check

    gpu_check(["--smoke", "--section", "parity"])
    rows = [
        line for line in capsys.readouterr().out.splitlines() if line.startswith("| fp32") or line.startswith("| bf16")
    ]
    fp32 = rows[0].split("|")
    assert float(fp32[3]) < 1e-4 and fp32[4].strip() == "True" and fp32[5].strip() == "True"
    assert len(rows) == 2  # CPU: fp32 and bf16 autocast (fp16 autocast and compile are GPU-only here)


def test_gpu_check_plan_covers_every_section(tmp_path: Path) -> None:
    from argparse import Namespace

    from glsim_pl.bench.gpu_check import _plan

    args = Namespace(device="cuda", smoke=False, fixture=None)
    plan = _plan(args, tmp_path)
    keys = [key for key, *_ in plan]
    assert keys == ["env", "parity", "train", "eval", "synthetic", "forward8", "forward64", "forward256", "crop64",
                    "crop256", "train32"]  # fmt: skip
    assert sum(limit for *_, limit in plan) >= 470  # the overall budget, not the section limits, is the cap


@pytest.mark.slow
def test_gpu_check_smoke_writes_a_report_with_every_section(tmp_path: Path) -> None:
    from glsim_pl.bench.gpu_check import main as gpu_check

    gpu_check(["--smoke", "--out", str(tmp_path)])
    report = (tmp_path / "gpu_check.md").read_text()
    assert report.count("— exit 0") == 7, report  # env, parity, train, eval, forward, crop, synthetic
