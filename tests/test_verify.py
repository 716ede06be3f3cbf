"""The data check before training: bad files stop the run before the first step, or are left out (never replaced)."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from glsim_pl.data.verify import run_data_check
from glsim_pl.errors import UserError, exit_on_user_error
from glsim_pl.train import train
from tests.helpers.configs import TINY

CLASSES = ("a", "b")


def _jpeg(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(path, quality=90)
    return path


def _tree(root: Path, per_class: int = 10) -> dict[str, Path]:
    """Two classes of good JPEGs (sorted names: the last 20 % of each class is the test split) plus one bad file of
    each kind, placed so that both the train and the test split hold some."""
    for c, name in enumerate(CLASSES):
        for i in range(per_class):
            _jpeg(root / name / f"{i:02d}.jpg", seed=100 * c + i)
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(7).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(buf, "JPEG")
    bad = {
        "empty": root / "a" / "00_empty.jpg",  # sorts into train
        "truncated": root / "a" / "99_cut.jpg",  # sorts last: test
        "not_an_image": root / "b" / "00_text.png",  # train
        "dangling_link": root / "b" / "99_link.jpg",  # test
    }
    bad["empty"].write_bytes(b"")
    bad["truncated"].write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    bad["not_an_image"].write_text("this is not a picture")
    os.symlink(root / "b" / "gone.jpg", bad["dangling_link"])
    return bad


def _cfg(make_cfg, root: Path, *extra: str):
    tiny = [o for o in TINY if "batch_size" not in o]
    folder = ["dataset=folder", f"dataset.root={root}", "dataset.batch_size=4", "logger=none",
              "callbacks.crop_visualizer=null", "dataset.protocol=paper"]  # fmt: skip
    return make_cfg(*tiny, *folder, *extra, tiny=False)


def test_bad_files_stop_the_run_before_training(make_cfg, tmp_path: Path, monkeypatch) -> None:
    bad = _tree(tmp_path / "data")
    from glsim_pl.training import module as lit_module

    def no_training(*_args, **_kwargs):  # reaching the model would mean the check came too late
        raise AssertionError("the model was built before the data check stopped the run")

    monkeypatch.setattr(lit_module.GLSimLitModule, "__init__", no_training)
    with pytest.raises(SystemExit) as info:
        exit_on_user_error(train)(_cfg(make_cfg, tmp_path / "data"))
    message = str(info.value.code)
    assert "the data check found 4 bad file(s) of 24" in message
    for path in bad.values():
        assert str(path) in message
    assert "empty file" in message and "truncated JPEG" in message and "broken symbolic link" in message
    assert "not an image format" in message and "dataset.skip_corrupt=true" in message
    assert "Traceback" not in message


def test_skip_corrupt_trains_and_tests_on_the_good_files_only(make_cfg, tmp_path: Path) -> None:
    bad = _tree(tmp_path / "data")
    cfg = _cfg(make_cfg, tmp_path / "data", "dataset.skip_corrupt=true")
    metrics = train(cfg)
    assert metrics["data/removed_train"] == 2 and metrics["data/removed_test"] == 2
    record = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert record["metrics"]["data/removed_train"] == 2 and record["metrics"]["data/removed_test"] == 2
    assert record["config"]["dataset"]["num_classes"] == 2  # read from the folders (num_classes left unset)
    with (Path(cfg.paths.output_dir) / "removed_files.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["file"] for r in rows) == sorted(str(p) for p in bad.values())
    assert {r["split"] for r in rows if r["file"] in (str(bad["truncated"]), str(bad["dangling_link"]))} == {"test"}
    per_class = (Path(cfg.paths.output_dir) / "test_per_class_acc.csv").read_text()
    assert per_class.count("\n") >= 2  # the test ran to the end
    # the test split holds exactly the good test files: 2 per class, no duplicate standing in for a bad one
    assert metrics["data/files_checked"] == 24


class _Source:
    def __init__(self, paths: list[Path], labels: list[int]) -> None:
        from glsim_pl.data.sources import Sample

        self.samples = [Sample(p, y) for p, y in zip(paths, labels, strict=True)]
        self.targets = labels


def test_removed_files_leave_the_split_and_the_cache_skips_unchanged_files(tmp_path: Path, monkeypatch) -> None:
    paths = [_jpeg(tmp_path / f"{i}.jpg", i) for i in range(6)]
    paths[2].write_bytes(b"")
    source = _Source(paths, [0, 1, 0, 1, 0, 1])
    splits = {"train": (source, [0, 1, 2, 3]), "test": (source, [4, 5])}
    cache = tmp_path / "cache"
    check = run_data_check("t", tmp_path, splits, ["x", "y"], "fast", True, cache_dir=cache)
    assert check.kept == {"train": [0, 1, 3], "test": [4, 5]}  # removed, not replaced by a neighbour
    assert check.removed["train"][0][0] == str(paths[2]) and check.metrics()["data/removed_train"] == 1

    from glsim_pl.data import verify

    calls: list[str] = []
    real = verify.check_image_file
    monkeypatch.setattr(verify, "check_image_file", lambda p, **kw: calls.append(str(p)) or real(p, **kw))
    run_data_check("t", tmp_path, splits, ["x", "y"], "fast", True, cache_dir=cache)
    assert calls == []  # nothing changed: every result comes from the cache
    _jpeg(paths[2], 9)  # the bad file is replaced by a good one
    again = run_data_check("t", tmp_path, splits, ["x", "y"], "fast", True, cache_dir=cache)
    assert calls == [str(paths[2])] and again.kept["train"] == [0, 1, 2, 3]
    calls.clear()
    run_data_check("t", tmp_path, splits, ["x", "y"], "full", True, cache_dir=cache)
    assert len(calls) == 6  # a cached fast result does not answer a full check


def test_full_check_decodes_what_the_fast_check_cannot_see(tmp_path: Path) -> None:
    good = tmp_path / "ok.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(good)
    data = bytearray(good.read_bytes())
    idat = data.index(b"IDAT")  # damage the pixel data; the header parses and the IEND end marker is intact
    data[idat + 40 : idat + 60] = bytes(20)
    broken = tmp_path / "damaged.png"
    broken.write_bytes(bytes(data))
    source = _Source([good, broken], [0, 0])
    splits = {"train": (source, [0, 1])}
    fast = run_data_check("t", None, splits, ["x"], "fast", True)
    full = run_data_check("t", None, splits, ["x"], "full", True)
    assert fast.kept["train"] == [0, 1] and full.kept["train"] == [0]
    assert full.removed["train"][0][0] == str(broken)


def test_skip_corrupt_needs_the_check(tmp_path: Path) -> None:
    from glsim_pl.data.datasets.folder import ImageFolderDataModule

    with pytest.raises(UserError, match="skip_corrupt=true needs the data check"):
        ImageFolderDataModule(root=str(tmp_path), skip_corrupt=True, verify="off")
    with pytest.raises(UserError, match="dataset.verify='quick': expected one of fast, full, off"):
        ImageFolderDataModule(root=str(tmp_path), verify="quick")


def test_a_class_left_without_test_images_is_named(tmp_path: Path, caplog) -> None:
    paths = [_jpeg(tmp_path / f"{i}.jpg", i) for i in range(4)]
    paths[3].write_bytes(b"")
    source = _Source(paths, [0, 1, 0, 1])
    with caplog.at_level("WARNING"):
        run_data_check("t", None, {"train": (source, [0, 1]), "test": (source, [2, 3])}, ["oak", "elm"], "fast", True)
    assert "the test split has no image of class(es) elm" in caplog.text
