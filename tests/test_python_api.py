"""The public Python API: load_pretrained from every source (Hub included, offline), the stored preprocessing,
predict_image, light imports, the docs example, exports (model card, 0644, upload)."""

from __future__ import annotations

import csv
import json
import re
import stat
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import glsim_pl
from glsim_pl.data.preprocessing import Preprocessing
from glsim_pl.data.transforms import build_eval_transform
from glsim_pl.errors import UserError
from tests.helpers.checkpoints import save_lightning_ckpt
from tests.helpers.configs import compose_tool
from tests.helpers.hub_cache import add_to_hub_cache, hub_env

DOCS = Path(__file__).resolve().parents[1] / "docs" / "python_api.md"
README = DOCS.parents[1] / "README.md"
OFFICIAL_REPO = "NYCU-PCSxNTHU-MIS/GLSim"


@pytest.fixture
def official_pth(official_fixture: dict, tmp_path: Path) -> Path:
    path = tmp_path / "official.pth"
    torch.save(official_fixture["checkpoint"], path)
    return path


@pytest.fixture
def hf_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hub cache this process uses, offline."""
    from huggingface_hub import constants

    home = tmp_path / "hf"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return home


def test_public_names_listed_shown_and_documented() -> None:
    expected = {"GLSim", "GLSimLitModule", "ViTClassifier", "load_pretrained", "load_official_checkpoint",
                "transforms_for", "predict_image", "Preprocessing", "SelectorInputs", "register_selector",
                "selector_names"}  # fmt: skip
    assert set(glsim_pl.__all__) == expected
    assert expected <= set(dir(glsim_pl))
    for name in expected:
        doc = getattr(glsim_pl, name).__doc__ or ""
        assert len(doc.strip().splitlines()) > 1, name
        assert "Example" in doc, name
    assert "load_pretrained" in glsim_pl.__doc__ and "register_selector" in glsim_pl.__doc__
    assert "gls" in glsim_pl.selector_names()


def test_docs_example_runs_offline_from_a_hub_cache(official_pth: Path, tmp_path: Path) -> None:
    """The three-line block at the top of docs/python_api.md, verbatim, in a fresh interpreter; loading and predicting
    imports neither Lightning, Hydra nor matplotlib."""
    block = re.search(r"```python\n(.*?)```", DOCS.read_text(), re.S).group(1)
    assert len(block.strip().splitlines()) == 3
    readme = [b for b in re.findall(r"```python\n(.*?)```", README.read_text(), re.S) if "hf-hub:" in b]
    assert all(b == block for b in readme), "the README's hf-hub example must be the tested one in docs/python_api.md"
    filename = re.search(rf"hf-hub:{OFFICIAL_REPO}/([\w.\-]+)", block).group(1)
    add_to_hub_cache(tmp_path / "hf", OFFICIAL_REPO, {filename: official_pth})
    work = tmp_path / "work"
    work.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(work / "bird.jpg")
    check = ("import sys; heavy = sorted({k.split('.')[0] for k in sys.modules} & {'lightning', 'pytorch_lightning', "
             "'hydra', 'omegaconf', 'matplotlib', 'torchmetrics'}); assert not heavy, heavy")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", block + check], cwd=work, env=hub_env(tmp_path / "hf"),
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "'top': [(" in done.stdout and "'box': [" in done.stdout


def test_preprocess_is_the_eval_transform_and_boxes_map_to_the_original(tmp_path: Path) -> None:
    ckpt = tmp_path / "tiny.ckpt"
    module = save_lightning_ckpt(ckpt, selector="gls")
    pre = Preprocessing(input_size=32, resize_factor=1.25, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    saved = torch.load(ckpt, weights_only=True)
    torch.save({**saved, "preprocessing": pre.to_dict()}, ckpt)
    model = glsim_pl.load_pretrained(ckpt)
    assert model.preprocess == pre and glsim_pl.transforms_for(model) == pre and not model.training
    assert model.pretrained_cfg["input_size"] == [3, 32, 32] and model.pretrained_cfg["crop_pct"] == 32 / 40
    image = Image.fromarray(np.random.default_rng(1).integers(0, 255, (100, 200, 3), dtype=np.uint8))
    path = tmp_path / "wide.png"
    image.save(path)
    expected = build_eval_transform(32, 40, pre.mean, pre.std)(image)
    assert torch.equal(model.preprocess(image), expected) and torch.equal(model.preprocess(path), expected)
    result = glsim_pl.predict_image(model, path, topk=3)
    with torch.no_grad():
        out = module.net.eval()(expected[None])
    assert [n for n, _ in result["top"]] == [f"c{i}" for i in out.logits[0].topk(3).indices.tolist()]
    assert result["box_input"] == [int(v) for v in out.boxes[0].tolist()]
    # resize 200 x 100 -> 40 x 40, crop offset 4: model-input x -> (x + 4) * 5, y -> (y + 4) * 2.5
    x1, y1, x2, y2 = result["box_input"]
    assert result["box"] == [(x1 + 4) * 5.0, (y1 + 4) * 2.5, (x2 + 4) * 5.0, (y2 + 4) * 2.5]
    assert pre.box_to_original([0, 0, 32, 32], 200, 100) == [20.0, 10.0, 180.0, 90.0]


def test_checkpoints_record_the_datamodule_preprocessing(tmp_path: Path) -> None:
    from glsim_pl.data.datasets.synthetic import SyntheticDataModule

    dm = SyntheticDataModule(num_classes=3, train_size=6, test_size=3, image_px=40, image_size=32, resize_factor=1.3,
                             normalize="custom", mean=[0.1, 0.2, 0.3], std=[0.3, 0.2, 0.1])  # fmt: skip
    module = save_lightning_ckpt(tmp_path / "unused.ckpt", num_classes=3)
    module._trainer = types.SimpleNamespace(datamodule=dm)
    checkpoint: dict = {}
    module.on_save_checkpoint(checkpoint)
    pre = Preprocessing.from_dict(checkpoint["preprocessing"])
    assert (pre.input_size, pre.resize_size, pre.mean, pre.std) == (32, 41, (0.1, 0.2, 0.3), (0.3, 0.2, 0.1))
    json.dumps(checkpoint["preprocessing"])  # plain values: loads with weights_only=True


def test_hub_ids_official_file_and_our_export(official_fixture: dict, official_pth: Path, hf_home: Path,
                                              tmp_path: Path) -> None:  # fmt: skip
    add_to_hub_cache(hf_home, OFFICIAL_REPO, {"cub/official_tiny.pth": official_pth})
    model = glsim_pl.load_pretrained(f"hf-hub:{OFFICIAL_REPO}/cub/official_tiny.pth")
    with torch.no_grad():
        logits = model(official_fixture["images"]).logits
    torch.testing.assert_close(logits, official_fixture["logits"], atol=1e-4, rtol=1e-4)
    from glsim_pl.export import export

    out = tmp_path / "exported"
    export(compose_tool("export", [f"ckpt_path=hf-hub:{OFFICIAL_REPO}/cub/official_tiny.pth", f"out={out}",
                                   "hub.repo_id=someone/glsim-tiny"], tmp_path / "run"))  # fmt: skip
    files = {p.name: p for p in out.iterdir()}
    add_to_hub_cache(hf_home, "someone/glsim-tiny", files, commit="1" * 40)
    again = glsim_pl.load_pretrained("hf-hub:someone/glsim-tiny")
    assert again.preprocess == model.preprocess
    with torch.no_grad():
        assert torch.equal(again(official_fixture["images"]).logits, logits)
    Image.new("RGB", (96, 96), (10, 200, 10)).save(tmp_path / "one.png")
    from glsim_pl.predict import predict

    cfg = compose_tool("predict", ["ckpt_path=hf-hub:someone/glsim-tiny", f"input={tmp_path / 'one.png'}",
                                   f"output={tmp_path / 'p'}", "topk=2"], tmp_path / "run2")  # fmt: skip
    row = next(csv.DictReader(predict(cfg).open()))
    assert row["class_1"] in {"0", "1", "2"} and not row["error"]
    with pytest.raises(UserError, match="HF_HUB_OFFLINE=1"):
        glsim_pl.load_pretrained(f"hf-hub:{OFFICIAL_REPO}/not_cached.pth")
    with pytest.raises(UserError, match="hf-hub:<owner>/<name>"):
        glsim_pl.load_pretrained("hf-hub:only-owner")


def test_export_folder_is_hub_ready_0644_with_a_model_card(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from glsim_pl.export import export

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    ckpt = run / "checkpoints" / "best.ckpt"
    save_lightning_ckpt(ckpt)
    record = {
        "overrides": ["dataset=cub", "seed=1"],
        "metrics": {"test/acc1": 0.9123, "val/acc1": 0.9},
        "seed": 1,
        "device": "cpu",
        "config": {"dataset": {"_target_": "x.CUBDataModule", "root": "data/CUB_200_2011"}},
        "tested_checkpoint": str(ckpt),
    }
    (run / "metrics.json").write_text(json.dumps(record))
    pushed = {}

    class FakeApi:
        def create_repo(self, repo_id, **kw):
            pushed["repo"] = (repo_id, kw.get("private"))

        def upload_folder(self, repo_id, folder_path, **kw):
            pushed["files"] = sorted(p.name for p in Path(folder_path).iterdir())
            return types.SimpleNamespace(commit_url=f"https://huggingface.co/{repo_id}/commit/abc")

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    out = tmp_path / "exported"
    overrides = [f"ckpt_path={ckpt}", f"out={out}", "hub.repo_id=me/glsim-cub", "hub.push=true", "hub.private=true"]
    export(compose_tool("export", overrides, tmp_path / "o"))
    for name in ("model.safetensors", "config.json", "README.md"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o644, name
    assert not list(out.glob(".*tmp"))
    card = (out / "README.md").read_text()
    for fact in ("pipeline_tag: image-classification", "license: mit", "- CUB_200_2011", "| test/acc1 | 0.9123 |",
                 "glsim-train dataset=cub seed=1", "arXiv:2407.12891", 'load_pretrained("hf-hub:me/glsim-cub")',
                 "centre crop 32 x 32"):  # fmt: skip
        assert fact in card, fact
    assert pushed == {"repo": ("me/glsim-cub", True), "files": ["README.md", "config.json", "model.safetensors"]}
    config = json.loads((out / "config.json").read_text())
    assert config["preprocessing"]["input_size"] == 32 and config["class_names"][0] == "c0"
    with pytest.raises(UserError, match="not empty"):
        export(compose_tool("export", [f"ckpt_path={ckpt}", f"out={out}"], tmp_path / "o2"))


def test_config_dir_rule_prefers_the_packaged_copy(tmp_path: Path) -> None:
    from glsim_pl.config.locate import CONFIG_DIR, find_config_dir

    installed = Path(glsim_pl.__file__).resolve().parent
    checkout = Path(__file__).resolve().parents[1]
    if installed.is_relative_to(checkout / "src"):  # a checkout: the top-level conf/
        assert Path(CONFIG_DIR) == checkout / "conf"
    else:  # the wheel under test (make test-min): the copy inside the package
        assert Path(CONFIG_DIR) == installed / "conf"
    package = tmp_path / "site" / "lib" / "glsim_pl"
    (package / "conf").mkdir(parents=True)
    (package / "conf" / "train.yaml").write_text("{}")
    assert find_config_dir(package) == str(package / "conf")  # an install: the copy inside the package
    with pytest.raises(FileNotFoundError, match="train.yaml"):
        find_config_dir(tmp_path / "a" / "b" / "glsim_pl")


def test_eval_output_dir_is_beside_the_checkpoint(tmp_path: Path) -> None:
    from glsim_pl.config.run_dir import eval_output_dir

    ckpt = tmp_path / "run" / "checkpoints" / "epoch_003.ckpt"
    assert Path(eval_output_dir(str(ckpt), ".")).parent == tmp_path / "run" / "eval" / "epoch_003"
    assert Path(eval_output_dir(str(tmp_path / "x.pth"), ".")).parent == tmp_path / "eval" / "x"
    assert eval_output_dir("hf-hub:a/b/c.pth", "/r").startswith("/r/outputs/")


UNREACHABLE_HUB = """
from glsim_pl.errors import UserError
from glsim_pl.model_io.hub import resolve_model_path
from glsim_pl.models.encoder import create_encoder

print("cached:", resolve_model_path("hf-hub:someone/cached/w.bin").read_bytes().decode())
for load in (lambda: create_encoder("vit_tiny_patch16_224", img_size=32, pretrained=True),
             lambda: resolve_model_path("hf-hub:someone/missing/w.bin")):
    try:
        load()
    except UserError as exc:
        print("error:", exc)
"""


def test_unreachable_hub_without_offline_mode_fails_at_once_or_uses_the_cache(tmp_path: Path) -> None:
    """HF_HUB_OFFLINE unset and the Hub endpoint refusing connections (a local port bound but not listening, so
    nothing leaves the machine): a cached file loads, a missing one (timm weights, an hf-hub: id) is the one clear
    message, and the Hub client never goes into its retries."""
    import socket

    hf_home = tmp_path / "hf"
    (tmp_path / "w.bin").write_text("weights")
    add_to_hub_cache(hf_home, "someone/cached", {"w.bin": tmp_path / "w.bin"})
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # never listens: connections are refused
        env = {k: v for k, v in hub_env(hf_home).items() if k != "HF_HUB_OFFLINE"}
        env["HF_ENDPOINT"] = f"http://127.0.0.1:{closed.getsockname()[1]}"
        proc = subprocess.run([sys.executable, "-c", UNREACHABLE_HUB], env=env, capture_output=True, text=True,
                              timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0] == "cached: weights"
    assert lines[1].startswith("error: could not fetch pretrained weights for 'vit_tiny_patch16_224'")
    assert lines[2].startswith("error: 'hf-hub:someone/missing/w.bin': cannot be fetched from the Hugging Face Hub")
    assert "does not answer" in lines[2]
    assert "Retry" not in proc.stderr, proc.stderr[-2000:]
