"""Every N validation epochs: a grid of [image with crop box | GLS heatmap | crop] for a fixed, class-balanced
sample of validation images (the same images every epoch), each row captioned with its true and predicted class.

Saved as ``<dirpath>/epoch_XXX.png`` with the rows' indices and classes in ``epoch_XXX.json``, and sent to every
active tracker as the ``val/crops`` image (TensorBoard, W&B, MLflow; see :func:`glsim_pl.utils.trackers.log_image`).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import default_collate
from torchvision.utils import save_image

from glsim_pl.plots.panels import captioned_crop_grid
from glsim_pl.utils.trackers import log_image

__all__ = ["CropVisualizer", "balanced_sample"]


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
            if dataset is None or isinstance(dataset, torch.utils.data.IterableDataset) or not len(dataset):
                return None  # a stream (dataset=wds) has no fixed images to pick
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
