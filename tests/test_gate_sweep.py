"""eval.gate_sweep: the accuracy-vs-cost curve over tau, tau chosen on validation only, CSV + plot."""

from __future__ import annotations

import contextlib
import csv
import math
from pathlib import Path

import pytest
import torch

from glsim_pl.analysis.gate_sweep import (
    COLUMNS,
    SplitOutputs,
    choose_threshold,
    collect,
    gate_flops,
    run_gate_sweep,
    thresholds,
)
from glsim_pl.errors import UserError
from tests.helpers.checkpoints import gated_model, save_lightning_ckpt
from tests.helpers.configs import TINY_DATA, compose_tool


def outputs(conf: list[float], first_ok: list[bool], glsim_ok: list[bool]) -> SplitOutputs:
    """Hand-built split: label 0 everywhere, a correct head predicts 0, a wrong one 1."""
    wrong = lambda ok: torch.tensor([0 if o else 1 for o in ok])
    n = len(conf)
    return SplitOutputs(torch.tensor(conf), wrong(first_ok), wrong(glsim_ok), torch.zeros(n, dtype=torch.long), [])


def test_choose_threshold_maximises_val_accuracy_within_the_budget() -> None:
    # 4 images; the two least confident are only right after the second pass, the third is right either way
    val = outputs([0.2, 0.3, 0.6, 0.9], [False, False, True, True], [True, True, True, False])
    cost = lambda share: 1.0 + share
    assert choose_threshold(val, cost, 1.5) == pytest.approx(0.6)  # 2 of 4 second passes: 100 %
    assert choose_threshold(val, cost, 1.3) == pytest.approx(0.3)  # 1 of 4 within budget: 75 %
    assert choose_threshold(val, cost, 2.0) == pytest.approx(0.6)  # more second passes do not help: cheaper wins
    assert math.isinf(choose_threshold(outputs([0.5], [False], [True]), cost, 2.0))  # only tau = inf helps
    with pytest.raises(UserError, match="gate_target_cost=0.9"):
        choose_threshold(val, cost, 0.9)


def test_tied_confidences_are_never_split() -> None:
    val = outputs([0.5, 0.5, 0.5, 0.9], [False, True, False, True], [True, True, True, True])
    # tau = 0.5 sends nobody (share 0), any tau in (0.5, 0.9] sends all three tied images: share 0.75 > budget
    assert choose_threshold(val, lambda s: 1.0 + s, 1.5) == pytest.approx(0.5)


def test_thresholds_span_first_pass_only_to_always_two_pass() -> None:
    taus = thresholds(torch.linspace(0.1, 1.0, 50), points=6)
    assert taus[0] == 0.0 and math.isinf(taus[-1]) and taus == sorted(taus) and len(taus) == 6


def test_gate_flops_cost_grows_from_one_pass_to_two() -> None:
    net = gated_model()
    low, vit = gate_flops(net, 32, 0.0)
    high, _ = gate_flops(net, 32, 1.0)
    assert 1.0 < low / vit < 1.05 and 2.0 < high / vit < 2.2  # selector, gate head and aggregator overheads counted


def batches(seed: int, n: int = 2, labels_offset: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, 3, 32, 32, generator=g), (torch.randint(0, 6, (8,), generator=g) + labels_offset) % 6)
            for _ in range(n)]  # fmt: skip


def test_sweep_writes_curve_and_chooses_tau_on_val_only(tmp_path: Path) -> None:
    net = gated_model()
    val = batches(0)
    kw = dict(target_cost=1.5, points=5, timing_batches=1, repeats=1)
    summary = run_gate_sweep(net, val, batches(1), 32, tmp_path / "a", **kw)
    kw.update(points=3, timing_batches=0)
    other = run_gate_sweep(net, val, batches(1, labels_offset=3), 32, tmp_path / "b", **kw)  # other test labels
    assert summary["tau"] == other["tau"]  # test never moves tau
    val_out = collect(net, val, torch.device("cpu"), 0, contextlib.nullcontext)
    expected = choose_threshold(val_out, lambda s: gate_flops(net, 32, s)[0] / gate_flops(net, 32, 0)[1], 1.5)
    assert summary["tau"] == expected and summary["val_cost_vs_vit"] <= 1.5
    rows = list(csv.DictReader((tmp_path / "a" / "gate_sweep.csv").open()))
    assert list(rows[0]) == COLUMNS
    assert (tmp_path / "a" / "gate_sweep.png").stat().st_size > 0
    for split in ("val", "test"):
        mine = [r for r in rows if r["split"] == split]
        ends = {r["point"]: r for r in mine if r["point"] in ("vit", "glsim")}
        assert float(ends["vit"]["second_pass_share"]) == 0 and float(ends["glsim"]["second_pass_share"]) == 1
        assert ends["glsim"]["tau"] == "inf"
        costs = [float(r["cost_vs_vit"]) for r in mine]
        assert costs == sorted(costs)  # tau ascending: more second passes, more cost
        assert all(float(r["timed_agreement"]) == 1.0 for r in mine)  # the timed cascade = the analytic curve
        assert all(float(r["img_s"]) > 0 for r in mine) and sum(r["point"] == "chosen" for r in mine) <= 1
    test_glsim = next(r for r in rows if r["split"] == "test" and r["point"] == "glsim")
    assert summary["test_acc1_glsim"] == pytest.approx(float(test_glsim["acc1"]), abs=1e-6)


def test_eval_gate_sweep_end_to_end(tmp_path: Path) -> None:
    from glsim_pl.eval import evaluate

    ckpt = tmp_path / "gated.ckpt"
    module = save_lightning_ckpt(ckpt, gate="confidence")
    assert module.net.gate == "confidence"
    overrides = [*TINY_DATA, f"ckpt_path={ckpt}", "eval.cost=false", "eval.gallery_size=0", "eval.gate_sweep=true",
                 "eval.gate_sweep_points=4", "eval.gate_timing_batches=1", "eval.gate_timing_repeats=1",
                 "method.gate_target_cost=1.5"]  # fmt: skip
    result = evaluate(compose_tool("eval", overrides, tmp_path / "out"))
    g = result["gate_sweep"]
    assert g["val_cost_vs_vit"] <= 1.5 and 0 <= g["test_acc1"] <= 1
    assert (tmp_path / "out" / "gate_sweep.csv").is_file() and (tmp_path / "out" / "gate_sweep.png").is_file()


def test_eval_gate_sweep_refuses_an_ungated_checkpoint_before_evaluating(tmp_path: Path) -> None:
    from glsim_pl.eval import evaluate

    plain = tmp_path / "plain.ckpt"
    save_lightning_ckpt(plain)
    overrides = [*TINY_DATA, f"ckpt_path={plain}", "eval.gate_sweep=true"]
    with pytest.raises(UserError, match="method.gate=confidence"):
        evaluate(compose_tool("eval", overrides, tmp_path / "plain"))
    assert not (tmp_path / "plain" / "test_per_class_acc.csv").exists()  # failed before the test run
    gated = tmp_path / "gated.ckpt"
    save_lightning_ckpt(gated, gate="confidence")
    with pytest.raises(UserError, match="trained with gate='confidence'"):
        evaluate(compose_tool("eval", [*TINY_DATA, f"ckpt_path={gated}", "method.gate=none"], tmp_path / "x"))
