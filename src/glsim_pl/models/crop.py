"""Crop each image to its box and resize it back: one batched ``grid_sample`` call.

The official code crops with a per-sample loop and ``F.upsample_bilinear`` (= bilinear, align_corners=True).
Output pixel i along an axis samples source coordinate ``a + i * (L - 1) / (S - 1)`` (box start a, box length
L pixels, output side S); ``grid_sample`` with align_corners=True reproduces it for the whole batch at once.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["crop_and_resize", "crop_and_resize_loop"]


def _axis_grid(start: Tensor, length: Tensor, out: int, size: int) -> Tensor:
    """Normalised sampling positions along one axis. start, length (B,) -> (B, out)."""
    steps = torch.arange(out, device=start.device, dtype=start.dtype) / max(out - 1, 1)  # (out,)
    pixel = start[:, None] + steps[None, :] * (length[:, None] - 1)  # (B, out), source pixel coordinate
    return pixel * (2.0 / max(size - 1, 1)) - 1.0


def crop_and_resize(images: Tensor, boxes: Tensor, out_hw: tuple[int, int]) -> Tensor:
    """Crop ``images`` to ``boxes`` and resize each crop to ``out_hw`` (bilinear, align_corners=True).

    Args:
        images: batch of images (any normalisation).
        boxes: pixel ``(x1, y1, x2, y2)`` boxes, end exclusive; they carry no gradient.
        out_hw: output (height, width).

    Shape:
        images (B, C, H, W), boxes (B, 4) -> (B, C, out_h, out_w)
    """
    b, _, h, w = images.shape
    out_h, out_w = out_hw
    boxes = boxes.detach().to(torch.float32)
    gx = _axis_grid(boxes[:, 0], boxes[:, 2] - boxes[:, 0], out_w, w)  # (B, out_w)
    gy = _axis_grid(boxes[:, 1], boxes[:, 3] - boxes[:, 1], out_h, h)  # (B, out_h)
    grid = torch.stack(
        [gx[:, None, :].expand(b, out_h, out_w), gy[:, :, None].expand(b, out_h, out_w)], dim=-1
    )  # (B, out_h, out_w, 2), last dim = (x, y)
    return F.grid_sample(images, grid.to(images.dtype), mode="bilinear", padding_mode="border", align_corners=True)


def crop_and_resize_loop(images: Tensor, boxes: Tensor, out_hw: tuple[int, int]) -> Tensor:
    """Reference: the official per-sample slice + ``interpolate(align_corners=True)``. For tests and benchmarks.

    Shape:
        images (B, C, H, W), boxes (B, 4) integer pixels -> (B, C, out_h, out_w)
    """
    crops = []
    for image, (x1, y1, x2, y2) in zip(images, boxes.long().tolist(), strict=True):
        crop = image[None, :, y1:y2, x1:x2]
        crops.append(F.interpolate(crop, size=out_hw, mode="bilinear", align_corners=True))
    return torch.cat(crops)
