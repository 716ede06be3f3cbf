"""The real training loop's speed: ``python -m glsim_pl.bench train`` (GPU: a few minutes; CPU: ``--tiny`` smoke run).

Each (method, compile) pair runs in its own process through ``glsim_pl.train.train`` itself (Hydra config,
datamodule, GLSimLitModule, Lightning Trainer, the loader's workers), with one extra callback that measures the
steady state (see :mod:`glsim_pl.bench._train_probe`): img/s, ms/step, GPU busy share, host syncs per step, peak
memory; between its timed rounds, the bare loop (:mod:`glsim_pl.bench._bare_loop`: a copy of the model, the same
optimizer and clipping, no Lightning), on one resident batch (the ceiling) and fed by the run's own loader (the
framework ratio: bare / real step time, the loaders' ``next`` time taken out of both); and the model FLOPs
utilisation (FlopCounterMode FLOPs per step / step time / measured bf16-or-fp16 matmul peak).

Data: ``--dataset cub`` (default) generates a CUB-layout folder of real-size JPEGs (500x375) under ``--root``; any
other ``--dataset`` is used as configured (add ``dataset.root=...`` among the trailing Hydra overrides).

    python -m glsim_pl.bench train                                   # ViT-B/16, 224, batch 8, glsim+vit, eager+compiled
    python -m glsim_pl.bench train --batch 32 --size 448 -- trainer.precision=16-mixed
    python -m glsim_pl.bench train --tiny --device cpu --compile eager   # CPU smoke run
    python -m glsim_pl.bench train --regimes all --model vit_t16 --methods vit \\
        --warmup 1 --steps 1 --rounds 9 --device cpu    # each regime's cost, ratios to full (make bench-regimes)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from glsim_pl.bench._compose import TINY, compose_train

__all__ = ["framework_ratio", "main", "parts_table", "render"]


def _overrides(args: argparse.Namespace, method: str, compiled: bool, probe_out: Path) -> list[str]:
    data = [f"dataset={args.dataset}"]
    if args.dataset == "cub":
        data += [f"dataset.root={args.root}", f"dataset.num_classes={args.classes}", "dataset.protocol=paper"]
    model = TINY if args.tiny else [f"model={args.model}", "model.pretrained=false"]
    probe = "+callbacks.probe."
    return [
        *data, *model, f"method={method}", f"compile={str(compiled).lower()}",
        f"dataset.batch_size={args.batch}", f"dataset.image_size={args.size}", f"dataset.num_workers={args.workers}",
        f"trainer.accelerator={'cpu' if args.device == 'cpu' else 'gpu'}", f"trainer.precision={args.precision}",
        "trainer.max_epochs=1000", "++trainer.num_sanity_val_steps=0", "++trainer.limit_val_batches=0",
        "++trainer.enable_checkpointing=false", "test=false", "logger=none", "callbacks=none",
        "+trainer.profiler._target_=glsim_pl.bench._train_probe.PartTimer",
        f"{probe}_target_=glsim_pl.bench._train_probe.StepProbe", f"{probe}out={probe_out}",
        f"{probe}warmup={args.warmup}", f"{probe}steps={args.steps}", f"{probe}rounds={args.rounds}",
        f"{probe}profile_steps={args.profile_steps}",
        f"{probe}sync_steps={args.sync_steps}", *args.overrides,
    ]  # fmt: skip


def run_one(args: argparse.Namespace, method: str, compiled: bool, out: Path) -> dict[str, Any]:
    """One Lightning fit with the probe (the bare-loop windows run inside it), then the model's FLOPs per step."""
    from glsim_pl.bench._train_probe import matmul_peak_tflops, train_step_flops
    from glsim_pl.config.groups import module_kwargs
    from glsim_pl.train import train
    from glsim_pl.training.module import GLSimLitModule

    out.parent.mkdir(parents=True, exist_ok=True)
    # a fresh run folder of the bench's own each time (a training run refuses a folder holding an earlier one)
    work = Path(tempfile.mkdtemp(prefix=f"{method}_{'compiled' if compiled else 'eager'}_", dir=out.parent))
    probe_out = work / "probe.json"
    cfg = compose_train(_overrides(args, method, compiled, probe_out), work)
    try:
        train(cfg)
        row: dict[str, Any] = {"method": method, "compiled": compiled, **json.loads(probe_out.read_text())}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    device = torch.device("cpu" if args.device == "cpu" else "cuda")
    names = [str(i) for i in range(int(cfg.dataset.num_classes))]
    net = GLSimLitModule(**module_kwargs(cfg, names)).net.to(device)
    k, b, s = int(cfg.dataset.num_classes), int(cfg.dataset.batch_size), int(cfg.dataset.image_size)
    images, labels = torch.randn(b, 3, s, s, device=device), torch.randint(0, k, (b,), device=device)
    flops = train_step_flops(net, images, labels)
    peak = matmul_peak_tflops(device, row["precision"])
    row.update(flops_per_step=flops, matmul_peak_tflops=peak,
               mfu=flops / (row["ms_per_step"] / 1e3) / (peak * 1e12) if peak else None)  # fmt: skip
    return row


def framework_ratio(row: dict[str, Any]) -> float | None:
    """Step time without the loader's ``next``: the bare loop fed by the run's loader / the real loop (median of the
    rounds). What is left between them is Lightning, the module's step bookkeeping, callbacks, logging, the guard."""
    return row.get("framework_ratio")


def parts_table(rows: list[dict[str, Any]], top: int = 14) -> str:
    """Per-step host cost (ms) of the parts Lightning profiles, for each eager row (nested parts overlap)."""
    eager = [r for r in rows if not r["compiled"] and r.get("parts_ms")]
    if not eager:
        return ""
    names = list(dict.fromkeys(k for r in eager for k in list(r["parts_ms"])[:top]))
    lines = ["| part (ms per step, nested parts overlap) | " + " | ".join(r["method"] for r in eager) + " |",
             "|---|" + "---|" * len(eager)]  # fmt: skip
    for name in names:
        lines.append(f"| `{name}` | " + " | ".join(f"{r['parts_ms'].get(name, 0.0):.3f}" for r in eager) + " |")
    return "\n".join(lines)


def render(rows: list[dict[str, Any]], header: str) -> str:
    """Markdown table of the rows plus the GLSim/ViT time ratios."""
    pct = lambda v: f"{100 * v:.1f} %" if isinstance(v, float) else "n/a"
    num = lambda v, f="{:.1f}": f.format(v) if isinstance(v, (int, float)) else "n/a"
    lines = [header, "", "| method | compile | img/s | ms/step | GPU busy | host syncs/step | MFU | peak mem (GiB) "
             "| bare loop img/s | loop / bare | loader ms/step | framework ratio (loader time out of both) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['method']} | {'on' if r['compiled'] else 'off'} | failed: {r['error'][:200]} |")
            continue
        on = "on" if r["compiled"] else "off"
        lines.append(f"| {r['method']} | {on} | {r['img_s']:.1f} | {r['ms_per_step']:.2f} "
                     f"| {pct(r.get('gpu_busy'))} | {num(r.get('syncs_per_step'))} | {pct(r.get('mfu'))} "
                     f"| {num(r.get('peak_mem_gib'), '{:.2f}')} | {r['bare_img_s']:.1f} "
                     f"| {r['img_s'] / r['bare_img_s']:.2f} | {num(r.get('loader_ms_per_step'), '{:.2f}')} "
                     f"| {num(framework_ratio(r), '{:.2f}')} |")  # fmt: skip
    for compiled in (False, True):
        ok = {r["method"]: r for r in rows if r["compiled"] == compiled and "error" not in r}
        if {"glsim", "vit"} <= set(ok):
            ratio = ok["vit"]["img_s"] / ok["glsim"]["img_s"]
            lines.append(f"\nGLSim/ViT training time ratio, compile {'on' if compiled else 'off'}: {ratio:.3f} "
                         f"(GLSim {ok['glsim']['img_s']:.1f} vs ViT {ok['vit']['img_s']:.1f} img/s)")  # fmt: skip
    parts = parts_table(rows)
    return "\n".join(lines) + (f"\n\n{parts}" if parts else "")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m glsim_pl.bench train", description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="cub", help="cub: generated JPEG tree under --root; else a dataset config")
    p.add_argument("--root", type=Path, default=Path(tempfile.gettempdir()) / "glsim_bench_cub")
    p.add_argument("--images", type=int, default=None, help="JPEGs to generate (default: enough for one epoch)")
    p.add_argument("--classes", type=int, default=200)
    p.add_argument("--model", default="vit_b16", help="model config (random init)")
    p.add_argument("--tiny", action="store_true", help="tiny model (CPU smoke run)")
    p.add_argument("--methods", default="glsim,vit")
    p.add_argument("--compile", default="eager,compiled", help="eager, compiled or both")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--precision", default="auto")
    p.add_argument("--workers", default="auto")
    p.add_argument("--warmup", type=int, default=30, help="steps before timing (compile, CUDA graphs, workers)")
    p.add_argument("--steps", type=int, default=100, help="timed steps per round")
    p.add_argument("--rounds", type=int, default=3, help="rounds of timed real steps, each followed by the bare loop")
    p.add_argument("--profile-steps", type=int, default=10)
    p.add_argument("--sync-steps", type=int, default=5)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", type=Path, default=Path("bench_results/train"))
    p.add_argument("--timeout", type=int, default=900, help="seconds per (method, compile) run")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: method:compiled, run in this process
    p.add_argument(
        "--regimes",
        default=None,
        help="comma list of finetune regimes, or all: bare training steps of each, "
        "timed in alternation, img/s and memory as ratios to full (glsim_pl.bench._regimes)",
    )
    p.add_argument("--memory-of", default=None, help=argparse.SUPPRESS)  # internal: method:regime, a memory child
    p.add_argument("overrides", nargs="*", help="Hydra overrides for every run (after --)")
    return p


def main(argv: list[str] | None = None) -> None:
    """Run every (method, compile) pair in a child process; print and write the table."""
    args = _parser().parse_args(argv)
    if args.device != "cpu" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but no CUDA device is visible (use --device cpu --tiny for a smoke run)")
    if args.regimes or args.memory_of:  # what each fine-tuning regime costs, not the Lightning loop
        from glsim_pl.bench import _regimes

        _regimes.main(args)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    if args.one:
        method, compiled = args.one.split(":")
        row = run_one(args, method, compiled == "1", args.out / f"{args.one.replace(':', '_')}.json")
        (args.out / f"row_{method}_{compiled}.json").write_text(json.dumps(row, indent=2))
        return
    if args.dataset == "cub":
        from glsim_pl.bench._jpeg_tree import write_cub_tree

        total = args.warmup + args.rounds * args.steps + args.profile_steps + args.sync_steps + 5
        n = args.images or max(int(total * args.batch / 0.9) + args.classes, args.classes * 2)
        size = (64, 48) if args.tiny else (500, 375)
        write_cub_tree(args.root / f"{n}_{size[0]}x{size[1]}", n, args.classes, size, workers=os.cpu_count() or 1)
        args.root = args.root / f"{n}_{size[0]}x{size[1]}"
    rows = []
    for method in args.methods.split(","):
        for compiled in (c == "compiled" for c in args.compile.split(",")):
            rows.append(_child(args, method, compiled))
            print(json.dumps(rows[-1]), flush=True)  # progress, and what a killed parent still shows
    device = torch.cuda.get_device_name() if args.device != "cpu" else "CPU (smoke run: numbers say nothing about GPUs)"
    header = (f"device: {device}; torch {torch.__version__}; model {'tiny' if args.tiny else args.model}, "
              f"{args.size} px, batch {args.batch}, precision {args.precision}, dataset {args.dataset}, "
              f"median of {args.rounds} rounds of {args.steps} timed steps after {args.warmup}")  # fmt: skip
    text = render(rows, header)
    print(text)
    (args.out / "train_bench.md").write_text(text + "\n")
    (args.out / "train_bench.json").write_text(json.dumps({"header": header, "rows": rows}, indent=2))


def _child(args: argparse.Namespace, method: str, compiled: bool) -> dict[str, Any]:
    """One pair in a fresh process: compile caches, CUDA graphs and peak memory do not leak between pairs."""
    key = f"{method}:{int(compiled)}"
    options = {"--dataset": args.dataset, "--root": args.root, "--classes": args.classes, "--model": args.model,
               "--batch": args.batch, "--size": args.size, "--precision": args.precision, "--workers": args.workers,
               "--warmup": args.warmup, "--steps": args.steps, "--rounds": args.rounds,
               "--profile-steps": args.profile_steps, "--sync-steps": args.sync_steps, "--device": args.device,
               "--out": args.out, "--one": key}  # fmt: skip
    cmd = [sys.executable, "-m", "glsim_pl.bench", "train", *(["--tiny"] if args.tiny else [])]
    cmd += [str(v) for pair in options.items() for v in pair] + ["--", *args.overrides]
    log = args.out / f"log_{method}_{int(compiled)}.txt"
    try:
        with log.open("w") as f:
            proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, timeout=args.timeout, check=False)
        if proc.returncode:
            tail = log.read_text().strip().splitlines()[-1:] or ["?"]
            return {"method": method, "compiled": compiled, "error": f"exit {proc.returncode}: {tail[0]} (see {log})"}
    except subprocess.TimeoutExpired:
        return {"method": method, "compiled": compiled, "error": f"timed out after {args.timeout} s (see {log})"}
    return json.loads((args.out / f"row_{method}_{int(compiled)}.json").read_text())


if __name__ == "__main__":
    main()
