"""Collect what the eval reports need during ``trainer.test``: confusion counts, crop-box IoU, confident mistakes.

Nothing is written here; :mod:`glsim_pl.analysis.eval_report` renders the PNGs from what this keeps. Under DDP each
rank sees one contiguous block of the test split (:class:`glsim_pl.data.sampling.EvalShardSampler`); at the epoch
end every rank gets the whole split's counts, IoUs (in split order) and mistakes, as one process would have them;
the mean IoU comes from an exact sum, so it has the same bits on any number of devices.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.distributed as dist
from torch import Tensor
from torchvision.ops import box_iou

from glsim_pl.analysis.eval_report import Mistake
from glsim_pl.training.metrics import exact_mean

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
        self.mistakes: list[Mistake] = []  # each with the image's ``index`` in the test split
        self._first_index = self._next_index = 0  # split index of this rank's first / next image

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loader = trainer.test_dataloaders
        loader = loader[0] if isinstance(loader, list | tuple) else loader
        self._first_index = self._next_index = int(getattr(getattr(loader, "sampler", None), "start", 0))

    def on_test_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:  # fmt: skip
        """Update counts, IoUs and the gallery from one test batch."""
        if not isinstance(outputs, dict):
            return
        images, labels = batch[0], batch[1].cpu()
        index = torch.arange(len(labels)) + self._next_index
        self._next_index += len(labels)
        probs = outputs["logits"].float().softmax(-1).cpu()  # (B, K)
        conf, pred = probs.max(-1)  # (B,), (B,)
        self.confusion += torch.bincount(labels * self.num_classes + pred, minlength=self.num_classes**2).view(
            self.num_classes, self.num_classes
        )
        boxes = outputs.get("boxes")
        if boxes is not None and len(batch) > 2:
            self.ious.append(box_iou(boxes.float(), batch[2].float()).diagonal().cpu())  # (B,)
        if self.gallery_size:
            self._keep_mistakes(images, labels, pred, conf, boxes, outputs.get("scores"), index)

    def _keep_mistakes(
        self, images: Tensor, labels: Tensor, pred: Tensor, conf: Tensor, boxes: Tensor | None, scores: Tensor | None,
        index: Tensor,
    ) -> None:  # fmt: skip
        wrong = (pred != labels).nonzero().flatten().tolist()
        floor = min((m["confidence"] for m in self.mistakes), default=-1.0)
        for i in wrong:
            if len(self.mistakes) >= self.gallery_size and conf[i] <= floor:
                continue
            self.mistakes.append(Mistake(
                image=images[i].detach().float().cpu(), label=int(labels[i]), pred=int(pred[i]),
                confidence=float(conf[i]), box=None if boxes is None else boxes[i].detach().float().cpu(),
                scores=None if scores is None else scores[i].detach().float().cpu(), index=int(index[i]),
            ))  # fmt: skip
        self._rank_mistakes()

    def _rank_mistakes(self) -> None:
        """The most confident first; of equal confidences the earlier image, as a single pass in split order keeps."""
        self.mistakes.sort(key=lambda m: (-m["confidence"], m["index"]))
        del self.mistakes[self.gallery_size :]

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Every rank's counts, IoUs and mistakes, merged on every rank."""
        if trainer.world_size == 1 or not (dist.is_available() and dist.is_initialized()):
            return
        confusion = trainer.strategy.reduce(self.confusion.to(pl_module.device), reduce_op="sum")
        self.confusion = confusion.cpu()
        local = (self._first_index, torch.cat(self.ious) if self.ious else None, self.mistakes)
        parts: list[Any] = [None] * trainer.world_size
        dist.all_gather_object(parts, local)
        parts.sort(key=lambda part: part[0])  # the blocks in split order
        self.ious = [ious for _, ious, _ in parts if ious is not None]
        self.mistakes = [m for _, _, mistakes in parts for m in mistakes]
        self._rank_mistakes()

    def localization(self) -> dict[str, float] | None:
        """Mean IoU of crop box vs object box, fraction with IoU >= 0.5 and count; None without boxes.

        The mean from the exact sum, as ``test/box_iou`` (:class:`glsim_pl.training.metrics.ExactMean`): the same
        number, to the last bit, on any number of devices."""
        if not self.ious:
            return None
        iou = torch.cat(self.ious)
        mean = float(torch.tensor(exact_mean(iou), dtype=torch.float32))  # float32, as the logged metric
        return {"mean_iou": mean, "iou50": float((iou >= 0.5).float().mean()), "n": len(iou)}

    def accuracy(self) -> float:
        """Top-1 from the confusion matrix."""
        return float(self.confusion.diagonal().sum() / self.confusion.sum().clamp_min(1))
