"""python -m glsim_pl.predict: folder / CSV / single image, unreadable files, official checkpoints, visualisations."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from glsim_pl.errors import UserError
from glsim_pl.predict import list_inputs, predict
from tests.helpers.checkpoints import save_lightning_ckpt
from tests.helpers.configs import compose_tool


def make_images(folder: Path, n: int = 3) -> list[Path]:
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    paths = [folder / f"img{i}.png" for i in range(n - 1)] + [folder / "sub" / "deep.jpg"]
    for p in paths:
        Image.fromarray(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(p)
    (folder / "broken.jpg").write_bytes(b"not an image")
    return paths


def test_predict_folder_with_unreadable_file_and_vis(tmp_path: Path) -> None:
    ckpt = tmp_path / "tiny.ckpt"
    save_lightning_ckpt(ckpt)
    make_images(tmp_path / "in")
    out = tmp_path / "preds"
    cfg = compose_tool("predict", [f"ckpt_path={ckpt}", f"input={tmp_path / 'in'}", f"output={out}",
                                   "save_vis=true", "topk=3", "batch_size=2"], tmp_path / "run")  # fmt: skip
    rows = list(csv.DictReader(predict(cfg).open()))
    assert len(rows) == 4
    broken = next(r for r in rows if r["file"].endswith("broken.jpg"))
    assert "broken.jpg: not an image format" in broken["error"]
    assert broken["class_1"] == ""
    good = [r for r in rows if not r["error"]]
    for r in good:
        probs = [float(r[f"prob_{j}"]) for j in (1, 2, 3)]
        assert probs == sorted(probs, reverse=True)
        assert r["class_1"].startswith("c")
        assert 0 <= int(r["input_x1"]) < int(r["input_x2"]) <= 32  # model-input pixels
        assert 0 <= float(r["x1"]) < float(r["x2"]) <= 56 and 0 <= float(r["y1"]) < float(r["y2"]) <= 40  # original
    assert len(list((out / "vis").glob("*.png"))) == 3


def test_predict_matches_model_on_the_same_tensor(tmp_path: Path) -> None:
    ckpt = tmp_path / "tiny.ckpt"
    module = save_lightning_ckpt(ckpt).eval()
    img = tmp_path / "one.png"
    Image.fromarray(np.full((32, 32, 3), 128, dtype=np.uint8)).save(img)
    cfg = compose_tool("predict", [f"ckpt_path={ckpt}", f"input={img}", f"output={tmp_path / 'o'}", "topk=1",
                                   "resize_factor=1.0"], tmp_path / "run")  # fmt: skip
    row = next(csv.DictReader(predict(cfg).open()))
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    x = ((torch.full((3, 32, 32), 128 / 255) - mean[:, None, None]) / std[:, None, None])[None]
    with torch.no_grad():
        prob, cls = module.net(x).logits.softmax(-1).max(-1)
    assert row["class_1"] == f"c{int(cls)}"
    assert float(row["prob_1"]) == pytest.approx(float(prob), abs=1e-4)


def test_predict_official_checkpoint_from_csv_with_class_file(official_fixture: dict, tmp_path: Path) -> None:
    ckpt = tmp_path / "official.pth"
    torch.save(official_fixture["checkpoint"], ckpt)
    make_images(tmp_path / "in")
    listing = tmp_path / "in" / "list.csv"
    listing.write_text("file\nimg0.png\nsub/deep.jpg\nmissing.png\n")
    names = tmp_path / "names.csv"
    names.write_text("".join(f"{i},species {i}\n" for i in range(3)))
    cfg = compose_tool("predict", [f"ckpt_path={ckpt}", f"input={listing}", f"output={tmp_path / 'o'}",
                                   f"class_names_file={names}", "topk=2"], tmp_path / "run")  # fmt: skip
    rows = list(csv.DictReader(predict(cfg).open()))
    assert [Path(r["file"]).name for r in rows] == ["img0.png", "deep.jpg", "missing.png"]
    assert rows[0]["class_1"].startswith("species ")
    assert "missing.png: no such file" in rows[2]["error"]


def test_predict_bad_inputs_are_clear(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="input="):
        list_inputs(str(tmp_path / "nothing_here"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no images"):
        list_inputs(str(tmp_path / "empty"))
    names = tmp_path / "names.csv"
    names.write_text("0,a\n1,b\n")
    ckpt = tmp_path / "tiny.ckpt"
    save_lightning_ckpt(ckpt)
    cfg = compose_tool("predict", [f"ckpt_path={ckpt}", f"input={tmp_path}", f"class_names_file={names}"], tmp_path)
    with pytest.raises(UserError, match="model has 10 classes"):
        predict(cfg)
