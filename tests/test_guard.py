"""Divergence guard: a non-finite loss stops the run with one message, keeps the last good last.ckpt, writes no
result; ``guard.nonfinite=skip`` skips and counts such steps instead."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from glsim_pl.callbacks.divergence_guard import DivergenceGuard
from glsim_pl.errors import UserError, exit_on_user_error
from glsim_pl.train import train
from glsim_pl.training.module import GLSimLitModule

QUIET = ["logger=none", "callbacks.crop_visualizer=null", "callbacks.per_class_csv=null", "dataset.num_workers=0"]


def _nan_loss_at(monkeypatch, steps: set[int]) -> None:
    """The loss of the optimizer steps whose global_step (before the step) is in ``steps`` becomes NaN."""
    real = GLSimLitModule.training_step

    def training_step(self, batch, batch_idx):
        loss = real(self, batch, batch_idx)
        return loss * math.nan if self.trainer.global_step in steps else loss

    monkeypatch.setattr(GLSimLitModule, "training_step", training_step)


def _finite(ckpt_path: Path) -> bool:
    state = torch.load(ckpt_path, weights_only=True)["state_dict"]
    return all(torch.isfinite(t).all() for t in state.values() if t.is_floating_point())


def test_nan_loss_stops_with_one_message_and_keeps_the_last_good_checkpoint(make_cfg, tmp_path, monkeypatch) -> None:
    _nan_loss_at(monkeypatch, {4})  # the 5th optimizer step; step checkpoints after steps 2, 4, 6
    cfg = make_cfg(*QUIET, "callbacks.step_checkpoint.every_n_train_steps=2", output_dir=tmp_path / "run")
    with pytest.raises(SystemExit) as exit_info:
        exit_on_user_error(train)(cfg)
    message = str(exit_info.value.code)
    assert message.startswith("error: training diverged") and "\n" not in message
    assert "at step 5 (epoch 0, lr " in message and "loss nan" in message
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert str(last) in message
    assert torch.load(last, weights_only=True)["global_step"] == 4  # the step-6 save was refused
    assert _finite(last)
    assert not (tmp_path / "run" / "metrics.json").exists()


@pytest.mark.slow
def test_huge_learning_rate_ends_non_zero_without_a_result(make_cfg, tmp_path) -> None:
    cfg = make_cfg(*QUIET, "optim.lr=1e8", "optim.warmup_steps=0", output_dir=tmp_path / "run")
    with pytest.raises(SystemExit) as exit_info:
        exit_on_user_error(train)(cfg)
    assert "training diverged" in str(exit_info.value.code)
    assert not (tmp_path / "run" / "metrics.json").exists()
    for ckpt in (tmp_path / "run" / "checkpoints").glob("*.ckpt"):
        assert _finite(ckpt), ckpt


def test_skip_mode_skips_and_counts_non_finite_steps(make_cfg, tmp_path, monkeypatch) -> None:
    _nan_loss_at(monkeypatch, {1, 3})
    metrics = train(make_cfg(*QUIET, "guard.nonfinite=skip", "test=false", output_dir=tmp_path / "run"))
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert _finite(last)  # a NaN gradient applied once would have made every weight NaN
    assert torch.load(last, weights_only=True)["callbacks"]["DivergenceGuard"] == {"skipped": 2}
    assert math.isfinite(metrics["val/loss"])


def test_guard_mode_is_checked() -> None:
    with pytest.raises(UserError, match="guard.nonfinite='halt'"):
        DivergenceGuard("halt")  # type: ignore[arg-type]


def test_clipping_with_the_guards_norm_gives_the_same_weights(make_cfg, tmp_path, monkeypatch) -> None:
    """With the guard on, clipping reuses its gradient norm; with it off, Lightning clips on its own: same weights."""
    reused: list[int] = []
    clip = torch.nn.utils.clip_grads_with_norm_
    monkeypatch.setattr(torch.nn.utils, "clip_grads_with_norm_", lambda *a, **k: (reused.append(1), clip(*a, **k))[1])
    states = {}
    for mode in ("stop", "off"):
        reused.clear()
        overrides = [f"guard.nonfinite={mode}", "test=false", "optim.lr=0.5", "trainer.gradient_clip_val=0.05"]
        train(make_cfg(*QUIET, *overrides, output_dir=tmp_path / mode))
        states[mode] = torch.load(tmp_path / mode / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
        assert bool(reused) == (mode == "stop")  # the guard's norm took the module's path; off: Lightning's
    assert states["stop"].keys() == states["off"].keys()
    for key, value in states["stop"].items():
        assert torch.equal(value, states["off"][key]), key
