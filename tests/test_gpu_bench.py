"""The GPU figures script runs end to end (CPU smoke: tiny model); it never invents numbers for a missing GPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from glsim_pl.bench.gpu import main
from glsim_pl.bench.parity_fixture import FIXTURE_NAME


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

    fixture = Path(__file__).resolve().parent / "fixtures" / FIXTURE_NAME  # also from a wheel
    gpu_check(["--smoke", "--section", "parity", "--fixture", str(fixture)])
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
                    "crop256", "decode", "gate", "seeds", "train32"]  # fmt: skip
    assert sum(limit for *_, limit in plan) >= 470  # the overall budget, not the section limits, is the cap
    cmds = {key: cmd for key, _, cmd, _ in plan}
    assert cmds["gate"][3:] == ["gate", "--backbone", "vit_base_patch16_224", "--batch", "64", "--repeats", "10"]
    seeds = cmds["seeds"]
    assert seeds[seeds.index("--") + 1 :] == ["trainer=gpu", "trainer.precision=bf16-mixed", "compile=false"]
    assert "--seeds" not in seeds and "--methods" not in seeds  # the default: seeds 1-5, glsim and vit
    assert seeds[seeds.index("--budget") + 1] == "400"  # prints its table before the section's 420 s limit


def test_gpu_check_opt_in_sections_only_run_when_named() -> None:
    from glsim_pl.bench.gpu_check import _selected

    default = [key for key in ("env", "synthetic", "crop64", "gate", "seeds", "train32") if _selected(key, None)]
    assert default == ["env", "synthetic", "crop64", "train32"]
    assert [k for k in ("env", "gate", "seeds", "train32") if _selected(k, {"seeds", "gate"})] == ["gate", "seeds"]
    assert all(_selected(k, {"all"}) for k in ("env", "gate", "seeds", "train32"))


def test_gpu_check_gate_smoke_command_runs(capsys) -> None:
    from argparse import Namespace

    from glsim_pl.bench.__main__ import main as bench
    from glsim_pl.bench.gpu_check import _plan

    cmd = next(
        cmd for key, _, cmd, _ in _plan(Namespace(device="cpu", smoke=True, fixture=None), Path(".")) if key == "gate"
    )
    bench(cmd[3:])  # in-process: the exact smoke arguments the check passes to its child
    out = capsys.readouterr().out
    assert out.count("| gated |") == 5 and "| vit |" in out


def test_gpu_check_decode_smoke_command_runs(capsys) -> None:
    from argparse import Namespace

    from glsim_pl.bench.__main__ import main as bench
    from glsim_pl.bench.gpu_check import _plan

    plan = _plan(Namespace(device="cpu", smoke=True, fixture=None), Path("."))
    cmd = next(cmd for key, _, cmd, _ in plan if key == "decode")
    bench(cmd[3:])
    out = capsys.readouterr().out
    assert "16 JPEGs (500x375)" in out
    cpu_rate = next(line for line in out.splitlines() if line.startswith("| CPU"))
    assert float(cpu_rate.split("|")[2]) > 0
    if not torch.cuda.is_available():
        assert "| GPU `decode_jpeg(device='cuda')` | no CUDA device visible |" in out


def test_seeds_table_and_min_line(tmp_path: Path) -> None:
    from glsim_pl.bench.seeds import format_row, read_accuracy, summary_line

    run = tmp_path / "glsim_seed1"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({"metrics": {"test/acc1": 0.987}, "wall_time_s": 18.4}))
    acc, fit = read_accuracy(run)
    assert (acc, fit) == (0.987, 18.4)
    assert read_accuracy(tmp_path / "missing") == (None, None)
    assert format_row(1, "glsim", acc, 25.2, fit, "exit 0") == "| 1 | glsim | 0.987 | 25 | 18 |"
    assert (
        format_row(2, "vit", None, 90.0, None, "timed out after 90 s")
        == "| 2 | vit | — (timed out after 90 s) | 90 |  |"
    )
    assert summary_line([0.987, 0.93], 0.90, 2).startswith("min ≥ 0.90: yes (min 0.930 over 2 of 2 runs")
    assert summary_line([0.987, 0.899], 0.90, 2).startswith("min ≥ 0.90: no (min 0.899")
    assert summary_line([0.987, None], 0.90, 2) == "min ≥ 0.90: no (min 0.987 over 1 of 2 runs; 1 without test/acc1)"


@pytest.mark.slow
def test_gpu_check_smoke_writes_a_report_with_every_section(tmp_path: Path) -> None:
    from glsim_pl.bench.gpu_check import main as gpu_check

    gpu_check(["--smoke", "--out", str(tmp_path)])
    report = (tmp_path / "gpu_check.md").read_text()
    assert report.count("— exit 0") == 8, report  # env, parity, train, eval, synthetic, forward, crop, decode


@pytest.mark.slow
def test_gpu_check_smoke_gate_and_seeds_sections(tmp_path: Path) -> None:
    from glsim_pl.bench.gpu_check import main as gpu_check

    gpu_check(["--smoke", "--sections", "gate,seeds", "--out", str(tmp_path)])
    report = (tmp_path / "gpu_check.md").read_text()
    assert report.count("— exit 0") == 2, report
    assert "| 1 | glsim | 0." in report and "| 1 | vit | 0." in report, report  # a real test/acc1 from each run
    assert "min ≥ 0.90: " in report
    run = tmp_path / "seeds" / "vit_seed1"
    assert (run / "metrics.json").is_file() and not (run / "checkpoints").exists()
    assert "No training batches" not in (run / "run.log").read_text()  # the smoke run takes optimizer steps


def test_seeds_refuses_an_out_folder_with_earlier_runs(tmp_path: Path) -> None:
    from glsim_pl.bench.seeds import main as seeds

    (tmp_path / "vit_seed3").mkdir()
    with pytest.raises(SystemExit, match="vit_seed3 exists already"):
        seeds(["--seeds", "3", "--out", str(tmp_path)])
    assert [p.name for p in tmp_path.iterdir()] == ["vit_seed3"]  # nothing trained, nothing removed
