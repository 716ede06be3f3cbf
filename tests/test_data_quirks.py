"""Dataset-specific rules and the clear errors on malformed official files."""

from __future__ import annotations

from pathlib import Path

import pytest

from glsim_pl.errors import UserError
from tests.helpers.configs import TINY
from tests.helpers.data_trees import TREES, build_datamodule, csv_split, folder, ufg, write_image


def test_cars_resize_rule_is_size_over_0875(make_cfg, tmp_path: Path) -> None:
    tree = TREES["cars_annos"](tmp_path)
    for size, resize in ((224, 256), (448, 512)):
        _, dm = build_datamodule(make_cfg, tree, f"dataset.image_size={size}")
        assert dm.resize_size == resize
    _, cub = build_datamodule(make_cfg, TREES["cub"](tmp_path), "dataset.image_size=224")
    assert cub.resize_size == 300  # int(1.34 * 224) everywhere else


def test_cars_devkit_without_test_labels_is_explained(make_cfg, tmp_path: Path) -> None:
    tree = TREES["cars_devkit"](tmp_path)
    (tree.root / "cars_test_annos_withlabels.mat").rename(tree.root / "devkit" / "cars_test_annos.mat")
    _, dm = build_datamodule(make_cfg, tree)
    with pytest.raises(UserError, match="cars_test_annos_withlabels.mat"):
        dm.check()


def test_flowers_val_is_the_official_val_split(make_cfg, tmp_path: Path, monkeypatch) -> None:
    from scipy.io import loadmat

    monkeypatch.setattr("torchvision.datasets.flowers102.check_integrity", lambda *args, **kwargs: True)
    tree = TREES["flowers"](tmp_path)
    _, dm = build_datamodule(make_cfg, tree)
    dm.setup("fit")
    files = [s.path.name for s in dm.splits.train.samples]
    official_val = {f"image_{i:05d}.jpg" for i in loadmat(tree.root / "setid.mat", squeeze_me=True)["valid"]}
    assert {files[i] for i in dm.data_val.indices} == official_val


def test_flowers_files_that_fail_torchvision_checksums_are_explained(make_cfg, tmp_path: Path) -> None:
    _, dm = build_datamodule(make_cfg, TREES["flowers"](tmp_path))  # generated .mat files: not the official bytes
    with pytest.raises(UserError, match=r"flowers-102.*imagelabels.mat"):
        dm.check()


def test_torchvision_datasets_need_their_folder_name(make_cfg, tmp_path: Path) -> None:
    tree = TREES["food"](tmp_path)
    tree.root = tree.root.rename(tmp_path / "food101")
    _, dm = build_datamodule(make_cfg, tree)
    with pytest.raises(UserError, match="must be the extracted 'food-101' folder"):
        dm.check()


def test_folder_num_classes_mismatch_says_what_was_found(make_cfg, tmp_path: Path) -> None:
    tree = folder(tmp_path)
    tree.num_classes = 5
    _, dm = build_datamodule(make_cfg, tree)
    with pytest.raises(UserError, match="define 3 classes"):
        dm.check()


def test_folder_test_tree_with_unknown_class(make_cfg, tmp_path: Path) -> None:
    tree = TREES["folder_separate_test"](tmp_path)
    write_image(tmp_path / "mine_test" / "sparrow" / "00.jpg")
    _, dm = build_datamodule(make_cfg, tree)
    with pytest.raises(UserError, match="sparrow"):
        dm.check()


def test_csv_wrong_header_names_file_and_columns(make_cfg, tmp_path: Path) -> None:
    tree = csv_split(tmp_path)
    (tree.root / "test.csv").write_text("label,path\n0,0000/test_0.jpg\n")
    _, dm = build_datamodule(make_cfg, tree)
    with pytest.raises(UserError, match=r"test.csv: expected a header with columns class_id,dir"):
        dm.check()


def test_csv_labels_must_be_zero_based(make_cfg, tmp_path: Path) -> None:
    tree = csv_split(tmp_path)
    path = tree.root / "train_val.csv"
    header, *rows = path.read_text().splitlines()
    path.write_text("\n".join([header] + [f"{int(r.split(',')[0]) + 1},{r.split(',')[1]}" for r in rows]))
    _, dm = build_datamodule(make_cfg, tree)
    with pytest.raises(UserError, match=r"train_val.csv: row 2, column class_id: 1: class ids must run 0..K-1"):
        dm.check()


def test_ufg_unexpected_file_name_is_named(make_cfg, tmp_path: Path) -> None:
    tree = ufg(tmp_path)
    odd = write_image(tree.root / "soybean200_square" / "leaf_7.png")
    _, dm = build_datamodule(make_cfg, tree)
    with pytest.raises(UserError, match=str(odd)):
        dm.check()


def test_dogs_missing_box_annotation_is_named(make_cfg, tmp_path: Path) -> None:
    tree = TREES["dogs"](tmp_path)
    gone = next((tree.root / "Annotation").rglob("*_100"))
    gone.unlink()
    _, dm = build_datamodule(make_cfg, tree)
    with pytest.raises(UserError, match=str(gone)):
        dm.check()


def test_inat_unlisted_category_is_named(make_cfg, tmp_path: Path) -> None:
    import json

    tree = TREES["inat17"](tmp_path)
    path = tree.root / "val2017.json"
    content = json.loads(path.read_text())
    content["annotations"][0]["category_id"] = 77
    path.write_text(json.dumps(content))
    _, dm = build_datamodule(make_cfg, tree)
    with pytest.raises(UserError, match=r"category ids \[77\]"):
        dm.check()


@pytest.mark.slow  # a fresh interpreter (~20 s on 2 cores); test_birds.py checks the same for CUB
def test_entry_point_prints_one_line_for_a_missing_dataset(tmp_path: Path) -> None:
    import subprocess
    import sys

    args = [sys.executable, "-m", "glsim_pl.train", *TINY, "dataset=dogs", f"dataset.root={tmp_path / 'nope'}",
            "logger=none", "callbacks=none", f"hydra.run.dir={tmp_path / 'run'}"]  # fmt: skip
    result = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "vision.stanford.edu" in result.stderr
