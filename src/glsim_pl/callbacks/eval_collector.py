"""Collect what the eval reports need during ``trainer.test``: confusion counts, crop-box IoU, confident mistakes.

Nothing is written here; :mod:`glsim_pl.analysis.eval_report` renders the PNGs from what this keeps.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor
from torchvision.ops import box_iou

from glsim_pl.analysis.eval_report import Mistake

__all__ = ["EvalCollector"]


class EvalCollector(L.Callback):
    """Keep the confusion matrix (K, K), per-image IoU with the object box, and the ``gallery_size`` most
    confident mistakes (images kept on CPU).

    Args:
        num_classes: K.
        gallery_size: mistakes to keep (0 = none).
    """

    def __init__(self, num_classes: int, gallery_size: int = 16) -> None:
        self.num_classes, self.gallery_size = num_classes, gallery_size
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)  # rows: true, cols: predicted
        self.ious: list[Tensor] = []
        self.mistakes: list[Mistake] = []

    def on_test_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:  # fmt: skip
        """Update counts, IoUs and the gallery from one test batch."""
        if not isinstance(outputs, dict):
            return
        images, labels = batch[0], batch[1].cpu()
        probs = outputs["logits"].float().softmax(-1).cpu()  # (B, K)
        conf, pred = probs.max(-1)  # (B,), (B,)
        self.confusion += torch.bincount(labels * self.num_classes + pred, minlength=self.num_classes**2).view(
            self.num_classes, self.num_classes
        )
        boxes = outputs.get("boxes")
        if boxes is not None and len(batch) > 2:
            self.ious.append(box_iou(boxes.float(), batch[2].float()).diagonal().cpu())  # (B,)
        if self.gallery_size:
            self._keep_mistakes(images, labels, pred, conf, boxes, outputs.get("scores"))

    def _keep_mistakes(
        self, images: Tensor, labels: Tensor, pred: Tensor, conf: Tensor, boxes: Tensor | None, scores: Tensor | None
    ) -> None:
        wrong = (pred != labels).nonzero().flatten().tolist()
        floor = min((m["confidence"] for m in self.mistakes), default=-1.0)
        for i in wrong:
            if len(self.mistakes) >= self.gallery_size and conf[i] <= floor:
                continue
            self.mistakes.append(Mistake(
                image=images[i].detach().float().cpu(), label=int(labels[i]), pred=int(pred[i]),
                confidence=float(conf[i]), box=None if boxes is None else boxes[i].detach().float().cpu(),
                scores=None if scores is None else scores[i].detach().float().cpu(),
            ))  # fmt: skip
        self.mistakes.sort(key=lambda m: -m["confidence"])
        del self.mistakes[self.gallery_size :]

    def localization(self) -> dict[str, float] | None:
        """Mean IoU of crop box vs object box, fraction with IoU >= 0.5 and count; None without boxes."""
        if not self.ious:
            return None
        iou = torch.cat(self.ious)
        return {"mean_iou": float(iou.mean()), "iou50": float((iou >= 0.5).float().mean()), "n": len(iou)}

    def accuracy(self) -> float:
        """Top-1 from the confusion matrix."""
        return float(self.confusion.diagonal().sum() / self.confusion.sum().clamp_min(1))
