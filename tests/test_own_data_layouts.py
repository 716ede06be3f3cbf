"""Own data as users bring it: a val split given next to train and test, and class folders copied from a Mac, with
links and animated GIFs."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from glsim_pl.analysis.run_record import protocol
from tests.helpers.data_trees import N_TEST, N_TRAIN, build_datamodule, csv_split, folder, write_image


def _setup(dm, caplog: pytest.LogCaptureFixture) -> str:
    """``dm.setup`` -> the data summary line it logs."""
    with caplog.at_level(logging.INFO, logger="glsim_pl.data.base"):
        dm.setup("fit")
    return next(r.getMessage() for r in caplog.records if "images," in r.getMessage())


def _files(dm, view) -> list[Path]:
    return [view.source.samples[i].path for i in view.indices]


def test_folder_val_root_is_the_val_split(make_cfg, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    tree = folder(tmp_path, separate_test=True)
    val_files = [
        write_image(tmp_path / "mine_val" / c / f"v{k}.jpg", 200 + k) for c in tree.class_names for k in (0, 1)
    ]
    cfg, dm = build_datamodule(make_cfg, tree, f"dataset.val_root={tmp_path / 'mine_val'}")
    summary = _setup(dm, caplog)
    assert sorted(_files(dm, dm.data_val)) == sorted(val_files)  # as given, none carved from train
    assert len(dm.data_train) == 3 * N_TRAIN and all("mine_val" not in str(p) for p in _files(dm, dm.data_train))
    assert [dm.data_val.source.targets[i] for i in dm.data_val.indices] == [0, 0, 1, 1, 2, 2]
    assert "val 6" in summary and "val: given" in summary
    assert protocol(cfg)["selection_split"] == "val (given split), best val/acc1"
    assert protocol(cfg)["train_split"] == "train (all of it)"


def test_csv_val_file_is_the_val_split(make_cfg, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    tree = csv_split(tmp_path)
    rows = ["class_id,dir"]
    for c in range(3):
        write_image(tree.root / "images" / f"{c:04d}" / "val_0.jpg", 300 + c)
        rows.append(f"{c},{c:04d}/val_0.jpg")
    (tree.root / "val.csv").write_text("\n".join(rows) + "\n")
    cfg, dm = build_datamodule(make_cfg, tree, "dataset.val_file=val.csv")
    summary = _setup(dm, caplog)
    assert [p.name for p in _files(dm, dm.data_val)] == ["val_0.jpg"] * 3
    assert len(dm.data_train) == 3 * N_TRAIN  # every train row trains
    assert "val: given" in summary
    assert protocol(cfg)["selection_split"] == "val (given split), best val/acc1"
    # the paper protocol fits on train and the given val split, and selects on nothing
    cfg, paper = build_datamodule(make_cfg, tree, "dataset.val_file=val.csv", "dataset.protocol=paper")
    caplog.clear()
    assert "val: none (protocol=paper: the given val split is trained on)" in _setup(paper, caplog)
    assert len(paper.data_train) == 3 * N_TRAIN + 3 and len(paper.data_val) == 0
    assert protocol(cfg)["train_split"] == "official train + given val (all of it)"


def test_without_a_val_split_it_is_carved_and_said(make_cfg, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg, dm = build_datamodule(make_cfg, csv_split(tmp_path))
    assert "val: carved from train (last 20% of each class)" in _setup(dm, caplog)
    assert len(dm.data_val) == 3 and protocol(cfg)["selection_split"] == "val (rest of train), best val/acc1"


def test_class_folders_as_copied_from_a_mac(make_cfg, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """AppleDouble files are not images, links back into the tree are not followed, an animated GIF trains."""
    tree = folder(tmp_path, separate_test=True)
    root = tree.root
    for c in tree.class_names:
        for k in range(N_TRAIN):  # what a Mac writes beside each file on a non-Mac disk
            (root / c / f"._{k:02d}.jpg").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(64))
        (root / c / ".DS_Store").write_bytes(bytes(32))
    (root / "robin" / "notes.txt").write_text("shot in May")
    (root / "__MACOSX").mkdir()
    os.symlink(root, root / "cardinal" / "everything")  # a link back to a parent folder
    os.symlink(root / "robin", root / "robin" / "again")  # a loop
    frames = [Image.fromarray(np.full((30, 40, 3), v, np.uint8)) for v in (40, 200)]
    frames[0].save(root / "robin" / "flying.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    _, dm = build_datamodule(make_cfg, tree, "dataset.protocol=paper")
    summary = _setup(dm, caplog)
    train = _files(dm, dm.data_train)
    assert len(train) == 3 * N_TRAIN + 1 and len(set(train)) == len(train)  # each image once, the GIF too
    assert root / "robin" / "flying.gif" in train
    assert dm.data_check.removed["train"] == []  # nothing was taken for a bad image
    assert dm.left_out == {
        "macOS metadata files (._*, .DS_Store)": 3 * (N_TRAIN + 1),
        "macOS metadata folders (__MACOSX)": 1,
        "not image files (.txt)": 1,
        "folder links into folders listed already (a loop, or the same files twice)": 2,
    }
    assert "left out of the files found: 18 macOS metadata files (._*, .DS_Store), 2 folder links" in summary
    assert len(dm.data_test) == 3 * N_TEST


def test_links_list_each_folder_once(tmp_path: Path) -> None:
    """Folder links are followed only to places no class folder covers: nothing is listed twice, nothing loops."""
    from collections import Counter

    from glsim_pl.data.sources import find_class_folders, list_class_folder

    root, outside = tmp_path / "tree", tmp_path / "shared"
    for path in ("a/1.jpg", "b/1.jpg", "b/2.jpg"):
        write_image(root / path)
    write_image(outside / "c" / "x.jpg")
    write_image(outside / "extra" / "y.jpg")
    os.symlink(outside / "c", root / "c")  # a class folder kept elsewhere: followed
    os.symlink(outside / "extra", root / "a" / "extra")  # a subfolder kept elsewhere: followed
    for link, target in (("aa", "b"), ("zz", "b"), ("a/b", "b"), ("a/up", ".")):
        os.symlink(root / target, root / link)
    os.symlink(outside, root / "c" / "up")  # above a class folder: would list it again
    left_out: Counter[str] = Counter()
    classes = find_class_folders(root, left_out)
    assert classes == ["a", "b", "c"]
    listed = list_class_folder(root, classes, left_out)
    assert listed == [
        [root / "a/1.jpg", root / "a/extra/y.jpg"],
        [root / "b/1.jpg", root / "b/2.jpg"],
        [root / "c/x.jpg"],
    ]
    assert left_out == {"folder links into folders listed already (a loop, or the same files twice)": 5}


def test_data_check_command_skips_what_is_not_an_image(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from glsim_pl.data.verify import main

    write_image(tmp_path / "oak" / "1.jpg")
    (tmp_path / "oak" / "._1.jpg").write_bytes(b"\x00\x05\x16\x07" + bytes(60))
    main([str(tmp_path), "--no-cache"])
    assert capsys.readouterr().out == ""  # no file reported bad


def test_data_info_counts_a_given_val_split(tmp_path: Path, capsys) -> None:
    """glsim-data info reads the splits as training does: the given val folder is val, nothing carved from train."""
    import json

    from glsim_pl.dataset import main

    tree = folder(tmp_path, separate_test=True)
    for c in tree.class_names:
        for k in (0, 1):
            write_image(tmp_path / "mine_val" / c / f"v{k}.jpg", 200 + k)
    base = [*tree.overrides, f"dataset.root={tree.root}", f"dataset.num_classes={tree.num_classes}",
            f"dataset.val_root={tmp_path / 'mine_val'}"]  # fmt: skip
    main(["info", *base])
    shown = json.loads(capsys.readouterr().out)
    assert shown["splits"] == {"train": 3 * N_TRAIN, "val": 6, "test": 3 * N_TEST} and shown["val_split"] == "given"
    main(["info", *base, "dataset.protocol=paper"])
    assert json.loads(capsys.readouterr().out)["splits"] == {"train": 3 * N_TRAIN + 6, "val": 0, "test": 3 * N_TEST}
