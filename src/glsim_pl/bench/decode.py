"""JPEG decoding throughput: ``torchvision.io.decode_jpeg`` on the CPU (one thread) vs on the GPU (batched).

    python -m glsim_pl.bench decode                   # 256 generated CUB-size JPEGs (500x375)
    python -m glsim_pl.bench decode --images 64 --batch 32 --root /tmp/jpegs

Rows: CPU, one image per call, one thread (what one loader worker does); and, when CUDA is visible,
``decode_jpeg(list, device="cuda")`` on batches of ``--batch`` encoded files (nvJPEG), timed with a
``cuda.synchronize`` at each end, the host-to-device copy of the encoded bytes included. The GPU output is compared
with the CPU output (mean absolute difference on 0..255: nvJPEG's IDCT and chroma upsampling need not match
libjpeg-turbo's bit for bit). Without CUDA the GPU row says so.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
from torchvision.io import ImageReadMode, decode_jpeg, read_file

from glsim_pl.bench._jpeg_tree import write_cub_tree

__all__ = ["main"]


def _cpu_rate(data: list[torch.Tensor], rounds: int) -> float:
    best = 0.0
    for _ in range(rounds):
        start = time.perf_counter()
        for encoded in data:
            decode_jpeg(encoded, mode=ImageReadMode.RGB)
        best = max(best, len(data) / (time.perf_counter() - start))
    return best


def _gpu_rate(data: list[torch.Tensor], batch: int, rounds: int) -> tuple[float, float]:
    """(img/s, mean |GPU - CPU| over the first batch)."""
    device = torch.device("cuda")
    chunks = [data[i : i + batch] for i in range(0, len(data), batch)]
    decode_jpeg(chunks[0], mode=ImageReadMode.RGB, device=device)  # nvJPEG handles, first allocation
    torch.cuda.synchronize(device)
    best = 0.0
    for _ in range(rounds):
        start = time.perf_counter()
        for chunk in chunks:
            decode_jpeg(chunk, mode=ImageReadMode.RGB, device=device)
        torch.cuda.synchronize(device)
        best = max(best, len(data) / (time.perf_counter() - start))
    gpu = decode_jpeg(chunks[0], mode=ImageReadMode.RGB, device=device)
    diffs = [(g.cpu().float() - decode_jpeg(e, mode=ImageReadMode.RGB).float()).abs().mean() for g, e in
             zip(gpu, chunks[0], strict=True)]  # fmt: skip
    return best, float(torch.stack(diffs).mean())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m glsim_pl.bench decode", description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=Path(tempfile.gettempdir()) / "glsim_bench_decode")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch", type=int, default=64, help="files per GPU decode call")
    parser.add_argument("--rounds", type=int, default=3, help="timed passes (the best is reported)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    root = write_cub_tree(args.root / f"cub_{args.images}", args.images, 8, (500, 375), workers=os.cpu_count() or 1)
    files = sorted((root / "images").rglob("*.jpg"))
    data = [read_file(str(f)) for f in files]
    print(f"{len(files)} JPEGs (500x375) from {root}; torch {torch.__version__}")
    print("\n| decoder | img/s |\n|---|---|")
    print(f"| CPU `decode_jpeg`, one image per call, one thread | {_cpu_rate(data, args.rounds):.0f} |")
    if torch.cuda.is_available():
        rate, diff = _gpu_rate(data, args.batch, args.rounds)
        name = torch.cuda.get_device_name()
        print(f"| GPU `decode_jpeg(device='cuda')`, batches of {args.batch} ({name}) | {rate:.0f} |")
        print(f"\nGPU vs CPU pixels: mean |difference| {diff:.3f} on 0..255")
    else:
        print("| GPU `decode_jpeg(device='cuda')` | no CUDA device visible |")


if __name__ == "__main__":
    main()
