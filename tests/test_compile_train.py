"""Compiled training on CPU (inductor): same losses as eager, official parity, the train entry point with
``compile=true``; the sync-free train metrics; ``dataset.num_workers=auto``."""

from __future__ import annotations

import traceback
import warnings
from pathlib import Path
from typing import ClassVar

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from glsim_pl.data.workers import MAX_AUTO_WORKERS, auto_num_workers, resolve_num_workers
from glsim_pl.errors import UserError
from glsim_pl.models import crop_and_resize, load_official_checkpoint
from glsim_pl.training.metrics import build_metrics
from glsim_pl.training.module import GLSimLitModule
from glsim_pl.utils.compile import compile_classifier
from tests.helpers.checkpoints import tiny_classifier


def test_auto_workers_follow_cpus_per_device() -> None:
    assert auto_num_workers(cpus=2, processes=1) == 1  # a 2-core machine: one CPU trains, one decodes
    assert auto_num_workers(cpus=16, processes=1) == 15
    assert auto_num_workers(cpus=16, processes=2) == 7
    assert auto_num_workers(cpus=128, processes=1) == MAX_AUTO_WORKERS
    assert auto_num_workers(cpus=1, processes=1) == 0
    assert resolve_num_workers(3) == 3
    for bad in ("many", -1, 2.5, True):
        with pytest.raises(UserError, match="dataset.num_workers"):
            resolve_num_workers(bad)


def test_auto_workers_never_trigger_the_oversubscription_warning() -> None:
    loader = DataLoader(range(4), num_workers=resolve_num_workers("auto"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loader.check_worker_number_rationality()


def test_sync_free_train_metrics_equal_torchmetrics(monkeypatch: pytest.MonkeyPatch) -> None:
    """Counting the train accuracies at the epoch end (and skipping value checks) gives torchmetrics' own numbers."""
    net = {"backbone": "vit_tiny_patch16_224", "img_size": 32,
           "backbone_kwargs": {"patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2}}  # fmt: skip
    module = GLSimLitModule(num_classes=7, net=net)
    reference = build_metrics(7, "train/")
    logged: dict[str, torch.Tensor] = {}
    monkeypatch.setattr(module, "log_dict", lambda values, **_: logged.update(values))
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        logits, labels = torch.randn(6, 7, generator=gen), torch.randint(0, 7, (6,), generator=gen)
        module._train_predictions.append(logits, labels)
        reference.update(logits, labels)
    module.on_train_epoch_end()
    want = reference.compute()
    assert set(logged) == set(want) == {"train/acc1", "train/acc5", "train/acc1_macro"}
    for key, value in want.items():  # logged as metric objects (Lightning computes them, synced over the ranks)
        got = logged[key].compute() if hasattr(logged[key], "compute") else logged[key]
        torch.testing.assert_close(got, value)
    assert len(module._train_predictions) == 0


@pytest.mark.slow
def test_twenty_compiled_training_steps_match_eager() -> None:
    """SGD-Nesterov with clipping, the paper's step, 20 times: compiled (inductor) vs eager losses within 1e-3."""
    losses = {}
    for name in ("eager", "compiled"):
        net = tiny_classifier("glsim", depth=1, seed=3).train()
        if name == "compiled":
            compile_classifier(net, "default", static_batch=8)
        opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, nesterov=True, foreach=True)
        criterion = nn.CrossEntropyLoss(label_smoothing=0.1)
        gen = torch.Generator().manual_seed(5)
        x, y = torch.randn(8, 3, 32, 32, generator=gen), torch.randint(0, 10, (8,), generator=gen)
        losses[name] = []
        with torch._inductor.config.patch(compile_threads=1):
            for _ in range(20):  # one batch, fitted: the loss falls, so the comparison is not between constants
                loss = criterion(net(x).logits, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
                opt.step()
                losses[name].append(loss.item())
    eager, compiled = torch.tensor(losses["eager"]), torch.tensor(losses["compiled"])
    assert eager[-1] < 0.9 * eager[0]
    assert ((compiled - eager).abs() / eager.abs()).max() < 1e-3, (eager, compiled)


@pytest.mark.slow
def test_official_parity_holds_under_compile(official_fixture: dict) -> None:
    model = load_official_checkpoint(official_fixture["checkpoint"]).eval()
    images = official_fixture["images"]
    with torch.no_grad():
        eager = model(images)
        compile_classifier(model, "default", static_batch=images.shape[0])
        with torch._inductor.config.patch(compile_threads=1):
            out = model(images)
    torch.testing.assert_close(out.logits, official_fixture["logits"], atol=1e-4, rtol=0)
    assert torch.equal(out.boxes, eager.boxes)
    crops = crop_and_resize(images, out.boxes, tuple(images.shape[-2:]))
    torch.testing.assert_close(crops, official_fixture["crops"], atol=1e-4, rtol=0)


@pytest.mark.slow
def test_train_entry_point_with_compile_true(make_cfg, tmp_path: Path) -> None:
    """``python -m glsim_pl.train compile=true`` on CPU: compiled graphs run, checkpoints keep plain keys."""
    from glsim_pl.train import train

    cfg = make_cfg("compile=true", "model.backbone_kwargs.depth=1", "logger=none", "dataset.train_size=40",
                   "dataset.test_size=10")  # fmt: skip
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    with torch._inductor.config.patch(compile_threads=1):
        metrics = train(cfg)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 2  # train-mode and eval-mode graphs
    assert 0.0 <= metrics["test/acc1"] <= 1.0
    ckpt = torch.load(metrics["best_ckpt"], map_location="cpu", weights_only=True)
    assert not any("_orig_mod" in k for k in ckpt["state_dict"])
    fresh = GLSimLitModule.load_from_checkpoint(metrics["best_ckpt"], map_location="cpu", weights_only=True)
    assert set(fresh.state_dict()) == set(ckpt["state_dict"])


class HostReadProbe(L.Callback):
    """Counts Python-level host reads of tensors (``.item()``, ``.tolist()``, ``bool/int/float(tensor)``) between
    ``on_train_batch_start`` and ``on_train_batch_end``: forward, loss, metrics, logging, backward, clipping and the
    optimizer step. On CUDA each of them is a device sync; on CPU they are the part of a sync a test can see."""

    NAMES = ("item", "tolist", "__bool__", "__int__", "__float__")
    reads: ClassVar[list[str]] = []
    steps: ClassVar[list[int]] = []

    def __init__(self) -> None:
        self._saved = {name: getattr(torch.Tensor, name) for name in self.NAMES}

    def on_train_batch_start(self, *args) -> None:
        for name, original in self._saved.items():

            def wrapper(tensor, *a, _name=name, _original=original):
                HostReadProbe.reads.append(f"{_name}: {traceback.format_stack(limit=3)[0].strip()}")
                return _original(tensor, *a)

            setattr(torch.Tensor, name, wrapper)

    def on_train_batch_end(self, *args) -> None:
        for name, original in self._saved.items():
            setattr(torch.Tensor, name, original)
        HostReadProbe.steps.append(1)


def test_training_step_reads_nothing_back_to_the_host(make_cfg) -> None:
    """The real Lightning step (GLSimLitModule, clipping 1.0, SGD) makes no host read. The divergence guard's
    periodic check (one read every trainer.log_every_n_steps steps, by design) is switched off here."""
    from glsim_pl.train import train

    probe = HostReadProbe()  # it sees a read when there is one
    probe.on_train_batch_start()
    bool(torch.ones(1).sum() > 0)
    probe.on_train_batch_end()
    assert len(HostReadProbe.reads) == 1 and HostReadProbe.reads[0].startswith("__bool__")
    HostReadProbe.reads.clear()
    HostReadProbe.steps.clear()
    cfg = make_cfg("optim.optimizer=sgd", "test=false", "logger=none", "guard.nonfinite=off",
                   "+trainer.limit_train_batches=3", "+trainer.limit_val_batches=0", "+trainer.num_sanity_val_steps=0",
                   "model.backbone_kwargs.depth=1",
                   "+callbacks.host_reads._target_=tests.test_compile_train.HostReadProbe")  # fmt: skip
    train(cfg)
    assert len(HostReadProbe.steps) == 3
    assert HostReadProbe.reads == [], HostReadProbe.reads[:5]
