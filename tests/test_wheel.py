"""The wheel: built from the sources, installed into a fresh venv without the source tree, its console scripts run
from an empty folder with the configs packaged inside (train one batch, eval its checkpoint, predict a folder)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SOURCES = ["src", "conf", "pyproject.toml", "setup.py", "MANIFEST.in", "README.md"]
CLEAN_ENV = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}  # no source tree


def build_wheel(tmp_path: Path) -> Path:
    """Build from a copy of the sources (the checkout gets no build/ or egg-info)."""
    src = tmp_path / "sources"
    for name in SOURCES:
        copy = shutil.copytree if (REPO / name).is_dir() else shutil.copy2
        copy(REPO / name, src / name, **({"ignore": shutil.ignore_patterns("__pycache__")} if copy is shutil.copytree
                                         else {}))  # fmt: skip
    dist = tmp_path / "dist"
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(src)]
    subprocess.run(cmd, check=True, capture_output=True, text=True, env=CLEAN_ENV)
    (wheel,) = dist.glob("glsim_pl-*.whl")
    return wheel


def fresh_venv(tmp_path: Path, wheel: Path) -> Path:
    """A venv holding only the wheel; the dependencies are the project venv's, reached through a plain path entry
    (its .pth files, the editable install's included, are not run, so the source tree stays out of sys.path)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    cmd = [sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "-q", str(wheel)]
    subprocess.run(cmd, check=True, capture_output=True, text=True, env=CLEAN_ENV)
    site = next((venv / "lib").glob("python3*/site-packages"))  # after the install: pip would see glsim_pl there
    (site / "project_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv


@pytest.mark.slow  # wheel build + three entry points in fresh interpreters: ~1-2 min on 2 cores
def test_wheel_console_scripts_run_outside_the_checkout(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    assert "glsim_pl/conf/train.yaml" in names and "glsim_pl/conf/dataset/synthetic.yaml" in names
    assert not any(n.startswith("glsim_pl/conf/local/") and n.endswith(".yaml") for n in names)
    venv = fresh_venv(tmp_path, wheel)
    bin_dir = venv / "bin"
    work = tmp_path / "empty"
    work.mkdir()
    env = {**CLEAN_ENV, "HF_HUB_OFFLINE": "1", "PATH": f"{bin_dir}:{CLEAN_ENV.get('PATH', '')}"}

    def run(*args: str) -> subprocess.CompletedProcess:
        done = subprocess.run(list(args), cwd=work, env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, f"{args[0]}: {done.stderr[-3000:]}"
        return done

    where = run(str(bin_dir / "python"), "-c", "import glsim_pl.config.locate as c, glsim_pl; print(c.CONFIG_DIR); "
                "print(glsim_pl.__file__)").stdout.split()  # fmt: skip
    assert where[0].startswith(str(venv)) and where[0].endswith("glsim_pl/conf") and where[1].startswith(str(venv))
    run(str(bin_dir / "glsim-train"), "dataset.train_size=40", "dataset.test_size=16", "dataset.num_workers=0",
        "dataset.batch_size=8",
        "trainer.max_epochs=1", "+trainer.limit_train_batches=1", "+trainer.limit_val_batches=1",
        "+trainer.limit_test_batches=1", "logger=none")  # fmt: skip
    (ckpt,) = [p for p in work.glob("outputs/*/*/checkpoints/*.ckpt") if p.name != "last.ckpt"]
    record = torch.load(ckpt, map_location="cpu", weights_only=True)["preprocessing"]
    assert (record["input_size"], record["resize_size"]) == (64, 85)  # the embedded default: 64 px, 1.34

    run(str(bin_dir / "glsim-eval"), f"ckpt_path={ckpt}", "eval.cost=false", "logger=none")
    (metrics,) = (ckpt.parents[1] / "eval" / ckpt.stem).glob("*/eval_metrics.json")
    assert 0.0 <= json.loads(metrics.read_text())["test/acc1"] <= 1.0

    photos = work / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (60, 90, 3), dtype=np.uint8)).save(photos / f"p{i}.png")
    run(str(bin_dir / "glsim-predict"), f"ckpt_path={ckpt}", "input=photos", "output=preds")
    rows = list(csv.DictReader((work / "preds" / "predictions.csv").open()))
    assert len(rows) == 2 and all(not r["error"] and float(r["x2"]) <= 90 and int(r["input_x2"]) <= 64 for r in rows)
