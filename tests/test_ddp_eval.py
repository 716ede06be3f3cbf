"""Evaluation on several processes equals one process: val and test in training, glsim-eval, every report.

Splits whose size does not divide by the number of processes (Lightning's own sampler would repeat images there).
The processes are started as torchrun or SLURM tasks would start them (CPU, gloo; tests/helpers/ddp.py).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from glsim_pl.analysis.run_record import protocol
from glsim_pl.callbacks import PerClassAccuracyCSV
from glsim_pl.config.groups import resolve_trainer_precision, transform_augs
from glsim_pl.config.instantiate import instantiate
from glsim_pl.data.sampling import EvalShardSampler
from glsim_pl.errors import UserError
from glsim_pl.training.module import GLSimLitModule
from tests.helpers.checkpoints import save_lightning_ckpt
from tests.helpers.configs import TINY_DATA, TINY_SYNTHETIC, compose_cfg, compose_tool
from tests.helpers.ddp import run_ranks

# every number equals one process's to the last bit: counts are integers, means come from exact sums
TEST_KEYS = ("test/acc1", "test/acc5", "test/acc1_macro", "test/loss", "test/box_iou")
VAL_KEYS = ("val/acc1", "val/acc5", "val/acc1_macro", "val/loss", "val/box_iou")
REPORTS = ("test_per_class_acc.csv", "confused_pairs.csv", "localization.csv", "confusion_matrix.png")


def _ddp(world_size: int) -> list[str]:
    return ["trainer=ddp", "trainer.accelerator=cpu", f"trainer.devices={world_size}"]


def _eval_job(overrides: list[str], out: Path) -> None:
    from glsim_pl.eval import evaluate

    evaluate(compose_tool("eval", overrides, out))


def _eval_reports(out: Path) -> dict[str, Any]:
    result = json.loads((out / "eval_metrics.json").read_text())
    with Image.open(out / "error_gallery.png") as gallery:
        pixels = np.asarray(gallery.convert("RGB"))
    return {"result": result, "gallery": pixels, **{name: (out / name).read_bytes() for name in REPORTS}}


def _assert_same_reports(many: dict[str, Any], one: dict[str, Any], split_size: int) -> None:
    """eval_metrics.json equal key by key (floats compared with ==), the reports byte for byte."""
    for key in TEST_KEYS:
        assert many["result"][key] == one["result"][key], key
    assert 0 < one["result"]["test/second_pass_share"] < 1  # the gate sends some images on, not all
    assert many["result"] == one["result"]  # every key: second-pass share, localisation per selector, GFLOPs
    for name in REPORTS:
        assert many[name] == one[name], name
    assert np.array_equal(many["gallery"], one["gallery"])
    supports = [int(row["support"]) for row in csv.DictReader(many["test_per_class_acc.csv"].decode().splitlines())]
    assert sum(supports) == split_size
    assert one["result"]["localization"]["gls"]["n"] == split_size


@pytest.mark.parametrize(
    ("world_size", "split_size"), [(2, 21), pytest.param(3, 22, marks=pytest.mark.slow)], ids=["2proc", "3proc"]
)
def test_glsim_eval_on_several_processes_equals_one(tmp_path: Path, world_size: int, split_size: int) -> None:
    """glsim-eval of a gated model: metrics, per-class CSV, confusion matrix, confused pairs, error gallery and
    localisation per selector identical to one process's, each image counted once (batches of 4: the ranks run
    different numbers of batches, the last one short)."""
    ckpt = tmp_path / "tiny.ckpt"
    save_lightning_ckpt(ckpt, gate="confidence", spread_gate=True)
    overrides = [*TINY_DATA, f"dataset.test_size={split_size}", "dataset.batch_size=4", f"ckpt_path={ckpt}",
                 "logger=none", "eval.cost=false", "eval.localization=true", "eval.selectors=[gls,center]",
                 "eval.gallery_size=6", "method.gate_threshold=0.999"]  # fmt: skip
    _eval_job(overrides, tmp_path / "one")
    run_ranks(world_size, _eval_job, [*overrides, *_ddp(world_size)], tmp_path / "many")
    _assert_same_reports(_eval_reports(tmp_path / "many"), _eval_reports(tmp_path / "one"), split_size)


class LossRecorder(L.Callback):
    """Each rank's training losses and batch sizes, written to ``<dirpath>/rank<r>.json`` at the epoch end."""

    def __init__(self, dirpath: str) -> None:
        self.dirpath, self.steps = Path(dirpath), []

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.steps.append((float(outputs["loss"]), len(batch[1])))

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        self.dirpath.mkdir(parents=True, exist_ok=True)
        (self.dirpath / f"rank{trainer.global_rank}.json").write_text(json.dumps(self.steps))


def _train_job(overrides: list[str], out: Path) -> None:
    from glsim_pl.train import train

    train(compose_cfg([*TINY_SYNTHETIC, *overrides], out))


@pytest.mark.slow
@pytest.mark.parametrize("world_size", [2, 3])
def test_training_on_several_processes_evaluates_as_one(tmp_path: Path, world_size: int) -> None:
    """A DDP fit on a val split of 13 and a test split of 21 images: val/* (which names the best checkpoint), test/*
    and the per-class CSV equal one process's on the same weights; train/loss_epoch is the mean over every rank's
    images; the run record counts the processes."""
    out, losses = tmp_path / "run", tmp_path / "losses"
    overrides = ["dataset.train_size=53", "dataset.test_size=21", "dataset.batch_size=4", "optim.lr=0.01",
                 "logger=none", "callbacks.crop_visualizer=null", f"+callbacks.losses._target_={__name__}.LossRecorder",
                 f"+callbacks.losses.dirpath={losses}"]  # fmt: skip
    run_ranks(world_size, _train_job, [*overrides, *_ddp(world_size)], out)
    record = json.loads((out / "metrics.json").read_text())
    metrics = record["metrics"]
    assert record["device"] == f"cpu x{world_size}"
    assert record["protocol"]["effective_batch_size"] == 4 * world_size

    steps = [step for rank in range(world_size) for step in json.loads((losses / f"rank{rank}.json").read_text())]
    true_mean = sum(loss * n for loss, n in steps) / sum(n for _, n in steps)
    assert metrics["train/loss_epoch"] == pytest.approx(true_mean, rel=1e-5)

    cfg = compose_cfg([*TINY_SYNTHETIC, *overrides[:4], "logger=none"], tmp_path / "one")
    datamodule = instantiate(cfg.dataset, augs=transform_augs(cfg))
    module = GLSimLitModule.load_from_checkpoint(out / "checkpoints" / "last.ckpt")  # one epoch: the best too
    per_class = PerClassAccuracyCSV(str(tmp_path / "one"), figure_formats=[])
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[per_class])  # fmt: skip
    one = {**trainer.validate(module, datamodule=datamodule)[0], **trainer.test(module, datamodule=datamodule)[0]}
    assert len(datamodule.data_val) == 13 and len(datamodule.data_test) == 21
    for key in (*VAL_KEYS, *TEST_KEYS):
        assert metrics[key] == one[key], key
    best = [p.name for p in (out / "checkpoints").glob("epoch_*.ckpt")]
    assert best == [f"epoch_000-acc1_{one['val/acc1']:.4f}.ckpt"]  # named after the val/acc1 of every image
    assert (out / "test_per_class_acc.csv").read_text() == (tmp_path / "one" / "test_per_class_acc.csv").read_text()


def test_effective_batch_counts_every_device(make_cfg) -> None:
    """trainer.devices as a list, a string or auto: the record counts the processes the trainer runs."""
    assert protocol(make_cfg("trainer.devices=[0,1]"))["effective_batch_size"] == 16
    assert protocol(make_cfg("trainer.devices='0,1,2'"))["effective_batch_size"] == 24
    assert protocol(make_cfg("trainer.devices=auto"), world_size=4)["effective_batch_size"] == 32
    assert protocol(make_cfg("trainer.devices=-1"), world_size=6)["effective_batch_size"] == 48


@pytest.mark.parametrize("batch_size", [1, 4])
@pytest.mark.parametrize("size", [5, 21, 22])
@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_eval_shards_take_every_image_once(size: int, world_size: int, batch_size: int) -> None:
    """In split order, none repeated, and in one process's batches: every rank's block starts at a batch boundary
    (unless the split has fewer batches than ranks: then image by image)."""
    samplers = [EvalShardSampler(range(size), world_size, rank, batch_size) for rank in range(world_size)]
    shards = [list(sampler) for sampler in samplers]
    assert [i for shard in shards for i in shard] == list(range(size))
    assert list(map(len, samplers)) == list(map(len, shards))
    whole_batches = -(-size // batch_size) >= world_size
    unit = batch_size if whole_batches else 1
    assert all(shard and shard[0] % unit == 0 for shard in shards)
    assert max(map(len, shards)) - min(map(len, shards)) <= unit
    if whole_batches:
        one = [batch for shard in shards for batch in torch.arange(len(shard)).add(shard[0]).split(batch_size)]
        assert [b.tolist() for b in one] == [b.tolist() for b in torch.arange(size).split(batch_size)]


def test_eval_split_smaller_than_the_devices_is_refused(make_cfg) -> None:
    datamodule = instantiate(make_cfg().dataset)
    with pytest.raises(UserError, match="fewer than the 3 devices"):
        datamodule._eval_shards(list(range(2)), ranks=3, rank=0)


def test_ddp_preset_runs_where_there_is_no_gpu(make_cfg) -> None:
    """trainer=ddp without trainer.accelerator: CPU processes (gloo) on a machine without CUDA."""
    cfg = make_cfg("trainer=ddp", "logger=none", "callbacks=none", tiny=False)  # no trainer.accelerator=cpu
    resolve_trainer_precision(cfg)
    trainer = instantiate(cfg.trainer)
    assert trainer.world_size == 2
    if not torch.cuda.is_available():
        assert trainer.strategy.root_device.type == "cpu"


@pytest.mark.slow
def test_glsim_eval_command_on_two_devices(tmp_path: Path) -> None:
    """The command as a user runs it: trainer=ddp (popen: rank 1 re-runs the job) on a machine without a GPU."""
    import subprocess
    import sys

    ckpt = tmp_path / "tiny.ckpt"
    save_lightning_ckpt(ckpt, gate="confidence", spread_gate=True)
    overrides = [*TINY_DATA, "dataset.test_size=21", "dataset.batch_size=4", f"ckpt_path={ckpt}", "logger=none",
                 "eval.cost=false", "eval.localization=true", "eval.selectors=[gls,center]",
                 "method.gate_threshold=0.999"]  # fmt: skip
    _eval_job(overrides, tmp_path / "one")
    ddp = [o for o in overrides if o != "trainer.accelerator=cpu"] + ["trainer=ddp", "trainer.devices=2"]
    cmd = [sys.executable, "-m", "glsim_pl.eval", *ddp, f"hydra.run.dir={tmp_path / 'many'}"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "sync_dist" not in proc.stderr
    _assert_same_reports(_eval_reports(tmp_path / "many"), _eval_reports(tmp_path / "one"), 21)


def test_glsim_eval_refuses_spawned_workers(tmp_path: Path) -> None:
    from glsim_pl.eval import evaluate

    ckpt = tmp_path / "tiny.ckpt"
    save_lightning_ckpt(ckpt)
    overrides = [*TINY_DATA, f"ckpt_path={ckpt}", "logger=none", *_ddp(2), "trainer.strategy.start_method=spawn"]
    with pytest.raises(UserError, match="start_method=popen"):
        evaluate(compose_tool("eval", overrides, tmp_path / "eval"))
