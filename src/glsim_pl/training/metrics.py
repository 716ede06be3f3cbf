"""Metrics, built explicitly: FGVC papers report micro (overall) top-1; torchmetrics defaults to macro.

Every metric keeps its own state (``compute_groups=False``): torchmetrics' compute groups merge metrics whose states
are equal after the first update, which makes a top-5 share a top-1's state when the first batch is all right (or
all wrong) at both, and every later top-5 is the top-1 again. The saving is one tiny confusion count per metric.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy

__all__ = ["EpochPredictions", "ExactMean", "ImageMean", "build_metrics", "exact_mean", "per_class_accuracy"]


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


class EpochPredictions:
    """The train accuracies' input, kept per step as a few integers and counted into the metrics at the epoch end.

    torchmetrics ``update`` calls every step cost host time every step (``bench floor --per-step metrics``); here a step
    stores its argmax, its top-k class ids and its labels, (B, k + 2) int64 on the device (no host sync), and
    :meth:`update_metrics` feeds ``acc1`` / ``acc1_macro`` the argmaxes and ``acc5`` scores rebuilt from the top-k
    ids (k, k-1, ..., 1 at those classes, 0 elsewhere: the same top-k set), chunk by chunk. The numbers equal
    per-step updates (``tests/test_metrics.py``).
    """

    def __init__(self, num_classes: int, top_k: int = 5, chunk: int = 4096) -> None:
        self.num_classes, self.top_k, self.chunk = num_classes, min(top_k, num_classes), chunk
        self._rows: list[Tensor] = []

    def append(self, logits: Tensor, labels: Tensor) -> None:
        """logits (B, K) detached, labels (B,) class ids."""
        top = logits.topk(self.top_k, dim=1).indices
        self._rows.append(torch.cat([logits.argmax(dim=1, keepdim=True), top, labels[:, None]], dim=1))

    def __len__(self) -> int:
        return sum(len(r) for r in self._rows)

    def update_metrics(self, metrics: MetricCollection, prefix: str) -> None:
        """Count everything appended into ``{prefix}acc1`` / ``acc5`` / ``acc1_macro`` and start over."""
        if not self._rows:
            return
        rows, self._rows = torch.cat(self._rows), []
        ranks = torch.arange(self.top_k, 0, -1, device=rows.device, dtype=torch.float32)
        for part in rows.split(self.chunk):
            argmax, top, labels = part[:, 0], part[:, 1:-1], part[:, -1]
            metrics[f"{prefix}acc1"].update(argmax, labels)
            metrics[f"{prefix}acc1_macro"].update(argmax, labels)
            scores = torch.zeros(len(part), self.num_classes, device=rows.device)
            metrics[f"{prefix}acc5"].update(scores.scatter_(1, top, ranks.expand_as(top)), labels)


class ImageMean(Metric):
    """A mean over images: ``update(sum of the batch's values, images)``, both summed over the ranks at ``compute``.

    Lightning's ``self.log(..., sync_dist=True)`` mean averages the ranks' image counts as integers, which truncates
    when the ranks saw different numbers of images (an evaluation split that does not divide by the ranks).
    torchmetrics' ``MeanMetric`` reads its NaN check back from the device every update, and with the check disabled it
    drops the weights. Here nothing is read back (a NaN shows in the mean), and one process adds the same float32
    numbers in the same order as Lightning's own epoch mean did.
    """

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("total", torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("images", torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, total: Tensor, images: int | Tensor) -> None:
        self.total = self.total + total
        self.images = self.images + images

    def compute(self) -> Tensor:
        return self.total / self.images


# A finite float32 value is +-k x 2**(b - 150): k its 24-bit significand (hidden bit included), b its biased exponent
# field in 1..254 (a subnormal: field 0, read as b = 1 without the hidden bit). One int64 counter per b adds any
# k exactly (2**39 of them fit). Read from the bits with integer operations only, which every device has.
_BINS = 254


def _exact_bins(values: Tensor) -> tuple[Tensor, Tensor]:
    """float32 values -> (the finite ones' exact sum as int64 counters, the sum of the others: 0, +-inf or NaN)."""
    finite = values.isfinite()
    bits = torch.where(finite, values, 0.0).contiguous().view(torch.int32)
    field = (bits >> 23) & 0xFF
    significand = (bits & 0x7FFFFF) | ((field > 0).int() << 23)
    signed = torch.where(bits < 0, -significand, significand).long()
    bins = torch.zeros(_BINS, dtype=torch.long, device=values.device)
    bins.scatter_add_(0, field.clamp_min(1).long() - 1, signed)
    return bins, torch.where(finite, 0.0, values).sum()


def _mean_of_bins(bins: Tensor, special: Tensor, count: int) -> float:
    """The exact sum over ``count`` as the nearest float64 (Python's int / int rounds once, correctly)."""
    numerator = sum(int(k) << i for i, k in enumerate(bins.tolist()) if k)  # counter i (b = i + 1): 2**(i - 149)
    if count == 0:
        return float("nan")
    return numerator / (count << 149) + float(special)  # + 0.0, or the inf / NaN some value had


def exact_mean(values: Tensor) -> float:
    """Mean of float32 values (any shape) from their exact sum, rounded once: the same bits in any order or split."""
    values = values.detach().flatten().float()
    bins, special = _exact_bins(values)
    return _mean_of_bins(bins, special, values.numel())


class ExactMean(Metric):
    """A mean over images of per-image values, identical to the last bit on any number of ranks and any batching.

    ``update(values)`` takes one float32 value per image. Float sums depend on their order (batch sums, then rank
    sums, differ from one process's sum in the last bits); here each value goes into an exact integer sum (int64
    counters by binary exponent, :func:`exact_mean`), which the ranks add up exactly. The state is 254 integers
    whatever the split size (no per-image storage); nothing is read back from the device before ``compute``. A NaN
    or inf value shows in the mean. ``compute`` rounds the exact mean once to float64, then to float32 as the other
    logged metrics.
    """

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("bins", torch.zeros(_BINS, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("special", torch.tensor(0.0), dist_reduce_fx="sum")  # 0, inf or NaN: any order gives the same
        self.add_state("images", torch.tensor(0), dist_reduce_fx="sum")

    def update(self, values: Tensor) -> None:
        values = values.detach().flatten().float()
        bins, special = _exact_bins(values)
        self.bins, self.special = self.bins + bins, self.special + special
        self.images = self.images + values.numel()

    def compute(self) -> Tensor:
        mean = _mean_of_bins(self.bins, self.special, int(self.images))
        return torch.tensor(mean, dtype=torch.float32, device=self.bins.device)
