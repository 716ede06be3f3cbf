"""Measurements inside one ``bench train`` run: a callback on the real Lightning loop and the bare-loop ceiling.

Windows of the Lightning run, in order, after ``warmup`` steps (compilation, CUDA-graph recording, loader start):
1. ``steps`` timed steps: one ``cuda.synchronize`` at each end, nothing in between (the loop runs as users run it).
2. ``profile_steps`` under ``torch.profiler`` (CUDA activity): GPU busy share = union of kernel/memcpy intervals
   / wall time of the window (the profiler's own overhead can only lower it).
3. ``sync_steps`` under ``torch.cuda.set_sync_debug_mode("warn")``: host syncs per step (``.item()``,
   blocking copies; it does not see ``torch.cuda.synchronize``).
Then the callback stops the fit.
"""

from __future__ import annotations

import json
import time
import warnings
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..utils.compile import compile_classifier

__all__ = ["StepProbe", "bare_loop", "busy_share", "matmul_peak_tflops", "train_step_flops"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def busy_share(intervals: list[tuple[float, float]], wall_us: float) -> float:
    """Share of ``wall_us`` covered by the union of (start, end) intervals in microseconds."""
    covered, end = 0.0, float("-inf")
    for start, stop in sorted(intervals):
        if stop <= end:
            continue
        covered += stop - max(start, end)
        end = stop
    return covered / wall_us if wall_us > 0 else 0.0


class StepProbe(L.Callback):
    """Times, profiles and sync-counts the steady state of a fit, writes ``out`` (JSON) and stops the fit."""

    def __init__(self, out: str, warmup: int = 30, steps: int = 100, profile_steps: int = 10, sync_steps: int = 5):
        self.out, self.warmup, self.steps = Path(out), warmup, steps
        self.profile_steps, self.sync_steps = profile_steps, sync_steps
        self.result: dict[str, Any] = {}
        self._start = self._t0 = self._wall0 = 0.0
        self._prof: Any = None
        self._caught: Any = None
        self._records: list[Any] = []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(pl_module.device)
        self._start = time.perf_counter()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.out.is_file():  # the data ran out (or the fit ended) before the windows did
            raise RuntimeError(f"bench train: the fit ended at step {trainer.global_step}, before warmup + steps + "
                               f"profile + sync = {self.warmup + self.steps + self.profile_steps + self.sync_steps}; "
                               "give more images (--images) or fewer steps")  # fmt: skip

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, idx: int) -> None:
        step, device = trainer.global_step, pl_module.device
        cuda = device.type == "cuda"
        if step == self.warmup:
            _sync(device)
            self._t0 = time.perf_counter()
            self.result["warmup_s"] = self._t0 - self._start  # compilation and CUDA-graph recording included
        elif step == self.warmup + self.steps:
            _sync(device)
            seconds = time.perf_counter() - self._t0
            batch_size = int(batch[0].shape[0])
            self.result.update(steps=self.steps, batch=batch_size, ms_per_step=1e3 * seconds / self.steps,
                               img_s=self.steps * batch_size / seconds)  # fmt: skip
            if cuda and self.profile_steps:
                self._prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA])
                self._prof.__enter__()
                self._wall0 = time.perf_counter()
        elif step == self.warmup + self.steps + self.profile_steps and self._prof is not None:
            _sync(device)
            wall_us = 1e6 * (time.perf_counter() - self._wall0)
            self._prof.__exit__(None, None, None)
            spans = [(e.time_range.start, e.time_range.end) for e in self._prof.events()
                     if e.device_type == torch.autograd.DeviceType.CUDA]  # fmt: skip
            self.result["gpu_busy"] = busy_share(spans, wall_us)
            self._prof = None
        if cuda and self.sync_steps and step == self.warmup + self.steps + self.profile_steps:
            self._caught = warnings.catch_warnings(record=True)
            self._records = self._caught.__enter__()
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
        if step >= self.warmup + self.steps + self.profile_steps + (self.sync_steps if cuda else 0):
            self._finish(trainer, pl_module)

    def _finish(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._caught is not None:
            torch.cuda.set_sync_debug_mode(0)
            self._caught.__exit__(None, None, None)
            syncs = [str(r.message) for r in self._records if "synchroniz" in str(r.message)]
            self.result["syncs_per_step"] = len(syncs) / self.sync_steps
            self.result["sync_examples"] = sorted({s.splitlines()[0][:160] for s in syncs})[:5]
            self._caught = None
        if pl_module.device.type == "cuda":
            self.result["peak_mem_gib"] = torch.cuda.max_memory_allocated(pl_module.device) / 2**30
        self.result["precision"] = str(trainer.precision)
        self.out.write_text(json.dumps(self.result, indent=2))
        trainer.should_stop = True


def _autocast(device: torch.device, precision: str) -> Any:
    if precision.startswith("bf16"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision.startswith("16"):
        return torch.autocast(device.type, dtype=torch.float16)
    return nullcontext()


def train_step_flops(net: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """FLOPs (2 per multiply-add) of one eager forward + backward, counted by torch's FlopCounterMode."""
    counter = FlopCounterMode(display=False)
    with counter:
        nn.functional.cross_entropy(net(images).logits, labels).backward()
    net.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def matmul_peak_tflops(device: torch.device, precision: str, n: int = 8192, repeats: int = 20) -> float | None:
    """Measured dense matmul TFLOP/s at the run's precision (the MFU denominator); None off CUDA."""
    if device.type != "cuda":
        return None
    dtype = {"bf": torch.bfloat16, "16": torch.float16}.get(precision[:2], torch.float32)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync(device)
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e12


def bare_loop(net: nn.Module, batch: int, size: int, num_classes: int, precision: str, compile_mode: str | None,
              steps: int, warmup: int, device: torch.device) -> dict[str, float]:  # fmt: skip
    """The ceiling without Lightning and without a loader: the same model, SGD-Nesterov (kernels as in
    ``GLSimLitModule.configure_optimizers``), global
    norm clipping at 1.0, the run's autocast (GradScaler under fp16), inputs already on the device."""
    net = net.to(device).train()
    if compile_mode:
        compile_classifier(net, compile_mode, static_batch=batch)
    kernel = {"fused": True} if device.type == "cuda" and not precision.startswith("16") else {}
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9, nesterov=True, **kernel)
    scaler = torch.amp.GradScaler(device.type, enabled=precision.startswith("16") and device.type == "cuda")
    images = torch.randn(batch, 3, size, size, device=device)
    labels = torch.randint(0, num_classes, (batch,), device=device)
    criterion = nn.CrossEntropyLoss(label_smoothing=0.1)

    def step() -> None:
        with _autocast(device, precision):
            loss = criterion(net(images).logits, labels)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        scaler.step(opt)
        scaler.update()

    for _ in range(warmup):
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    seconds = time.perf_counter() - start
    return {"bare_img_s": steps * batch / seconds, "bare_ms_per_step": 1e3 * seconds / steps}
