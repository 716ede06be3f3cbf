"""Configs the tests compose: the real Hydra configs shrunk to tiny models and few images, outputs in tmp folders."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")


FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


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


__all__ = ["CONF_DIR", "FIXTURES", "TINY", "TINY_DATA", "TINY_KW", "TINY_SYNTHETIC", "compose_cfg", "compose_tool"]


TINY_KW = {"backbone": "vit_tiny_patch16_224", "img_size": 32, "top_o": 2, "pretrained": False,
           "backbone_kwargs": {"patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}}  # fmt: skip


TINY_DATA = ["dataset=synthetic", "dataset.train_size=40", "dataset.test_size=16", "dataset.image_size=32",
             "dataset.num_workers=0", "dataset.batch_size=8", "trainer.accelerator=cpu",
             "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]  # fmt: skip


def compose_tool(name: str, overrides: list[str], output_dir: Path) -> DictConfig:
    """Compose ``conf/<name>.yaml`` as Hydra would run it, outputs in ``output_dir``."""
    return compose_cfg(overrides, output_dir, config_name=name)
