"""Experiment trackers: logger=tensorboard|csv|wandb|mlflow|many (or a list), all offline, and what reaches each."""

from __future__ import annotations

import csv
import json
import os
import struct
from pathlib import Path
from typing import Any

import pytest
import yaml
from omegaconf import OmegaConf

from glsim_pl.config.instantiate import instantiate_collection
from glsim_pl.errors import UserError

TRACKERS = {"tensorboard": "TensorBoardLogger", "csv": "CSVLogger", "wandb": "WandbLogger", "mlflow": "MLFlowLogger"}


def test_logger_many_and_list_overrides_compose(make_cfg, tmp_path: Path) -> None:
    many = make_cfg("logger=many").logger
    assert {k: v._target_.rsplit(".", 1)[-1] for k, v in many.items()} == TRACKERS
    pair = make_cfg("logger=[csv,mlflow]").logger
    assert sorted(pair) == ["csv", "mlflow"]
    resolved = OmegaConf.to_container(many, resolve=True)
    assert resolved["mlflow"]["tracking_uri"] == f"file:{tmp_path / 'run'}/mlruns"  # under the run folder
    assert resolved["wandb"]["save_dir"] == str(tmp_path / "run")
    custom = make_cfg("logger=mlflow", "logger.mlflow.tracking_uri=sqlite:///x.db").logger.mlflow.tracking_uri
    assert custom == "sqlite:///x.db"


def test_missing_tracker_package_names_the_extra(make_cfg, monkeypatch: pytest.MonkeyPatch) -> None:
    import lightning.pytorch.loggers.mlflow as mlflow_logger

    monkeypatch.setattr(mlflow_logger, "_MLFLOW_AVAILABLE", False)
    with pytest.raises(UserError, match=r"glsim_pl\[mlflow\]"):
        instantiate_collection(make_cfg("logger=mlflow").logger)


# -- one tiny run, every tracker at once -----------------------------------------------------------------------------
def wandb_records(run_file: Path) -> list[Any]:
    """Decode a W&B offline ``run-*.wandb`` file (LevelDB log framing: 32 KiB blocks of CRC/length/type chunks,
    after a 7-byte ``:W&B`` header) into its protobuf records."""
    from wandb.proto import wandb_internal_pb2

    data = run_file.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, pending, records = 7, 32768, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if left < 7 or (kind == 0 and length == 0):  # block trailer / zero padding
            pos += left
            continue
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk  # FULL/FIRST start a record, MIDDLE/LAST extend it
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def _tensorboard(out: Path) -> dict[str, Any]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags: dict[str, list[str]] = {"scalars": [], "images": [], "tensors": []}
    for events in (out / "tensorboard").rglob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
        acc.Reload()
        for key in tags:
            tags[key] += acc.Tags()[key]
    return tags


@pytest.fixture(scope="module")
def many_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny synthetic training with logger=many: TensorBoard, CSV, W&B (offline) and MLflow (file store)."""
    import wandb

    from glsim_pl.train import train
    from tests.helpers.configs import TINY_SYNTHETIC, compose_cfg

    out = tmp_path_factory.mktemp("many")
    user_mode = os.environ.pop("WANDB_MODE", None)  # as on a fresh machine: nobody chose a W&B mode
    overrides = [*TINY_SYNTHETIC, "logger=many", "dataset.train_size=40", "dataset.test_size=10",
                 "+trainer.limit_val_batches=1", "callbacks.crop_visualizer.num_images=2"]  # fmt: skip
    train(compose_cfg(overrides, out))
    assert wandb.run is None  # finished by train(): the next job of a sweep in this process gets its own run
    if user_mode is not None:
        os.environ["WANDB_MODE"] = user_mode
    return out


def test_tensorboard_and_csv_get_metrics_config_and_figures(many_run: Path) -> None:
    tags = _tensorboard(many_run)
    assert {"val/acc1", "val/acc1_best", "test/acc1"} <= set(tags["scalars"])
    assert {"val/crops", "test/per_class_acc"} <= set(tags["images"])  # add_image and add_figure
    assert any(t.startswith("config") for t in tags["tensors"])  # the resolved config as text
    hparams = yaml.safe_load(next((many_run / "tensorboard").rglob("hparams.yaml")).read_text())
    assert hparams["protocol"]["selection_split"].startswith("val")
    assert hparams["config"]["logger"]["mlflow"]["tracking_uri"].startswith("file:")
    assert hparams["optim"]["lr"] == hparams["config"]["optim"]["lr"]  # the module's own hyperparameters too
    rows = list(csv.DictReader(next((many_run / "csv").rglob("metrics.csv")).open()))
    assert any(r.get("test/acc1") for r in rows)
    assert "protocol" in yaml.safe_load(next((many_run / "csv").rglob("hparams.yaml")).read_text())


def test_mlflow_file_store_gets_params_metrics_config_and_images(many_run: Path) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"file:{many_run}/mlruns")
    (experiment,) = [e for e in client.search_experiments() if e.name == "train"]
    (run,) = client.search_runs([experiment.experiment_id])
    params, metrics = run.data.params, run.data.metrics
    assert params["protocol/test_split"] == "test split"  # synthetic: no official test split
    assert params["config/optim/lr"] == params["optim/lr"]
    assert 0.0 <= metrics["test/acc1"] <= 1.0
    assert "val/acc1_best" in metrics
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert "config.yaml" in artifacts
    images = [
        a.path for folder in ("val/crops", "test/per_class_acc") for a in client.list_artifacts(run.info.run_id, folder)
    ]
    assert len(images) == 2 and all(p.endswith(".png") for p in images)


def test_wandb_offline_run_gets_config_metrics_and_images(many_run: Path) -> None:
    (run_dir,) = (many_run / "wandb").glob("offline-run-*")  # offline without being asked: no account needed
    records = wandb_records(next(run_dir.glob("run-*.wandb")))
    key = lambda item: item.key or "/".join(item.nested_key)
    config = {key(u): json.loads(u.value_json) for r in records if r.HasField("config") for u in r.config.update}
    assert config["protocol"]["test_split"] == "test split"
    assert config["config"]["optim"]["lr"] == config["optim"]["lr"]
    history = {key(i): i.value_json for r in records if r.HasField("history") for i in r.history.item}
    assert 0.0 <= float(history["test/acc1"]) <= 1.0
    assert "val/acc1_best" in history
    images = {
        p.parent.name + "/" + p.name.split("_")[0] for p in (run_dir / "files" / "media" / "images").rglob("*.png")
    }
    assert {"val/crops", "test/per"} <= images
