"""GPU figures, GLSim vs the plain ViT: ``python -m glsim_pl.bench gpu`` (about 3 minutes on one recent GPU).

ViT-B/16 (random init; speed does not depend on the weights), 200 classes, synthetic images at 224 and 448 px, bf16
autocast. For each (method, size): training img/s (SGD step, batch 32), eval img/s (batch 32), bs-1 latency (ms) and
peak GPU memory of the training step. Prints a Markdown table with the GPU's name; ``--json`` also writes the numbers.
``--device cpu --tiny`` is a smoke run of the same code on a tiny model (its numbers say nothing about GPUs).
"""

from __future__ import annotations

import argparse
import json
import platform
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn

from glsim_pl.analysis.timing import median_seconds
from glsim_pl.models import build_classifier

TINY_BACKBONE = {"patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}


def _autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def measure(method: str, size: int, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Train/eval throughput, bs-1 latency and peak memory of one model at one image size."""
    torch.manual_seed(0)
    model = build_classifier(
        method, backbone=args.backbone, num_classes=200, img_size=size, pretrained=False,
        backbone_kwargs=TINY_BACKBONE if args.tiny else None,
    ).to(device)  # fmt: skip
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, nesterov=True)
    images = torch.randn(args.batch, 3, size, size, device=device)
    labels = torch.randint(0, 200, (args.batch,), device=device)
    one = images[:1]
    criterion = nn.CrossEntropyLoss()

    def train_step() -> None:
        with _autocast(device, args.precision):
            loss = criterion(model(images).logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    @torch.no_grad()
    def infer(x: torch.Tensor) -> None:
        with _autocast(device, args.precision):
            model(x)

    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    model.train()
    train_s = median_seconds(train_step, repeats=args.repeats, warmup=args.warmup)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    model.eval()
    eval_s = median_seconds(lambda: infer(images), repeats=args.repeats, warmup=args.warmup)
    latency_s = median_seconds(lambda: infer(one), repeats=3 * args.repeats, warmup=args.warmup)
    return {
        "method": method, "image_size": size, "batch": args.batch,
        "train_img_s": args.batch / train_s, "eval_img_s": args.batch / eval_s, "latency_ms": 1000 * latency_s,
        "peak_mem_gib": peak, "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
    }  # fmt: skip


def render(rows: list[dict[str, Any]], device_name: str, args: argparse.Namespace) -> str:
    lines = [
        f"device: {device_name}; backbone {args.backbone}{' (tiny)' if args.tiny else ''}, random init, "
        f"{args.precision}, batch {args.batch}, median of {args.repeats} steps",
        "",
        "| method | px | train img/s | eval img/s | bs-1 latency (ms) | peak train memory (GiB) | params (M) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        mem = f"{r['peak_mem_gib']:.1f}" if r["peak_mem_gib"] is not None else "n/a (CPU)"
        lines.append(f"| {r['method']} | {r['image_size']} | {r['train_img_s']:.1f} | {r['eval_img_s']:.1f} "
                     f"| {r['latency_ms']:.2f} | {mem} | {r['params_m']:.1f} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m glsim_pl.bench gpu", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny model at 32/64 px: a CPU smoke run of this script")
    parser.add_argument("--backbone", default="vit_base_patch16_224")
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="image sizes (default 224 448)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args(argv)
    sizes = args.sizes or ([32, 64] if args.tiny else [224, 448])
    if args.tiny and args.batch == 32 and args.device == "cpu":
        args.batch, args.repeats, args.warmup = 8, min(args.repeats, 3), 1
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but no CUDA device is visible (use --device cpu --tiny for a smoke run)")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    device_name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU ({platform.processor() or platform.machine()})"
    )
    rows = [measure(method, size, args, device) for size in sizes for method in ("vit", "glsim")]
    print(render(rows, device_name, args))
    if args.json:
        args.json.write_text(json.dumps({"device": device_name, "args": {k: str(v) for k, v in vars(args).items()},
                                         "rows": rows}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
