"""Metrics, built explicitly: FGVC papers report micro (overall) top-1; torchmetrics defaults to macro."""

from __future__ import annotations

from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

__all__ = ["build_metrics", "per_class_accuracy"]


def build_metrics(num_classes: int, prefix: str) -> MetricCollection:
    """``{prefix}acc1`` / ``acc5`` (micro, the papers' number) and ``acc1_macro`` (mean per-class)."""
    return MetricCollection(
        {
            "acc1": MulticlassAccuracy(num_classes, top_k=1, average="micro"),
            "acc5": MulticlassAccuracy(num_classes, top_k=min(5, num_classes), average="micro"),
            "acc1_macro": MulticlassAccuracy(num_classes, top_k=1, average="macro"),
        },
        prefix=prefix,
    )


def per_class_accuracy(num_classes: int) -> MulticlassAccuracy:
    """Top-1 accuracy of every class (K,), for the test CSV; never logged as K scalars."""
    return MulticlassAccuracy(num_classes, top_k=1, average="none")
