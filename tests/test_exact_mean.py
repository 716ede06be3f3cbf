"""ExactMean / exact_mean: a mean over images with the same bits in any order, batching or split over ranks."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch
from torch import Tensor
from torchvision.ops import box_iou

from glsim_pl.data.sampling import EvalShardSampler
from glsim_pl.models import GLSimOutput
from glsim_pl.training.metrics import ExactMean, exact_mean
from glsim_pl.training.module import GLSimLitModule
from tests.helpers.configs import TINY_KW


def _values(n: int = 3000, seed: int = 0) -> Tensor:
    """Losses and IoUs of many magnitudes, subnormals and the float32 extremes included."""
    g = torch.Generator().manual_seed(seed)
    parts = [torch.rand(n, generator=g) * 10, torch.randn(n, generator=g) * 1e4, torch.rand(50, generator=g) * 1e-40,
             torch.tensor([3.0e38, -3.0e38, 1e-45, -1e-45, 0.0, -0.0])]  # fmt: skip
    return torch.cat(parts)


def _reference(values: Tensor) -> float:
    """The exact mean (rational arithmetic), rounded once."""
    total = sum((Fraction(v) for v in values.tolist()), Fraction(0))
    return float(total / len(values))


def _float32_sum(values: Tensor) -> float:
    total = torch.tensor(0.0)
    for v in values:
        total = total + v
    return float(total)


def test_exact_mean_is_the_correctly_rounded_mean_in_any_order() -> None:
    values = _values()
    shuffled = values[torch.randperm(len(values), generator=torch.Generator().manual_seed(1))]
    assert exact_mean(values) == _reference(values)
    assert exact_mean(shuffled) == exact_mean(values)
    small = values[:200]  # what a float32 running sum would give depends on the order: the test can tell
    assert _float32_sum(small) != _float32_sum(small.flip(0))


@pytest.mark.parametrize("ranks", [1, 2, 3, 7])
def test_exact_mean_metric_merged_over_ranks_equals_one_pass(ranks: int) -> None:
    """Each rank's batches in its own metric, the states added as the DDP sync adds them: the one-pass bits."""
    values = _values(seed=2)
    metrics = [ExactMean() for _ in range(ranks)]
    for block, metric in zip(values.tensor_split(ranks), metrics, strict=True):
        for batch in block.split(5):
            metric.update(batch)
    merged = metrics[0]
    for other in metrics[1:]:
        merged.merge_state(other)  # torchmetrics applies each state's dist_reduce_fx (sum)
    one = ExactMean()
    one.update(values)
    assert merged.compute().item() == one.compute().item() == torch.tensor(_reference(values)).item()
    assert one.bins.numel() == 254 and int(one.images) == len(values)  # the state does not grow with the split


def test_exact_mean_takes_half_precision_and_keeps_nan_and_inf() -> None:
    halves = torch.tensor([0.1, 0.2, 0.3], dtype=torch.bfloat16)
    assert exact_mean(halves) == _reference(halves.float())
    assert exact_mean(torch.tensor([1.0, float("inf")])) == float("inf")
    assert math.isnan(exact_mean(torch.tensor([float("inf"), 2.0, float("-inf")])))
    metric = ExactMean()
    metric.update(torch.tensor([1.0, float("nan"), 2.0]))
    assert torch.isnan(metric.compute())
    assert math.isnan(exact_mean(torch.tensor([])))  # no image: no mean


def test_module_eval_means_are_exact_means_of_per_image_values() -> None:
    """test/loss is the exact mean of the per-image cross-entropies (not of batch means), test/box_iou of the
    per-image IoUs, whatever the batches."""
    torch.manual_seed(0)
    module = GLSimLitModule(4, net={**TINY_KW, "top_o": 2}).eval()
    torch.nn.init.normal_(module.net.head.weight)
    images, labels = torch.randn(7, 3, 32, 32), torch.tensor([0, 1, 2, 3, 0, 1, 2])
    boxes = torch.tensor([[0.0, 0.0, 16.0, 16.0]]).repeat(7, 1)
    logged: dict[str, Tensor] = {}
    module.log = lambda name, value, **_: logged.__setitem__(name, value.compute())
    module.log_dict = lambda *_, **__: None
    with torch.no_grad():
        parts = (slice(0, 4), slice(4, 7))
        for part in parts:
            module.test_step((images[part], labels[part], boxes[part]), 0)
        module.on_test_epoch_end()
        outs = [module.net(images[part]) for part in parts]  # the same batches: the same logits
    logits, crops = torch.cat([o.logits for o in outs]), torch.cat([o.boxes for o in outs]).float()
    losses = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    ious = box_iou(crops, boxes).diagonal()
    assert logged["test/loss"].item() == torch.tensor(exact_mean(losses)).item()
    assert logged["test/box_iou"].item() == torch.tensor(exact_mean(ious)).item()


class _ReplayByIndex(torch.nn.Module):
    """Stands in for the classifier: the "images" are split indices, the output their fixed logits."""

    def __init__(self, logits: Tensor) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, index: Tensor) -> GLSimOutput:
        return GLSimOutput(self.logits[index], None, None)


def _eval_loss(logits: Tensor, labels: Tensor, blocks: list[range], batch_size: int) -> tuple[float, float]:
    """test/loss with one module per rank block (states merged as the DDP sync merges them), and what the float32
    sum of batch means would have given."""
    modules, float_sum = [], torch.tensor(0.0)
    for block in blocks:
        module = GLSimLitModule(4, net={**TINY_KW, "method": "vit"})
        module.net = _ReplayByIndex(logits)
        rank_sum = torch.tensor(0.0)
        for index in torch.tensor(block).split(batch_size):
            module.test_step((index, labels[index]), 0)
            rank_sum = rank_sum + torch.nn.functional.cross_entropy(logits[index], labels[index]) * len(index)
        float_sum, modules = float_sum + rank_sum, [*modules, module]
    for other in modules[1:]:
        modules[0].test_loss.merge_state(other.test_loss)
    return modules[0].test_loss.compute().item(), float(float_sum / len(labels))


def test_sharded_eval_loss_equals_one_process_where_float_sums_do_not() -> None:
    """The ranks' blocks of batches (EvalShardSampler), their loss states added up: one process's test/loss to the
    last bit, on losses where the float32 sum of batch means differs between the two groupings."""
    g = torch.Generator().manual_seed(0)
    n, batch_size = 42, 4
    labels = torch.randint(0, 4, (n,), generator=g)
    scales = torch.logspace(-2, 3, n)[torch.randperm(n, generator=g)]
    logits = torch.randn(n, 4, generator=g) * scales[:, None]  # losses from ~0 to ~1000, mixed
    one, one_float = _eval_loss(logits, labels, [range(n)], batch_size)
    float_sums_differ = False
    for ranks in (2, 3, 5):
        blocks = [range(s.start, s.stop) for s in (EvalShardSampler(range(n), ranks, r, batch_size) for r in
                                                    range(ranks))]  # fmt: skip
        many, many_float = _eval_loss(logits, labels, blocks, batch_size)
        assert many == one, ranks
        float_sums_differ |= many_float != one_float
    assert float_sums_differ  # the data can tell an exact sum from a float one
