"""Every value checked before any work (train, eval, predict), one run per output folder, resumes compared."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from glsim_pl.errors import UserError, exit_on_user_error
from glsim_pl.train import train
from glsim_pl.training.optim import warn_long_warmup
from glsim_pl.training.run_guard import CKPT_KEY, check_resume, run_identity
from tests.helpers.configs import compose_cfg

BAD_TRAIN_VALUES = [
    ("dataset.batch_size=0", "dataset.batch_size=0: out of range, expected an integer >= 1"),
    ("dataset.train_fraction=1.5", "dataset.train_fraction=1.5: out of range, expected a number > 0 and <= 1"),
    ("dataset.resize_factor=0.9", "dataset.resize_factor=0.9: resizes 32 px images to 28 px, smaller than the 32 px"),
    ("dataset.max_image_pixels=0", "dataset.max_image_pixels=0: out of range, expected an integer >= 1 or null"),
    ("optim.lr=0", "optim.lr=0: out of range, expected a number > 0"),
    ("optim.lr=abc", "optim.lr='abc': expected a number > 0"),
    ("optim.momentum=1.0", "optim.momentum=1.0: out of range, expected a number >= 0 and < 1"),
    ("optim.warmup_steps=-5", "optim.warmup_steps=-5: out of range, expected an integer >= 0"),
    ("optim.optimizer=adam", "optim.optimizer='adam': expected one of sgd, adamw"),
    ("augs.label_smoothing=1.0", "augs.label_smoothing=1.0: out of range, expected a number >= 0 and < 1"),
    ("augs.random_erasing=1.5", "augs.random_erasing=1.5: out of range, expected a number >= 0 and <= 1"),
    ("augs.mixup_alpha=-1", "augs.mixup_alpha=-1: out of range, expected a number >= 0"),
    ("augs.drop_path_rate=1", "augs.drop_path_rate=1: out of range, expected a number >= 0 and < 1"),
    ("trainer.max_epochs=0", "trainer.max_epochs=0: out of range, expected an integer >= 1"),
    ("+trainer.accumulate_grad_batches=0", "trainer.accumulate_grad_batches=0: out of range, expected an integer >= 1"),
]


@pytest.mark.parametrize(("override", "expected"), BAD_TRAIN_VALUES)
def test_train_values_out_of_range_are_one_line(make_cfg, override: str, expected: str, monkeypatch) -> None:
    from glsim_pl.data import base

    monkeypatch.setattr(base.FGVCDataModule, "check", lambda self: pytest.fail("data read before the check"))
    with pytest.raises(SystemExit) as info:
        exit_on_user_error(train)(make_cfg(override))
    message = str(info.value.code)
    assert message.startswith(f"error: {expected}") and "\n" not in message


def test_eval_and_predict_values_are_checked_before_the_checkpoint(tmp_path: Path) -> None:
    from glsim_pl.eval import evaluate
    from glsim_pl.predict import predict

    absent = tmp_path / "absent.ckpt"  # never read: the value check comes first
    cfg = compose_cfg([f"ckpt_path={absent}", "dataset=synthetic", "dataset.batch_size=0"], tmp_path / "eval", "eval")
    with pytest.raises(UserError, match=r"dataset.batch_size=0: out of range, expected an integer >= 1"):
        evaluate(cfg)
    bad = [("topk=0", "topk=0: out of range"), ("batch_size=-2", "batch_size=-2: out of range"),
           ("resize_factor=0.5", "resize_factor=0.5: out of range, expected a number >= 1")]  # fmt: skip
    for override, expected in bad:
        cfg = compose_cfg([f"ckpt_path={absent}", f"input={tmp_path}", override], tmp_path / "p", "predict")
        with pytest.raises(UserError, match=expected):
            predict(cfg)


def test_split_smaller_than_one_batch_is_named(make_cfg) -> None:
    cfg = make_cfg("dataset.train_size=6", "dataset.batch_size=8", "logger=none")
    with pytest.raises(SystemExit) as info:
        exit_on_user_error(train)(cfg)
    message = str(info.value.code)
    assert "the train split has 6 images, fewer than one batch (dataset.batch_size=8" in message
    assert "Traceback" not in message


def test_long_warmup_warns_with_both_numbers(caplog) -> None:
    with caplog.at_level("WARNING"):
        assert warn_long_warmup(500, 120)
    assert "optim.warmup_steps=500" in caplog.text and "120 optimizer steps" in caplog.text
    assert not warn_long_warmup(59, 120)


def test_second_run_in_a_live_runs_folder_is_refused(make_cfg, tmp_path: Path) -> None:
    cfg = make_cfg("logger=none")
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / ".run.lock").write_text(json.dumps({"host": socket.gethostname(), "pid": other.pid,
                                                   "started": "2026-01-01 00:00:00"}))  # fmt: skip
        with pytest.raises(UserError, match=rf"output folder {out} is in use by another run \(pid {other.pid}"):
            train(cfg)
        assert not (out / "metrics.json").exists()
    finally:
        other.kill()
        other.wait()
    assert os.path.exists(out / ".run.lock")  # the other run's lock was left alone


def test_fresh_run_in_a_finished_runs_folder_is_refused(make_cfg) -> None:
    cfg = make_cfg("logger=none")
    out = Path(cfg.paths.output_dir)
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "last.ckpt").write_bytes(b"an earlier run's weights")
    (out / "metrics.json").write_text('{"test/acc1": 0.5}')
    with pytest.raises(UserError, match=rf"output folder {out} holds an earlier run \(metrics.json, checkpoints\)"):
        train(cfg)
    assert (out / "checkpoints" / "last.ckpt").read_bytes() == b"an earlier run's weights"  # nothing overwritten
    assert (out / "metrics.json").read_text() == '{"test/acc1": 0.5}'


def test_resume_with_another_lr_or_batch_is_refused_by_name(make_cfg, tmp_path: Path, caplog) -> None:
    saved = make_cfg()
    path = tmp_path / "last.ckpt"
    torch.save({CKPT_KEY: run_identity(saved), "state_dict": {}}, path)
    check_resume(make_cfg(), str(path))  # the same config passes
    changed = make_cfg("optim.lr=0.05", "dataset.batch_size=4")
    with pytest.raises(UserError, match=r"differs .* in optim.lr: checkpoint 0.001, now 0.05; dataset.batch_size: "
                                        r"checkpoint 8, now 4"):  # fmt: skip
        check_resume(changed, str(path))
    with caplog.at_level("WARNING"):
        check_resume(make_cfg("optim.lr=0.05", "resume_mismatch=warn"), str(path))
    assert "optim.lr: checkpoint 0.001, now 0.05" in caplog.text


def test_checkpoints_carry_the_run_identity_and_a_long_warmup_warns(make_cfg, caplog) -> None:
    cfg = make_cfg("logger=none", "dataset.train_size=40", "dataset.test_size=8", "test=false",
                   "optim.warmup_steps=500", "callbacks.crop_visualizer=null")  # fmt: skip
    with caplog.at_level("WARNING"):
        train(cfg)
    assert "optim.warmup_steps=500 is at least half of this run's 3 optimizer steps" in caplog.text
    ckpt = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt[CKPT_KEY]["optim.lr"] == str(cfg.optim.lr) and ckpt[CKPT_KEY]["dataset.batch_size"] == "8"
