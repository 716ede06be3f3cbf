"""DDP: no unused parameters (find_unused_parameters=false is safe), 2 CPU processes = 1 process on validation."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch

from glsim_pl.config.groups import module_kwargs, resolve_trainer_precision, transform_augs
from glsim_pl.config.instantiate import instantiate
from glsim_pl.train import train
from glsim_pl.training.module import GLSimLitModule
from glsim_pl.training.strategies import HydraDDPStrategy


@pytest.mark.parametrize("method", ["glsim", "vit"])
def test_every_parameter_gets_a_gradient(make_cfg, method: str) -> None:
    """What DDP's find_unused_parameters=false needs: one backward reaches every trainable parameter."""
    cfg = make_cfg(f"method={method}", "model.layer_norm_eps=1e-6")
    module = GLSimLitModule(**module_kwargs(cfg, [str(i) for i in range(10)])).train()
    images, labels = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    module.criterion(module(images).logits, labels).backward()
    unused = [n for n, p in module.named_parameters() if p.requires_grad and p.grad is None]
    assert unused == [], unused


def test_ddp_preset_builds_a_hydra_safe_ddp_trainer(make_cfg) -> None:
    cfg = make_cfg("trainer=ddp", "trainer.accelerator=cpu", "logger=none", "callbacks=none")
    resolve_trainer_precision(cfg)  # as the entry point does: precision=auto is ours, not Lightning's
    trainer = instantiate(cfg.trainer)
    assert isinstance(trainer.strategy, HydraDDPStrategy)
    assert trainer.strategy._ddp_kwargs.get("find_unused_parameters") is False
    assert trainer.num_devices == 2


@pytest.mark.slow
def test_two_process_ddp_matches_single_process(make_cfg, tmp_path: Path) -> None:
    """A real 2-process fit (gloo; gradients all-reduced with no unused-parameter search), then validation of its
    final weights: 2 processes (metrics synced across ranks) give the single process's val numbers, bit for bit."""
    ddp = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy.start_method=spawn"]
    cfg = make_cfg("logger=none", "test=false", "dataset.batch_size=4", "callbacks.crop_visualizer=null", *ddp,
                   output_dir=tmp_path / "ddp")  # fmt: skip
    fitted = train(cfg)
    assert json.loads((tmp_path / "ddp" / "metrics.json").read_text())["device"] == "cpu x2"

    module = GLSimLitModule.load_from_checkpoint(tmp_path / "ddp" / "checkpoints" / "last.ckpt")
    datamodule = instantiate(cfg.dataset, augs=transform_augs(cfg))
    quiet = dict(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    validate = lambda trainer: trainer.validate(module, datamodule=datamodule)[0]
    assert validate(L.Trainer(**quiet))["val/loss"] == fitted["val/loss"]  # the fit's last validation

    torch.manual_seed(0)  # decisive logits (a 1-epoch head is near zero: argmax would hinge on rounding noise)
    torch.nn.init.normal_(module.net.head.weight, std=1.0)
    single, two = validate(L.Trainer(**quiet)), validate(instantiate(cfg.trainer, callbacks=[], **quiet))
    for key in ("val/acc1", "val/acc1_macro", "val/acc5", "val/loss", "val/box_iou"):
        assert two[key] == single[key], key


@pytest.mark.slow
def test_ddp_popen_inside_a_hydra_multirun(tmp_path: Path) -> None:
    """The Hydra+DDP pitfall: each sweep job must start its own rank 1 in its own folder, not re-run the sweep."""
    import subprocess
    import sys

    sweep = tmp_path / "multirun"
    cmd = [sys.executable, "-m", "glsim_pl.train", "-m", "experiment=smoke_reproduce", "trainer=ddp",
           "trainer.accelerator=cpu", "trainer.devices=2", "seed=1,2", "trainer.max_epochs=1",
           "dataset.train_size=40", "dataset.test_size=20", f"hydra.sweep.dir={sweep}"]  # fmt: skip
    cmd.append("dataset.batch_size=8")  # 40 images on 2 ranks: a batch of 32 would give no training step
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.parent.name for p in sweep.glob("*/train_rank1.log")) == ["0", "1"]
    records = [json.loads((sweep / job / "metrics.json").read_text()) for job in ("0", "1")]
    assert [(r["seed"], r["device"]) for r in records] == [(1, "cpu x2"), (2, "cpu x2")]
    assert not (tmp_path / "outputs").exists()  # no child ran in run mode
