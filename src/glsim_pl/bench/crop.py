"""Batched crop (one grid_sample call) vs the official per-sample loop: ``python -m glsim_pl.bench crop``."""

from __future__ import annotations

import argparse
import platform

import torch

from glsim_pl.analysis.timing import interleaved_median_seconds
from glsim_pl.models import crop_and_resize, crop_and_resize_loop


def random_patch_boxes(batch: int, size: int, patch: int, generator: torch.Generator) -> torch.Tensor:
    """Whole-patch boxes like the selector's: (B, 4) pixel xyxy."""
    g = size // patch
    a = torch.randint(0, g - 1, (batch, 2), generator=generator)
    b = a + 1 + (torch.rand(batch, 2, generator=generator) * (g - a - 1)).long()
    return torch.cat([a, b], 1).float() * patch


def main(argv: list[str] | None = None) -> None:
    """Print median times and the speed-up at the given batch size and resolution."""
    parser = argparse.ArgumentParser(prog="python -m glsim_pl.bench crop")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(args.batch, 3, args.size, args.size, generator=gen).to(args.device)  # [0, 1] pixels
    boxes = random_patch_boxes(args.batch, args.size, 16, gen).to(args.device)
    out = (args.size, args.size)
    diff = (crop_and_resize(images, boxes, out) - crop_and_resize_loop(images, boxes, out)).abs().max().item()
    candidates = {
        "batched": lambda: crop_and_resize(images, boxes, out),
        "loop": lambda: crop_and_resize_loop(images, boxes, out),
    }
    times = interleaved_median_seconds(candidates, args.repeats)
    batched, loop = times["batched"], times["loop"]
    print(f"device: {args.device} ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)")
    print(f"batch {args.batch}, {args.size} px, median of {args.repeats}; max |batched - loop| = {diff:.2e}")
    print(f"per-sample loop: {loop * 1e3:8.2f} ms")
    print(f"batched crop:    {batched * 1e3:8.2f} ms")
    print(f"speed-up (loop / batched): {loop / batched:.1f}x  (goal >= 10x)")


if __name__ == "__main__":
    main()
