"""Config helpers used by the entry points."""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from glsim_pl.data.transforms import AugConfig
from glsim_pl.utils.compile import uses_cuda

__all__ = ["module_kwargs", "resolve_trainer_precision", "transform_augs"]

_TRANSFORM_AUG_KEYS = set(AugConfig.__dataclass_fields__)


def transform_augs(cfg: DictConfig) -> dict[str, Any]:
    """The ``augs`` keys that belong to the image transforms (the rest go to the module)."""
    augs = OmegaConf.to_container(cfg.augs, resolve=True) if cfg.get("augs") else {}
    return {k: v for k, v in augs.items() if k in _TRANSFORM_AUG_KEYS}


def module_kwargs(cfg: DictConfig, class_names: list[str]) -> dict[str, Any]:
    """GLSimLitModule keywords from the model, method, optim and augs groups (plain values only)."""
    plain = lambda key: OmegaConf.to_container(cfg[key], resolve=True) if cfg.get(key) else {}
    method = plain("method")
    method.pop("gate_target_cost", None)  # an eval-time knob (glsim_pl.analysis.gate_sweep), not a module argument
    augs = plain("augs")
    return dict(
        num_classes=int(cfg.dataset.num_classes),
        img_size=int(cfg.dataset.image_size),
        class_names=list(class_names),
        **plain("model"),
        **method,
        **plain("optim"),
        label_smoothing=augs.get("label_smoothing", 0.0),
        drop_path_rate=augs.get("drop_path_rate", 0.0),
    )


def resolve_trainer_precision(cfg: DictConfig) -> None:
    """``trainer.precision=auto``: mixed precision on CUDA (the paper's AMP), full precision elsewhere.

    bf16-mixed where the GPU supports it (no GradScaler, so no host read of its inf check per step), else 16-mixed.
    """
    if cfg.trainer.get("precision") == "auto":
        cuda = uses_cuda(cfg.trainer.get("accelerator"))
        with open_dict(cfg):
            cfg.trainer.precision = (
                ("bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed") if cuda else "32-true"
            )
