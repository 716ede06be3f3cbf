"""Config helpers used by the entry points."""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from glsim_pl.data.transforms import AugConfig
from glsim_pl.models import classifier_keywords
from glsim_pl.utils.compile import uses_cuda

__all__ = ["module_kwargs", "net_kwargs", "resolve_trainer_precision", "transform_augs"]

_TRANSFORM_AUG_KEYS = set(AugConfig.__dataclass_fields__)


def transform_augs(cfg: DictConfig) -> dict[str, Any]:
    """The ``augs`` keys that belong to the image transforms (the rest go to the module)."""
    augs = OmegaConf.to_container(cfg.augs, resolve=True) if cfg.get("augs") else {}
    return {k: v for k, v in augs.items() if k in _TRANSFORM_AUG_KEYS}


def _plain(cfg: DictConfig, key: str) -> dict[str, Any]:
    return OmegaConf.to_container(cfg[key], resolve=True) if cfg.get(key) else {}


def net_kwargs(cfg: DictConfig) -> dict[str, Any]:
    """The classifier's keywords: the ``model`` and ``method`` groups, the dataset's input size and the ``augs``
    stochastic depth, each key kept only if :func:`~glsim_pl.models.build_classifier` takes it."""
    candidates = {**_plain(cfg, "model"), **_plain(cfg, "method")}
    candidates.update(
        img_size=int(cfg.dataset.image_size), drop_path_rate=_plain(cfg, "augs").get("drop_path_rate", 0.0)
    )
    finetune = _plain(cfg, "finetune")
    if finetune.get("regime", "full") != "full":  # full: no key, the hyperparameters of the paper's runs unchanged
        candidates["finetune"] = finetune
    return classifier_keywords(candidates)


def module_kwargs(cfg: DictConfig, class_names: list[str]) -> dict[str, Any]:
    """GLSimLitModule keywords, grouped as the config groups are (plain values only)."""
    model, method, augs = _plain(cfg, "model"), _plain(cfg, "method"), _plain(cfg, "augs")
    return dict(
        num_classes=int(cfg.dataset.num_classes),
        net=net_kwargs(cfg),
        optim=_plain(cfg, "optim"),
        label_smoothing=augs.get("label_smoothing", 0.0),
        gate_loss_weight=method.get("gate_loss_weight", 1.0),
        grad_checkpointing=bool(model.get("grad_checkpointing", False)),
        class_names=list(class_names),
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
