"""End-to-end runs through train(cfg) on the synthetic set."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from glsim_pl.train import train
from glsim_pl.training.module import GLSimLitModule


def test_train_then_test_best_checkpoint(make_cfg, tmp_path: Path) -> None:
    cfg = make_cfg("logger=csv", "callbacks.crop_visualizer.every_n_epochs=1")
    metrics = train(cfg)
    out = Path(cfg.paths.output_dir)
    assert 0.0 <= metrics["test/acc1"] <= 1.0
    assert "val/acc1_best" in metrics
    best = Path(metrics["best_ckpt"])
    assert best.is_file() and best.name.startswith("epoch_000-acc1_")
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == sorted([best.name, "last.ckpt"])
    assert (out / "test_per_class_acc.csv").read_text().splitlines()[0] == "class_id,class_name,acc1,support"
    assert len((out / "test_per_class_acc.csv").read_text().splitlines()) == 1 + 10
    assert list((out / "crops").glob("epoch_*.png"))
    ckpt = torch.load(best, weights_only=True)  # primitives-only hyperparameters
    assert ckpt["hyper_parameters"]["net"]["method"] == "glsim"
    model = GLSimLitModule.load_from_checkpoint(best)
    assert model.hparams.num_classes == 10


def test_plain_vit_baseline(make_cfg) -> None:
    cfg = make_cfg("method=vit", "logger=none", "callbacks=none", "test=false")
    train(cfg)


def test_resume_from_last(make_cfg, tmp_path: Path) -> None:
    out = tmp_path / "resumed"
    first = train(make_cfg("logger=none", output_dir=out))
    assert first["best_ckpt"]
    steps = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    cfg = make_cfg("logger=none", "trainer.max_epochs=2", "ckpt_path=last", output_dir=out)
    train(cfg)
    last = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert (last["epoch"], last["global_step"]) == (1, 2 * steps)  # saved in epoch 1 after resuming, not restarting


def test_resume_missing_checkpoint_is_clear(make_cfg) -> None:
    from glsim_pl.errors import UserError

    with pytest.raises(UserError, match="no checkpoint at"):
        train(make_cfg("logger=none", "callbacks=none", "ckpt_path=last"))


class _Built(Exception):
    """Stops a run once its data module is set up."""


@pytest.mark.parametrize("cuda", [True, False])
def test_device_normalize_auto_follows_the_trainers_accelerator(make_cfg, monkeypatch, cuda: bool) -> None:
    """``dataset.device_normalize=auto`` is on when the run trains on CUDA (faked here), although the data module is
    set up before the trainer exists; off otherwise."""
    import glsim_pl.train as train_module
    from glsim_pl.data.base import FGVCDataModule

    resolved: list[bool] = []

    def stop(*args, **kwargs):
        raise _Built

    monkeypatch.setattr(train_module, "uses_cuda", lambda accelerator: cuda)
    monkeypatch.setattr(train_module, "GLSimLitModule", stop)
    original_setup = FGVCDataModule.setup

    def setup(self, stage=None):
        original_setup(self, stage)
        resolved.append(self._finish_batch)

    monkeypatch.setattr(FGVCDataModule, "setup", setup)
    with pytest.raises(_Built):
        train(make_cfg("dataset.device_normalize=auto", "logger=none"))
    assert resolved == [cuda]
