"""Metrics against a direct computation on the concatenated logits, updated batch by batch as the loops do."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import Tensor, nn
from torchmetrics import Metric

from glsim_pl.models import GLSimOutput
from glsim_pl.training.metrics import EpochPredictions, build_metrics
from glsim_pl.training.module import GLSimLitModule

K, N, B = 10, 48, 8


def _data(seed: int = 0) -> tuple[Tensor, Tensor]:
    """Logits whose first batch is all right at top-1 (so top-1, top-5 and macro states look alike after it)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, K, (N,), generator=g)
    logits = torch.randn(N, K, generator=g)
    logits[:B] += 10.0 * nn.functional.one_hot(labels[:B], K)
    return logits, labels


def _direct(logits: Tensor, labels: Tensor) -> dict[str, float]:
    top1 = logits.argmax(1) == labels
    top5 = (logits.topk(5, dim=1).indices == labels[:, None]).any(1)
    per_class = [top1[labels == c].float().mean() for c in labels.unique()]  # classes present (torchmetrics' macro)
    return {"acc1": top1.float().mean().item(), "acc5": top5.float().mean().item(),
            "acc1_macro": torch.stack(per_class).mean().item()}  # fmt: skip


def _check(computed: dict[str, Tensor], prefix: str, expected: dict[str, float]) -> None:
    assert expected["acc5"] > expected["acc1"] + 0.1  # the data can tell top-5 from top-1
    for name, value in expected.items():
        assert float(computed[prefix + name]) == pytest.approx(value, abs=1e-6), name


def test_collection_batch_by_batch_equals_direct() -> None:
    logits, labels = _data()
    metrics = build_metrics(K, "val/")
    for i in range(0, N, B):
        metrics.update(logits[i : i + B], labels[i : i + B])
    _check(metrics.compute(), "val/", _direct(logits, labels))


class _Replay(nn.Module):
    """Stands in for the classifier: returns the next batch of fixed logits."""

    def __init__(self, logits: Tensor) -> None:
        super().__init__()
        self.batches = iter(logits.split(B))
        self.head = nn.Linear(1, 1)

    def forward(self, images: Tensor) -> GLSimOutput:
        return GLSimOutput(next(self.batches), None, None)


def _module(logits: Tensor) -> tuple[GLSimLitModule, dict[str, Tensor]]:
    net = {"backbone": "vit_tiny_patch16_224", "method": "vit", "img_size": 32,
           "backbone_kwargs": {"patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2}}  # fmt: skip
    module = GLSimLitModule(K, net=net)
    module.net = _Replay(logits)
    logged: dict[str, Tensor] = {}
    value_of = lambda value: value.compute() if isinstance(value, Metric) else value  # as Lightning logs a metric
    module.log = lambda name, value, **_: logged.__setitem__(name, value_of(value))
    module.log_dict = lambda values, **_: logged.update({k: value_of(v) for k, v in values.items()})
    return module, logged


@pytest.mark.parametrize("stage", ["train", "val", "test"])
def test_lit_module_metrics_equal_direct(stage: str) -> None:
    """The module's own loops (train: deferred macro count; val/test: the shared eval step) give the direct numbers."""
    logits, labels = _data(1)
    module, logged = _module(logits)
    images = torch.zeros(B, 3, 32, 32)
    for i, y in enumerate(labels.split(B)):
        if stage == "train":
            module.training_step((images, y), i)
        else:
            getattr(module, {"val": "validation_step", "test": "test_step"}[stage])((images, y), i)
    if stage == "train":
        module.on_train_epoch_end()
        assert torch.isfinite(logged["train/loss_epoch"])
    elif stage == "val":
        module.on_validation_epoch_end()
    else:
        module.on_test_epoch_end()
    _check(logged, f"{stage}/", _direct(logits, labels))


def _ddp_worker(rank: int, init_file: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    logits, labels = _data(2)
    metrics = build_metrics(K, "val/")
    for i in range(rank * B, N, 2 * B):  # rank 0 gets batches 0, 2, 4; rank 1 gets 1, 3, 5
        metrics.update(logits[i : i + B], labels[i : i + B])
    computed = {k: float(v) for k, v in metrics.compute().items()}  # synced across the two processes
    torch.save(computed, f"{out}.{rank}")
    dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_reduction_equals_direct(tmp_path: Path) -> None:
    """Two gloo processes, each with half of the batches: the synced metrics are the direct ones on all logits."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(_ddp_worker, args=(str(tmp_path / "init"), str(tmp_path / "out")), nprocs=2, join=True)
    expected = _direct(*_data(2))
    for rank in (0, 1):
        _check(torch.load(tmp_path / f"out.{rank}", weights_only=True), "val/", expected)


@pytest.mark.parametrize("classes", [3, K])
def test_epoch_predictions_equal_per_step_updates(classes: int) -> None:
    """The train accuracies counted at the epoch end (argmax + top-k ids kept per step, fed in chunks) equal
    torchmetrics updated step by step on the logits, with ties in the logits and fewer classes than 5."""
    g = torch.Generator().manual_seed(3)
    labels = torch.randint(0, classes, (N,), generator=g)
    logits = torch.randn(N, classes, generator=g).mul(2).round() / 2  # continuous enough, with ties
    per_step, deferred = build_metrics(classes, "train/"), build_metrics(classes, "train/")
    kept = EpochPredictions(classes, chunk=5)
    for i in range(0, N, B):
        per_step.update(logits[i : i + B], labels[i : i + B])
        kept.append(logits[i : i + B], labels[i : i + B])
    assert len(kept) == N
    kept.update_metrics(deferred, "train/")
    assert len(kept) == 0
    want, got = per_step.compute(), deferred.compute()
    assert set(want) == set(got) == {"train/acc1", "train/acc5", "train/acc1_macro"}
    for name in want:
        assert float(got[name]) == pytest.approx(float(want[name]), abs=1e-6), name
