"""Panels of images: the crop grids of training and prediction, the selector's score map, the demo's pictures.

Tensors and plain numbers in, PIL images out; the demo's pictures are in original-image coordinates (the caller
maps model-input boxes with the model's own preprocessing). Pure torch / PIL / numpy / matplotlib, no Gradio.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import colormaps
from PIL import Image, ImageDraw, ImageFont
from scipy.stats import rankdata
from torch import Tensor
from torchvision.transforms.functional import pil_to_tensor, to_pil_image
from torchvision.utils import draw_bounding_boxes, make_grid

from glsim_pl.models import crop_and_resize

__all__ = [
    "MIN_ROW_PX",
    "captioned",
    "captioned_crop_grid",
    "crop_panel",
    "draw_box",
    "heat_overlay",
    "render_crop_panels",
    "selector_panel",
    "tensor_to_pil",
    "to_unit",
    "upscaled",
]

DISPLAY_PX = 768  # longest side of the pictures in the page; coordinates stay in original pixels


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


MIN_ROW_PX = 128  # small images are enlarged (nearest) so the caption fits and the panels can be read


def to_unit(images: Tensor, mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> Tensor:
    """Undo the normalisation (or, without mean/std, min-max each image) into [0, 1]. (B, C, H, W) -> same."""
    if mean is not None and std is not None:
        mean_t, std_t = torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)
        return (images * std_t + mean_t).clamp(0, 1)
    lo = images.amin(dim=(1, 2, 3), keepdim=True)
    hi = images.amax(dim=(1, 2, 3), keepdim=True)
    return (images - lo) / (hi - lo).clamp_min(1e-6)


def selector_panel(image: Tensor, scores: Tensor | None, box: Tensor | None, grid_hw: tuple[int, int],
                   color: str = "red") -> Tensor:  # fmt: skip
    """Image blended 50/50 with a blue->red score map, box drawn.

    Shape:
        image (3, H, W) in [0, 1], scores (N,), box (4,) -> (3, H, W)
    """
    h, w = image.shape[-2:]
    out = image
    if scores is not None:
        heat = F.interpolate(scores.float().reshape(1, 1, *grid_hw), size=(h, w), mode="nearest")[0]  # (1, H, W)
        heat = (heat - heat.min()) / (heat.max() - heat.min()).clamp_min(1e-6)
        out = 0.5 * image + 0.5 * torch.cat([heat, torch.zeros_like(heat), 1 - heat])
    if box is not None:
        out = draw_bounding_boxes((out * 255).to(torch.uint8), box[None].float(), colors=color, width=2).float() / 255
    return out


def render_crop_panels(
    images: Tensor,
    boxes: Tensor,
    scores: Tensor | None,
    grid_hw: tuple[int, int],
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> Tensor:
    """Three panels per image, one image per row. images (B, 3, H, W), boxes (B, 4), scores (B, N) -> (3, H', W').

    ``mean``/``std`` undo the input normalisation; without them each image is min-max scaled.
    """
    b, _, h, w = images.shape
    unit = to_unit(images.float().cpu(), mean, std)
    boxes = boxes.float().cpu()
    panels = []
    for i in range(b):
        heat = scores[i].cpu() if scores is not None else None
        crop = crop_and_resize(unit[i : i + 1], boxes[i : i + 1], (h, w))[0]
        panels += [selector_panel(unit[i], None, boxes[i], grid_hw), selector_panel(unit[i], heat, None, grid_hw), crop]
    return make_grid(torch.stack(panels), nrow=3, padding=2)


def captioned_crop_grid(
    images: Tensor, boxes: Tensor, scores: Tensor | None, grid_hw: tuple[int, int], captions: Sequence[str],
    correct: Sequence[bool], mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
) -> Tensor:  # fmt: skip
    """:func:`render_crop_panels` one row per image, each row under a caption strip (green if ``correct``, red if
    not). images (B, 3, H, W) -> (3, H', W') in [0, 1]."""
    rows = []
    for i in range(len(images)):
        row_scores = scores[i : i + 1] if scores is not None else None
        row = to_pil_image(render_crop_panels(images[i : i + 1], boxes[i : i + 1], row_scores, grid_hw, mean, std))
        if row.height < MIN_ROW_PX:
            factor = -(-MIN_ROW_PX // row.height)
            row = row.resize((row.width * factor, row.height * factor), Image.NEAREST)
        font = ImageFont.load_default(size=max(10, row.height // 12))
        strip = int(font.size * 1.5) if hasattr(font, "size") else 14
        canvas = Image.new("RGB", (row.width, row.height + strip), "white")
        canvas.paste(row, (0, strip))
        colour = (0, 120, 0) if correct[i] else (200, 0, 0)
        ImageDraw.Draw(canvas).text((4, strip // 6), captions[i], fill=colour, font=font)
        rows.append(pil_to_tensor(canvas).float() / 255)
    width = max(r.shape[-1] for r in rows)
    return torch.cat([F.pad(r, (0, width - r.shape[-1]), value=1.0) for r in rows], dim=1)


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
