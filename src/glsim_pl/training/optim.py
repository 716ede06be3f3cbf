"""The optimiser side of training: parameter groups, SGD-Nesterov / AdamW and the paper's per-step warmup + cosine."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from glsim_pl.utils.logging import RankedLogger

__all__ = [
    "OPTIM_DEFAULTS",
    "build_optimizer",
    "layer_decay_groups",
    "layer_id",
    "param_groups",
    "schedule_factor",
    "warmup_cosine",
    "warn_long_warmup",
]

# the paper's recipe; ``optim`` (the config group, stored as the module's ``hparams.optim``) overrides any of it
OPTIM_DEFAULTS: dict[str, Any] = {
    "optimizer": "sgd",  # sgd (Nesterov) | adamw
    "lr": 0.01,
    "momentum": 0.9,
    "weight_decay": 0.0,
    "warmup_steps": 500,
    "warmup_lr": 1e-6,
    "min_lr": 1e-5,
}


def warn_long_warmup(warmup_steps: int, total_steps: int) -> bool:
    """Warn when the warmup takes half the run or more (the paper's 500 steps on a small set); True if it did."""
    if total_steps <= 0 or warmup_steps < 0.5 * total_steps:
        return False
    RankedLogger(__name__).warning(
        f"optim.warmup_steps={warmup_steps} is at least half of this run's {total_steps} optimizer steps: the "
        "learning rate stays below its peak for most of the run (or never reaches it); lower optim.warmup_steps"
    )  # fmt: skip
    return True


def warmup_cosine(step: int, total: int, lr: float, warmup_steps: int, warmup_lr: float, min_lr: float) -> float:
    """Per-step LR of the paper: linear warmup from ``warmup_lr``, then cosine to ``min_lr`` on the raw step count.

    As timm's ``CosineLRScheduler(warmup_prefix=False)``: the cosine is not shifted by the warmup.
    """
    if step < warmup_steps:
        return warmup_lr + (lr - warmup_lr) * step / warmup_steps
    progress = min(step / max(total, 1), 1.0)
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * progress))


def decay_exempt(net: nn.Module) -> Callable[[str, nn.Parameter], bool]:
    """Whether a named parameter of ``net`` skips weight decay: biases, norms and timm's ``no_weight_decay`` names."""
    skip = net.no_weight_decay() if hasattr(net, "no_weight_decay") else set()
    return lambda name, param: param.ndim <= 1 or name in skip


def param_groups(net: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """[decayed, not decayed] trainable parameters; biases, norms and timm's ``no_weight_decay`` names not decayed.

    The order is part of the checkpoint format: optimizer states are stored per group index.
    """
    exempt = decay_exempt(net)
    decay, no_decay = [], []
    for name, param in net.named_parameters():
        if param.requires_grad:
            (no_decay if exempt(name, param) else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def layer_id(name: str, depth: int) -> int:
    """Depth of a parameter for layer-wise LR decay: 0 the encoder's embeddings (patch, position, CLS, registers),
    i + 1 the encoder's block i (its adapters and prompts too), depth + 1 everything after the blocks (final norm,
    pool, aggregator, heads)."""
    if not name.startswith("encoder."):
        return depth + 1
    rest = name[len("encoder.") :]
    if rest.startswith("blocks."):
        return int(rest.split(".")[1]) + 1
    if rest.startswith(("cls_token", "reg_token", "pos_embed", "patch_embed", "mask_token")):
        return 0
    return depth + 1


def layer_decay_groups(net: nn.Module, weight_decay: float, lr: float, decay: float) -> list[dict[str, Any]]:
    """:func:`param_groups` split by :func:`layer_id`, each with ``lr * decay ** (depth + 1 - id)``; the head's group
    (the peak LR, the one the progress lines show) first."""
    depth = len(net.encoder.blocks)
    by_layer: dict[int, list[dict[str, Any]]] = {}
    exempt = decay_exempt(net)
    for name, param in net.named_parameters():
        if not param.requires_grad:
            continue
        layer = layer_id(name, depth)
        groups = by_layer.setdefault(layer, [
            {"params": [], "weight_decay": weight_decay, "lr": lr * decay ** (depth + 1 - layer)},
            {"params": [], "weight_decay": 0.0, "lr": lr * decay ** (depth + 1 - layer)},
        ])  # fmt: skip
        groups[1 if exempt(name, param) else 0]["params"].append(param)
    return [g for layer in sorted(by_layer, reverse=True) for g in by_layer[layer] if g["params"]]


def build_optimizer(net: nn.Module, optim: dict[str, Any], kernel: dict[str, bool]) -> torch.optim.Optimizer:
    """SGD-Nesterov (the paper) or AdamW over :func:`param_groups` (or :func:`layer_decay_groups` with
    ``optim.layer_decay``); ``kernel``: e.g. ``{"fused": True}``."""
    hp = {**OPTIM_DEFAULTS, **optim}
    decay = hp.get("layer_decay")
    if decay is None or decay == 1.0:  # the paper: two groups, one LR
        groups = param_groups(net, hp["weight_decay"])
    else:
        groups = layer_decay_groups(net, hp["weight_decay"], hp["lr"], float(decay))
    if hp["optimizer"] == "sgd":
        return torch.optim.SGD(groups, lr=hp["lr"], momentum=hp["momentum"], nesterov=hp["momentum"] > 0, **kernel)
    if hp["optimizer"] == "adamw":
        return torch.optim.AdamW(groups, lr=hp["lr"], **kernel)
    raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {hp['optimizer']!r}")


def schedule_factor(optim: dict[str, Any], total_steps: Callable[[], int]) -> Callable[[int], float]:
    """The per-step LR factor for ``LambdaLR``: :func:`warmup_cosine` / peak LR.

    ``total_steps`` is called at the first step after step 0 (reading the run length earlier would build the train
    loader before Lightning restores its mid-epoch position from a checkpoint, and the position would be lost).
    """
    hp = {**OPTIM_DEFAULTS, **optim}
    lr, warmup, warmup_lr, min_lr = hp["lr"], hp["warmup_steps"], hp["warmup_lr"], hp["min_lr"]
    total: list[int] = []

    def factor(step: int) -> float:
        if step == 0:  # the schedule at step 0 does not depend on the total
            return warmup_cosine(0, 1, lr, warmup, warmup_lr, min_lr) / lr
        if not total:
            total.append(int(total_steps()))
            warn_long_warmup(warmup, total[0])
        return warmup_cosine(step, total[0], lr, warmup, warmup_lr, min_lr) / lr

    return factor
