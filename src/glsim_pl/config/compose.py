"""``conf/train.yaml`` composed with overrides outside a Hydra run, as ``glsim-train <overrides>`` would compose it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from glsim_pl.config.locate import CONFIG_DIR  # the checkout's conf/ or the copy inside an installed wheel
from glsim_pl.errors import UserError

__all__ = ["compose_train"]


def compose_train(overrides: list[str], output_dir: Path | None = None, what: str = "bad overrides") -> Any:
    """The composed config, registered as the current Hydra config (so ``${hydra:...}`` paths resolve as in a run).

    ``output_dir``: the run's outputs (and Hydra's runtime folder) go there. Overrides Hydra cannot compose give one
    UserError line: ``"<what> <overrides> (<Hydra's first line>)"``.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.errors import HydraException
    from omegaconf import open_dict
    from omegaconf.errors import OmegaConfBaseException

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
            cfg = compose("train", overrides=overrides, return_hydra_config=True)
    except (HydraException, OmegaConfBaseException) as exc:
        raise UserError(f"{what} {' '.join(overrides)} ({str(exc).splitlines()[0]})") from None
    finally:
        GlobalHydra.instance().clear()
    if output_dir is not None:
        with open_dict(cfg):
            cfg.paths.output_dir = cfg.hydra.runtime.output_dir = str(output_dir)
            cfg.hydra.job.num, cfg.hydra.job.id = 0, "compose"
    HydraConfig.instance().set_config(cfg)
    return cfg
