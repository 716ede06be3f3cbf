"""Watching a run: plain progress lines without a terminal, training curves, the crop grid, resumed runs that
continue their TensorBoard / CSV version, and no library noise in the output."""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

from glsim_pl.callbacks import ProgressLog, TrainingCurves
from glsim_pl.callbacks.crop_visualizer import balanced_sample
from glsim_pl.errors import UserError
from glsim_pl.plots.curves import training_curves_figure
from glsim_pl.train import train
from glsim_pl.training.module import GLSimLitModule
from glsim_pl.utils.logging import quiet_library_notices
from tests.helpers.configs import TINY_SYNTHETIC

STEP_LINE = re.compile(r"step (\d+)/(\d+) \(epoch (\d+)/(\d+)\) loss ([\d.]+) lr ([\d.e-]+) ([\d.]+) img/s ETA [\d:]+")
EPOCH_LINE = re.compile(r"epoch (\d+)/(\d+) done in [\d:]+: train/loss [\d.]+ .*val/acc1 ([\d.]+) ")
NOISE = ("Tip:", "Total FLOPs", "Total Flops", "LeafSpec", "set_vital")


def _count_host_reads(monkeypatch: pytest.MonkeyPatch, cls: type, reads: list[int]) -> None:
    """Wrap ``cls.on_train_batch_end``: every Python-level tensor read inside it appends the step to ``reads``."""
    original_hook = cls.on_train_batch_end
    names = ("item", "tolist", "__bool__", "__int__", "__float__")

    def hook(self, trainer, *args, **kwargs):
        saved = {name: getattr(torch.Tensor, name) for name in names}
        for name, original in saved.items():

            def wrapper(tensor, *a, _original=original):
                reads.append(trainer.global_step)
                return _original(tensor, *a)

            setattr(torch.Tensor, name, wrapper)
        try:
            return original_hook(self, trainer, *args, **kwargs)
        finally:
            for name, original in saved.items():
                setattr(torch.Tensor, name, original)

    monkeypatch.setattr(cls, "on_train_batch_end", hook)


def test_progress_lines_curves_and_no_per_step_host_reads(make_cfg, monkeypatch, caplog, tmp_path: Path) -> None:
    """logger=none: a step line every 2 steps (the losses read back only then), one line per epoch with the val
    metrics, and training_curves.json/png whose series are the run's steps, losses, lrs and val top-1."""
    progress_reads: list[int] = []
    curve_reads: list[int] = []
    _count_host_reads(monkeypatch, ProgressLog, progress_reads)
    _count_host_reads(monkeypatch, TrainingCurves, curve_reads)
    cfg = make_cfg("logger=none", "test=false", "trainer.max_epochs=2", "progress.lines=true",
                   "progress.every_n_steps=2", "progress.every_n_seconds=0", "callbacks.crop_visualizer=null",
                   "model.backbone_kwargs.depth=1")  # fmt: skip
    with caplog.at_level(logging.INFO, logger="glsim_pl"):
        train(cfg)
    steps = [STEP_LINE.search(r.getMessage()) for r in caplog.records]
    steps = [m for m in steps if m]
    epochs = [m for m in (EPOCH_LINE.search(r.getMessage()) for r in caplog.records) if m]
    total = int(steps[0].group(2))
    assert [int(m.group(1)) for m in steps] == list(range(2, total + 1, 2))
    assert total >= 4 and all(int(m.group(2)) == total for m in steps)
    assert [m.group(1) for m in epochs] == ["1", "2"] and all(m.group(2) == "2" for m in epochs)
    assert set(progress_reads) == {int(m.group(1)) for m in steps}  # host reads at the printed steps only
    assert curve_reads == []

    out = Path(cfg.paths.output_dir)
    history = json.loads((out / "training_curves.json").read_text())
    assert (out / "training_curves.png").stat().st_size > 0
    assert history["train"]["step"] == list(range(1, total + 1))
    assert len(history["train"]["loss"]) == total and all(2.0 < v < 2.6 for v in history["train"]["loss"])
    printed_lr = {int(m.group(1)): float(m.group(6)) for m in steps}
    for step, lr in printed_lr.items():
        assert history["train"]["lr"][step - 1] == pytest.approx(lr, rel=1e-3)
    per_step = history["train"]["loss"]
    first_line_loss = float(steps[0].group(5))  # the mean over the steps since the previous line
    assert first_line_loss == pytest.approx(sum(per_step[:2]) / 2, abs=1e-4)
    assert history["val"]["acc1"] == pytest.approx([float(m.group(3)) for m in epochs], abs=1e-4)
    assert history["val"]["step"] == [total // 2, total]
    fig = training_curves_figure(history)
    loss_ax, acc_ax, lr_ax = fig.axes
    assert list(loss_ax.lines[0].get_xdata()) == history["train"]["step"]
    assert list(loss_ax.lines[0].get_ydata()) == per_step
    assert list(acc_ax.lines[0].get_ydata()) == pytest.approx([100 * a for a in history["val"]["acc1"]])
    assert list(lr_ax.lines[0].get_ydata()) == history["train"]["lr"]


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_resume_continues_tensorboard_and_csv_version_and_crop_sample(make_cfg, tmp_path: Path, caplog) -> None:
    """Two epochs, then resumed for a third: one version_0 in each tracker, every epoch's val metrics once, the
    resume step logged; curves cover all three epochs; the crop grid shows the same class-balanced images."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    common = ["logger=[tensorboard,csv]", "test=false", "trainer.log_every_n_steps=1", "model.backbone_kwargs.depth=1",
              "callbacks.crop_visualizer.every_n_epochs=1", "callbacks.crop_visualizer.num_images=4"]  # fmt: skip
    train(make_cfg(*common, "trainer.max_epochs=2", output_dir=out))
    steps_per_epoch = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] // 2
    with caplog.at_level(logging.INFO, logger="glsim_pl"):
        train(make_cfg(*common, "trainer.max_epochs=3", "ckpt_path=last", output_dir=out))
    assert any(f"at step {2 * steps_per_epoch}; continuing" in r.getMessage() for r in caplog.records)

    assert [p.name for p in (out / "csv").iterdir()] == ["version_0"]
    assert [p.name for p in (out / "tensorboard").iterdir()] == ["version_0"]
    rows = _csv_rows(out / "csv" / "version_0" / "metrics.csv")
    val_epochs = [int(r["epoch"]) for r in rows if r.get("val/acc1")]
    assert val_epochs == [0, 1, 2]
    train_steps = [int(r["step"]) for r in rows if r.get("train/loss_step")]
    assert train_steps == sorted(set(train_steps)) and len(train_steps) == 3 * steps_per_epoch
    assert [int(r["step"]) for r in rows if r.get("resume/from_step")] == [2 * steps_per_epoch]
    events = EventAccumulator(str(out / "tensorboard" / "version_0"))
    events.Reload()
    assert [e.step for e in events.Scalars("val/acc1")] == [steps_per_epoch * e - 1 for e in (1, 2, 3)]
    assert [e.step for e in events.Scalars("resume/from_step")] == [2 * steps_per_epoch]

    history = json.loads((out / "training_curves.json").read_text())
    csv_loss = [float(r["train/loss_step"]) for r in rows if r.get("train/loss_step")]
    assert history["train"]["loss"] == pytest.approx(csv_loss, abs=1e-6)  # all 3 epochs, before and after resume
    csv_val = [float(r["val/acc1"]) for r in rows if r.get("val/acc1")]
    assert history["val"]["acc1"] == pytest.approx(csv_val, abs=1e-6)

    grids = [json.loads((out / "crops" / f"epoch_{e:03d}.json").read_text()) for e in range(3)]
    assert all([r["index"] for r in g] == [r["index"] for r in grids[0]] for g in grids)  # same images
    true = [r["true"] for r in grids[0]]
    assert len(set(true)) == 4  # spread over the classes, not the first batch
    module = GLSimLitModule.load_from_checkpoint(out / "checkpoints" / "last.ckpt", map_location="cpu")
    from glsim_pl.config.groups import transform_augs
    from glsim_pl.config.instantiate import instantiate

    cfg = make_cfg(*common, output_dir=tmp_path / "unused")
    dm = instantiate(cfg.dataset, augs=transform_augs(cfg))
    dm.setup()
    labels = [int(dm.data_val.source.targets[i]) for i in dm.data_val.indices]
    assert [r["index"] for r in grids[0]] == balanced_sample(labels, 4)
    assert true == [module.hparams.class_names[labels[r["index"]]] for r in grids[0]]
    module.eval()
    with torch.no_grad():
        logits = module.net(torch.stack([dm.data_val[r["index"]][0] for r in grids[2]])).logits
    assert [r["pred"] for r in grids[2]] == [module.hparams.class_names[k] for k in logits.argmax(-1).tolist()]
    assert all(r["correct"] == (r["true"] == r["pred"]) for r in grids[2])


def test_balanced_sample_spreads_over_sorted_classes() -> None:
    labels = [0] * 5 + [1] * 5 + [2] * 5 + [3] * 5  # a split sorted by class: its first batch is one class
    assert balanced_sample(labels, 4) == [0, 5, 10, 15]
    assert balanced_sample(labels, 2) == [0, 15]  # the first and the last class
    assert balanced_sample(labels, 6) == [0, 5, 10, 15, 1, 6]  # every class once, then again
    assert balanced_sample([2, 2, 1], 10) == [2, 0, 1]  # fewer images than asked: all of them
    assert balanced_sample([], 4) == []


def test_quiet_library_notices_only_while_the_entry_point_runs(caplog) -> None:
    from lightning.fabric.utilities.rank_zero import rank_zero_info

    tip = "\N{ELECTRIC LIGHT BULB} Tip: try a cloud service"
    deprecation = "`isinstance(treespec, LeafSpec)` is deprecated, use something else"

    @quiet_library_notices()
    def entry_point() -> None:
        rank_zero_info(tip)
        rank_zero_info("GPU available: False, used: False")
        warnings.warn(deprecation, FutureWarning, stacklevel=1)

    with caplog.at_level(logging.INFO), warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        entry_point()
        assert [r.getMessage() for r in caplog.records] == ["GPU available: False, used: False"]
        assert seen == []
        rank_zero_info(tip)  # the user's own code, outside the entry point: unchanged
        warnings.warn(deprecation, FutureWarning, stacklevel=1)
    assert caplog.records[-1].getMessage() == tip
    assert [str(w.message) for w in seen] == [deprecation]


def test_bad_progress_settings_are_one_clear_error(make_cfg) -> None:
    with pytest.raises(UserError, match=r"progress.lines='sometimes': expected auto, true or false"):
        train(make_cfg("logger=none", "callbacks=none", "progress.lines=sometimes"))
    with pytest.raises(UserError, match=r"progress.every_n_step: unknown key"):
        train(make_cfg("logger=none", "callbacks=none", "+progress.every_n_step=5"))


@pytest.mark.slow
def test_nohup_style_run_shows_progress_while_it_runs_and_no_library_noise(tmp_path: Path) -> None:
    """``python -m glsim_pl.train ... > log 2>&1`` (no terminal): step and epoch lines are in the log file (and in
    train.log) while the process still runs; no tips, "Total FLOPs" or known deprecation warnings anywhere."""
    run_dir = tmp_path / "run"
    overrides = [o for o in TINY_SYNTHETIC if "enable_model_summary" not in o and "enable_progress_bar" not in o]
    args = [sys.executable, "-m", "glsim_pl.train", *overrides, "trainer.max_epochs=4", "logger=tensorboard",
            "progress.every_n_steps=2", "model.backbone_kwargs.depth=1", f"hydra.run.dir={run_dir}"]  # fmt: skip
    log = tmp_path / "log"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src"), "HF_HUB_OFFLINE": "1"}
    with log.open("w") as stdout:
        proc = subprocess.Popen(args, stdout=stdout, stderr=subprocess.STDOUT, env=env)
        seen_while_running = False
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline:
            text = log.read_text()
            if EPOCH_LINE.search(text) and STEP_LINE.search(text):
                seen_while_running = proc.poll() is None  # three more epochs and the test stage to go
                break
            time.sleep(0.05)
        proc.wait(timeout=300)
    text = log.read_text()
    assert proc.returncode == 0, text[-3000:]
    assert seen_while_running, text[-3000:]
    assert len(STEP_LINE.findall(text)) >= 4 and len(EPOCH_LINE.findall(text)) == 4
    train_log = (run_dir / "train.log").read_text()
    assert len(STEP_LINE.findall(train_log)) == len(STEP_LINE.findall(text))
    assert len(EPOCH_LINE.findall(train_log)) == 4
    assert "Trainable params" in text  # the model summary is still there, without FLOPs
    assert [n for n in NOISE if n in text] == [], text[-3000:]
    assert (run_dir / "training_curves.png").is_file() and (run_dir / "metrics.json").is_file()


def test_requeued_slurm_job_continues_from_its_newest_hpc_checkpoint(make_cfg, monkeypatch, tmp_path: Path) -> None:
    from lightning.fabric.plugins.environments import SLURMEnvironment

    from glsim_pl.train import _slurm_requeue_path

    cfg = make_cfg(output_dir=tmp_path / "job")
    (tmp_path / "job").mkdir()
    for n in (1, 3, 2):
        (tmp_path / "job" / f"hpc_ckpt_{n}.ckpt").write_bytes(b"")
    assert _slurm_requeue_path(cfg) is None  # not under SLURM: Lightning restores nothing by itself
    monkeypatch.setattr(SLURMEnvironment, "detect", staticmethod(lambda: True))
    assert _slurm_requeue_path(cfg) == tmp_path / "job" / "hpc_ckpt_3.ckpt"


def test_step_loss_is_logged_on_lightnings_steps_and_the_epoch_mean_once(make_cfg, monkeypatch, caplog) -> None:
    """``train/loss_step`` is logged on the steps Lightning writes (every ``log_every_n_steps``) with that step's loss,
    and ``self.log`` is called on those steps only; ``train/loss_epoch`` once per epoch, the mean of the epoch's step
    losses, as the epoch line prints it."""
    calls: list[str] = []
    original = GLSimLitModule.log
    counted = lambda self, name, *a, **k: (calls.append(name), original(self, name, *a, **k))
    monkeypatch.setattr(GLSimLitModule, "log", counted)
    cfg = make_cfg("logger=csv", "test=false", "trainer.max_epochs=2", "trainer.log_every_n_steps=3",
                   "progress.lines=true", "callbacks.crop_visualizer=null",
                   "model.backbone_kwargs.depth=1")  # fmt: skip
    with caplog.at_level(logging.INFO, logger="glsim_pl"):
        train(cfg)
    out = Path(cfg.paths.output_dir)
    per_step = json.loads((out / "training_curves.json").read_text())["train"]["loss"]  # every step's loss
    total = len(per_step)
    rows = _csv_rows(out / "csv" / "version_0" / "metrics.csv")
    logged = {int(r["step"]): float(r["train/loss_step"]) for r in rows if r.get("train/loss_step")}
    assert sorted(logged) == [s for s in range(total) if (s + 1) % 3 == 0]
    assert calls.count("train/loss_step") == len(logged)  # not on the steps whose value no logger receives
    for step, value in logged.items():
        assert value == pytest.approx(per_step[step], abs=1e-6)
    epoch_means = [float(r["train/loss_epoch"]) for r in rows if r.get("train/loss_epoch")]
    half = total // 2
    assert epoch_means == pytest.approx([sum(per_step[:half]) / half, sum(per_step[half:]) / half], abs=1e-5)
    printed = [float(m.group(0).split("train/loss ")[1].split()[0])
               for m in (EPOCH_LINE.search(r.getMessage()) for r in caplog.records) if m]  # fmt: skip
    assert printed == pytest.approx(epoch_means, abs=1e-4)


def test_losses_shown_with_gradient_accumulation_are_the_batches_losses(make_cfg, caplog) -> None:
    """``trainer.accumulate_grad_batches=2``: the step lines, the epoch line and ``training_curves.json`` show the
    loss ``train/loss`` logs (about ln 10 for 10 untrained classes), not half of it."""
    cfg = make_cfg("logger=csv", "test=false", "+trainer.accumulate_grad_batches=2", "progress.lines=true",
                   "progress.every_n_steps=1", "progress.every_n_seconds=0", "callbacks.crop_visualizer=null",
                   "model.backbone_kwargs.depth=1")  # fmt: skip
    with caplog.at_level(logging.INFO, logger="glsim_pl"):
        train(cfg)
    out = Path(cfg.paths.output_dir)
    per_batch = json.loads((out / "training_curves.json").read_text())["train"]["loss"]
    assert len(per_batch) >= 4 and all(2.0 < v < 2.6 for v in per_batch)
    rows = _csv_rows(out / "csv" / "version_0" / "metrics.csv")
    (epoch_mean,) = [float(r["train/loss_epoch"]) for r in rows if r.get("train/loss_epoch")]
    assert sum(per_batch) / len(per_batch) == pytest.approx(epoch_mean, abs=1e-5)
    step_losses = [float(m.group(5)) for m in (STEP_LINE.search(r.getMessage()) for r in caplog.records) if m]
    pairs = [per_batch[i : i + 2] for i in range(0, len(per_batch), 2)]  # one optimizer step each
    assert step_losses == pytest.approx([sum(pair) / len(pair) for pair in pairs], abs=1e-4)
    printed = [float(m.group(0).split("train/loss ")[1].split()[0])
               for m in (EPOCH_LINE.search(r.getMessage()) for r in caplog.records) if m]  # fmt: skip
    assert printed == pytest.approx([epoch_mean], abs=1e-4)
