"""``conf/train.yaml`` composed as Hydra would run it, for the benchmarks that build a run or a model from it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from glsim_pl.config.locate import CONFIG_DIR  # the checkout's conf/ or the copy inside an installed wheel

__all__ = ["TINY", "compose_train"]

# --tiny: a random-init 2-block ViT of width 32 in place of the named model
TINY = ["model=vit_tiny_scratch", "model.backbone_kwargs={patch_size: 8, embed_dim: 32, depth: 2, num_heads: 2}"]


def compose_train(overrides: list[str], output_dir: Path) -> Any:
    """The composed config with its outputs (and Hydra's runtime folder) in ``output_dir``."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.output_dir = cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.job.num, cfg.hydra.job.id = 0, "bench"
    HydraConfig.instance().set_config(cfg)
    return cfg
