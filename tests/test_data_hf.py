"""dataset=hf: parquet files written here (ClassLabel, boxes, no val split) train, evaluate and predict; bad input is
one line naming the split, row and column."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from glsim_pl.config.groups import transform_augs
from glsim_pl.config.instantiate import instantiate
from glsim_pl.errors import UserError
from tests.helpers.configs import TINY, compose_tool

NAMES = ["albatross", "auklet", "crow"]


def _write_parquet(folder: Path, splits: dict[str, int], bad: dict[str, object] | None = None) -> dict[str, Path]:
    """``{split: rows}`` -> one parquet file per split; class i has a bright square at box (4i, 4, 4i + 16, 20).
    ``bad``: {"cell": (split, row, value)} overrides one image cell, {"label": (split, row, value)} one label."""
    import datasets

    features = datasets.Features({
        "image": datasets.Image(),
        "label": datasets.ClassLabel(names=NAMES),
        "bbox": datasets.Sequence(datasets.Value("float32"), length=4),
    })  # fmt: skip
    rng = np.random.default_rng(0)
    files = {}
    for split, n in splits.items():
        rows: dict[str, list] = {"image": [], "label": [], "bbox": []}
        for i in range(n):
            label = i % len(NAMES)
            pixels = rng.integers(0, 80, (36, 44, 3), dtype=np.uint8)
            box = [4 * label, 4, 4 * label + 16, 20]
            pixels[4:20, 4 * label : 4 * label + 16, label] = 255
            rows["image"].append(Image.fromarray(pixels))
            rows["label"].append(label)
            rows["bbox"].append(box)
        for kind, (where, row, value) in (bad or {}).items():
            if where == split:
                rows["image" if kind == "cell" else "label"][row] = value
        files[split] = folder / f"{split}.parquet"
        datasets.Dataset.from_dict(rows, features=features).to_parquet(str(files[split]))
    return files


def _overrides(files: dict[str, Path], tmp_path: Path, *extra: str, train: bool = True) -> list[str]:
    data_files = "{" + ", ".join(f"{s}: '{p}'" for s, p in files.items()) + "}"
    tiny = TINY if train else [o for o in TINY if o.startswith(("dataset.", "trainer."))]  # eval composes no optim
    return [*tiny, "dataset=hf", f"dataset.data_files={data_files}", f"dataset.hf_cache_dir={tmp_path / 'hf'}",
            f"dataset.check_cache_dir={tmp_path / 'check'}", *extra]  # fmt: skip


def _datamodule(make_cfg, files: dict[str, Path], tmp_path: Path, *extra: str):
    cfg = make_cfg(*_overrides(files, tmp_path, *extra), "logger=none", "callbacks=none", tiny=False)
    return instantiate(cfg.dataset, augs=transform_augs(cfg))


def test_parquet_trains_evaluates_and_predicts_with_class_names(make_cfg, tmp_path: Path) -> None:
    from glsim_pl.eval import evaluate
    from glsim_pl.predict import predict
    from glsim_pl.train import train

    files = _write_parquet(tmp_path, {"train": 30, "test": 9})
    out = tmp_path / "run"
    metrics = train(make_cfg(*_overrides(files, tmp_path), "logger=none", tiny=False, output_dir=out))
    assert 0.0 <= metrics["test/acc1"] <= 1.0 and metrics["best_ckpt"]  # val carved from train: checkpoints on val
    record = json.loads((out / "metrics.json").read_text())
    assert len(record["data_source"]["data/hf_fingerprint"]) == 16

    ckpt = metrics["best_ckpt"]
    eval_overrides = [*_overrides(files, tmp_path, train=False), f"ckpt_path={ckpt}", "logger=none", "eval.cost=false",
                      "eval.localization=true", "eval.selectors=[gls]", "eval.gallery_size=0"]  # fmt: skip
    result = evaluate(compose_tool("eval", eval_overrides, tmp_path / "eval"))
    assert result["localization"]["gls"]["n"] == 9  # the bbox column reached the test split's boxes
    rows = list(csv.DictReader((tmp_path / "eval" / "test_per_class_acc.csv").open()))
    assert [r["class_name"] for r in rows] == NAMES

    (tmp_path / "in").mkdir()
    Image.new("RGB", (44, 36), (0, 255, 0)).save(tmp_path / "in" / "x.png")
    preds = predict(compose_tool("predict", [f"ckpt_path={ckpt}", f"input={tmp_path / 'in'}",
                                             f"output={tmp_path / 'preds'}", "topk=3"], tmp_path / "p"))  # fmt: skip
    row = next(csv.DictReader(preds.open()))
    assert {row["class_1"], row["class_2"], row["class_3"]} == set(NAMES)


def test_splits_val_taken_from_the_dataset_or_carved(make_cfg, tmp_path: Path) -> None:
    files = _write_parquet(tmp_path, {"train": 30, "validation": 6, "test": 9})
    dm = _datamodule(make_cfg, files, tmp_path)
    dm.setup()
    assert (len(dm.data_train), len(dm.data_val), len(dm.data_test)) == (30, 6, 9)
    assert dm.class_names == NAMES and dm.num_classes == 3
    image, label, box = dm.data_val[0]
    assert label == 0 and box.shape == (4,)
    del files["validation"]
    carved = _datamodule(make_cfg, files, tmp_path)
    carved.setup()  # per class the first 80% of its 10 train rows -> train (the rule of every dataset)
    assert (len(carved.data_train), len(carved.data_val)) == (24, 6)
    paper = _datamodule(make_cfg, files, tmp_path, "dataset.protocol=paper")
    paper.setup()
    assert (len(paper.data_train), len(paper.data_val)) == (30, 0)


def test_official_sizes_are_compared(make_cfg, tmp_path: Path, caplog) -> None:
    files = _write_parquet(tmp_path, {"train": 12, "test": 3})
    dm = _datamodule(make_cfg, files, tmp_path, "dataset.official_sizes={train_val: 12, test: 4}")
    with caplog.at_level("INFO"):
        dm.check()
    assert "train+val 12 (official 12), test 3 (official 4)" in caplog.text
    assert "split sizes differ from the official benchmark" in caplog.text


@pytest.mark.parametrize(
    ("extra", "bad", "message"),
    [
        (
            ["dataset.label_column=species"],
            None,
            r"no column 'species' \(dataset.label_column\); the columns are "
            r"image, label, bbox",
        ),
        (
            [],
            {"label": ("test", 2, -1)},
            r"split 'test', row 2, column 'label': label -1 is outside the class list "
            r"\(0..2\)",
        ),
        (
            [],
            {"cell": ("train", 5, {"bytes": b"not an image", "path": None})},
            r"split 'train', row 5, column "
            r"'image': not an image format PIL can read\..*dataset.skip_corrupt=true",
        ),
        (
            ["dataset.test_split=heldout"],
            None,
            r"no split 'heldout' \(dataset.test_split\); the dataset has train, "
            r"test",
        ),
    ],
)
def test_bad_input_is_one_line(make_cfg, tmp_path: Path, extra: list[str], bad, message: str) -> None:
    files = _write_parquet(tmp_path, {"train": 12, "test": 3}, bad)
    with pytest.raises(UserError, match=message) as info:
        _datamodule(make_cfg, files, tmp_path, *extra).check()
    assert "\n" not in str(info.value) and str(tmp_path) in str(info.value)  # the files are named


def test_skip_corrupt_leaves_a_bad_cell_out(make_cfg, tmp_path: Path) -> None:
    files = _write_parquet(tmp_path, {"train": 12, "test": 3}, {"cell": ("test", 1, {"bytes": b"\xff\xd8junk",
                                                                                     "path": None})})  # fmt: skip
    dm = _datamodule(make_cfg, files, tmp_path, "dataset.skip_corrupt=true")
    dm.setup()
    assert len(dm.data_test) == 2 and dm.data_test.source.targets == [0, 2]


def test_a_hub_snapshot_folder_loads_by_name(make_cfg, tmp_path: Path) -> None:
    files = _write_parquet(tmp_path, {"train": 12, "test": 3})
    repo = tmp_path / "owner--birds" / "data"  # the layout of a Hub dataset repository of parquet files
    repo.mkdir(parents=True)
    for split, path in files.items():
        path.rename(repo / f"{split}-00000-of-00001.parquet")
    cfg = make_cfg(*TINY, "dataset=hf", f"dataset.name={repo.parent}", f"dataset.hf_cache_dir={tmp_path / 'hf'}",
                   "logger=none", "callbacks=none", tiny=False)  # fmt: skip
    dm = instantiate(cfg.dataset, augs=transform_augs(cfg))
    dm.check()
    assert dm.class_names == NAMES and len(dm.splits.test) == 3
    assert "data/hf_commit" not in dm.provenance  # a local folder has no Hub commit


def test_integer_labels_take_names_from_their_name_column(make_cfg, tmp_path: Path) -> None:
    import datasets

    image = Image.new("RGB", (16, 16), (1, 2, 3))
    files = {}
    for split, labels in (("train", [9, 5, 7, 5, 9, 7]), ("test", [7, 5, 11])):
        rows = {"image": [image] * len(labels), "label": labels, "label_name": [f"sp{v}" for v in labels]}
        files[split] = tmp_path / f"{split}.parquet"
        datasets.Dataset.from_dict(rows).cast_column("image", datasets.Image()).to_parquet(str(files[split]))
    dm = _datamodule(make_cfg, files, tmp_path)
    with pytest.raises(UserError, match=r"split 'test', row 2, column 'label': label 11 is outside the class list "
                                        r"\(3 values of the train split\)"):  # fmt: skip
        dm.check()
    rows = {"image": [image] * 2, "label": [7, 5], "label_name": ["sp7", "sp5"]}
    datasets.Dataset.from_dict(rows).cast_column("image", datasets.Image()).to_parquet(str(files["test"]))
    dm = _datamodule(make_cfg, files, tmp_path, f"dataset.hf_cache_dir={tmp_path / 'hf2'}")
    dm.check()
    assert dm.class_names == ["sp5", "sp7", "sp9"]  # numbered in sorted order of the label values
    assert dm.splits.train.targets == [2, 0, 1, 0, 2, 1] and dm.splits.test.targets == [1, 0]


class _StopBeforeEpoch(BaseException):
    """Not an Exception: nothing in the run handles it, like a kill (the epoch-end last.ckpt is already written)."""


@pytest.mark.slow
def test_one_epoch_then_resume_equals_two_epochs_in_one_go(make_cfg, tmp_path: Path, monkeypatch) -> None:
    """A parquet dataset (ClassLabel, boxes, val carved from train), loader workers, random augmentations and
    stochastic depth: epoch 1, stop, ``ckpt_path=last`` for epoch 2 ends with the uninterrupted run's weights (bit
    for bit) and val / test metrics."""
    from lightning.pytorch.callbacks import Callback

    import glsim_pl.train as train_module

    class StopAtSecondEpoch(Callback):
        def on_train_epoch_start(self, trainer, *args) -> None:
            if trainer.current_epoch == 1:
                raise _StopBeforeEpoch

    files = _write_parquet(tmp_path, {"train": 30, "test": 9})  # val carved: 24 train rows, 3 steps an epoch
    run = [*_overrides(files, tmp_path), "logger=none", "callbacks.crop_visualizer=null", "trainer.max_epochs=2",
           "trainer.deterministic=true", "dataset.num_workers=2", "augs.drop_path_rate=0.1",
           "augs.random_erasing=0.25", "+trainer.num_sanity_val_steps=0"]  # fmt: skip
    reference = train_module.train(make_cfg(*run, tiny=False, output_dir=tmp_path / "reference"))
    build = train_module.instantiate

    def with_stop(cfg, **kwargs):
        if "callbacks" in kwargs:
            kwargs["callbacks"] = [*kwargs["callbacks"], StopAtSecondEpoch()]
        return build(cfg, **kwargs)

    monkeypatch.setattr(train_module, "instantiate", with_stop)
    with pytest.raises(_StopBeforeEpoch):
        train_module.train(make_cfg(*run, tiny=False, output_dir=tmp_path / "run"))
    monkeypatch.setattr(train_module, "instantiate", build)
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 3  # one epoch
    resumed = train_module.train(make_cfg(*run, "ckpt_path=last", tiny=False, output_dir=tmp_path / "run"))

    for key in ("val/acc1", "val/loss", "val/acc1_best", "test/acc1", "test/loss"):
        assert resumed[key] == reference[key], key
    weights = [torch.load(d / "checkpoints" / "last.ckpt", weights_only=True) for d in (tmp_path / "reference",
                                                                                       last.parent.parent)]  # fmt: skip
    assert weights[0]["global_step"] == weights[1]["global_step"] == 6
    for name, tensor in weights[0]["state_dict"].items():
        assert torch.equal(tensor, weights[1]["state_dict"][name]), name


def test_a_plain_jpeg_cell_takes_the_image_files_fast_path(make_cfg, tmp_path: Path) -> None:
    """A JPEG cell decodes to the (3, H, W) uint8 tensor an image file's fast path gives, with the pixels PIL gives;
    a PNG cell (no fast path) comes as a PIL image."""
    import io

    import datasets
    from torchvision.transforms.v2.functional import pil_to_tensor

    rng = np.random.default_rng(3)
    cells = []
    for fmt in ("JPEG", "PNG", "JPEG"):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(buffer, format=fmt)
        cells.append({"bytes": buffer.getvalue(), "path": None})
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    files = {}
    for split in ("train", "test"):
        files[split] = tmp_path / f"{split}.parquet"
        rows = {"image": cells, "label": [0, 1, 0]}
        datasets.Dataset.from_dict(rows, features=features).to_parquet(str(files[split]))
    dm = _datamodule(make_cfg, files, tmp_path)
    dm.check()
    source = dm.splits.test
    for index, fast in ((0, True), (1, False), (2, True)):
        image, label, _ = source.fast_item(index)
        assert isinstance(image, torch.Tensor) == fast and label == source.targets[index]
        want = pil_to_tensor(source[index][0])
        assert torch.equal(image if fast else pil_to_tensor(image), want)
