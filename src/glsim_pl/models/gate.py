"""Adaptive GLSim (``method.gate=confidence``): pay for the crop and second pass only where the first pass is unsure.

A linear head on the first pass's global CLS token (after the encoder's final norm) predicts the class from one
encoder pass, as a plain ViT would. Its confidence is the **maximum softmax probability** (MSP):

- MSP is the standard early-exit / selective-classification score (the cascade of Dynamic Vision Transformers,
  NeurIPS 2021, exits on it); it needs no extra parameters and no calibration set.
- It lies in [1/K, 1], so the threshold has clean extremes: tau = 0 exits every image (the first-pass head alone,
  a plain ViT), tau > 1 exits none (always two passes, the paper's GLSim). Margin (p1 - p2) would serve as well;
  entropy would need rescaling by log K to be comparable across datasets.
- Only the ranking of images by confidence matters for the accuracy-vs-cost curve; tau is chosen on validation
  for a target cost (:mod:`glsim_pl.analysis.gate_sweep`), so no absolute calibration is needed.

Pure functions, no module state. The subset step (``nonzero``) reads the mask on the host: the batch size of the
second pass is data-dependent by nature. It only runs at evaluation with ``gate=confidence``; training and
``gate=none`` never call it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from glsim_pl.errors import UserError

__all__ = [
    "GATES",
    "apply_gate_threshold",
    "cascade",
    "check_gate",
    "confidence",
    "merge",
    "split",
]

GATES = ("none", "confidence")


def check_gate(gate: str) -> str:
    """Validate a ``method.gate`` value."""
    if gate not in GATES:
        raise UserError(f"method.gate={gate!r}: expected one of {', '.join(GATES)}")
    return gate


def confidence(logits: Tensor) -> Tensor:
    """First-pass logits (B, K) -> maximum softmax probability (B,) in [1/K, 1], computed in float32."""
    return logits.float().softmax(dim=-1).amax(dim=-1)


def split(conf: Tensor, threshold: float) -> tuple[Tensor, Tensor]:
    """(B,) confidences -> (mask (B,) bool: takes the second pass, indices (M,) long of those images).

    An image exits early when its confidence reaches the threshold (``conf >= threshold``); the rest go on.
    ``nonzero`` synchronises with the host: M decides the second pass's batch size.
    """
    mask = conf < threshold  # (B,)
    return mask, mask.nonzero().squeeze(1)  # (M,)


def merge(first: Tensor, second: Tensor, index: Tensor) -> Tensor:
    """Scatter the second pass's rows (M, ...) into a copy of the first pass's (B, ...) at ``index`` (M,)."""
    return first.index_copy(0, index, second.to(first.dtype))


def cascade(first_logits: Tensor, threshold: float, second: Callable[[Tensor], Tensor]) -> tuple[Tensor, Tensor]:
    """Early exit: keep the confident first-pass predictions, run ``second`` on the rest only.

    Args:
        first_logits: (B, K) first-pass head logits.
        threshold: tau; confidence >= tau exits early.
        second: index (M,) -> logits (M, K) of the full GLSim path for those images only.

    Returns:
        logits (B, K), mask (B,) bool of the images that took the second pass.
    """
    mask, index = split(confidence(first_logits), threshold)
    if index.numel() == 0:  # everyone exited: no second pass at all
        return first_logits, mask
    if index.numel() == first_logits.shape[0]:  # nobody exited: nothing to scatter back
        return second(index).to(first_logits.dtype), mask
    return merge(first_logits, second(index), index), mask


_NO_GATE = "eval.gate_sweep=true needs a checkpoint trained with method.gate=confidence (it has no first-pass head)"


def apply_gate_threshold(net: Any, threshold: float | None, gate: str | None = None, sweep: bool = False) -> None:
    """Entry-point override of the checkpoint's gate: ``threshold`` (None keeps the checkpoint's tau).

    ``gate`` (the config's ``method.gate``, None = unset) must match the checkpoint: the gate head is part of the
    trained model, so it cannot be switched on or off after training (tau > 1 runs every image through both passes).
    ``sweep``: fail now, before any evaluation, when the checkpoint has no gate to sweep.
    """
    own = getattr(net, "gate", "none")
    if sweep and own == "none":
        raise UserError(_NO_GATE)
    if gate is not None and gate != own:
        raise UserError(
            f"method.gate={gate!r}: the checkpoint was trained with gate={own!r}; the gate head is part of the "
            "model (method.gate_threshold > 1 gives the always-two-pass model)"
        )
    if threshold is None:
        return
    if own == "none":
        raise UserError(f"method.gate_threshold={threshold}: the checkpoint has no gate (trained with gate=none)")
    if not float(threshold) >= 0:  # NaN too
        raise UserError(
            f"method.gate_threshold={threshold}: expected a value >= 0 (0: first pass only, > 1: never exit)"
        )
    net.gate_threshold = float(threshold)
