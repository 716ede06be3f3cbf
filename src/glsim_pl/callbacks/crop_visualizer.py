"""Every N validation epochs: a grid of [image with crop box | GLS heatmap | crop] for a few validation images.

Saved as PNG under ``<dirpath>/epoch_XXX.png`` and sent to every active tracker as the ``val/crops`` image
(TensorBoard, W&B, MLflow; see :func:`glsim_pl.utils.logging.log_image`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.utils import draw_bounding_boxes, make_grid, save_image

from ..models import crop_and_resize
from ..utils.logging import log_image

__all__ = ["CropVisualizer", "render_crop_panels", "selector_panel", "to_unit"]


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


class CropVisualizer(L.Callback):
    """Log crop panels of the first validation batch.

    Args:
        dirpath: folder for the PNG files.
        every_n_epochs: render on validation epochs divisible by this.
        num_images: images per grid (at most 8 recommended).
    """

    def __init__(self, dirpath: str, every_n_epochs: int = 1, num_images: int = 8) -> None:
        self.dirpath = Path(dirpath)
        self.every_n_epochs, self.num_images = every_n_epochs, num_images

    def on_validation_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:  # fmt: skip
        """Render from batch 0 on rank 0, outside the sanity check."""
        if batch_idx != 0 or trainer.sanity_checking or not trainer.is_global_zero:
            return
        if trainer.current_epoch % self.every_n_epochs or not isinstance(outputs, dict) or outputs.get("boxes") is None:
            return
        images = batch[0][: self.num_images]
        patch = pl_module.net.patch_px
        grid_hw = (images.shape[-2] // patch, images.shape[-1] // patch)
        scores = outputs["scores"][: self.num_images] if outputs.get("scores") is not None else None
        dm = trainer.datamodule
        mean, std = getattr(dm, "mean", None), getattr(dm, "std", None)
        grid = render_crop_panels(images, outputs["boxes"][: self.num_images], scores, grid_hw, mean, std)
        self.dirpath.mkdir(parents=True, exist_ok=True)
        save_image(grid, self.dirpath / f"epoch_{trainer.current_epoch:03d}.png")
        log_image(trainer.loggers, "val/crops", grid, trainer.global_step)
