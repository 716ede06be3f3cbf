"""The optimiser side of training: parameter groups, SGD-Nesterov / AdamW and the paper's per-step warmup + cosine."""

from __future__ import annotations

import math

from glsim_pl.utils.logging import RankedLogger


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


__all__ = ["warmup_cosine", "warn_long_warmup"]
