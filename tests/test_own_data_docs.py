"""The dataset-class example of docs/own_data.md runs as printed."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

DOC = Path(__file__).resolve().parents[1] / "docs" / "own_data.md"


def test_dataset_class_example_reads_its_splits(tmp_path: Path) -> None:
    section = DOC.read_text().split("## A dataset class of your own", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, str(DOC), "exec"), namespace)
    lines = []
    for i in range(8):
        path = tmp_path / f"img_{i}.png"
        Image.new("RGB", (40, 30), (30 * i, 0, 0)).save(path)
        lines.append(f"{path.name} {i % 2} {'test' if i >= 6 else 'train'}")
    (tmp_path / "labels.txt").write_text("\n".join(lines) + "\n")
    dm = namespace["LeavesDataModule"](root=str(tmp_path), image_size=32, batch_size=2, num_workers=0)
    dm.setup("fit")
    assert dm.num_classes == 2 and dm.class_names == ["0", "1"]
    assert len(dm.data_train) + len(dm.data_val) == 6 and len(dm.data_test) == 2
    image, label = dm.data_test[0]
    assert image.shape == (3, 32, 32) and label == 0


def _doc_commands() -> list[list[str]]:
    section = DOC.read_text().split("## A dataset class of your own", 1)[1]
    block = re.findall(r"```bash\n(.*?)```", section, re.S)[0]
    return [line.split() for line in block.splitlines() if line.strip()]


TINY_RUN = ["model=vit_tiny_scratch", "model.backbone_kwargs={patch_size: 8, embed_dim: 32, depth: 1, num_heads: 2}",
            "dataset.image_size=32", "dataset.num_workers=0", "dataset.batch_size=4", "trainer.accelerator=cpu",
            "trainer.max_epochs=1", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
            "optim.warmup_steps=2", "logger=none", "callbacks.crop_visualizer=null"]  # fmt: skip


@pytest.mark.slow
def test_own_class_commands_train_and_evaluate_as_printed(tmp_path: Path) -> None:
    """The page's train command, run as printed from the folder holding the package; then its eval command through
    the console entry point (the working directory not on the path: ``imports=`` finds the module), with the
    images moved and ``dataset.root=`` overriding a key of the checkpoint's dataset without naming the group."""
    section = DOC.read_text().split("## A dataset class of your own", 1)[1]
    (tmp_path / "mypackage").mkdir()
    (tmp_path / "mypackage" / "__init__.py").write_text("")
    (tmp_path / "mypackage" / "leaves.py").write_text(re.search(r"```python\n(.*?)```", section, re.S).group(1))
    data = tmp_path / "leaves"
    data.mkdir()
    lines = []
    for i in range(24):
        Image.new("RGB", (40, 30), (10 * i, 0, 0)).save(data / f"img_{i}.png")
        lines.append(f"img_{i}.png {i % 2} {'test' if i >= 20 else 'train'}")
    (data / "labels.txt").write_text("\n".join(lines) + "\n")
    train_cmd, eval_cmd = _doc_commands()
    assert train_cmd[:3] == ["python", "-m", "glsim_pl.train"] and eval_cmd[0] == "glsim-eval"
    run = tmp_path / "run"
    args = [a.replace("/data/leaves", str(data)) for a in train_cmd[3:]]
    train_args = [*args, *TINY_RUN, "test=false", f"hydra.run.dir={run}"]
    proc = subprocess.run([sys.executable, "-m", "glsim_pl.train", *train_args], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    moved = tmp_path / "moved"
    data.rename(moved)
    ckpt = run / "checkpoints" / "last.ckpt"
    args = [f"ckpt_path={ckpt}" if a.startswith("ckpt_path=") else a for a in eval_cmd[1:]]
    entry = [sys.executable, "-P", "-c", "from glsim_pl.eval import main; main()"]  # as the console script: no cwd
    proc = subprocess.run([*entry, *args, f"dataset.root={moved}", "dataset.num_workers=0", "eval.cost=false",
                           "logger=none", "trainer.accelerator=cpu", f"hydra.run.dir={tmp_path / 'eval'}"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((tmp_path / "eval" / "eval_metrics.json").read_text())
    assert record["test/acc1"] >= 0
    without = [a for a in args if not a.startswith("imports=")]
    proc = subprocess.run([*entry, *without, f"dataset.root={moved}"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-1].startswith(
        "error: dataset._target_=mypackage.leaves.LeavesDataModule: cannot import it"
    ), proc.stderr[-2000:]


def test_eval_dataset_keys_reach_the_checkpoints_dataset() -> None:
    from glsim_pl.eval import checkpoint_dataset_overrides

    assert checkpoint_dataset_overrides(["ckpt_path=x", "dataset.root=/d", "+dataset.a=1"]) == [
        "ckpt_path=x", "+dataset.root=/d", "+dataset.a=1"]  # fmt: skip
    assert checkpoint_dataset_overrides(["dataset=cub", "dataset.root=/d"]) == ["dataset=cub", "dataset.root=/d"]
    assert checkpoint_dataset_overrides(["dataset=null", "dataset.root=/d"]) == ["dataset=null", "+dataset.root=/d"]


def test_own_dataset_without_a_class_is_one_line(make_cfg, tmp_path: Path) -> None:
    from glsim_pl.config.instantiate import instantiate
    from glsim_pl.errors import UserError

    cfg = make_cfg("dataset=own", f"dataset.root={tmp_path}", tiny=False)
    with pytest.raises(UserError, match=r"^dataset\._target_=\?\?\?: expected the class to build, by import path"):
        instantiate(cfg.dataset)
    cfg = make_cfg("dataset=own", "dataset._target_=nowhere_pkg.Leaves", f"dataset.root={tmp_path}", tiny=False)
    with pytest.raises(UserError, match=r"^dataset\._target_=nowhere_pkg\.Leaves: cannot import it \(.*nowhere_pkg"):
        instantiate(cfg.dataset)


def test_the_page_opens_with_a_command_for_each_source_that_composes(tmp_path: Path) -> None:
    """The first block names folder, CSV, a Hub id, local parquet, shards, convert and download; each train and
    convert command's overrides compose into the dataset config they name (the shell's quoting applied)."""
    import shlex

    from tests.helpers.configs import compose_cfg

    block = re.search(r"```bash\n(.*?)```", DOC.read_text(), re.S).group(1).replace("\\\n", " ")
    commands = [shlex.split(line, comments=True) for line in block.splitlines() if line.strip()]
    targets = {}
    for words in commands:
        if words[:3] == ["python", "-m", "glsim_pl.train"] or words[:2] == ["glsim-data", "convert"]:
            overrides = [w for w in words if "=" in w and not w.startswith("--")]
            dataset = compose_cfg(overrides, tmp_path).dataset
            key = dataset._target_.rsplit(".", 1)[1]
            if key == "HFDataModule":
                key += ":data_files" if dataset.data_files else ":name"
            targets[key] = dataset
    assert set(targets) >= {"ImageFolderDataModule", "CSVDataModule", "HFDataModule:name", "HFDataModule:data_files",
                            "WDSDataModule"}  # fmt: skip
    assert set(targets["HFDataModule:data_files"].data_files) == {"train", "test"}  # a dict, not one string
    assert ["glsim-data", "download", "cub"] in [w[:3] for w in commands]
