"""Every dataset module on a tiny tree in its official layout: labels, names, splits, boxes, shapes, a training run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from glsim_pl.errors import UserError
from tests.helpers.data_trees import TREES, build_datamodule, truncate

NAMES = sorted(TREES)


@pytest.fixture(autouse=True)
def _generated_flowers_mat_files(monkeypatch) -> None:
    """Our generated .mat files cannot match torchvision's md5 sums of the official ones (see test_data_quirks)."""
    monkeypatch.setattr("torchvision.datasets.flowers102.check_integrity", lambda *args, **kwargs: True)


@pytest.mark.parametrize("name", NAMES)
def test_reads_labels_names_and_boxes(name: str, make_cfg, tmp_path: Path) -> None:
    tree = TREES[name](tmp_path)
    _, dm = build_datamodule(make_cfg, tree)
    dm.check()
    train, test, class_names = dm.splits.train, dm.splits.test, dm.splits.class_names
    assert class_names == tree.class_names
    assert train.targets == tree.train_labels
    assert test.targets == tree.test_labels
    if tree.test_boxes is None:
        assert test.boxes is None
    else:
        assert [tuple(b) for b in test.boxes] == tree.test_boxes
    image, label, _ = test[0]
    assert (image.mode, image.size, label) == ("RGB", (40, 30), tree.test_labels[0])


@pytest.mark.parametrize("name", NAMES)
def test_splits_are_disjoint_and_deterministic(name: str, make_cfg, tmp_path: Path) -> None:
    tree = TREES[name](tmp_path)
    _, first = build_datamodule(make_cfg, tree)
    _, second = build_datamodule(make_cfg, tree)
    first.setup("fit")
    second.setup("fit")
    train_idx, val_idx = set(first.data_train.indices), set(first.data_val.indices)
    assert train_idx
    assert val_idx
    assert not train_idx & val_idx
    assert train_idx | val_idx == set(range(len(tree.train_labels)))
    assert first.data_train.indices == second.data_train.indices
    assert first.data_val.indices == second.data_val.indices
    train_files = {s.path for s in first.splits.train.samples}
    test_files = {s.path for s in first.splits.test.samples}
    assert not train_files & test_files
    _, paper = build_datamodule(make_cfg, tree, "dataset.protocol=paper")
    paper.setup("fit")
    assert (len(paper.data_train), len(paper.data_val)) == (len(tree.train_labels), 0)


@pytest.mark.parametrize("size", [224, 448])
@pytest.mark.parametrize("name", NAMES)
def test_transform_output_shapes(name: str, size: int, make_cfg, tmp_path: Path) -> None:
    tree = TREES[name](tmp_path)
    _, dm = build_datamodule(make_cfg, tree, f"dataset.image_size={size}")
    dm.setup("fit")
    image, label = dm.data_train[0]
    assert image.shape == (3, size, size)
    assert image.dtype == torch.float32
    test_item = dm.data_test[0]
    assert test_item[0].shape == (3, size, size)
    if tree.test_boxes is not None:  # boxes follow the resize + center crop into the model's frame
        box = test_item[2]
        assert box.shape == (4,)
        assert 0 <= box[0] < box[2] <= size
        assert 0 <= box[1] < box[3] <= size


@pytest.mark.parametrize("name", [n for n in NAMES if n not in ("cub", "nabirds")])  # those: test_birds.py
def test_fast_dev_run_through_the_entry_point(name: str, make_cfg, tmp_path: Path) -> None:
    from glsim_pl.train import train

    tree = TREES[name](tmp_path)
    cfg, _ = build_datamodule(make_cfg, tree, "+trainer.fast_dev_run=true", "dataset.batch_size=2")
    metrics = train(cfg)
    assert 0.0 <= metrics["test/acc1"] <= 1.0


@pytest.mark.parametrize("name", NAMES)
def test_missing_files_name_the_root(name: str, make_cfg, tmp_path: Path) -> None:
    tree = TREES[name](tmp_path / "built")
    tree.root = tmp_path / "elsewhere" / tree.root.name  # same folder name, nothing in it
    _, dm = build_datamodule(make_cfg, tree)
    with pytest.raises(UserError, match=str(tree.root.parent)):
        dm.check()


@pytest.mark.parametrize("name", ["cub", "aircraft", "cars_devkit", "soy"])
def test_corrupt_image_is_named_or_skipped(name: str, make_cfg, tmp_path: Path, caplog) -> None:
    tree = TREES[name](tmp_path)
    _, dm = build_datamodule(make_cfg, tree, "dataset.protocol=paper")
    dm.setup("fit")
    broken = dm.splits.train.samples[0].path
    truncate(broken)
    with pytest.raises(UserError, match=str(broken)):
        dm.data_train[dm.data_train.indices.index(0)]
    _, skipping = build_datamodule(make_cfg, tree, "dataset.protocol=paper", "dataset.skip_corrupt=true")
    skipping.setup("fit")  # the data check finds the file broken after the first check: left out, not replaced
    assert 0 not in skipping.data_train.indices and len(skipping.data_train) == len(dm.data_train) - 1
    assert skipping.data_check.removed["train"][0][0] == str(broken)
    assert str(broken) in caplog.text
