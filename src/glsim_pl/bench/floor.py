"""Lightning's own floor: the smallest LightningModule around the same tiny model, against the bare loop.

    python -m glsim_pl.bench floor                       # tiny ViT (2 blocks, width 32), 64 px, batch 8, CPU
    python -m glsim_pl.bench floor --batch 16 --callbacks 6

The module's ``training_step`` is forward + cross-entropy and returns the loss; automatic optimisation, SGD-Nesterov,
``gradient_clip_val=1.0``; no logging, no metrics, no scheduler, no checkpointing, no progress bar; batches come
from a list already in memory. ``--callbacks N`` adds N callbacks whose six per-step hooks do nothing.
``--per-step log,metrics`` adds to the minimal module a ``self.log`` of the loss and torchmetrics top-1 / top-5
updates every step (what a training step that logs and counts per step pays). ``--module glsim`` runs
``GLSimLitModule`` (its loss and accuracy bookkeeping, optimizer groups, LR schedule) around the same model instead.
The bare loop (the same model's copy, :class:`glsim_pl.bench._bare_loop.BareLoop`) runs between the timed Lightning
windows, in the same process, ``--rounds`` times; the ratio is taken per round, then the median. Whatever separates
``bench train``'s framework ratio from this one is ours (module bookkeeping, our callbacks, logging, the guard);
this one is Lightning's.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import lightning as L
import torch
from torch import nn

from glsim_pl.bench._bare_loop import BareLoop
from glsim_pl.bench.gpu import TINY_BACKBONE
from glsim_pl.models import build_classifier

__all__ = ["main"]


class _Minimal(L.LightningModule):
    """Forward + loss; ``per_step``: ``log`` adds ``self.log`` of the loss (on_step, on_epoch, prog_bar) every step,
    ``metrics`` a torchmetrics top-1 and top-5 update every step (value checks off): what a step costs with them."""

    def __init__(self, net: nn.Module, per_step: frozenset[str] = frozenset()) -> None:
        super().__init__()
        self.net, self.criterion, self.per_step = net, nn.CrossEntropyLoss(label_smoothing=0.1), per_step
        if "metrics" in per_step:
            from glsim_pl.training.metrics import build_metrics

            self.metrics = build_metrics(200, "train/")
            for metric in self.metrics.values():
                metric.validate_args = False

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        logits = self.net(batch[0]).logits
        loss = self.criterion(logits, batch[1])
        if "metrics" in self.per_step:
            self.metrics["train/acc1"].update(logits.detach(), batch[1])
            self.metrics["train/acc5"].update(logits.detach(), batch[1])
        if "log" in self.per_step:
            self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(batch[1]))
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=1e-3, momentum=0.9, nesterov=True)


class _Resident:
    """The same few in-memory batches over and over (a loader with no work in it)."""

    def __init__(self, batches: list, length: int) -> None:
        self.batches, self.length = batches, length

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Any:
        return (self.batches[i % len(self.batches)] for i in range(self.length))


class _Idle(L.Callback):
    def on_train_batch_start(self, *args: Any) -> None: ...
    def on_before_backward(self, *args: Any) -> None: ...
    def on_after_backward(self, *args: Any) -> None: ...
    def on_before_optimizer_step(self, *args: Any) -> None: ...
    def on_before_zero_grad(self, *args: Any) -> None: ...
    def on_train_batch_end(self, *args: Any) -> None: ...


class _Rounds(L.Callback):
    """Times windows of ``steps`` Lightning steps; runs the bare loop between them."""

    def __init__(self, bare: BareLoop, warmup: int, steps: int, rounds: int) -> None:
        self.bare, self.warmup, self.steps, self.rounds = bare, warmup, steps, rounds
        self.lightning: list[float] = []
        self.bare_ms: list[float] = []
        self._t0 = 0.0

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        step = trainer.global_step
        if step < self.warmup or (step - self.warmup) % self.steps:
            return
        if step > self.warmup:
            self.lightning.append(1e3 * (time.perf_counter() - self._t0) / self.steps)
            self.bare_ms.append(self.bare.same(self.steps, self.warmup if len(self.bare_ms) == 0 else 5))
            if len(self.lightning) == self.rounds:
                trainer.should_stop = True
        self._t0 = time.perf_counter()


def _module(which: str, method: str, net: nn.Module, size: int, per_step: frozenset[str]) -> L.LightningModule:
    if which == "minimal":
        return _Minimal(net, per_step)
    from glsim_pl.training.module import GLSimLitModule

    net_kwargs = {"backbone": "vit_tiny_patch16_224", "method": method, "img_size": size,
                  "backbone_kwargs": dict(TINY_BACKBONE), "drop_path_rate": 0.1}  # fmt: skip
    module = GLSimLitModule(num_classes=200, net=net_kwargs, optim={"warmup_steps": 0})
    module.net = net  # the very model the bare loop copied
    return module


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m glsim_pl.bench floor", description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--callbacks", type=int, default=0, help="idle callbacks to add")
    parser.add_argument("--method", default="vit", choices=["vit", "glsim"])
    parser.add_argument("--module", default="minimal", choices=["minimal", "glsim"], help="the LightningModule")
    parser.add_argument("--per-step", default="", help="minimal module: comma list of log, metrics")
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args(argv)
    per_step = frozenset(filter(None, args.per_step.split(",")))
    if per_step - {"log", "metrics"} or (per_step and args.module != "minimal"):
        raise SystemExit(f"error: --per-step {args.per_step!r}: expected log and/or metrics, with --module minimal")
    torch.manual_seed(0)
    net = build_classifier(args.method, backbone="vit_tiny_patch16_224", num_classes=200, img_size=args.size,
                           backbone_kwargs=dict(TINY_BACKBONE),
                           drop_path_rate=0.1)  # fmt: skip
    batches = [(torch.randn(args.batch, 3, args.size, args.size), torch.randint(0, 200, (args.batch,)))
               for _ in range(8)]  # fmt: skip
    total = args.warmup + args.steps * args.rounds + 1
    bare = BareLoop(net, "32-true", torch.device("cpu"), args.batch, args.size, 200)
    timer = _Rounds(bare, args.warmup, args.steps, args.rounds)
    trainer = L.Trainer(accelerator="cpu", max_steps=total, gradient_clip_val=1.0, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[timer, *(_Idle() for _ in range(args.callbacks))])  # fmt: skip
    module = _module(args.module, args.method, net, args.size, per_step)
    trainer.fit(module, train_dataloaders=_Resident(batches, total))
    ratios = [b / real for b, real in zip(timer.bare_ms, timer.lightning, strict=True)]
    lightning = statistics.median(timer.lightning)
    extra = f", per step: {'+'.join(sorted(per_step))}" if per_step else ""
    print(f"{args.method} ({args.module} module{extra}), {args.size} px, batch {args.batch}, {args.callbacks} idle "
          f"callbacks, CPU, torch "
          f"{torch.__version__}, lightning {L.__version__}: Lightning {lightning:.2f} ms/step, "
          f"bare {statistics.median(timer.bare_ms):.2f} ms/step, bare / Lightning {statistics.median(ratios):.3f} "
          f"(median of {len(ratios)} rounds of {args.steps} steps; per round "
          f"{', '.join(f'{r:.2f}' for r in ratios)})")  # fmt: skip


if __name__ == "__main__":
    main()
