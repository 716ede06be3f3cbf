"""python -m glsim_pl.eval: our checkpoints and official ones, reports, localisation per selector."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from glsim_pl.errors import UserError
from tests.helpers.checkpoints import save_lightning_ckpt
from tests.helpers.configs import TINY_DATA, compose_tool


@pytest.fixture
def tiny_ckpt(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.ckpt"
    save_lightning_ckpt(path)
    return path


def test_eval_lightning_checkpoint_writes_every_report(tiny_ckpt: Path, tmp_path: Path) -> None:
    from glsim_pl.eval import evaluate

    out = tmp_path / "eval"
    overrides = [*TINY_DATA, f"ckpt_path={tiny_ckpt}", "eval.cost_repeats=1", "eval.figure_formats=[png,pdf]",
                 "eval.confused_pairs=5"]  # fmt: skip
    cfg = compose_tool("eval", overrides, out)
    result = evaluate(cfg)
    assert 0.0 <= result["test/acc1"] <= 1.0
    assert result["format"] == "lightning"
    assert result["selector"] == "gls"
    assert set(result["cost"]) >= {"throughput_img_s", "latency_bs1_ms", "peak_memory_mb", "params_m"}
    rows = list(csv.DictReader((out / "test_per_class_acc.csv").open()))
    assert len(rows) == 10
    assert rows[3]["class_name"] == "c3"
    for name in ("confusion_matrix", "confused_pairs", "test_per_class_acc", "error_gallery"):
        with Image.open(out / f"{name}.png") as image:
            image.verify()
    assert (out / "confusion_matrix.pdf").read_bytes()[:5] == b"%PDF-"  # eval.figure_formats=[png,pdf]
    pairs = list(csv.DictReader((out / "confused_pairs.csv").open()))
    mistakes = sum(int(r["count"]) for r in pairs)
    assert 0 < len(pairs) <= 5 and int(pairs[0]["count"]) >= int(pairs[-1]["count"])
    assert mistakes <= round(16 * (1 - result["test/acc1"]))  # pairs count only real mistakes
    assert result["gflops"] > 0
    assert json.loads((out / "eval_metrics.json").read_text())["test/acc1"] == result["test/acc1"]
    images, scalars = set(), set()
    for events in (out / "tensorboard").rglob("events.out.tfevents.*"):  # the test run's file, then the reports'
        tags = EventAccumulator(str(events)).Reload().Tags()
        images, scalars = images | set(tags["images"]), scalars | set(tags["scalars"])
    assert {"test/confusion_matrix", "test/confused_pairs", "test/per_class_acc", "test/error_gallery"} <= images
    assert "test/acc1" in scalars


def test_eval_localization_per_selector(tiny_ckpt: Path, tmp_path: Path) -> None:
    from glsim_pl.eval import evaluate

    out = tmp_path / "loc"
    overrides = [*TINY_DATA, f"ckpt_path={tiny_ckpt}", "eval.localization=true", "eval.cost=false",
                 "eval.selectors=[gls,full,center]", "eval.gallery_size=0", "logger=none"]  # fmt: skip
    loc = evaluate(compose_tool("eval", overrides, out))["localization"]
    assert list(loc) == ["gls", "full", "center"]
    for v in loc.values():
        assert 0.0 <= v["mean_iou"] <= 1.0
        assert v["n"] == 16
    # the full-image box contains every object box: its IoU is the object's area share, never above center's best
    assert loc["full"]["mean_iou"] > 0
    assert (out / "localization.csv").read_text().splitlines()[0] == "selector,acc1,mean_iou,iou50,n"
    # each selector is a point on the accuracy-vs-cost figure; GLSim always costs two encoder passes and more
    assert loc["full"]["gflops"] == loc["center"]["gflops"] < loc["gls"]["gflops"]
    with Image.open(out / "accuracy_vs_cost.png") as image:
        assert image.size == (975, 675)


def test_eval_official_checkpoint(official_fixture: dict, tmp_path: Path) -> None:
    from glsim_pl.eval import evaluate

    path = tmp_path / "cub_vit_t16.pth"
    torch.save(official_fixture["checkpoint"], path)
    names = tmp_path / "classes.csv"
    names.write_text("class_id,class_name\n" + "".join(f"{i + 1},bird_{i}\n" for i in range(3)))
    overrides = [*TINY_DATA, "dataset.num_classes=3", "dataset.image_size=96", "dataset.test_size=4",
                 f"ckpt_path={path}", f"eval.class_names_file={names}", "eval.cost=false"]  # fmt: skip
    result = evaluate(compose_tool("eval", overrides, tmp_path / "off"))
    assert result["format"] == "official"
    assert 0.0 <= result["test/acc1"] <= 1.0
    assert "bird_2" in (tmp_path / "off" / "test_per_class_acc.csv").read_text()


def test_eval_rejects_mismatched_dataset_and_bad_files(tiny_ckpt: Path, tmp_path: Path) -> None:
    from glsim_pl.eval import evaluate

    with pytest.raises(UserError, match="dataset.num_classes=7"):
        evaluate(compose_tool("eval", [*TINY_DATA, "dataset.num_classes=7", f"ckpt_path={tiny_ckpt}"], tmp_path))
    junk = tmp_path / "junk.ckpt"
    junk.write_text("not a checkpoint")
    with pytest.raises(UserError, match="junk.ckpt"):
        evaluate(compose_tool("eval", [*TINY_DATA, f"ckpt_path={junk}"], tmp_path))
