"""What a fine-tuning regime costs to train: ``python -m glsim_pl.bench train --regimes all``.

Every regime's classifier is built from the real configs (``model=``, ``method=``, ``finetune=<regime>``, random init)
with the optimizer training builds (``training.optim.build_optimizer``, only the parameters that train), and its bare
training steps (forward, loss, backward, clipping, optimizer step; no Lightning, no data loading) are timed in one
process, in alternation (full, linear, lora, ..., full, linear, ...): load on the machine slows all alike, so the
ratios to ``full`` come from one run. Memory per regime: on CUDA the peak allocated during the steps above what the
built model and optimizer hold (``torch.cuda.max_memory_allocated``); on CPU each regime runs its steps in a child
process of its own, which reports its peak resident set (``resource.getrusage``) and the rise of that peak over the
resident set after one forward pass without gradients (it leaves the kernel libraries' buffers and the allocator's
arenas in place, so what remains is what training adds: activations kept for backward, gradients, optimizer state).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from glsim_pl.analysis.table import format_params

__all__ = ["build_regime", "main", "render_regimes", "step_fn"]


def build_regime(args: argparse.Namespace, method: str, regime: str) -> tuple[nn.Module, torch.optim.Optimizer, int]:
    """(classifier, optimizer, trainable parameters) of one regime, from the composed configs."""
    from omegaconf import OmegaConf

    from glsim_pl.bench._compose import TINY, compose_train
    from glsim_pl.config.groups import module_kwargs
    from glsim_pl.models.finetune import param_counts
    from glsim_pl.training.module import GLSimLitModule
    from glsim_pl.training.optim import build_optimizer

    overrides = [*(TINY if args.tiny else [f"model={args.model}", "model.pretrained=false"]), f"method={method}",
                 f"finetune={regime}", f"dataset.num_classes={args.classes}", f"dataset.image_size={args.size}",
                 "optim.optimizer=adamw", *args.overrides]  # fmt: skip
    cfg = compose_train(overrides, Path(tempfile.gettempdir()) / "glsim_bench_regimes")
    net = GLSimLitModule(**module_kwargs(cfg, [str(i) for i in range(args.classes)])).net.to(args.device).train()
    optimizer = build_optimizer(net, OmegaConf.to_container(cfg.optim, resolve=True), {})
    return net, optimizer, param_counts(net)[0]


def step_fn(net: nn.Module, optimizer: torch.optim.Optimizer, batch: int, size: int, classes: int, device: str):
    """A function running one bare training step on a resident random batch."""
    images = torch.randn(batch, 3, size, size, device=device)
    labels = torch.randint(0, classes, (batch,), device=device)
    criterion = nn.CrossEntropyLoss(label_smoothing=0.1)
    trained = [p for p in net.parameters() if p.requires_grad]

    def step() -> None:
        loss = criterion(net(images).logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(trained, 1.0)
        optimizer.step()

    return step


def _rss_now_mib() -> float:
    """The current resident set (``/proc/self/statm``), MiB."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / 2**20


def _memory_child(args: argparse.Namespace, method: str, regime: str) -> dict[str, float]:
    """In this (child) process: build one regime, run its steps, report the peak resident set."""
    net, optimizer, _ = build_regime(args, method, regime)
    step = step_fn(net, optimizer, args.batch, args.size, args.classes, args.device)
    with torch.no_grad():  # the kernel libraries' buffers and the allocator's arenas exist before the baseline
        net(torch.randn(args.batch, 3, args.size, args.size))
    idle = _rss_now_mib()
    for _ in range(max(2, args.warmup + 1)):  # the optimizer's state exists after the first step
        step()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"peak_rss_mib": round(peak, 1), "step_mib": round(max(0.0, peak - idle), 1)}


def _cpu_memory(args: argparse.Namespace, method: str, regime: str) -> dict[str, float] | dict[str, str]:
    cmd = [sys.executable, "-m", "glsim_pl.bench", "train", "--memory-of", f"{method}:{regime}",
           *_shared_flags(args), "--", *args.overrides]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, check=False)
    if proc.returncode:
        return {"error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _shared_flags(args: argparse.Namespace) -> list[str]:
    flags = ["--model", args.model, "--batch", args.batch, "--size", args.size, "--classes", args.classes,
             "--warmup", args.warmup, "--device", args.device]  # fmt: skip
    return [str(f) for f in flags] + (["--tiny"] if args.tiny else [])


def _gpu_memory(net: nn.Module, step: Any) -> dict[str, float]:
    torch.cuda.synchronize()
    step()  # the optimizer's state exists after the first step
    torch.cuda.synchronize()
    held = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    return {"peak_alloc_mib": round(peak / 2**20, 1), "step_mib": round((peak - held) / 2**20, 1)}


def _interleaved_rounds(steps: dict[str, Any], rounds: int, per_window: int, device: str) -> dict[str, list[float]]:
    """Seconds of ``per_window`` steps of each regime in every round, the regimes in alternation."""
    sync = torch.cuda.synchronize if device != "cpu" else (lambda: None)
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            sync()
            start = time.perf_counter()
            for _ in range(per_window):
                step()
            sync()
            times[name].append(time.perf_counter() - start)
    return times


def measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    """One row per (method, regime): trainable parameters, img/s and ms/step (interleaved), memory."""
    from glsim_pl.models.finetune import REGIMES

    regimes, rows = list(REGIMES) if args.regimes == "all" else args.regimes.split(","), []
    for method in args.methods.split(","):
        built = {r: build_regime(args, method, r) for r in regimes}
        steps = {r: step_fn(net, opt, args.batch, args.size, args.classes, args.device) for r, (net, opt, _) in
                 built.items()}  # fmt: skip
        memory = {r: (_gpu_memory(built[r][0], steps[r]) if args.device != "cpu" else _cpu_memory(args, method, r))
                  for r in regimes}  # fmt: skip
        for _ in range(args.warmup + 1):  # untimed: peft's first call, the allocator's first pages
            for step in steps.values():
                step()
        times = _interleaved_rounds(steps, args.rounds, args.steps, args.device)
        full = times.get("full")
        for regime in regimes:
            ms = 1e3 * statistics.median(times[regime]) / args.steps
            # each round's full / regime time: two windows timed within seconds of each other, so load on the
            # machine that lasts longer cancels out; the median over rounds drops the rounds a short burst hit
            speedup = statistics.median(f / t for f, t in zip(full, times[regime], strict=True)) if full else None
            rows.append({"method": method, "regime": regime, "trainable": built[regime][2], "ms_per_step": ms,
                         "img_s": args.batch / (ms / 1e3), "speedup": speedup, **memory[regime]})  # fmt: skip
        del built, steps
    return rows


def render_regimes(rows: list[dict[str, Any]], header: str) -> str:
    """Markdown: one row per (method, regime), img/s and memory as ratios to the same method's ``full`` row."""
    lines = [header, "", "| method | regime | trainable params | img/s | ms/step | img/s / full | peak memory (MiB) "
             "| step memory (MiB) | step memory / full |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    full = {r["method"]: r for r in rows if r["regime"] == "full"}
    for r in rows:
        base = full.get(r["method"])
        peak = r.get("peak_rss_mib", r.get("peak_alloc_mib"))
        speed = f"{r['speedup']:.2f}" if r.get("speedup") else "n/a"
        mem = (
            f"{r['step_mib'] / base['step_mib']:.2f}" if base and r.get("step_mib") and base.get("step_mib") else "n/a"
        )
        shown = f"{peak:.0f}" if peak is not None else f"failed: {r.get('error', '?')}"
        step = f"{r['step_mib']:.0f}" if r.get("step_mib") is not None else "n/a"
        params = format_params(r["trainable"])
        lines.append(f"| {r['method']} | {r['regime']} | {params} | {r['img_s']:.1f} "
                     f"| {r['ms_per_step']:.0f} | {speed} | {shown} | {step} | {mem} |")  # fmt: skip
    return "\n".join(lines)


def main(args: argparse.Namespace) -> None:
    """``--memory-of method:regime``: the child's one memory row (JSON); otherwise the whole table."""
    if args.memory_of:
        method, regime = args.memory_of.split(":")
        print(json.dumps(_memory_child(args, method, regime)))
        return
    torch.manual_seed(0)
    rows = measure(args)
    memory = "peak CUDA memory allocated" if args.device != "cpu" else "peak RSS of a child process per regime"
    device = torch.cuda.get_device_name() if args.device != "cpu" else f"CPU, {torch.get_num_threads()} threads"
    header = (f"device: {device}; torch {torch.__version__}; model {'tiny' if args.tiny else args.model} (random "
              f"init), {args.size} px, batch {args.batch}, fp32, AdamW; median of {args.rounds} interleaved rounds of "
              f"{args.steps} step(s) after {args.warmup + 1} untimed; img/s / full: median over the rounds of each "
              f"round's ratio; memory: {memory}")  # fmt: skip
    text = render_regimes(rows, header)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "regimes.md").write_text(text + "\n")
    (args.out / "regimes.json").write_text(json.dumps({"header": header, "rows": rows}, indent=2))
