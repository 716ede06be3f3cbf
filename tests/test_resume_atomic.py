"""Atomic checkpoint writes (a kill mid-write leaves the previous file intact) and a clear message for a corrupt one."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import glsim_pl.utils.atomic_io as atomic_io
from glsim_pl.errors import UserError
from glsim_pl.train import _resume_path
from glsim_pl.training.checkpointing import AtomicCheckpointIO
from glsim_pl.utils.atomic_io import atomic_torch_save


def test_failure_between_write_and_rename_keeps_the_old_file(tmp_path: Path, monkeypatch) -> None:
    last = tmp_path / "last.ckpt"
    atomic_torch_save({"state_dict": {"w": torch.ones(3)}, "global_step": 1}, last)

    def interrupted(src: str, dst: str) -> None:
        raise KeyboardInterrupt  # e.g. a signal arriving after the data was written, before the rename

    monkeypatch.setattr(atomic_io.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "global_step": 2}, last)
    assert torch.load(last, weights_only=True)["global_step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # the temporary file is removed


def test_stale_temporary_files_of_a_killed_writer_are_cleaned_up(tmp_path: Path) -> None:
    stale = tmp_path / ".last.ckpt.12345.tmp"
    stale.write_bytes(b"half a checkpoint")
    atomic_torch_save({"state_dict": {}}, tmp_path / "last.ckpt")
    assert not stale.exists()


def test_corrupt_last_checkpoint_names_the_newest_loadable_one(make_cfg, tmp_path: Path) -> None:
    folder = tmp_path / "run" / "checkpoints"
    older, newer = folder / "epoch_001-acc1_0.5000.ckpt", folder / "epoch_002-acc1_0.6000.ckpt"
    for path in (older, newer):
        atomic_torch_save({"state_dict": {"w": torch.ones(2)}}, path)
        time.sleep(0.02)  # distinct modification times
    last = folder / "last.ckpt"
    atomic_torch_save({"state_dict": {"w": torch.ones(1000)}}, last)
    last.write_bytes(last.read_bytes()[:300])  # truncated, e.g. by a copy that ran out of space
    with pytest.raises(UserError) as info:
        _resume_path(make_cfg("ckpt_path=last", output_dir=tmp_path / "run"))
    message = str(info.value)
    assert f"{last} cannot be read as a checkpoint" in message
    assert f"the newest loadable checkpoint is {newer}: resume with ckpt_path={newer}" in message
    assert "\n" not in message


WRITER = """
import sys, torch
from glsim_pl.utils.atomic_io import atomic_torch_save
atomic_torch_save({"state_dict": {"w": torch.zeros(100_000_000)}, "global_step": 2}, sys.argv[1])
"""


@pytest.mark.slow
def test_sigkill_during_a_large_write_keeps_the_old_file(tmp_path: Path) -> None:
    last = tmp_path / "last.ckpt"
    atomic_torch_save({"state_dict": {"w": torch.ones(3)}, "global_step": 1}, last)
    child = subprocess.Popen([sys.executable, "-c", WRITER, str(last)])
    deadline = time.monotonic() + 120
    while not any(p.suffix == ".tmp" and p.stat().st_size > 0 for p in tmp_path.iterdir()):
        assert time.monotonic() < deadline and child.poll() is None, "the writer never started writing"
        time.sleep(0.005)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert torch.load(last, weights_only=True)["global_step"] == 1
