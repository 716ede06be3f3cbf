"""Own data: the class list comes from the files; empty class folders and bad CSV rows are named."""

from __future__ import annotations

from pathlib import Path

import pytest

from glsim_pl.config.groups import transform_augs
from glsim_pl.config.instantiate import instantiate
from glsim_pl.errors import UserError
from tests.helpers.configs import TINY
from tests.helpers.data_trees import csv_split, folder


def _dm(make_cfg, tree, *extra: str):
    cfg = make_cfg(*TINY, *tree.overrides, f"dataset.root={tree.root}", "logger=none", "callbacks=none", *extra,
                   tiny=False)  # fmt: skip
    return instantiate(cfg.dataset, augs=transform_augs(cfg))


@pytest.mark.parametrize("make_tree", [folder, csv_split])
def test_num_classes_is_read_from_the_files_and_checked_when_set(make_cfg, tmp_path: Path, make_tree) -> None:
    tree = make_tree(tmp_path)
    dm = _dm(make_cfg, tree)  # dataset.num_classes left unset (null)
    dm.check()
    assert dm.num_classes == 3 and dm.class_names == tree.class_names
    wrong = _dm(make_cfg, tree, "dataset.num_classes=4")
    with pytest.raises(UserError, match="dataset.num_classes=4 but the files .* define 3 classes"):
        wrong.check()


def test_empty_class_folder_is_named_or_dropped(make_cfg, tmp_path: Path, caplog) -> None:
    tree = folder(tmp_path)
    (tree.root / "owl").mkdir()  # sorts between cardinal and robin
    with pytest.raises(UserError, match=r"1 class folder\(s\) under .*mine hold no images: owl.*drop_empty_classes"):
        _dm(make_cfg, tree).check()
    dm = _dm(make_cfg, tree, "dataset.drop_empty_classes=true")
    with caplog.at_level("WARNING"):
        dm.check()
    assert "owl" in caplog.text
    assert dm.class_names == ["blue_jay", "cardinal", "robin"] and dm.num_classes == 3
    robin = [s.label for s in dm.splits.train.samples if s.path.parent.name == "robin"]
    assert set(robin) == {2}  # renumbered without the gap the empty folder left


def test_csv_errors_name_row_column_and_value(make_cfg, tmp_path: Path) -> None:
    tree = csv_split(tmp_path)
    test_csv = tree.root / "test.csv"
    lines = test_csv.read_text().splitlines()
    lines[3] = "7," + lines[3].split(",")[1]  # line 4 of the file
    test_csv.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=r"test.csv: row 4, column class_id: 7 never occurs in train_val.csv"):
        _dm(make_cfg, tree).check()
    lines[3] = "x1," + lines[3].split(",")[1]
    test_csv.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=r"test.csv: row 4, column class_id: 'x1' is not a 0-based integer"):
        _dm(make_cfg, tree).check()
    lines[3] = "1,"
    test_csv.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=r"test.csv: row 4, column dir: empty value"):
        _dm(make_cfg, tree).check()


def test_wrong_csv_path_is_found_before_any_loader(make_cfg, tmp_path: Path) -> None:
    tree = csv_split(tmp_path)
    dm = _dm(make_cfg, tree, "dataset.test_file=tset.csv")
    with pytest.raises(UserError, match=r"missing: tset.csv"):
        dm.check()


def test_image_path_missing_from_the_csv_stops_the_data_check(make_cfg, tmp_path: Path) -> None:
    tree = csv_split(tmp_path)
    with (tree.root / "test.csv").open("a") as f:
        f.write("0,0000/not_there.jpg\n")
    dm = _dm(make_cfg, tree)
    with pytest.raises(UserError, match=r"(?s)1 bad file\(s\).*not_there.jpg: no such file"):
        dm.setup("fit")
