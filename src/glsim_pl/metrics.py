"""Metrics, built explicitly: FGVC papers report micro (overall) top-1; torchmetrics defaults to macro.

Every metric keeps its own state (``compute_groups=False``): torchmetrics' compute groups merge metrics whose states
are equal after the first update, which makes a top-5 share a top-1's state when the first batch is all right (or
all wrong) at both, and every later top-5 is the top-1 again. The saving is one tiny confusion count per metric.
"""

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
        compute_groups=False,
    )


def per_class_accuracy(num_classes: int) -> MulticlassAccuracy:
    """Top-1 accuracy of every class (K,), for the test CSV; never logged as K scalars."""
    return MulticlassAccuracy(num_classes, top_k=1, average="none")
