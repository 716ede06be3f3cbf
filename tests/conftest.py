"""Shared fixtures: compose the real Hydra configs, shrunk for CPU tests (no network, tiny models, tmp outputs)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a forgotten pretrained=true fails at once, not after a timeout
torch.set_num_threads(min(2, torch.get_num_threads()))
os.environ["GLSIM_CACHE_DIR"] = tempfile.mkdtemp(prefix="glsim-test-cache-")  # no test writes to ~/.cache

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")
FIXTURES = Path(__file__).resolve().parent / "fixtures"

# the smallest run that still exercises every stage: test_vit-like tiny model, 32 px, few images
TINY = [
    "model=vit_tiny_scratch",
    "model.backbone_kwargs={patch_size: 8, embed_dim: 32, depth: 2, num_heads: 2}",
    "dataset.image_size=32",
    "dataset.num_workers=0",
    "dataset.batch_size=8",
    "trainer.accelerator=cpu",
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "optim.warmup_steps=2",
]
TINY_SYNTHETIC = ["dataset=synthetic", "dataset.train_size=80", "dataset.test_size=20", *TINY]


def compose_cfg(overrides: list[str], output_dir: Path, config_name: str = "train") -> DictConfig:
    """Compose ``conf/<config_name>.yaml`` with overrides; outputs go to ``output_dir`` (set up as Hydra would)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
        cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.job.num = 0
        cfg.hydra.job.id = "test"
    HydraConfig.instance().set_config(cfg)
    GlobalHydra.instance().clear()
    return cfg


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """``make_cfg(*overrides, tiny=True)`` -> a composed config writing to ``tmp_path/run``."""

    def _make(*overrides: str, tiny: bool = True, output_dir: Path | None = None) -> DictConfig:
        base = TINY_SYNTHETIC if tiny else []
        return compose_cfg([*base, *overrides], output_dir or tmp_path / "run")

    return _make


@pytest.fixture(scope="session")
def official_fixture() -> dict:
    """The official-format GLSim checkpoint with the official implementation's outputs."""
    from glsim_pl.bench.parity_fixture import FIXTURE_NAME, read_parity_fixture

    path = FIXTURES / FIXTURE_NAME
    if not path.is_file():
        pytest.fail(f"missing fixture {path} (tests/fixtures/ is part of the repository)")
    return read_parity_fixture(path)
