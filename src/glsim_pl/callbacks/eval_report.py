"""Render eval outputs as PNG without matplotlib: confusion matrix, error gallery, labelled image grids (PIL)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from .crop_visualizer import render_crop_panels
from .eval_collector import Mistake

__all__ = ["captioned", "save_confusion_png", "save_error_gallery", "tensor_to_pil", "upscaled"]


def _font(size: int = 12) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def tensor_to_pil(image: Tensor) -> Image.Image:
    """(3, H, W) floats in [0, 1] -> RGB PIL image."""
    array = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array)


def upscaled(image: Image.Image, min_width: int = 360) -> Image.Image:
    """Nearest-neighbour integer upscale so small (32-64 px) inputs stay readable."""
    factor = max(1, -(-min_width // image.width))
    return image if factor == 1 else image.resize((image.width * factor, image.height * factor), Image.NEAREST)


def captioned(image: Image.Image, text: str, height: int = 18) -> Image.Image:
    """A white caption strip above ``image``."""
    out = Image.new("RGB", (image.width, image.height + height), "white")
    out.paste(image, (0, height))
    ImageDraw.Draw(out).text((3, 2), text, fill="black", font=_font(max(8, height - 6)))
    return out


def save_confusion_png(confusion: Tensor, path: Path, class_names: Sequence[str], side: int = 800) -> None:
    """Row-normalised confusion matrix (rows = true class, columns = predicted) as a heat map, white -> blue.

    Class names label the axes when there are at most 40 classes; otherwise the cells stand alone.
    """
    k = confusion.shape[0]
    norm = (confusion.float() / confusion.sum(1, keepdim=True).clamp_min(1)).numpy()  # (K, K), rows sum to 1
    cell = max(1, side // k)
    rgb = np.stack([1 - norm, 1 - norm, np.ones_like(norm)], -1)  # white (0) -> blue (1)
    heat = Image.fromarray((rgb * 255).astype(np.uint8)).resize((k * cell, k * cell), Image.NEAREST)
    margin = 120 if k <= 40 else 10
    canvas = Image.new("RGB", (heat.width + margin + 10, heat.height + margin + 24), "white")
    canvas.paste(heat, (margin, margin))
    draw = ImageDraw.Draw(canvas)
    acc = float(confusion.diagonal().sum() / confusion.sum().clamp_min(1))
    draw.text((margin, 4), f"confusion (rows: true, cols: predicted), top-1 {acc:.4f}", fill="black", font=_font())
    if k <= 40:
        font = _font(max(8, min(12, cell - 2)))
        for i, name in enumerate(class_names):
            draw.text((2, margin + i * cell + cell // 2 - 6), name[:18], fill="black", font=font)
            label = Image.new("RGB", (margin - 4, cell), "white")
            ImageDraw.Draw(label).text((2, max(0, cell // 2 - 6)), name[:18], fill="black", font=font)
            canvas.paste(label.rotate(90, expand=True), (margin + i * cell, 2 + 18))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)


def save_error_gallery(
    mistakes: Sequence[Mistake], path: Path, class_names: Sequence[str], patch_px: int | None
) -> bool:
    """Most confident mistakes, one row each: image with box | heat map | crop, captioned true/pred/confidence.

    Returns False (nothing written) when there are no mistakes.
    """
    rows = []
    for m in mistakes:
        image = m["image"][None]  # (1, 3, H, W)
        h, w = image.shape[-2:]
        if m["box"] is not None and patch_px:
            grid = render_crop_panels(image, m["box"][None], _scores(m), (h // patch_px, w // patch_px))
        else:
            grid = render_crop_panels(image, torch.tensor([[0.0, 0.0, w, h]]), None, (1, 1))
        true, pred = class_names[m["label"]], class_names[m["pred"]]
        panel = upscaled(tensor_to_pil(grid))
        rows.append(captioned(panel, f"true: {true} | predicted: {pred} ({m['confidence']:.2f})"))
    if not rows:
        return False
    width = max(r.width for r in rows)
    sheet = Image.new("RGB", (width, sum(r.height for r in rows)), "white")
    y = 0
    for row in rows:
        sheet.paste(row, (0, y))
        y += row.height
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return True


def _scores(m: Mistake) -> Tensor | None:
    return None if m["scores"] is None else m["scores"][None]
