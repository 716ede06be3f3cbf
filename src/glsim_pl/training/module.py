"""GLSimLitModule: the training system around a GLSim (or plain ViT) classifier.

Owns the loss, metrics, logging keys, optimizer and schedule. Hyperparameters are plain values only, so
checkpoints load with ``torch.load(weights_only=True)`` and ``load_from_checkpoint(path)`` needs no arguments.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy
from torch import Tensor, nn
from torchmetrics import MaxMetric
from torchvision.ops import box_iou

from glsim_pl.models import GLSimOutput, build_classifier
from glsim_pl.training.metrics import EpochPredictions, ExactMean, ImageMean, build_metrics, per_class_accuracy
from glsim_pl.training.optim import OPTIM_DEFAULTS, build_optimizer, schedule_factor

__all__ = ["GLSimLitModule"]


class GLSimLitModule(L.LightningModule):
    """Lightning system for GLSim / ViT classification.

    The hyperparameters are grouped as the config groups are, and stay plain values (checkpoints load with
    ``torch.load(weights_only=True)``):

    Args:
        num_classes: classes K (from the dataset config).
        net: :func:`glsim_pl.models.build_classifier`'s keywords (``method`` + the ``model`` and ``method`` groups,
            ``img_size``, ``drop_path_rate``); empty: the paper's GLSim ViT-B/16.
        optim: the ``optim`` group (:data:`glsim_pl.training.optim.OPTIM_DEFAULTS` fills what it leaves out).
        label_smoothing: cross-entropy label smoothing.
        gate_loss_weight: weight of the first-pass head's cross-entropy in the joint loss (``gate=confidence``).
        grad_checkpointing: recompute encoder activations in backward (saves memory).
        class_names: names written to the per-class CSV.

    Example:
        >>> module = glsim_pl.GLSimLitModule(200, net={"backbone": "vit_base_patch16_224.orig_in21k", "top_o": 8},
        ...                                  optim={"lr": 0.01})                        # doctest: +SKIP
        >>> module = glsim_pl.GLSimLitModule.load_from_checkpoint("best.ckpt")          # doctest: +SKIP
    """

    def __init__(
        self,
        num_classes: int,
        net: dict[str, Any] | None = None,
        optim: dict[str, Any] | None = None,
        label_smoothing: float = 0.1,
        gate_loss_weight: float = 1.0,
        grad_checkpointing: bool = False,
        class_names: list[str] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.hparams.net, self.hparams.optim = dict(net or {}), {**OPTIM_DEFAULTS, **(optim or {})}
        self.net = build_classifier(num_classes=num_classes, **{"method": "glsim", **self.hparams.net})
        if grad_checkpointing:
            self.net.set_grad_checkpointing(True)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.train_metrics = build_metrics(num_classes, "train/")
        for metric in self.train_metrics.values():  # no host read at the epoch end (value checks call torch.unique)
            metric.validate_args = False
        self._train_predictions = EpochPredictions(num_classes)  # counted into train_metrics at the epoch end
        self._train_losses: dict[str, Tensor] = {}  # name -> (loss x images, images) summed over the epoch
        self.precomputed_grad_norm: Tensor | None = None  # this step's gradient norm, if the guard took it
        self.val_metrics = build_metrics(num_classes, "val/")
        self.test_metrics = build_metrics(num_classes, "test/")
        self.test_per_class = per_class_accuracy(num_classes)
        self.val_acc1_best = MaxMetric()
        # means over the images of every rank, from exact sums: the same bits on any number of devices
        self.val_loss, self.test_loss = ExactMean(), ExactMean()
        self.val_box_iou, self.test_box_iou = ExactMean(), ExactMean()
        self.val_second_pass_share, self.test_second_pass_share = ExactMean(), ExactMean()
        self.train_epoch_losses = nn.ModuleDict({"loss_epoch": ImageMean(), "loss_first": ImageMean()})

    def forward(self, images: Tensor) -> GLSimOutput:
        """images (B, 3, H, W) -> GLSimOutput."""
        return self.net(images)

    def training_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
        """Cross-entropy on the final logits only (no loss on the crop branch, as the paper).

        ``gate=confidence``: plus ``gate_loss_weight`` x the first-pass head's cross-entropy; in training both
        passes run on every image, so the GLSim head learns from all of them.
        """
        images, labels = batch[0], batch[1]
        out = self.net(images)
        logits = out.logits
        loss = self.criterion(logits, labels)  # labels: (B,) class ids, or (B, K) soft targets from MixUp/CutMix
        if out.first_logits is not None:
            first_loss = self.criterion(out.first_logits, labels)
            loss = loss + self.hparams.gate_loss_weight * first_loss
            self._log_train_loss("train/loss_first", first_loss, len(labels), step=False)
        hard = labels.argmax(dim=1) if labels.ndim == 2 else labels  # metrics count the dominant class of a mix
        self._train_predictions.append(logits.detach(), hard)
        self._log_train_loss("train/loss", loss, len(labels))
        return loss

    def _log_train_loss(self, name: str, loss: Tensor, images: int, step: bool = True) -> None:
        """``{name}_step`` on the steps Lightning writes to the loggers (``step``) and the images-weighted epoch mean
        at the epoch end (as ``self.log(on_epoch=True)``: ``{name}_epoch``, or ``{name}`` without ``step``).

        A per-step ``self.log`` costs 0.4-0.6 ms of host time a step on a CPU (``bench floor --per-step log``), a
        tenth of a tiny model's step; called only on the steps whose values reach a logger, it writes the same values.
        """
        detached = loss.detach().float()
        total = torch.stack([detached * images, detached.new_tensor(float(images))])
        key = f"{name}_epoch" if step else name
        self._train_losses[key] = total if key not in self._train_losses else self._train_losses[key] + total
        trainer = self._trainer
        # Lightning's own "this step's values reach the loggers"; if a Lightning version lacks it, log every step
        logs_now = getattr(getattr(trainer, "_logger_connector", None), "should_update_logs", True)
        if step and trainer is not None and (logs_now or trainer.fast_dev_run):
            self.log(f"{name}_step", detached, on_step=True, on_epoch=False, prog_bar=True, batch_size=images)

    def on_train_epoch_end(self) -> None:
        """Epoch-level training loss and accuracy, over the images of every rank: metric objects whose sums
        torchmetrics adds up over the ranks (Lightning computes and resets them)."""
        for key, (weighted, images) in self._train_losses.items():
            mean = self.train_epoch_losses[key.removeprefix("train/")]
            mean.update(weighted, images)
            self.log(key, mean, prog_bar=key == "train/loss_epoch")
        self._train_losses.clear()
        self._train_predictions.update_metrics(self.train_metrics, "train/")
        self.log_dict(self.train_metrics)

    def on_train_start(self) -> None:
        """The sanity-check validation must not count towards the best accuracy; a resumed run keeps its best."""
        self.val_metrics.reset()
        self.val_acc1_best.reset()
        resumed = getattr(self, "_resumed_acc1_best", None)
        if resumed is not None and math.isfinite(resumed):
            self.val_acc1_best.update(torch.tensor(resumed, device=self.device))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """The best val/acc1 so far (a metric state, not in the state dict) for an exact ``val/acc1_best`` on resume,
        and the datamodule's eval preprocessing (``glsim_pl.data.preprocessing``) for eval / predict / export."""
        checkpoint["val_acc1_best"] = float(self.val_acc1_best.max_value)
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is not None and hasattr(datamodule, "resize_size"):  # the eval transform travels with the model
            from glsim_pl.data.preprocessing import Preprocessing

            checkpoint["preprocessing"] = Preprocessing.from_datamodule(datamodule).to_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._resumed_acc1_best = checkpoint.get("val_acc1_best")

    def validation_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> dict[str, Tensor]:
        """Validation metrics; returns boxes and scores for the crop-visualisation callback."""
        return self._shared_eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        """Log val metrics (metric objects: synced over the ranks, computed and reset by Lightning) and the best
        val/acc1 so far, which is the same number on every rank (a max over the ranks passes it through unchanged)."""
        self.val_acc1_best.update(self.val_metrics["val/acc1"].compute())  # cached: Lightning's compute reuses it
        self.log_dict(self.val_metrics, prog_bar=True)
        self.log("val/acc1_best", self.val_acc1_best.compute(), sync_dist=True, reduce_fx="max")
        self._log_eval_means("val")

    def test_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> dict[str, Tensor]:
        """Test metrics, per-class accuracy and (with ground-truth boxes) crop-box IoU."""
        out = self._shared_eval_step(batch, "test")
        self.test_per_class.update(out["logits"], batch[1])
        return out

    def on_test_epoch_end(self) -> None:
        """Log test metrics (metric objects, as validation's); the per-class vector stays in ``self.test_per_class``
        for the CSV."""
        self.log_dict(self.test_metrics)
        self._log_eval_means("test")

    def _log_eval_means(self, stage: str) -> None:
        self.log(f"{stage}/loss", getattr(self, f"{stage}_loss"))
        for name in ("box_iou", "second_pass_share"):  # only models / datasets that have them
            metric = getattr(self, f"{stage}_{name}")
            if metric.update_count:
                self.log(f"{stage}/{name}", metric)

    def _shared_eval_step(self, batch: tuple[Tensor, ...], stage: str) -> dict[str, Tensor]:
        images, labels = batch[0], batch[1]
        out = self.net(images)
        getattr(self, f"{stage}_metrics").update(out.logits, labels)
        # per image, not the batch mean: a batch sum would depend on how the images were batched and sharded
        getattr(self, f"{stage}_loss").update(nn.functional.cross_entropy(out.logits, labels, reduction="none"))
        if len(batch) > 2 and out.boxes is not None:
            iou = box_iou(out.boxes.float(), batch[2].float()).diagonal()  # (B,) crop box vs object box
            getattr(self, f"{stage}_box_iou").update(iou)
        if out.second_pass is not None:  # gate=confidence: how many images paid for the second pass
            getattr(self, f"{stage}_second_pass_share").update(out.second_pass.float())
        return {"logits": out.logits.detach(), "boxes": out.boxes, "scores": out.scores}

    def _optimizer_kernel(self) -> dict[str, bool]:
        """One fused kernel per step on CUDA, except under 16-mixed, where Lightning cannot clip the gradients of an
        optimizer that unscales them itself: torch's default there (multi-tensor foreach kernels on CUDA; the CPU
        keeps its per-parameter loop, so CPU runs compute exactly what they did)."""
        cuda = next(self.net.parameters()).is_cuda
        fp16 = str(getattr(self._trainer, "precision", "")).startswith("16")
        return {"fused": True} if cuda and not fp16 else {}

    def configure_gradient_clipping(self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None,
                                    gradient_clip_algorithm: str | None = None) -> None:  # fmt: skip
        """Lightning's global-norm clipping, except that the norm :class:`DivergenceGuard` took of the same gradients
        a moment earlier (``precomputed_grad_norm``) is not computed a second time: same clipped gradients.

        Only with whole, already reduced gradients (one device or DDP) and no GradScaler (the guard takes no norm
        under one); anything else goes through Lightning's own path.
        """
        norm, self.precomputed_grad_norm = self.precomputed_grad_norm, None
        strategy = self.trainer.strategy
        whole = type(strategy) is SingleDeviceStrategy or (
            isinstance(strategy, DDPStrategy) and "DeepSpeed" not in type(strategy).__name__)  # fmt: skip
        if norm is None or not gradient_clip_val or str(gradient_clip_algorithm or "norm") != "norm" or not whole:
            super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
            return
        grads = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        torch.nn.utils.clip_grads_with_norm_(grads, float(gradient_clip_val), norm)

    def configure_optimizers(self) -> dict[str, Any]:
        """The ``optim`` group's optimizer (SGD-Nesterov or AdamW) with per-step warmup + cosine."""
        optimizer = build_optimizer(self.net, self.hparams.optim, self._optimizer_kernel())
        factor = schedule_factor(self.hparams.optim, lambda: self.trainer.estimated_stepping_batches)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
