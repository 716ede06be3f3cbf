"""``python -m glsim_pl.bench gate``: the table's shape and the forced shares (not its timings)."""

from __future__ import annotations

import math

import pytest
import torch

from glsim_pl.bench import gate as bench_gate
from glsim_pl.errors import UserError


def test_threshold_for_share_splits_exactly() -> None:
    conf = torch.tensor([0.5, 0.1, 0.9, 0.3, 0.7, 0.2, 0.8, 0.6])
    for share in (0.0, 0.25, 0.5, 0.75, 1.0):
        tau, k = bench_gate.threshold_for_share(conf, share)
        assert k == round(share * 8) and int((conf < tau).sum()) == k
    assert bench_gate.threshold_for_share(conf, 0.0)[0] == 0.0
    assert math.isinf(bench_gate.threshold_for_share(conf, 1.0)[0])


def test_threshold_for_share_rejects_ties_and_bad_shares() -> None:
    with pytest.raises(UserError, match="tie"):
        bench_gate.threshold_for_share(torch.tensor([0.2, 0.5, 0.5, 0.9]), 0.5)
    with pytest.raises(UserError, match="share"):
        bench_gate.threshold_for_share(torch.rand(4), 1.5)


def test_cli_tiny_prints_table_with_exact_shares(capsys: pytest.CaptureFixture[str]) -> None:
    bench_gate.main(["--tiny", "--size", "32", "--batch", "8", "--repeats", "1", "--shares", "0.25,0.75"])
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("| model"))
    assert [c.strip() for c in header.strip("|").split("|")] == [
        "model", "second-pass share", "tau", "ms / batch", "measured cost (x ViT)", "analytic cost (x ViT)",
        "measured / analytic",
    ]  # fmt: skip
    rows = [line.strip("|").split("|") for line in out.splitlines() if line.startswith("| ") and "---" not in line]
    by_model = [(r[0].strip(), float(r[1])) for r in rows[1:]]
    assert by_model == [("vit", 0.0), ("glsim (gate=none)", 1.0), ("gated", 0.25), ("gated", 0.75)]
    assert "falls with the early-exit share" in out


def test_measure_rows_realise_shares_and_analytic_cost() -> None:
    rows = bench_gate.measure("vit_tiny_patch16_224", 32, 8, 1, (0.0, 0.5, 1.0), "cpu", bench_gate.TINY_KW)
    assert [list(r) for r in rows] == [bench_gate.COLUMNS] * len(rows)
    gated = {r["second_pass_share"]: r for r in rows if r["model"] == "gated"}
    assert sorted(gated) == [0.0, 0.5, 1.0]  # realised on forward_gated's mask, checked inside measure
    assert gated[0.0]["analytic_cost_vs_vit"] == pytest.approx(1.0, abs=0.05)  # + selector, < 5 % here
    assert gated[0.0]["analytic_cost_vs_vit"] < gated[0.5]["analytic_cost_vs_vit"] < gated[1.0]["analytic_cost_vs_vit"]
    assert gated[1.0]["analytic_cost_vs_vit"] > 2.0
    by = {r["model"]: r for r in rows}
    assert by["vit"]["measured_cost_vs_vit"] == 1.0 and by["vit"]["analytic_cost_vs_vit"] == 1.0
    assert all(r["ms_per_batch"] > 0 for r in rows)
