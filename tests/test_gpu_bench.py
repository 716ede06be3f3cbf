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
