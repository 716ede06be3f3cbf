"""Data-loading throughput: our train pipeline vs timm's ``create_loader`` pipeline on the same JPEG files.

    python -m glsim_pl.bench data --root /path/to/jpegs [--workers 2] [--make 60]

Pipelines, each a DataLoader with the same files, workers, batch size and persistent workers:
- ``ours (fast_decode)``: the paper's ``med`` train transform after PIL ``draft`` decoding (dataset.fast_decode):
  a large JPEG is decoded at 1/2, 1/4 or 1/8 scale, never below the resize side, then bicubic-resized.
- ``ours``: the same with a full-size decode (``dataset.fast_decode=false``, the default).
- ``timm``: ``timm.data.create_loader(ImageDataset(root), is_training=True)``, timm's default train transform.
Epochs are timed in alternation (one epoch of each in turn) so that load from other processes hits all alike.
It also prints how much ``fast_decode`` changes the pixels the model sees (eval transform, 0..255 scale),
next to the change from swapping bicubic for bilinear resizing, as a yardstick for interpolation noise.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T

from ..data.base import TransformedView
from ..data.sources import ImageFileList, Sample
from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD, AugConfig, build_eval_transform, build_train_transform

__all__ = ["main"]

_SUFFIXES = {".jpg", ".jpeg", ".png"}


def make_jpegs(root: Path, count: int, size: tuple[int, int] = (1024, 768)) -> None:
    """Write ``count`` photo-like JPEGs (smooth shapes + fine texture, quality 90) for a reproducible benchmark."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        coarse = rng.uniform(0, 255, (6, 8, 3)).astype(np.uint8)
        image = np.asarray(Image.fromarray(coarse).resize(size, Image.Resampling.BICUBIC), dtype=np.float32)
        image += rng.normal(0, 12, image.shape)  # texture, so the JPEG is not trivially compressible
        Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(root / f"bench_{i:04d}.jpg", quality=90)


def _ours(files: list[Path], image_size: int, draft: bool) -> TransformedView:
    resize = int(1.34 * image_size)
    source = ImageFileList([Sample(f, 0) for f in files], draft=resize if draft else None)
    transform = build_train_transform(image_size, resize, AugConfig(), IMAGENET_MEAN, IMAGENET_STD)
    return TransformedView(source, range(len(files)), transform)


def _fast_decode_effect(files: list[Path], image_size: int) -> tuple[float, float]:
    """Mean |pixel change| (0..255) of the eval input from fast_decode, and from bilinear instead of bicubic."""
    resize = int(1.34 * image_size)
    plain = build_eval_transform(image_size, resize, (0, 0, 0), (1, 1, 1))
    bilinear_resize = T.Resize((resize, resize), interpolation=InterpolationMode.BILINEAR, antialias=True)
    bilinear = T.Compose([plain.transforms[0], bilinear_resize, *plain.transforms[2:]])  # ToImage, resize, rest
    full, drafted = ImageFileList([Sample(f, 0) for f in files]), ImageFileList([Sample(f, 0) for f in files], resize)
    fast, interp = [], []
    for i in range(len(files)):
        reference = plain(full[i][0])
        fast.append((plain(drafted[i][0]) - reference).abs().mean().item() * 255)
        interp.append((bilinear(full[i][0]) - reference).abs().mean().item() * 255)
    return statistics.mean(fast), statistics.mean(interp)


def main(argv: list[str] | None = None) -> None:
    """Print images/s of each pipeline and the ratio ours (fast_decode) / timm."""
    parser = argparse.ArgumentParser(prog="python -m glsim_pl.bench data", description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, required=True, help="folder of images (searched recursively)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of every pipeline")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=224, help="crop side S (ours resizes to 1.34 S first)")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per pipeline, after one warm-up epoch")
    parser.add_argument("--make", type=int, default=0, help="first write this many 1024x768 JPEGs into --root")
    args = parser.parse_args(argv)
    if args.make:
        make_jpegs(args.root, args.make)
    files = sorted(p for p in args.root.rglob("*") if p.suffix.lower() in _SUFFIXES)
    if not files:
        raise SystemExit(f"error: no .jpg/.jpeg/.png files under {args.root} (use --make 60 to write some)")

    from timm.data import ImageDataset, create_loader

    timm_data = ImageDataset(str(args.root))
    if sorted(Path(f) for f in timm_data.filenames(absolute=True)) != files:
        raise SystemExit(f"error: timm and glsim_pl see different files under {args.root}")
    common = dict(batch_size=args.batch_size, num_workers=args.workers, persistent_workers=args.workers > 0)
    loaders = {
        "ours (fast_decode)": DataLoader(_ours(files, args.image_size, True), shuffle=True, **common),
        "ours": DataLoader(_ours(files, args.image_size, False), shuffle=True, **common),
        "timm": create_loader(
            timm_data,
            input_size=(3, args.image_size, args.image_size),
            is_training=True,
            use_prefetcher=False,
            device=torch.device("cpu"),
            **common,
        ),  # fmt: skip
    }
    rates: dict[str, list[float]] = {name: [] for name in loaders}
    for epoch in range(args.epochs + 1):  # epoch 0 starts the workers and warms the page cache: not timed
        for name, loader in loaders.items():
            start, seen = time.perf_counter(), 0
            for images, _ in loader:
                seen += len(images)
            if epoch:
                rates[name].append(seen / (time.perf_counter() - start))
    fast_diff, interp_diff = _fast_decode_effect(files[:8], args.image_size)

    width, height = Image.open(files[0]).size
    print(f"{len(files)} images (first {width}x{height}) from {args.root}; batch {args.batch_size}, "
          f"{args.workers} workers, crop {args.image_size}; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, torch {torch.__version__}")  # fmt: skip
    for name, values in rates.items():
        print(f"  {name:<20} {statistics.median(values):8.1f} images/s (median of {len(values)} epochs)")
    ratio = statistics.median(rates["ours (fast_decode)"]) / statistics.median(rates["timm"])
    print(f"  ratio ours (fast_decode) / timm: {ratio:.2f}x")
    print(f"  fast_decode changes the eval input by {fast_diff:.2f}/255 on average "
          f"(bilinear instead of bicubic resize: {interp_diff:.2f}/255)")  # fmt: skip
