"""The bare loop ``bench train`` compares the real loop with: the same model, no Lightning, no callbacks, no logging.

A copy of the run's classifier (compiled the same way: a compiled forward is copied with it), SGD-Nesterov with the
kernels ``GLSimLitModule.configure_optimizers`` picks, global-norm clipping at 1.0, the run's autocast (a GradScaler
under fp16). Two windows:

- ``same``: one batch already on the device, every step: the ceiling.
- ``fed``: each step takes the next batch of a train loader built by the run's own datamodule, moves it to the device
  and finishes it as the datamodule does (``on_after_batch_transfer``); the time spent in ``next(loader)`` is kept
  apart. The loader's work between two steps slows the steps themselves (caches, allocator), so the real loop
  without its loader time compares with this window's step time without its loader time.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from typing import Any

import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from torch import nn

__all__ = ["BareLoop", "autocast_for"]


def autocast_for(device: torch.device, precision: str) -> Any:
    """The autocast context of a Lightning precision string (none for the 32-bit ones)."""
    if precision.startswith("bf16"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision.startswith("16"):
        return torch.autocast(device.type, dtype=torch.float16)
    return nullcontext()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class BareLoop:
    """Bare training steps of a copy of ``net``; each window returns milliseconds per step."""

    def __init__(self, net: nn.Module, precision: str, device: torch.device, batch: int, size: int,
                 num_classes: int) -> None:  # fmt: skip
        self.net = copy.deepcopy(net).to(device).train()
        self.net.zero_grad(set_to_none=True)
        self.device, self.precision = device, precision
        kernel = {"fused": True} if device.type == "cuda" and not precision.startswith("16") else {}
        self.opt = torch.optim.SGD(self.net.parameters(), lr=1e-3, momentum=0.9, nesterov=True, **kernel)
        fp16 = precision.startswith("16") and device.type == "cuda"
        self.scaler = torch.amp.GradScaler(device.type, enabled=fp16)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=0.1)
        self.images = torch.randn(batch, 3, size, size, device=device)
        self.labels = torch.randint(0, num_classes, (batch,), device=device)
        self._batches: Iterator | None = None

    def step(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        with autocast_for(self.device, self.precision):
            loss = self.criterion(self.net(images).logits, labels)
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.opt)
        nn.utils.clip_grad_norm_(self.net.parameters(), 1.0)
        self.scaler.step(self.opt)
        self.scaler.update()

    def same(self, steps: int, warmup: int) -> float:
        """ms per step on one resident batch."""
        for _ in range(warmup):
            self.step(self.images, self.labels)
        _sync(self.device)
        start = time.perf_counter()
        for _ in range(steps):
            self.step(self.images, self.labels)
        _sync(self.device)
        return 1e3 * (time.perf_counter() - start) / steps

    def fed(self, loader: Iterable, finish: Callable[[Any], Any], steps: int, warmup: int) -> tuple[float, float]:
        """(ms per step without ``next(loader)``, ms per step in ``next(loader)``), batches from ``loader``."""

        def fetch() -> Any:
            if self._batches is None:
                self._batches = iter(loader)
            try:
                return next(self._batches)
            except StopIteration:  # the next epoch of the same loader
                self._batches = iter(loader)
                return next(self._batches)

        for _ in range(warmup):
            data = finish(move_data_to_device(fetch(), self.device))
            self.step(data[0], data[1])
        _sync(self.device)
        fetching, start = 0.0, time.perf_counter()
        for _ in range(steps):
            begun = time.perf_counter()
            raw = fetch()
            fetching += time.perf_counter() - begun
            data = finish(move_data_to_device(raw, self.device))
            self.step(data[0], data[1])
        _sync(self.device)
        seconds = time.perf_counter() - start
        return 1e3 * (seconds - fetching) / steps, 1e3 * fetching / steps
