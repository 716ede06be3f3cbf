"""Adaptive GLSim (``method.gate=confidence``): pay for the crop and second pass only where the first pass is unsure.

A linear head on the first pass's global CLS token (after the encoder's final norm) predicts the class from one
encoder pass, as a plain ViT would. Its confidence is the **maximum softmax probability** (MSP):

- MSP is the standard early-exit / selective-classification score (the cascade of Dynamic Vision Transformers,
  NeurIPS 2021, exits on it); it needs no extra parameters and no calibration set.
- It lies in [1/K, 1], so the threshold has clean extremes: tau = 0 exits every image (the first-pass head alone,
  a plain ViT), tau > 1 exits none (always two passes, the paper's GLSim). Margin (p1 - p2) would serve as well;
  entropy would need rescaling by log K to be comparable across datasets.
- Only the ranking of images by confidence matters for the accuracy-vs-cost curve; tau is chosen on validation
  for a target cost (:mod:`glsim_pl.gate_sweep`), so no absolute calibration is needed.

Pure functions, no module state. The subset step (``nonzero``) reads the mask on the host: the batch size of the
second pass is data-dependent by nature. It only runs at evaluation with ``gate=confidence``; training and
``gate=none`` never call it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from glsim_pl.errors import UserError

__all__ = [
    "GATES",
    "cascade",
    "check_gate",
    "compile_stages",
    "confidence",
    "merge",
    "second_pass_share",
    "split",
    "uncompile",
    "vit_pass",
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


def second_pass_share(mask: Tensor | None) -> Tensor | None:
    """(B,) bool -> share of images that took the second pass (0-dim float), None without a gate."""
    return None if mask is None else mask.float().mean()


def vit_pass(net: Any, images: Tensor) -> Tensor:
    """The unit of cost: one plain ViT pass, encoder + first-pass head. images (B, 3, H, W) -> logits (B, K)."""
    compiled = net.__dict__.get("compiled_vit_pass")
    if compiled is not None:
        return compiled(images)
    return net.gate_head(net.encoder.forward_features(images)[:, 0])


def compile_stages(net: Any, backend: str = "inductor") -> None:
    """Compile a gated GLSim's stages: the first pass static (same batch size every call), the second pass
    ``dynamic=True`` (its batch is the number of unsure images, different at every batch and tau: one graph for all
    sizes instead of a recompile per size). The confidence split, gather and scatter between them stay eager: the
    ``nonzero`` there is a graph break by nature. Instance attributes shadow the methods; :func:`uncompile` undoes it.
    The reference :func:`vit_pass` is compiled alike, so measured cost ratios compare compiled with compiled.
    """
    net.first_pass = torch.compile(net.first_pass, dynamic=False, backend=backend)
    net.second_pass = torch.compile(net.second_pass, dynamic=True, backend=backend)
    reference = lambda x: net.gate_head(net.encoder.forward_features(x)[:, 0])
    net.compiled_vit_pass = torch.compile(reference, dynamic=False, backend=backend)


def uncompile(net: Any) -> None:
    """Back to the eager methods after :func:`compile_stages`."""
    for name in ("first_pass", "second_pass", "compiled_vit_pass"):
        net.__dict__.pop(name, None)
