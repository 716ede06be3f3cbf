"""Exact resume: a run interrupted anywhere and resumed with ``ckpt_path=last`` ends with the uninterrupted run's
val and test metrics (CPU, deterministic, fp32: 1e-6), with loader workers, stochastic depth and random augmentations.

The fast case interrupts in-process (an exception that Lightning cannot handle, raised after a step checkpoint);
the slow ones SIGKILL a real ``python -m glsim_pl.train`` at each kind of point, and a 2-process DDP run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch.callbacks import Callback

import glsim_pl.train as train_module
from glsim_pl.data.sampling import EpochSampler, ResumableLoader, SeededCollate, SeededView, mix_seed
from glsim_pl.train import train
from tests.helpers.configs import TINY_SYNTHETIC

# 35 train images (val 10) at batch 8: 4 steps an epoch; random crop, flip, erasing, stochastic depth
RUN = ["logger=none", "callbacks.crop_visualizer=null", "callbacks.per_class_csv=null", "trainer.deterministic=true",
       "dataset.train_size=45", "dataset.test_size=16", "augs.drop_path_rate=0.1", "augs.random_erasing=0.25",
       "+trainer.num_sanity_val_steps=0"]  # fmt: skip
METRICS = ("val/acc1", "val/loss", "val/acc1_best", "test/acc1", "test/loss")


class _Interrupt(BaseException):
    """Not an Exception: nothing in the run handles it, like a kill (checkpoints already written stay)."""


class _InterruptAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: Any, *args: Any) -> None:
        if trainer.global_step == self.step:
            raise _Interrupt


def _assert_same(resumed: dict[str, float], reference: dict[str, float]) -> None:
    for key in METRICS:
        assert resumed[key] == pytest.approx(reference[key], rel=0, abs=1e-6), key


def test_interrupted_mid_epoch_with_workers_resumes_exactly(make_cfg, tmp_path: Path, monkeypatch) -> None:
    """Fast case: no test stage; the final weights must be bit-identical (the slow cases compare test metrics)."""
    overrides = [*RUN, "dataset.num_workers=2", "trainer.max_epochs=2", "test=false",
                 "callbacks.step_checkpoint.every_n_train_steps=3"]  # fmt: skip
    reference = train(make_cfg(*overrides, output_dir=tmp_path / "reference"))
    build = train_module.instantiate

    def interrupt(cfg: Any, **kwargs: Any) -> Any:
        if "callbacks" in kwargs:
            kwargs["callbacks"] = [*kwargs["callbacks"], _InterruptAt(7)]
        return build(cfg, **kwargs)

    monkeypatch.setattr(train_module, "instantiate", interrupt)
    with pytest.raises(_Interrupt):
        train(make_cfg(*overrides, output_dir=tmp_path / "run"))
    monkeypatch.setattr(train_module, "instantiate", build)
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 6  # mid-epoch 2 (4 steps an epoch)

    resumed = train(make_cfg(*overrides, "ckpt_path=last", output_dir=tmp_path / "run"))
    for key in ("val/acc1", "val/loss", "val/acc1_best"):
        assert resumed[key] == pytest.approx(reference[key], rel=0, abs=1e-6), key
    weights = [
        torch.load(d / "checkpoints" / "last.ckpt", weights_only=True)
        for d in (tmp_path / "reference", last.parent.parent)
    ]
    assert weights[0]["global_step"] == weights[1]["global_step"] == 8
    for name, tensor in weights[0]["state_dict"].items():
        assert torch.equal(tensor, weights[1]["state_dict"][name]), name


def test_training_order_and_augmentation_seeds_are_functions_of_seed_epoch_sample() -> None:
    data = list(range(10))
    a, b = EpochSampler(data, 3, batch_size=2), EpochSampler(data, 3, batch_size=2)
    b.set_epoch(1)
    epoch0, epoch1 = list(a), list(b)
    assert sorted(k.index for k in epoch0) == data and [k.index for k in epoch0] != [k.index for k in epoch1]
    assert all(k.seed == mix_seed(3, 1, k.index) for k in epoch1)
    halves = [list(EpochSampler(data, 3, batch_size=2, num_replicas=2, rank=r)) for r in (0, 1)]
    assert sorted(k.index for half in halves for k in half) == data  # two ranks split one permutation

    a.set_epoch(0)
    it = iter(a)
    consumed = [next(it) for _ in range(4)]
    state = a.state_dict()
    c = EpochSampler(data, 3, batch_size=2)
    c.load_state_dict(state)
    assert consumed + list(c) == epoch0  # mid-epoch position restored
    done = {**state, "yielded": 10}
    c.load_state_dict(done)
    assert [k.index for k in c] == [k.index for k in epoch1]  # a completed epoch continues with the next one


def test_seeded_view_draws_per_sample_and_restores_the_callers_rng() -> None:
    view = SeededView([(0,), (1,)])

    class Draw:
        def __getitem__(self, i: int) -> tuple[float]:
            return (torch.rand(()).item(),)

    view.dataset = Draw()
    torch.manual_seed(0)
    before = torch.get_rng_state()
    first, again = view[(0, 11)], view[(1, 11)]
    assert first == again  # same seed, same draw, whichever index or worker
    assert torch.equal(torch.get_rng_state(), before)
    batch = SeededCollate(lambda items: torch.rand(()).item())([first, again])
    assert batch == SeededCollate(lambda items: torch.rand(()).item())([first, again])


class _Indices(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 40

    def __getitem__(self, index: int) -> tuple[int, float]:
        return index, torch.rand(()).item()  # the draw: a function of the sample's key only


@pytest.mark.parametrize(("saved_workers", "resumed_workers"), [(2, 0), (0, 2)])
def test_loader_resumes_a_state_saved_with_another_worker_count(saved_workers: int, resumed_workers: int) -> None:
    def loader(workers: int) -> ResumableLoader:
        sampler = EpochSampler(_Indices(), seed=5, batch_size=4)
        sampler.set_epoch(2)
        return ResumableLoader(SeededView(_Indices()), sampler=sampler, batch_size=4, drop_last=True,
                               collate_fn=SeededCollate(), num_workers=workers)  # fmt: skip

    reference = list(loader(0))
    saved = loader(saved_workers)
    it = iter(saved)
    head = [next(it) for _ in range(3)]
    state = saved.state_dict()
    resumed = loader(resumed_workers)
    resumed.load_state_dict(state)
    for got, want in zip(head + list(resumed), reference, strict=True):
        assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))


# -- slow: real SIGKILLs ---------------------------------------------------------------------------------------
KILLER = """
import os, signal
from lightning.pytorch.callbacks import Callback

class KillAt(Callback):
    def __init__(self, step: int, where: str):
        self.step, self.where = step, where

    def _kill(self, trainer):
        if trainer.global_step == self.step and not trainer.sanity_checking:
            os.kill(os.getpid(), signal.SIGKILL)

    def on_train_batch_end(self, trainer, *args):
        if self.where == "batch":
            self._kill(trainer)

    def on_validation_batch_end(self, trainer, *args):
        if self.where == "validation":
            self._kill(trainer)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        if self.where == "checkpoint_write" and trainer.global_step == self.step:
            import glsim_pl.utils.atomic_io as io
            real = io.torch.save
            def save_then_die(obj, f, *a, **k):
                real(obj, f, *a, **k)
                f.flush()
                os.kill(os.getpid(), signal.SIGKILL)  # the temporary file is written, not yet renamed
            io.torch.save = save_then_die
"""


def _killed_run(tmp_path: Path, out: Path, overrides: list[str], step: int, where: str) -> None:
    (tmp_path / "killer.py").write_text(KILLER)
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}

    kill = ["+callbacks.kill._target_=killer.KillAt", f"+callbacks.kill.step={step}", f"+callbacks.kill.where={where}"]
    cmd = [sys.executable, "-m", "glsim_pl.train", *TINY_SYNTHETIC, *overrides, f"hydra.run.dir={out}", *kill]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert not (out / "metrics.json").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("where", "step", "step_every", "saved_step"),
    [
        ("batch", 5, None, 4),  # just after an epoch boundary: resumes from the epoch-end last.ckpt
        ("batch", 7, 2, 6),  # mid-epoch, from the step checkpoint
        ("validation", 8, None, 4),  # during the second validation
        ("checkpoint_write", 6, 2, 4),  # killed while writing last.ckpt at step 6: the step-4 one must survive
    ],
)
def test_sigkill_anywhere_then_resume_matches_uninterrupted(
    make_cfg, tmp_path: Path, where: str, step: int, step_every: int | None, saved_step: int
) -> None:
    overrides = [*RUN, "dataset.num_workers=2", "trainer.max_epochs=3", "augs.mixup_alpha=0.2",
                 f"callbacks.step_checkpoint.every_n_train_steps={step_every or 'null'}"]  # fmt: skip
    reference = train(make_cfg(*overrides, output_dir=tmp_path / "reference"))
    out = tmp_path / "killed"
    _killed_run(tmp_path, out, overrides, step, where)
    last = out / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == saved_step
    assert not list(last.parent.glob(".*.tmp")) or where == "checkpoint_write"
    resumed = train(make_cfg(*overrides, "ckpt_path=last", output_dir=out))
    _assert_same(resumed, reference)


@pytest.mark.slow
def test_two_process_ddp_sigkill_then_resume_matches_uninterrupted(make_cfg, tmp_path: Path) -> None:
    ddp = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy.start_method=popen"]
    overrides = [*RUN, "dataset.num_workers=1", "dataset.batch_size=4", "trainer.max_epochs=2", *ddp,
                 "callbacks.step_checkpoint.every_n_train_steps=2"]  # fmt: skip
    out_ref = tmp_path / "reference"
    env = {**os.environ}

    base = [sys.executable, "-m", "glsim_pl.train", *TINY_SYNTHETIC, *overrides]
    ref = subprocess.run([*base, f"hydra.run.dir={out_ref}"], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=900)  # fmt: skip
    assert ref.returncode == 0, ref.stderr[-3000:]
    out = tmp_path / "killed"
    _killed_run(tmp_path, out, overrides, 5, "batch")  # rank 0 dies at step 5 (last.ckpt: step 4); rank 1 follows
    assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4
    resumed = subprocess.run([*base, "ckpt_path=last", f"hydra.run.dir={out}"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=900)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    import json

    a, b = (json.loads((d / "metrics.json").read_text()) for d in (out_ref, out))
    for key in METRICS:
        assert b["metrics"][key] == pytest.approx(a["metrics"][key], abs=1e-6), key
