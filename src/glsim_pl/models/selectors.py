"""The selector zoo: every selector scores the patch tokens (B, N); one box rule and one batched crop follow.

Pure functions. Shapes: B batch, H heads, T = P + N tokens (P prefix tokens: CLS first, then registers),
N patch tokens row-major over the grid (g_h, g_w), D width, L recorded layers. Attention maps are softmax
probabilities (B, H, T, T), row = query, column = key. Larger score = more discriminative for every selector
here except the l1/l2 GLS distances (see :func:`glsim_pl.models.selector.metric_prefers_largest`).

- ``gls``: GLSim's global-local similarity (CLS vs patch tokens), :func:`gls_scores`.
- ``rollout``: attention rollout (Abnar & Zuidema 2020): heads averaged, identity added, rows renormalised,
  product over all layers, CLS row.
- ``attn_last``: last-layer CLS attention, heads averaged.
- ``psm``: TransFG part selection: per head, product of the attention maps (no residual) of every layer but the
  last, argmax of the CLS row; score = number of heads that chose the patch (+ < 0.5 tie-break by the
  head-averaged product row, so chosen patches always rank first).
- ``maws``: FFVT mutual attention weight a_{0,i} * a_{i,0} (CLS -> patch times patch -> CLS), averaged over heads
  and layers.
- ``random``, ``center``: ablation baselines (uniform random scores; minus the distance to the grid centre).
- ``full``: constant scores; the box is the whole image (every patch, inclusive rule).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from ..errors import UserError

__all__ = [
    "ATTENTION_SELECTORS",
    "SELECTORS",
    "Selector",
    "attn_last_scores",
    "capture_plan",
    "center_scores",
    "check_selector",
    "head_mean",
    "maws_scores",
    "psm_scores",
    "random_scores",
    "rollout_scores",
    "zoo_scores",
]

Selector = Literal["gls", "rollout", "attn_last", "psm", "maws", "random", "center", "full"]
SELECTORS: tuple[str, ...] = ("gls", "rollout", "attn_last", "psm", "maws", "random", "center", "full")
ATTENTION_SELECTORS: tuple[str, ...] = ("rollout", "attn_last", "psm", "maws")


def check_selector(selector: str) -> str:
    """Return ``selector`` if known, else raise a UserError naming the choices."""
    if selector not in SELECTORS:
        raise UserError(f"method.selector={selector!r}: expected one of {', '.join(SELECTORS)}")
    return selector


def head_mean(attn: Tensor) -> Tensor:
    """Average over heads, keeping the axis. (B, H, T, T) -> (B, 1, T, T)."""
    return attn.mean(1, keepdim=True)


def capture_plan(selector: str, depth: int) -> tuple[list[int] | None, bool]:
    """Which encoder layers an attention selector records and whether a head mean is enough.

    Returns:
        (layer indices or None when no attention is needed, keep only the head mean).
    """
    if selector == "rollout":
        return list(range(depth)), True
    if selector == "attn_last":
        return [depth - 1], True
    if selector == "psm":
        return list(range(max(depth - 1, 1))), False
    if selector == "maws":
        return list(range(depth)), False
    return None, False


def rollout_scores(attns: Sequence[Tensor], num_prefix: int = 1) -> Tensor:
    """Attention rollout, CLS row over the patches. L x (B, H, T, T) (H may be 1) -> (B, N)."""
    joint = None
    for attn in attns:
        a = attn.float().mean(1)  # (B, T, T)
        a = a + torch.eye(a.shape[-1], device=a.device, dtype=a.dtype)
        a = a / a.sum(-1, keepdim=True)  # rows sum to 1
        joint = a if joint is None else a @ joint  # (B, T, T), layer l composed after layers < l
    return joint[:, 0, num_prefix:]


def attn_last_scores(attn: Tensor, num_prefix: int = 1) -> Tensor:
    """Head-averaged CLS attention of one (the last) layer. (B, H, T, T) -> (B, N)."""
    return attn.float().mean(1)[:, 0, num_prefix:]


def psm_scores(attns: Sequence[Tensor], num_prefix: int = 1) -> Tensor:
    """TransFG part selection as scores. L x (B, H, T, T) (the layers before the last) -> (B, N)."""
    joint = attns[0].float()
    for attn in attns[1:]:
        joint = attn.float() @ joint  # (B, H, T, T), per head, no residual
    cls = joint[:, :, 0, num_prefix:]  # (B, H, N)
    chosen = cls.argmax(-1)  # (B, H): one patch per head
    votes = torch.zeros_like(cls[:, 0]).scatter_add_(1, chosen, torch.ones_like(chosen, dtype=cls.dtype))  # (B, N)
    order = cls.mean(1)  # (B, N)
    order = (order - order.amin(-1, keepdim=True)) / (order.amax(-1, keepdim=True) - order.amin(-1, keepdim=True))
    return votes + 0.49 * order.nan_to_num(0.0)


def maws_scores(attns: Sequence[Tensor], num_prefix: int = 1) -> Tensor:
    """FFVT mutual attention weight, averaged over heads and layers. L x (B, H, T, T) -> (B, N)."""
    total = None
    for attn in attns:
        a = attn.float()
        mutual = (a[:, :, 0, num_prefix:] * a[:, :, num_prefix:, 0]).mean(1)  # (B, N)
        total = mutual if total is None else total + mutual
    return total / len(attns)


def random_scores(
    batch: int, num_patches: int, device: torch.device, generator: torch.Generator | None = None
) -> Tensor:
    """Uniform random scores (ablation). -> (B, N)."""
    return torch.rand(batch, num_patches, device=device, generator=generator)


def center_scores(batch: int, grid_hw: tuple[int, int], device: torch.device) -> Tensor:
    """Minus the squared distance of each patch centre to the grid centre (ablation). -> (B, N)."""
    g_h, g_w = grid_hw
    rows = torch.arange(g_h, device=device, dtype=torch.float32) - (g_h - 1) / 2  # (g_h,)
    cols = torch.arange(g_w, device=device, dtype=torch.float32) - (g_w - 1) / 2  # (g_w,)
    dist = rows[:, None] ** 2 + cols[None, :] ** 2  # (g_h, g_w)
    return (-dist).flatten().expand(batch, -1)  # (B, N)


def zoo_scores(
    selector: str, maps: Sequence[Tensor], batch: int, grid_hw: tuple[int, int], num_prefix: int, device: torch.device
) -> Tensor:
    """Scores of any selector but ``gls`` (which needs the tokens). maps: what :func:`capture_plan` recorded.

    Shape:
        maps L x (B, H, T, T) -> (B, N)
    """
    n = grid_hw[0] * grid_hw[1]
    if selector == "rollout":
        return rollout_scores(maps, num_prefix)
    if selector == "attn_last":
        return attn_last_scores(maps[-1], num_prefix)
    if selector == "psm":
        return psm_scores(maps, num_prefix)
    if selector == "maws":
        return maws_scores(maps, num_prefix)
    if selector == "random":
        return random_scores(batch, n, device)
    if selector == "center":
        return center_scores(batch, grid_hw, device)
    if selector == "full":
        return torch.ones(batch, n, device=device)
    raise UserError(f"method.selector={selector!r}: expected one of {', '.join(SELECTORS[1:])} here")
