"""Test-time augmentation (``glsim-eval tta=``): ``none`` or ``hflip``, the logits averaged with those of the
horizontally flipped image. Boxes and scores stay those of the image as given (the crop shown is the one it took);
training ignores the setting."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from glsim_pl.errors import UserError

__all__ = ["TTA_MODES", "check_tta", "with_tta"]

TTA_MODES = ("none", "hflip")


def check_tta(mode: Any, key: str = "tta") -> str:
    """``mode`` if it is one of :data:`TTA_MODES`, else a UserError naming the choices."""
    if mode not in TTA_MODES:
        raise UserError(f"{key}={mode!r}: expected one of {', '.join(TTA_MODES)}")
    return mode


def with_tta(forward: Callable[[Tensor], Any], images: Tensor, mode: str) -> Any:
    """``forward(images)`` (a GLSimOutput), its logits (and first-pass logits) averaged over the ``mode`` views."""
    out = forward(images)
    if mode == "none":
        return out
    flipped = forward(images.flip(-1))  # (B, 3, H, W), width reversed
    first = out.first_logits
    if first is not None and flipped.first_logits is not None:
        first = (first + flipped.first_logits) / 2
    return out._replace(logits=(out.logits + flipped.logits) / 2, first_logits=first)
