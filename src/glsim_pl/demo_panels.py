"""The demo's pictures, in original-image coordinates: the crop box, the selector's score map, the second-pass crop.

The model-input -> original mapping is the model's own (:meth:`glsim_pl.preprocessing.Preprocessing.box_to_original`:
square resize to R x R, centre crop S x S). Pure PIL / numpy / matplotlib, no Gradio.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from matplotlib import colormaps
from PIL import Image, ImageDraw
from scipy.stats import rankdata

from glsim_pl.callbacks.crop_visualizer import to_unit
from glsim_pl.callbacks.eval_report import tensor_to_pil, upscaled
from glsim_pl.models import crop_and_resize
from glsim_pl.preprocessing import Preprocessing

__all__ = ["crop_panel", "draw_box", "heat_overlay", "view_box"]

DISPLAY_PX = 768  # longest side of the pictures in the page; coordinates stay in original pixels


def view_box(orig_wh: tuple[int, int], pre: Preprocessing) -> list[float]:
    """The part of the original the model sees at all (the centre crop), xyxy in original pixels."""
    return pre.box_to_original([0, 0, pre.input_size, pre.input_size], *orig_wh)


def _display(image: Image.Image) -> tuple[Image.Image, float]:
    """A copy at most DISPLAY_PX on its longest side (small images are upscaled for legibility), and its scale."""
    scale = min(1.0, DISPLAY_PX / max(image.size))
    shown = image.convert("RGB")
    if scale < 1.0:
        shown = shown.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.BILINEAR)
    up = upscaled(shown, min_width=384)
    return up, scale * up.width / shown.width


def draw_box(image: Image.Image, box: Sequence[float] | None, view: Sequence[float]) -> Image.Image:
    """The original with the model's view dashed in white and the crop box (original pixels) in red."""
    shown, scale = _display(image)
    pen = ImageDraw.Draw(shown)
    width = max(2, round(max(shown.size) / 160))
    x1, y1, x2, y2 = (v * scale for v in view)
    for i in range(0, round(x2 - x1), 12):  # dashed outline of the centre crop
        pen.line([(x1 + i, y1), (min(x1 + i + 6, x2), y1)], fill="white", width=1)
        pen.line([(x1 + i, y2 - 1), (min(x1 + i + 6, x2), y2 - 1)], fill="white", width=1)
    for i in range(0, round(y2 - y1), 12):
        pen.line([(x1, y1 + i), (x1, min(y1 + i + 6, y2))], fill="white", width=1)
        pen.line([(x2 - 1, y1 + i), (x2 - 1, min(y1 + i + 6, y2))], fill="white", width=1)
    if box is not None:
        pen.rectangle([v * scale for v in box], outline=(255, 0, 0), width=width)
    return shown


def heat_overlay(
    image: Image.Image, scores: torch.Tensor | None, grid_hw: tuple[int, int], view: Sequence[float],
    box: Sequence[float] | None,
) -> Image.Image:  # fmt: skip
    """The selector's order of the patches (scores (N,), larger = chosen first) as a heat map over the model's view.

    Colours follow the rank, not the raw score: the box is built from the top-O ranks, and raw GLS similarities
    often crowd near their maximum, where a linear scale would paint most patches the same colour (ties share their
    mean rank). Over a grey copy of the image; outside the view it is dimmed; the box is outlined in white.
    """
    shown, scale = _display(image)
    base = np.asarray(shown.convert("L").convert("RGB"), dtype=np.float32) / 255  # grey: every colour is the map's
    out = base * 0.35
    x1, y1, x2, y2 = (round(v * scale) for v in view)
    cx1, cy1, cx2, cy2 = max(x1, 0), max(y1, 0), min(x2, shown.width), min(y2, shown.height)
    if scores is not None and cx2 > cx1 and cy2 > cy1:
        grid = rankdata(scores.float().cpu().numpy(), method="average").reshape(grid_hw)
        grid = (grid - grid.min()) / max(float(grid.max() - grid.min()), 1e-6)
        heat = Image.fromarray((grid * 255).astype(np.uint8)).resize((x2 - x1, y2 - y1), Image.NEAREST)
        rgb = colormaps["turbo"](np.asarray(heat, dtype=np.float32) / 255)[..., :3]
        rgb = rgb[cy1 - y1 : cy2 - y1, cx1 - x1 : cx2 - x1]
        out[cy1:cy2, cx1:cx2] = 0.45 * base[cy1:cy2, cx1:cx2] + 0.55 * rgb
    result = Image.fromarray((out.clip(0, 1) * 255).astype(np.uint8))
    if box is not None:
        ImageDraw.Draw(result).rectangle([v * scale for v in box], outline="white", width=2)
    return result


def crop_panel(image: torch.Tensor, box: Sequence[float], mean: Sequence[float], std: Sequence[float]) -> Image.Image:
    """What the second pass sees: the normalised model input (3, S, S) cropped to ``box`` (input pixels), resized
    back to S x S, un-normalised."""
    unit = to_unit(image[None].float().cpu(), mean, std)
    crop = crop_and_resize(unit, torch.tensor([list(box)], dtype=torch.float32), unit.shape[-2:])[0]
    return upscaled(tensor_to_pil(crop), min_width=384)
