"""ema.decay: an EMA of the weights for validation, the best checkpoint and test; resume continues both."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import pytest
import torch
from lightning.pytorch.trainer.states import TrainerFn
from torch.optim.swa_utils import AveragedModel

from glsim_pl.callbacks.ema import WeightEMA
from glsim_pl.errors import UserError
from glsim_pl.model_io.checkpoints import load_module
from glsim_pl.train import train


def _loading(fn: TrainerFn) -> mock.Mock:
    ema = WeightEMA(0.9)
    module = mock.Mock()
    ema._average_model = AveragedModel(torch.nn.Linear(2, 2))
    state = {"weight": torch.zeros(2, 2), "bias": torch.zeros(2)}
    checkpoint = {"state_dict": state, "current_model_state": state, "averaging_state": {"n_averaged": torch.tensor(3)}}
    ema.on_load_checkpoint(SimpleNamespace(state=SimpleNamespace(fn=fn)), module, checkpoint)
    return module


def test_a_checkpoint_read_for_test_keeps_the_average() -> None:
    assert not _loading(TrainerFn.TESTING).load_state_dict.called  # the state_dict (the EMA) stays in the model
    assert _loading(TrainerFn.FITTING).load_state_dict.called  # a resume restores the training weights


def test_off_by_default_and_range_checked(make_cfg) -> None:
    from glsim_pl.config.validate import validate_config

    assert make_cfg().ema.decay is None
    with pytest.raises(UserError, match=r"ema.decay=1.0: out of range"):
        validate_config(make_cfg("ema.decay=1.0"))


@pytest.mark.slow
def test_train_with_ema_then_resume(make_cfg, tmp_path: Path) -> None:
    out = tmp_path / "ema"
    metrics = train(make_cfg("ema.decay=0.5", "logger=none", output_dir=out))
    best = torch.load(metrics["best_ckpt"], weights_only=True)
    ema, current = best["state_dict"], best["current_model_state"]
    assert ema.keys() == current.keys()
    assert any(not torch.equal(ema[k], current[k]) for k in ema)  # the checkpoint's weights are the average
    module, _ = load_module(metrics["best_ckpt"])  # eval / export read the average
    assert torch.equal(module.net.head.weight, ema["net.head.weight"])
    steps = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    train(make_cfg("ema.decay=0.5", "logger=none", "trainer.max_epochs=2", "ckpt_path=last", output_dir=out))
    last = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert (last["epoch"], last["global_step"]) == (1, 2 * steps) and "current_model_state" in last
