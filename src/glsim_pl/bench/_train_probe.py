"""Measurements inside one ``bench train`` run: a callback on the real Lightning loop, with the bare-loop windows
(:mod:`glsim_pl.bench._bare_loop`) run in between, so that both see the machine in the same state.

After ``warmup`` steps (compilation, CUDA-graph recording, loader start), ``rounds`` times:
1. ``steps`` timed steps of the real loop: one ``cuda.synchronize`` at each end, nothing in between (the loop runs as
   users run it). :class:`PartTimer` (the fit's Lightning profiler) adds up the wall time of every action Lightning
   profiles (each hook, the loader's ``next``, forward, backward, optimizer step) in these steps.
2. Inside the next step's ``on_train_batch_start`` (Lightning waits): the bare loop, ``steps`` steps on one resident
   batch, then ``steps`` steps fed by a train loader of the run's datamodule.
Each figure is the median over rounds; the framework ratio is taken per round, then the median. Then, on CUDA,
``profile_steps`` under ``torch.profiler`` (GPU busy share = union of kernel/memcpy intervals / wall time; the
profiler's own overhead can only lower it) and ``sync_steps`` under ``torch.cuda.set_sync_debug_mode("warn")`` (host
syncs per step: ``.item()``, blocking copies; it does not see ``torch.cuda.synchronize``). Then the fit stops.
"""

from __future__ import annotations

import json
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.profilers import Profiler
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from glsim_pl.bench._bare_loop import BareLoop

__all__ = ["PartTimer", "StepProbe", "busy_share", "matmul_peak_tflops", "train_step_flops"]


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


class PartTimer(Profiler):
    """A Lightning profiler that only sums wall time per action while ``on`` (two ``perf_counter`` calls an action).

    Actions nest (``run_training_batch`` holds ``training_step`` holds the module's hook), so the totals overlap; the
    loader's own action, ``[_TrainingEpochLoop].train_dataloader_next``, lies outside all the others.
    """

    LOADER = "[_TrainingEpochLoop].train_dataloader_next"

    def __init__(self) -> None:
        super().__init__()
        self.on = False
        self.totals: dict[str, float] = {}
        self._open: dict[str, float] = {}

    def start(self, action_name: str) -> None:
        if self.on:
            self._open[action_name] = time.perf_counter()

    def stop(self, action_name: str) -> None:
        begun = self._open.pop(action_name, None)
        if begun is not None:
            self.totals[action_name] = self.totals.get(action_name, 0.0) + time.perf_counter() - begun

    def pause(self) -> None:
        """Stop adding up; actions still open are dropped (the hook that pauses must not count what follows)."""
        self.on = False
        self._open.clear()

    def per_step_ms(self, steps: int) -> dict[str, float]:
        """Milliseconds per step of every action seen, largest first."""
        return {k: 1e3 * v / steps for k, v in sorted(self.totals.items(), key=lambda kv: -kv[1])}


class StepProbe(L.Callback):
    """Times (with the bare loop in between), profiles and sync-counts a fit, writes ``out`` (JSON), stops the fit.

    Args:
        out: JSON file of the results.
        warmup, steps, rounds: untimed steps first, then ``rounds`` x (``steps`` timed real steps + bare windows).
        profile_steps, sync_steps: the CUDA windows after the rounds.
        bare: run the bare-loop windows (each of ``steps`` steps).
    """

    def __init__(self, out: str, warmup: int = 30, steps: int = 100, rounds: int = 3, profile_steps: int = 10,
                 sync_steps: int = 5, bare: bool = True) -> None:  # fmt: skip
        self.out, self.warmup, self.steps, self.rounds = Path(out), warmup, steps, max(int(rounds), 1)
        self.profile_steps, self.sync_steps, self.bare = profile_steps, sync_steps, bare
        self.result: dict[str, Any] = {}
        self._rounds: dict[str, list[float]] = {}
        self._start = self._t0 = self._wall0 = 0.0
        self._loader0 = 0.0
        self._prof: Any = None
        self._caught: Any = None
        self._records: list[Any] = []
        self._bare: BareLoop | None = None
        self._bare_loader: Any = None

    @property
    def _timed_end(self) -> int:
        return self.warmup + self.rounds * self.steps

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(pl_module.device)
        self._start = time.perf_counter()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.out.is_file():  # the data ran out (or the fit ended) before the windows did
            raise RuntimeError(f"bench train: the fit ended at step {trainer.global_step}, before warmup + rounds x "
                               f"steps + profile + sync = {self._timed_end + self.profile_steps + self.sync_steps}; "
                               "give more images (--images) or fewer steps")  # fmt: skip

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, idx: int) -> None:
        step, device = trainer.global_step, pl_module.device
        cuda = device.type == "cuda"
        if step == self.warmup:
            self.result["warmup_s"] = time.perf_counter() - self._start  # compilation and CUDA graphs included
            self._open_window(trainer, device)
        elif self.warmup < step <= self._timed_end and (step - self.warmup) % self.steps == 0:
            self._close_window(trainer, device, batch)
            if self.bare:
                self._bare_windows(trainer, pl_module)
            if step < self._timed_end:
                self._open_window(trainer, device)
            else:
                self._summarise(trainer)
                if cuda and self.profile_steps:
                    self._prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA])
                    self._prof.__enter__()
                    self._wall0 = time.perf_counter()
        elif step == self._timed_end + self.profile_steps and self._prof is not None:
            _sync(device)
            wall_us = 1e6 * (time.perf_counter() - self._wall0)
            self._prof.__exit__(None, None, None)
            spans = [(e.time_range.start, e.time_range.end) for e in self._prof.events()
                     if e.device_type == torch.autograd.DeviceType.CUDA]  # fmt: skip
            self.result["gpu_busy"] = busy_share(spans, wall_us)
            self._prof = None
        if cuda and self.sync_steps and step == self._timed_end + self.profile_steps:
            self._caught = warnings.catch_warnings(record=True)
            self._records = self._caught.__enter__()
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
        if step >= self._timed_end + self.profile_steps + (self.sync_steps if cuda else 0):
            self._finish(trainer, pl_module)

    # -- the timed rounds ------------------------------------------------------------------------------------------
    def _add(self, key: str, value: float) -> None:
        self._rounds.setdefault(key, []).append(value)

    def _open_window(self, trainer: L.Trainer, device: torch.device) -> None:
        _sync(device)
        if isinstance(trainer.profiler, PartTimer):
            self._loader0 = trainer.profiler.totals.get(PartTimer.LOADER, 0.0)
            trainer.profiler.on = True
        self._t0 = time.perf_counter()

    def _close_window(self, trainer: L.Trainer, device: torch.device, batch: Any) -> None:
        _sync(device)
        seconds = time.perf_counter() - self._t0
        self.result["batch"] = int(batch[0].shape[0])
        self._add("ms_per_step", 1e3 * seconds / self.steps)
        if device.type == "cuda" and "peak_mem_gib" not in self.result:  # the real loop's, before any bare copy
            self.result["peak_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        if isinstance(trainer.profiler, PartTimer):
            trainer.profiler.pause()
            loader = trainer.profiler.totals.get(PartTimer.LOADER, 0.0) - self._loader0
            self._add("loader_ms_per_step", 1e3 * loader / self.steps)

    def _bare_windows(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        datamodule = trainer.datamodule
        first = self._bare is None
        if first:
            image = self.result.get("batch", 1)
            size, classes = int(datamodule.image_size), int(datamodule.num_classes)
            self._bare = BareLoop(pl_module.net, str(trainer.precision), pl_module.device, image, size, classes)
            self._bare_loader = datamodule.train_dataloader()
        warmup = self.warmup if first else min(self.warmup, 5)  # compilation once; a few steps after the real loop
        self._add("bare_ms_per_step", self._bare.same(self.steps, warmup))
        finish = lambda b: datamodule.on_after_batch_transfer(b, 0)
        fed, fetch = self._bare.fed(self._bare_loader, finish, self.steps, warmup)
        self._add("bare_fed_ms_per_step", fed)
        self._add("bare_fed_loader_ms", fetch)
        if "loader_ms_per_step" in self._rounds:
            real = self._rounds["ms_per_step"][-1] - self._rounds["loader_ms_per_step"][-1]
            self._add("framework_ratio", fed / real)

    def _summarise(self, trainer: L.Trainer) -> None:
        medians = {k: statistics.median(v) for k, v in self._rounds.items()}
        batch = self.result["batch"]
        self.result.update(medians, steps=self.steps, rounds=self.rounds, per_round=self._rounds,
                           img_s=1e3 * batch / medians["ms_per_step"])  # fmt: skip
        if "bare_ms_per_step" in medians:
            self.result["bare_img_s"] = 1e3 * batch / medians["bare_ms_per_step"]
        if isinstance(trainer.profiler, PartTimer):
            self.result["parts_ms"] = trainer.profiler.per_step_ms(self.rounds * self.steps)
        self._bare = self._bare_loader = None  # free the copy (GPU memory) before the profile windows

    def _finish(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._caught is not None:
            torch.cuda.set_sync_debug_mode(0)
            self._caught.__exit__(None, None, None)
            syncs = [str(r.message) for r in self._records if "synchroniz" in str(r.message)]
            self.result["syncs_per_step"] = len(syncs) / self.sync_steps
            self.result["sync_examples"] = sorted({s.splitlines()[0][:160] for s in syncs})[:5]
            self._caught = None
        self.result["precision"] = str(trainer.precision)
        self.out.write_text(json.dumps(self.result, indent=2))
        trainer.should_stop = True


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
