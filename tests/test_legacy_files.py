"""Files written before the current layout keep working: an old run folder evaluates to the same metrics to the
bit and resumes; an old export gives the same logits and boxes (tests/fixtures/legacy/README.md)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import glsim_pl
from tests.helpers.configs import FIXTURES, compose_cfg

LEGACY = FIXTURES / "legacy"
EXPECTED = json.loads((LEGACY / "expected.json").read_text())


def _run_copy(tmp_path: Path) -> Path:
    run = tmp_path / "old_run"
    shutil.copytree(LEGACY / "run", run)
    for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
        file = run / ".hydra" / name
        file.write_text(file.read_text().replace("RUN_DIR", str(run)))
    return run


def test_old_export_gives_the_same_logits_and_boxes() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    model = glsim_pl.load_pretrained(LEGACY / "export")
    with torch.no_grad():
        out = model(x)
    assert out.logits.tolist() == EXPECTED["logits"]
    assert out.boxes.tolist() == EXPECTED["boxes"]


def test_old_checkpoint_loads_through_the_python_api() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    model = glsim_pl.load_pretrained(LEGACY / "run" / "checkpoints" / "last.ckpt")
    with torch.no_grad():
        assert model(x).logits.tolist() == EXPECTED["logits"]


def test_old_run_folder_evaluates_to_the_same_metrics(tmp_path: Path) -> None:
    from glsim_pl.eval import evaluate

    run = _run_copy(tmp_path)
    cfg = compose_cfg([f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}", "eval.cost=false"], tmp_path / "e", "eval")
    result = evaluate(cfg)
    expected = EXPECTED["eval_metrics"]
    counts = {k: v for k, v in expected.items() if "loss" not in k and "iou" not in k}
    assert {k: result[k] for k in counts} == counts  # the same predictions on the same images, to the bit
    # Loss and IoU are now exact means of the per-image values; the old main summed batch means in float32.
    for key in expected.keys() - counts.keys():
        assert result[key] == pytest.approx(expected[key], rel=1e-6)


def _resume_old_run(run: Path, *extra: str) -> subprocess.CompletedProcess:
    overrides = yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text())
    overrides = [o for o in overrides if not o.startswith(("trainer.max_epochs=", "logger="))]
    args = [sys.executable, "-m", "glsim_pl.train", *overrides, "method.top_o=8", *extra, "trainer.max_epochs=2",
            "logger=csv", "ckpt_path=last", f"hydra.run.dir={run}"]  # fmt: skip
    # method.top_o=8: the synthetic default's top-O when this folder was written (now 4): a resume must match it
    return subprocess.run(args, capture_output=True, text=True, timeout=300)


def test_old_run_folder_resume_names_a_recipe_key_whose_default_changed(tmp_path: Path) -> None:
    run = _run_copy(tmp_path)  # written without layer-wise LR decay; the synthetic default now has 0.75
    proc = _resume_old_run(run)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "optim.layer_decay: checkpoint null, now 0.75" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_old_run_folder_resumes_with_ckpt_path_last(tmp_path: Path) -> None:
    run = _run_copy(tmp_path)
    proc = _resume_old_run(run, "optim.layer_decay=null")  # the recipe it was written with
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["protocol"]["epochs"] == 2
    steps = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    assert steps == 6  # 30 train images at batch 8 (last partial batch dropped): 3 steps before, 3 resumed


def test_flat_hyperparameters_are_regrouped_and_a_bare_net_group_keeps_every_knob() -> None:
    from glsim_pl.model_io.pretrained import upgrade_hparams

    old = torch.load(LEGACY / "run" / "checkpoints" / "last.ckpt", weights_only=True)["hyper_parameters"]
    assert "net" not in old and "lr" in old  # the fixture holds the flat form
    hp = upgrade_hparams(old)
    assert hp["num_classes"] == old["num_classes"] and hp["class_names"] == old["class_names"]
    assert hp["optim"] == {k: old[k] for k in ("optimizer", "lr", "momentum", "weight_decay", "warmup_steps",
                                                "warmup_lr", "min_lr")}  # fmt: skip
    assert hp["net"]["backbone"] == old["backbone"] and "lr" not in hp["net"] and "class_names" not in hp["net"]
    bare = {"method": "glsim", "backbone": "vit_tiny_patch16_224", "a_new_knob": 3}
    assert upgrade_hparams(bare)["net"] == bare
