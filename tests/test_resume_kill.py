"""Interruptions: SIGKILL mid-epoch + ``ckpt_path=last`` ends like an uninterrupted run; SIGTERM saves last.ckpt."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from glsim_pl.train import train

TINY = ["dataset.train_size=80", "dataset.test_size=20", "model=vit_tiny_scratch", "dataset.image_size=32",
        "model.backbone_kwargs={patch_size: 8, embed_dim: 32, depth: 2, num_heads: 2}", "dataset.num_workers=0",
        "dataset.batch_size=8", "trainer.accelerator=cpu", "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false", "optim.warmup_steps=2", "logger=none",
        "callbacks.crop_visualizer=null", "trainer.max_epochs=2", "trainer.deterministic=true",
        "callbacks.step_checkpoint.every_n_train_steps=3"]  # fmt: skip
# a callback that sends a signal to its own process after a given optimizer step (imported by the child run)
SIGNALLER = """
import os, signal
from lightning.pytorch.callbacks import Callback

class SignalAt(Callback):
    def __init__(self, step: int, sig: str):
        self.step, self.sig = step, getattr(signal, sig)

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.sig)
"""


def _run_and_signal(tmp_path: Path, out: Path, step: int, sig: str) -> subprocess.CompletedProcess:
    (tmp_path / "signaller.py").write_text(SIGNALLER)
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    cmd = [sys.executable, "-m", "glsim_pl.train", *TINY, f"hydra.run.dir={out}",
           "+callbacks.signal._target_=signaller.SignalAt", f"+callbacks.signal.step={step}",
           f"+callbacks.signal.sig={sig}"]  # fmt: skip
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(make_cfg, tmp_path: Path) -> None:
    reference = train(make_cfg(*TINY, output_dir=tmp_path / "reference"))

    out = tmp_path / "killed"
    proc = _run_and_signal(
        tmp_path, out, step=13, sig="SIGKILL"
    )  # epoch 2 of 2 (10 steps/epoch), after the step-12 save
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    last = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 12  # mid-epoch: the every-3-steps checkpoint
    assert not (out / "metrics.json").exists()

    resumed = train(make_cfg(*TINY, "ckpt_path=last", output_dir=out))
    for key in ("val/acc1", "val/loss", "test/acc1", "test/loss"):
        assert resumed[key] == pytest.approx(reference[key], rel=1e-5, abs=1e-6), key


@pytest.mark.slow
def test_sigterm_saves_last_checkpoint_before_exit(tmp_path: Path) -> None:
    out = tmp_path / "terminated"
    proc = _run_and_signal(tmp_path, out, step=4, sig="SIGTERM")  # between the step-3 and step-6 saves
    assert proc.returncode == 0, proc.stderr[-2000:]  # Lightning ends a SIGTERM'd fit with SystemExit()
    assert not (out / "metrics.json").exists()  # stopped before testing
    assert "SIGTERM: saved" in proc.stderr + proc.stdout
    assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4
