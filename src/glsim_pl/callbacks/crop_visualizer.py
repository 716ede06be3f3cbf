"""Every N validation epochs: a grid of [image with crop box | GLS heatmap | crop] for a fixed, class-balanced
sample of validation images (the same images every epoch), each row captioned with its true and predicted class.

Saved as ``<dirpath>/epoch_XXX.png`` with the rows' indices and classes in ``epoch_XXX.json``, and sent to every
active tracker as the ``val/crops`` image (TensorBoard, W&B, MLflow; see :func:`glsim_pl.utils.logging.log_image`).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor
from torch.utils.data import default_collate
from torchvision.transforms.functional import pil_to_tensor, to_pil_image
from torchvision.utils import draw_bounding_boxes, make_grid, save_image

from glsim_pl.models import crop_and_resize
from glsim_pl.utils.logging import log_image

__all__ = [
    "CropVisualizer",
    "balanced_sample",
    "captioned_crop_grid",
    "render_crop_panels",
    "selector_panel",
    "to_unit",
]

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


def balanced_sample(labels: Sequence[int], k: int) -> list[int]:
    """``k`` dataset indices spread over the classes: with at most as many images as classes, the first image of
    ``k`` evenly spaced classes; with more, every class's first image, then every class's second, and so on."""
    by_class: dict[int, list[int]] = defaultdict(list)
    for index, label in enumerate(labels):
        by_class[int(label)].append(index)
    classes = sorted(by_class)
    if not classes or k <= 0:
        return []
    if k <= len(classes):
        return [by_class[classes[round(j * (len(classes) - 1) / max(k - 1, 1))]][0] for j in range(k)]
    picked: list[int] = []
    for rank in range(max(len(v) for v in by_class.values())):
        picked += [by_class[c][rank] for c in classes if rank < len(by_class[c])]
    return picked[:k]


def _dataset_labels(dataset: Any) -> list[int] | None:
    """Labels without reading images: a ``TransformedView`` (source targets + indices) or a ``targets`` list."""
    source, indices = getattr(dataset, "source", None), getattr(dataset, "indices", None)
    if source is not None and indices is not None and getattr(source, "targets", None) is not None:
        return [int(source.targets[i]) for i in indices]
    targets = getattr(dataset, "targets", None)
    return [int(t) for t in targets] if targets is not None else None


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


class CropVisualizer(L.Callback):
    """Every ``every_n_epochs`` validation epochs, crop panels of the same ``num_images`` validation images, chosen
    once by :func:`balanced_sample` (class-balanced, not the first batch), captioned with true and predicted class.

    Args:
        dirpath: folder for the PNG (and JSON) files.
        every_n_epochs: render on validation epochs divisible by this.
        num_images: images per grid (8-16 read well).
    """

    def __init__(self, dirpath: str, every_n_epochs: int = 1, num_images: int = 8) -> None:
        self.dirpath = Path(dirpath)
        self.every_n_epochs, self.num_images = every_n_epochs, num_images
        self.indices: list[int] | None = None
        self._batch: tuple[Tensor, Tensor] | None = None

    def _sample(self, trainer: L.Trainer) -> tuple[Tensor, Tensor] | None:
        """The fixed images and labels, read once (the evaluation transform is deterministic)."""
        if self._batch is None:
            loaders = trainer.val_dataloaders
            loader = loaders[0] if isinstance(loaders, list | tuple) and loaders else loaders
            dataset = getattr(loader, "dataset", None)
            if dataset is None or not len(dataset):
                return None
            labels = _dataset_labels(dataset)
            if labels is None:  # unknown labels: evenly spaced over the split (sorted splits: over the classes)
                labels = [j * self.num_images // len(dataset) for j in range(len(dataset))]
            self.indices = balanced_sample(labels, self.num_images)
            items = default_collate([dataset[i] for i in self.indices])
            self._batch = (items[0], torch.as_tensor(items[1]))
        return self._batch

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Rank 0, outside the sanity check: one eager forward of the fixed images."""
        if trainer.sanity_checking or not trainer.is_global_zero or trainer.current_epoch % self.every_n_epochs:
            return
        sample = self._sample(trainer)
        if sample is None:
            return
        images, labels = sample
        precision = trainer.precision_plugin
        with torch.no_grad(), precision.val_step_context():
            out = pl_module.net(precision.convert_input(images.to(pl_module.device)))
        if out.boxes is None:  # the plain-ViT baseline has no crop
            return
        predicted = out.logits.float().argmax(-1).cpu().tolist()
        names = pl_module.hparams.get("class_names") or []

        def name(k: int) -> str:
            return names[k] if k < len(names) else str(k)

        rows = [{"index": i, "true": name(t), "pred": name(p), "correct": t == p}
                for i, t, p in zip(self.indices or [], labels.tolist(), predicted, strict=True)]  # fmt: skip
        patch = pl_module.net.patch_px
        grid_hw = (images.shape[-2] // patch, images.shape[-1] // patch)
        scores = out.scores.float().cpu() if out.scores is not None else None
        dm = trainer.datamodule
        mean, std = getattr(dm, "mean", None), getattr(dm, "std", None)
        captions = [f"true: {r['true']}  pred: {r['pred']}" for r in rows]
        grid = captioned_crop_grid(images, out.boxes.float().cpu(), scores, grid_hw, captions,
                                   [r["correct"] for r in rows], mean, std)  # fmt: skip
        self.dirpath.mkdir(parents=True, exist_ok=True)
        stem = self.dirpath / f"epoch_{trainer.current_epoch:03d}"
        save_image(grid, stem.with_suffix(".png"))
        stem.with_suffix(".json").write_text(json.dumps(rows, indent=1))
        log_image(trainer.loggers, "val/crops", grid, trainer.global_step)
