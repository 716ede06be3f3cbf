"""python -m glsim_pl.export + glsim_pl.load_pretrained: the round trip gives identical logits."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import glsim_pl
from glsim_pl.errors import UserError
from glsim_pl.export import export
from tests.helpers.checkpoints import save_lightning_ckpt
from tests.helpers.configs import compose_tool


@pytest.mark.parametrize(("method", "selector"), [("glsim", "rollout"), ("vit", "gls")])
def test_round_trip_identical_logits(tmp_path: Path, method: str, selector: str) -> None:
    ckpt = tmp_path / "tiny.ckpt"
    module = save_lightning_ckpt(ckpt, method=method, selector=selector, sim_metric="l2").eval()
    out = tmp_path / "exported"
    export(compose_tool("export", [f"ckpt_path={ckpt}", f"out={out}"], tmp_path / "run"))
    config = json.loads((out / "config.json").read_text())
    assert config["method"] == method
    assert config["class_names"][2] == "c2"
    assert config["img_size"] == 32
    assert config["num_classes"] == 10
    assert config["mean"] == [0.485, 0.456, 0.406]
    model = glsim_pl.load_pretrained(out)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected, got = module.net(x), model(x)
    assert torch.equal(expected.logits, got.logits)
    if method == "glsim":
        assert model.selector == "rollout"
        assert model.sim_metric == "l2"
        assert torch.equal(expected.boxes, got.boxes)


def test_official_checkpoint_exports(official_fixture: dict, tmp_path: Path) -> None:
    ckpt = tmp_path / "official.pth"
    torch.save(official_fixture["checkpoint"], ckpt)
    out = export(compose_tool("export", [f"ckpt_path={ckpt}", f"out={tmp_path / 'e'}"], tmp_path / "run"))
    model = glsim_pl.load_pretrained(out)
    assert model.pretrained_cfg["model_kwargs"]["layer_norm_eps"] == 1e-12
    with torch.no_grad():
        logits = model(official_fixture["images"]).logits
    torch.testing.assert_close(logits, official_fixture["logits"], atol=1e-4, rtol=1e-4)


def test_load_pretrained_errors_and_light_import(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="config.json"):
        glsim_pl.load_pretrained(tmp_path)
    code = "import sys, glsim_pl; assert 'torch' not in sys.modules and 'hydra' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_model_card_shows_the_runs_metrics_only_for_the_checkpoint_it_tested(tmp_path: Path) -> None:
    """The run tested best.ckpt with selector rollout: that export shows test/acc1; last.ckpt, or best.ckpt exported
    with another selector, shows none and says why. The resize factor is printed exactly (41 px, not 1.281 x 32)."""
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    best, last = run / "checkpoints" / "epoch_003-acc1_0.9123.ckpt", run / "checkpoints" / "last.ckpt"
    save_lightning_ckpt(best, selector="rollout")
    save_lightning_ckpt(last, selector="rollout")
    record = {"overrides": ["seed=1"], "metrics": {"test/acc1": 0.9123}, "tested_checkpoint": str(best),
              "config": {"method": {"method": "glsim", "selector": "rollout"}}}  # fmt: skip
    (run / "metrics.json").write_text(json.dumps(record))
    cards = {}
    for name, ckpt, extra in (("best", best, []), ("last", last, []), ("other", best, ["selector=gls"])):
        out = tmp_path / name
        overrides = [f"ckpt_path={ckpt}", f"out={out}", "resize_factor=1.28125", *extra]
        export(compose_tool("export", overrides, tmp_path / f"o_{name}"))
        cards[name] = (out / "README.md").read_text()
    assert "| test/acc1 | 0.9123 |" in cards["best"]
    assert "| test/acc1" not in cards["last"] and "The run tested `epoch_003-acc1_0.9123.ckpt`, not the exported " \
           "`last.ckpt`" in cards["last"]  # fmt: skip
    assert "| test/acc1" not in cards["other"] and "The run tested selector `rollout`, the export uses `gls`" in cards[
        "other"]  # fmt: skip
    config = json.loads((tmp_path / "best" / "config.json").read_text())["preprocessing"]
    assert config["resize_size"] == 41 and "to 41 x 41 (resize factor 1.28125 x 32)" in cards["best"]
