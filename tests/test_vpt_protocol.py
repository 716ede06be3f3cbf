"""dataset.protocol=vpt|vpt_trainval: VPT's FGVC split files on tiny official trees, and the VPT LR x WD grid."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from glsim_pl import reproduce as rp
from glsim_pl.analysis.lr_search import choose_lr_wd, scaled_lr
from glsim_pl.analysis.run_record import protocol
from glsim_pl.errors import UserError
from tests.helpers.configs import TINY
from tests.helpers.data_trees import TREES, build_datamodule, write_image, write_vpt_splits

# tree -> the folder VPT's split files' paths start in
VPT_TREES = {"cub": "images", "nabirds": "images", "dogs": "Images", "flowers": "", "cars_annos": ""}


@pytest.fixture(autouse=True)
def _generated_flowers_mat_files(monkeypatch) -> None:
    """Our generated .mat files cannot match torchvision's md5 sums of the official ones (see test_data_quirks)."""
    monkeypatch.setattr("torchvision.datasets.flowers102.check_integrity", lambda *args, **kwargs: True)


def _paths(view) -> set[Path]:
    return {view.source.samples[i].path for i in view.indices}


@pytest.mark.parametrize("name", VPT_TREES)
def test_splits_come_from_the_json_files(name: str, make_cfg, tmp_path: Path) -> None:
    tree = TREES[name](tmp_path)
    lists = write_vpt_splits(make_cfg, tree, VPT_TREES[name])
    _, dm = build_datamodule(make_cfg, tree, "dataset.protocol=vpt", "dataset.num_classes=3")
    dm.setup("fit")
    base = tree.root / VPT_TREES[name]
    want = {split: {base / rel for rel in rows} for split, rows in lists.items()}
    n_train, n_test = len(tree.train_labels), len(tree.test_labels)
    assert (len(dm.data_train), len(dm.data_val), len(dm.data_test)) == (n_train - 3, 3, n_test)  # 1 val per class
    assert _paths(dm.data_train) == want["train"] and _paths(dm.data_val) == want["val"]
    assert _paths(dm.data_test) == want["test"] and not _paths(dm.data_train) & _paths(dm.data_val)
    official = tree.class_names[:3]
    assert dm.class_names == official[::-1]  # VPT's numbering: the sorted JSON classes (official order reversed)
    ids = sorted({c for rows in lists.values() for c in rows.values()})
    for split, view in (("train", dm.data_train), ("val", dm.data_val), ("test", dm.data_test)):
        labels = {view.source.samples[i].path: view.source.samples[i].label for i in view.indices}
        assert all(labels[base / rel] == ids.index(c) for rel, c in lists[split].items())
    if tree.test_boxes is not None:  # the official boxes come along
        assert dm.data_test.source.boxes is not None
    assert dm.val_split == "VPT val.json"
    _, final = build_datamodule(make_cfg, tree, "dataset.protocol=vpt_trainval", "dataset.num_classes=3")
    final.setup("fit")
    assert (len(final.data_train), len(final.data_val), len(final.data_test)) == (n_train, 0, n_test)
    assert _paths(final.data_train) == want["train"] | want["val"]


def test_split_dir_missing_file_and_missing_images(make_cfg, tmp_path: Path) -> None:
    tree = TREES["cub"](tmp_path)
    _, dm = build_datamodule(make_cfg, tree, "dataset.protocol=vpt")
    with pytest.raises(
        UserError, match=r"needs .*CUB_200_2011/train\.json, which does not exist.*github\.com/KMnP/vpt"
    ):
        dm.setup("fit")
    lists = write_vpt_splits(make_cfg, tree, "images", out=tmp_path / "splits")
    _, dm = build_datamodule(make_cfg, tree, "dataset.protocol=vpt", f"dataset.vpt_split_dir={tmp_path / 'splits'}")
    dm.setup("fit")
    assert len(dm.data_val) == 3
    for rel in sorted(lists["test"])[:2]:
        (tree.root / "images" / rel).unlink()
    _, dm = build_datamodule(make_cfg, tree, "dataset.protocol=vpt", f"dataset.vpt_split_dir={tmp_path / 'splits'}")
    first = tree.root / "images" / next(rel for rel in lists["test"] if rel in sorted(lists["test"])[:2])
    with pytest.raises(UserError, match=rf"2 image\(s\) listed in the VPT split files are missing .*first: {first} "):
        dm.setup("fit")


def test_bad_split_files_and_datasets_are_refused(make_cfg, tmp_path: Path) -> None:
    tree = TREES["cub"](tmp_path)
    lists = write_vpt_splits(make_cfg, tree, "images")
    shared = next(iter(lists["val"]))
    (tree.root / "train.json").write_text(json.dumps({**lists["train"], shared: lists["val"][shared]}))
    _, dm = build_datamodule(make_cfg, tree, "dataset.protocol=vpt")
    with pytest.raises(UserError, match="train.json and val.json share 1 image"):
        dm.setup("fit")
    (tree.root / "train.json").write_text(json.dumps(dict.fromkeys(lists["train"], "a")))
    _, dm = build_datamodule(make_cfg, tree, "dataset.protocol=vpt")
    with pytest.raises(UserError, match="train.json: image .* has class 'a'"):
        dm.setup("fit")
    mixed = dict(lists["train"])
    mixed[next(rel for rel, c in mixed.items() if c != 3)] = 3  # one image of another official class under class 3
    (tree.root / "train.json").write_text(json.dumps(mixed))
    _, dm = build_datamodule(make_cfg, tree, "dataset.protocol=vpt")
    with pytest.raises(UserError, match="train.json: class 3 holds images of two official classes"):
        dm.setup("fit")
    write_image(tree.root / "images" / "extra" / "x.jpg")  # not in the official lists: no official names
    (tree.root / "train.json").write_text(json.dumps({**lists["train"], "extra/x.jpg": 3}))
    _, dm = build_datamodule(make_cfg, tree, "dataset.protocol=vpt")
    dm.setup("fit")
    assert dm.class_names == ["3", "10", "17"] and len(dm.data_train) == len(lists["train"]) + 1
    pets = TREES["pets"](tmp_path / "p")
    with pytest.raises(UserError, match="dataset.protocol=vpt with dataset 'pets': VPT publishes FGVC splits for"):
        build_datamodule(make_cfg, pets, "dataset.protocol=vpt")


def test_the_run_record_names_the_protocol(make_cfg) -> None:
    vpt = protocol(make_cfg("dataset=cub", "dataset.protocol=vpt", tiny=False))
    assert vpt["name"] == "vpt" and vpt["train_split"] == "VPT train.json"
    assert vpt["selection_split"] == "val (VPT val.json), best val/acc1"
    final = protocol(make_cfg("dataset=cub", "dataset.protocol=vpt_trainval", tiny=False))
    assert final["train_split"] == "VPT train.json + val.json" and final["selection_split"].startswith("none")
    assert final["test_split"] == "official test (VPT test.json)"
    assert protocol(make_cfg())["name"] == "val"


def test_lr_wd_choice_and_batch_scaling() -> None:
    assert scaled_lr(0.5, 64) == 0.125
    assert choose_lr_wd({(0.1, 0.0): 0.5, (0.1, 0.01): 0.7, (0.01, 0.001): 0.7, (0.01, 0.01): 0.7}) == (0.01, 0.001)
    with pytest.raises(UserError, match="stage 1 gave no validation result"):
        choose_lr_wd({})


def _fake_multirun(calls: list[list[str]], val: dict[tuple[float, float], float]):
    """Stands in for `python -m glsim_pl.train -m ...`: one metrics.json per (lr, wd, seed) job."""

    def run(overrides: list[str], sweep: Path) -> int:
        calls.append(overrides)
        values = dict(o.split("=", 1) for o in overrides)
        wds = values.get("optim.weight_decay", "0.0").split(",")
        jobs = [(float(lr), float(wd), s) for lr in values["optim.lr"].split(",") for wd in wds
                for s in values["seed"].split(",")]  # fmt: skip
        for num, (lr, wd, seed) in enumerate(jobs):
            metrics = {"val/acc1": val[(lr, wd)]} if "test=false" in overrides else {"test/acc1": 0.6}
            record = {"experiment": values["experiment"], "seed": int(seed), "metrics": metrics,
                      "overrides": [f"experiment={values['experiment']}", f"seed={seed}", f"optim.lr={lr}",
                                    f"optim.weight_decay={wd}"],
                      "config": {"optim": {"lr": lr, "weight_decay": wd}}, "protocol": {"epochs": 1}}  # fmt: skip
            (sweep / str(num)).mkdir(parents=True)
            (sweep / str(num) / "metrics.json").write_text(json.dumps(record))
        return 0

    return run


def test_vpt_grid_searches_lr_and_wd_on_val_then_trains_on_trainval(tmp_path: Path, monkeypatch) -> None:
    calls: list[list[str]] = []
    val = {(0.5, 0.01): 0.3, (0.5, 0.0): 0.6, (0.25, 0.01): 0.4, (0.25, 0.0): 0.5}  # batch 32: base x 32 / 256
    monkeypatch.setattr(rp, "_multirun", _fake_multirun(calls, val))
    chosen = rp.reproduce(["exp_a"], "vpt", tmp_path / "runs", tmp_path / "res", grid=(4.0, 2.0), seeds="1,2",
                          protocol="vpt", wd_grid=(0.01, 0.0), batch=32)  # fmt: skip
    stage1, stage2 = calls
    assert stage1 == ["experiment=exp_a", "optim.lr=0.5,0.25", "optim.weight_decay=0.01,0.0", "seed=1",
                      "dataset.protocol=vpt", "test=false"]  # fmt: skip
    assert stage2 == ["experiment=exp_a", "seed=1,2", "optim.lr=0.5", "optim.weight_decay=0.0",
                      "dataset.protocol=vpt_trainval"]  # fmt: skip
    c = chosen["exp_a"]
    assert (c["lr"], c["weight_decay"], c["effective_batch"], c["protocol"]) == (0.5, 0.0, 32, "vpt")
    assert c["stage1"]["0.5,0.0"] == 0.6 and len(c["stage1"]) == 4 and not c["failed"]
    md = (tmp_path / "res" / "vpt.md").read_text()
    assert "## Learning rate and weight decay (VPT protocol" in md
    assert "| 4.0 (0.5) | 30.00 | 60.00 |" in md and "Chosen: lr 0.5, weight decay 0.0." in md


@pytest.mark.slow  # three training runs in subprocesses
def test_vpt_grid_runs_on_a_tiny_tree(make_cfg, tmp_path: Path, monkeypatch) -> None:
    tree = TREES["cub"](tmp_path)
    write_vpt_splits(make_cfg, tree, "images")
    monkeypatch.chdir(tmp_path)
    extra = [*TINY, f"dataset.root={tree.root}", "dataset.num_classes=3", "dataset.batch_size=4",
             "trainer.max_epochs=1", "logger=none", "trainer.enable_progress_bar=false"]  # fmt: skip
    chosen = rp.reproduce(["vit_cub_vit_b16"], "tiny", tmp_path / "runs", tmp_path / "res", grid=(2.0, 1.0),
                          seeds="1", extra=extra, protocol="vpt", wd_grid=(0.0,))  # fmt: skip
    c = chosen["vit_cub_vit_b16"]
    assert c["effective_batch"] == 4 and not c["failed"] and set(c["stage1"]) == {"0.03125,0.0", "0.015625,0.0"}
    record = json.loads(next((tmp_path / "runs" / "vit_cub_vit_b16" / "seeds").rglob("metrics.json")).read_text())
    assert record["protocol"]["name"] == "vpt_trainval" and "test/acc1" in record["metrics"]
    assert record["config"]["optim"]["lr"] == c["lr"]
