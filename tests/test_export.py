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
