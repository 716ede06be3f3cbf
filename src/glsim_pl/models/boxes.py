"""Global-Local Similarity (GLS): rank patch tokens by their similarity to the CLS token, box the top-O.

Pure functions, no state. Shapes: B = batch, N = number of patch tokens (g_h * g_w), D = width.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

__all__ = ["BoxRule", "select_boxes"]

BoxRule = Literal["official", "inclusive"]


def select_boxes(
    scores: Tensor,
    grid_hw: tuple[int, int],
    patch_px: int,
    top_o: int,
    rule: BoxRule = "official",
    largest: bool = True,
) -> Tensor:
    """Smallest patch-grid box around the top-O patches, in pixels.

    Ties are broken towards the lower (row-major) patch index, so the result is deterministic.

    Args:
        scores: per-patch scores, row-major over the grid (token = row * g_w + col).
        grid_hw: patch grid (g_h, g_w).
        patch_px: patch side in pixels; the image is g_h * patch_px by g_w * patch_px.
        top_o: number of patches selected.
        rule: ``official`` ends the box at the top-left corner of the last selected patch row/column
            (at least one patch per side; quirk Q2 of the official code, needed to reproduce its numbers);
            ``inclusive`` ends it after the last selected patch.
        largest: select the largest scores (cosine) or the smallest (l1/l2 distances).

    Returns:
        Boxes as pixel ``(x1, y1, x2, y2)``, x horizontal, end exclusive (torchvision convention), float.

    Shape:
        scores (B, N) -> (B, 4)
    """
    g_h, g_w = grid_hw
    if scores.shape[-1] != g_h * g_w:
        raise ValueError(f"scores have {scores.shape[-1]} patches, grid {grid_hw} has {g_h * g_w}")
    if not 1 <= top_o <= g_h * g_w:
        raise ValueError(f"top_o must be in [1, {g_h * g_w}], got {top_o}")
    if rule not in ("official", "inclusive"):
        raise ValueError(f"box_rule must be 'official' or 'inclusive', got {rule!r}")
    order = torch.sort(scores.detach(), dim=-1, descending=largest, stable=True).indices
    idx = order[:, :top_o]  # (B, O)
    rows, cols = idx // g_w, idx % g_w  # (B, O) each
    r0, r1 = rows.amin(-1), rows.amax(-1)  # (B,)
    c0, c1 = cols.amin(-1), cols.amax(-1)
    if rule == "official":
        y2 = torch.clamp(torch.maximum(r1 * patch_px, (r0 + 1) * patch_px), max=g_h * patch_px)
        x2 = torch.clamp(torch.maximum(c1 * patch_px, (c0 + 1) * patch_px), max=g_w * patch_px)
    else:
        y2, x2 = (r1 + 1) * patch_px, (c1 + 1) * patch_px
    return torch.stack([c0 * patch_px, r0 * patch_px, x2, y2], dim=-1).to(scores.dtype)  # (B, 4)
