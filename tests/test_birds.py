"""CUB / NABirds official text format on tiny trees the tests write, and the missing-dataset error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from glsim_pl.errors import UserError
from glsim_pl.train import train
from tests.helpers.configs import TINY


def write_birds_tree(root: Path, class_ids: list[str], per_class: int = 5, uuid_ids: bool = False) -> None:
    """Official layout: images/<class folder>/*.jpg + the five text files; every 2nd image of a class is test."""
    (root / "images").mkdir(parents=True)
    rows = {"images": [], "labels": [], "split": [], "boxes": []}
    n = 0
    for c, class_id in enumerate(class_ids):
        folder = root / "images" / f"{int(class_id):03d}.Class_{c}"
        folder.mkdir()
        for k in range(per_class):
            n += 1
            image_id = f"{n:08x}-aaaa-bbbb-cccc-{n:012x}" if uuid_ids else str(n)
            Image.new("RGB", (40, 30), (40 * c % 255, 20 * k, 90)).save(folder / f"img_{k}.jpg")
            rows["images"].append(f"{image_id} {folder.name}/img_{k}.jpg")
            rows["labels"].append(f"{image_id} {class_id}")
            rows["split"].append(f"{image_id} {int(k % 2 == 0)}")
            rows["boxes"].append(f"{image_id} 2.0 3.0 20.0 10.0")
    for name, key in [("images", "images"), ("image_class_labels", "labels"), ("train_test_split", "split"),
                      ("bounding_boxes", "boxes")]:  # fmt: skip
        (root / f"{name}.txt").write_text("\n".join(rows[key]) + "\n")
    names = [f"{cid} {int(cid):03d}.Class_{c}" for c, cid in enumerate(class_ids)]
    if uuid_ids:  # NABirds lists the hierarchy's inner nodes too, with spaces in names
        names = ["0 Birds", *[f"{cid} Some Bird {c} (adult)" for c, cid in enumerate(class_ids)], "999 Unused Node"]
    (root / "classes.txt").write_text("\n".join(names) + "\n")


def test_cub_parser_labels_splits_boxes(tmp_path: Path) -> None:
    from glsim_pl.data.datasets.birds import CUBDataModule

    write_birds_tree(tmp_path / "CUB_200_2011", ["1", "2", "3"])
    dm = CUBDataModule(root=str(tmp_path / "CUB_200_2011"), num_classes=3, image_size=32, num_workers=0)
    dm.setup()
    assert dm.class_names == ["Class_0", "Class_1", "Class_2"]
    train_src, test_src = dm.splits.train, dm.splits.test
    assert len(train_src) == 9 and len(test_src) == 6  # k = 0, 2, 4 are train
    assert sorted(set(train_src.targets)) == [0, 1, 2]  # 1-based ids -> 0-based labels
    assert train_src.boxes[0] == (2.0, 3.0, 22.0, 13.0)  # x, y, w, h -> x1, y1, x2, y2
    assert len(dm.data_train) == 6 and len(dm.data_val) == 3  # per class: 3 train rows -> 2 train, 1 val
    assert not set(dm.data_train.indices) & set(dm.data_val.indices)
    image, label, box = dm.data_test[0]
    assert image.shape == (3, 32, 32) and box.shape == (4,)


def test_nabirds_noncontiguous_ids_and_hierarchy(tmp_path: Path) -> None:
    from glsim_pl.data.datasets.birds import NABirdsDataModule

    write_birds_tree(tmp_path / "nabirds", ["817", "295", "1000"], uuid_ids=True)
    dm = NABirdsDataModule(root=str(tmp_path / "nabirds"), num_classes=3, image_size=32, num_workers=0)
    dm.check()
    assert dm.class_names == ["Some Bird 1 (adult)", "Some Bird 0 (adult)", "Some Bird 2 (adult)"]  # 295 < 817 < 1000
    assert dm.splits.train.targets[:3] == [1, 1, 1]  # class id 817 -> label 1


def test_num_classes_mismatch_is_clear(tmp_path: Path) -> None:
    from glsim_pl.data.datasets.birds import CUBDataModule

    write_birds_tree(tmp_path / "cub", ["1", "2"])
    with pytest.raises(UserError, match=r"dataset.num_classes=200 but .* define 2 classes"):
        CUBDataModule(root=str(tmp_path / "cub"), num_classes=200).check()


def test_cub_end_to_end_through_hydra_entry(make_cfg, tmp_path: Path) -> None:
    write_birds_tree(tmp_path / "data" / "CUB_200_2011", ["1", "2", "3"], per_class=6)
    cfg = make_cfg(*TINY, "dataset=cub", f"paths.data_dir={tmp_path / 'data'}", "dataset.num_classes=3",
                   "dataset.batch_size=2", "logger=none", tiny=False)  # fmt: skip
    metrics = train(cfg)
    assert 0.0 <= metrics["test/acc1"] <= 1.0
    assert "test/box_iou" in metrics  # CUB ships boxes: the crop box is scored against them


@pytest.mark.parametrize(("dataset", "folder", "files"), [
    ("nabirds", "nabirds", ["images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt", "images"]),
    ("cub", "CUB_200_2011", ["images.txt", "classes.txt"]),
])  # fmt: skip
def test_missing_dataset_is_one_clear_message(tmp_path: Path, dataset: str, folder: str, files: list[str]) -> None:
    cmd = [sys.executable, "-m", "glsim_pl.train", f"dataset={dataset}", "model=vit_tiny_scratch",
           f"paths.data_dir={tmp_path}", f"hydra.run.dir={tmp_path / 'out'}"]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"{tmp_path / folder}" in result.stderr
    assert all(f in result.stderr for f in files)
    assert "dataset.root=" in result.stderr
    assert "http" in result.stderr  # where the dataset comes from
