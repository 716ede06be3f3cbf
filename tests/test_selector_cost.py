"""A selector's analytic cost is part of its registry entry; one registered without a cost is "n/a", never 0."""

from __future__ import annotations

import pytest
import torch

from glsim_pl.analysis.cost import model_gflops, selector_flops
from glsim_pl.analysis.table import build_rows, render_markdown
from glsim_pl.errors import UserError
from glsim_pl.models import GLSim
from glsim_pl.models.selectors import _REGISTRY, SELECTORS, ScoringShape, get_selector, register_selector

TINY = {"backbone": "vit_tiny_patch16_224", "num_classes": 3, "img_size": 32,
        "backbone_kwargs": {"patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}}  # fmt: skip


def _patch_norm(x):  # a stand-in scoring: only the cost matters here
    return x.patches.norm(dim=-1)


def _patch_norm_flops(s: ScoringShape) -> float:
    return 2.0 * (s.tokens - 1) * s.dim


@pytest.fixture
def cost_selectors():
    register_selector("test_costed", flops=_patch_norm_flops)(_patch_norm)
    register_selector("test_uncosted")(_patch_norm)
    yield
    for name in ("test_costed", "test_uncosted"):
        _REGISTRY.pop(name, None)


def test_every_builtin_declares_its_cost() -> None:
    assert all(get_selector(name).flops is not None for name in SELECTORS)
    assert selector_flops("gls", 224) == 196 * (768 + 2 * 769 + 1)  # cosine: dot product + two norms per patch
    assert selector_flops("random", 224) == 0.0  # known to be free, not unknown


def test_a_registered_cost_is_used_and_a_missing_one_is_none(cost_selectors) -> None:
    assert selector_flops("test_costed", 32, patch=8, dim=32, depth=2, heads=2) == 2.0 * 16 * 32
    assert selector_flops("test_uncosted", 32, patch=8, dim=32, depth=2, heads=2) is None
    torch.manual_seed(0)
    costed, uncosted = GLSim(**TINY, selector="test_costed"), GLSim(**TINY, selector="test_uncosted")
    assert model_gflops(costed, 32) > model_gflops(GLSim(**TINY, selector="random"), 32)
    assert model_gflops(uncosted, 32) is None


def test_the_table_says_n_a_for_an_unknown_cost() -> None:
    jobs = [
        {
            "overrides": [f"method.selector={name}", "seed=1"],
            "metrics": {"test/acc1": 0.5},
            "cost": {"gflops": gflops},
            "config": {},
        }
        for name, gflops in (("gls", 0.002), ("test_uncosted", None))
    ]
    keys, rows = build_rows(jobs)
    table = render_markdown(keys, rows, [], [], "test/acc1")
    uncosted = next(line for line in table.splitlines() if "test_uncosted" in line)
    assert "n/a" in uncosted and "| 0 |" not in uncosted


def test_the_gate_sweep_refuses_a_selector_without_a_cost(cost_selectors) -> None:
    from glsim_pl.analysis.gate_sweep import gate_flops

    with pytest.raises(UserError, match="declares no analytic cost"):
        gate_flops(GLSim(**TINY, selector="test_uncosted"), 32, 0.5)
