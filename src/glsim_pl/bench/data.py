"""Input-pipeline throughput per CPU core: ours (cache off / on, device normalisation off / on), the official code's
PIL + torchvision-v1 pipeline, timm's train pipeline, and the same JPEGs read from image files, from parquet and from
tar shards, in one run.

    python -m glsim_pl.bench data                       # 400 generated CUB-size JPEGs (500x375), one core
    python -m glsim_pl.bench data --only sources --rounds 7   # the three places data lives, nothing else
    python -m glsim_pl.bench data --root /path/to/jpegs --images 0

Every pipeline runs the paper's train transform (Resize 300 bicubic -> RandomCrop 224 -> flip -> TrivialAugmentWide
-> normalise -> RandomErasing 0.3) except timm's (``create_transform(224, is_training=True)``, its own default
recipe). One process, one thread (``torch.set_num_threads(1)``), a DataLoader without workers and batch 32: the
img/s printed are per core. Rounds alternate the pipelines (one pass of each in turn), so load from other processes
hits all alike; the table gives min / median / max over rounds and each row's median relative to the official one.

- ``ours, cache=off, fast paths off``: our loader with every file decoded by PIL and torchvision's own
  TrivialAugmentWide (its Sharpness and Solarize): the pipeline before the exact fast paths, for the A/B.
- ``ours, cache=off``: decode (``decode_jpeg`` for plain JPEGs, else PIL) + our uint8 pipeline, normalised in the
  loader (``dataset.cache=off``).
- ``ours, cache=off, device_normalize``: the loader stops at the uint8 crop + erasing rectangle; ToDtype +
  Normalize + erasing run batched on the GPU (not timed here: a few microseconds per image there).
- ``ours, cache=ram`` (+ ``device_normalize``): the decode + resize prefix read from ``dataset.cache=ram`` (the
  cache's build rate is printed apart: a one-off cost).
- ``folder`` / ``hf`` / ``wds``: one JPEG tree in CUB's layout, written once more as a parquet file of the files'
  bytes and as WebDataset shards (:mod:`glsim_pl.bench._sources`); each read by its own dataset module's train
  loader (``dataset=cub`` / ``hf`` / ``wds``, cache off): reading, decoding and the same transform, per image.
Decoding alone is timed too: PIL vs ``torchvision.io.decode_jpeg`` (both libjpeg-turbo) on the same files, and
PIL's reduced-scale decode (``draft``, ``dataset.fast_decode``) on images twice the resize side (1000x750).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2 as T

from glsim_pl.bench._jpeg_tree import write_cub_tree
from glsim_pl.bench._sources import SOURCE_ROWS, source_loaders
from glsim_pl.data.base import TransformedView
from glsim_pl.data.cache import PrefixCache
from glsim_pl.data.sampling import EpochSampler, SeededCollate, SeededView
from glsim_pl.data.sources import ImageFileList, Sample
from glsim_pl.data.transforms import IMAGENET_MEAN, IMAGENET_STD, AugConfig, build_train_transform, without_prefix

__all__ = ["main"]

_SUFFIXES = {".jpg", ".jpeg", ".png"}


class _PILFiles(Dataset):
    """(PIL RGB image -> transform, 0) per file: the official code's ImageFolder-style reading."""

    def __init__(self, files: list[Path], transform: Callable) -> None:
        self.files, self.transform = files, transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        with Image.open(self.files[i]) as image:
            return self.transform(image.convert("RGB")), 0


class _PILOnly(Dataset):
    """A source without the plain-JPEG fast path: every file through PIL (``read_image``)."""

    def __init__(self, source: ImageFileList) -> None:
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> tuple:
        return self.source[i]


def _official(size: int, resize: int) -> Callable:
    from torchvision import transforms as V1
    from torchvision.transforms import InterpolationMode

    return V1.Compose([
        V1.Resize((resize, resize), interpolation=InterpolationMode.BICUBIC), V1.RandomCrop(size),
        V1.RandomHorizontalFlip(), V1.TrivialAugmentWide(), V1.ToTensor(), V1.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        V1.RandomErasing(p=0.3, scale=(0.02, 0.4), ratio=(0.3, 3.3), value=0),
    ])  # fmt: skip


def _loader(view: Dataset, batch: int, seed: int = 0) -> DataLoader:
    """Our training loader's structure (seeded sample keys), without workers."""
    sampler = EpochSampler(view, seed, batch, drop_last=False)
    return DataLoader(SeededView(view), batch_size=batch, sampler=sampler, collate_fn=SeededCollate(), num_workers=0)


def _pipelines(files: list[Path], size: int, batch: int) -> tuple[dict[str, DataLoader], float]:
    from timm.data import create_transform

    resize = int(1.34 * size)
    source = ImageFileList([Sample(f, 0) for f in files])
    everything = range(len(files))

    def ours(device_normalize: bool, cached: PrefixCache | None) -> DataLoader:
        tf = build_train_transform(size, resize, AugConfig(), IMAGENET_MEAN, IMAGENET_STD, device_normalize)
        view = (
            TransformedView(cached, everything, without_prefix(tf))
            if cached
            else TransformedView(source, everything, tf)
        )
        return _loader(view, batch)

    def without_fast_paths() -> DataLoader:
        tf = build_train_transform(size, resize, AugConfig(), IMAGENET_MEAN, IMAGENET_STD)
        tf.transforms[:] = [T.TrivialAugmentWide() if isinstance(op, T.TrivialAugmentWide) else op
                            for op in tf.transforms]  # torchvision's own Sharpness and Solarize  # fmt: skip
        return _loader(TransformedView(_PILOnly(source), everything, tf), batch)

    start = time.perf_counter()
    cache = PrefixCache(source, resize, "ram", workers=1)
    build_rate = len(files) / (time.perf_counter() - start)
    plain = dict(batch_size=batch, shuffle=True, num_workers=0, generator=torch.Generator().manual_seed(0))
    loaders = {
        "official (PIL + torchvision v1)": DataLoader(_PILFiles(files, _official(size, resize)), **plain),
        "timm create_transform": DataLoader(_PILFiles(files, create_transform(size, is_training=True)), **plain),
        "ours, cache=off, fast paths off (PIL decode, torchvision's TrivialAugmentWide)": without_fast_paths(),
        "ours, cache=off": ours(False, None),
        "ours, cache=off, device_normalize": ours(True, None),
        "ours, cache=ram": ours(False, cache),
        "ours, cache=ram, device_normalize": ours(True, cache),
    }
    return loaders, build_rate


def _decode_rates(files: list[Path], big: list[Path], resize: int) -> dict[str, float]:
    """Images/s of decoding alone (+ conversion to a uint8 tensor, which both of our paths need)."""
    from torchvision.io import ImageReadMode, decode_jpeg, read_file
    from torchvision.transforms.v2 import functional as F

    full, drafted = ImageFileList([Sample(f, 0) for f in big]), ImageFileList([Sample(f, 0) for f in big], resize)
    plain = ImageFileList([Sample(f, 0) for f in files])
    cases: dict[str, tuple[list, Callable]] = {
        f"our reader (plain JPEG fast path, {_size(files[0])})": (
            range(len(files)), lambda i: plain.fast_item(i)[0]),
        f"PIL -> uint8 tensor ({_size(files[0])})": (files, lambda f: F.pil_to_tensor(_pil(f))),
        f"torchvision.io.decode_jpeg ({_size(files[0])})": (
            files, lambda f: decode_jpeg(read_file(str(f)), mode=ImageReadMode.RGB, apply_exif_orientation=True)),
        f"PIL full decode ({_size(big[0])})": (range(len(big)), lambda i: F.pil_to_tensor(full.load(i)[0])),
        f"PIL draft decode ({_size(big[0])}, >= {resize} px)": (
            range(len(big)), lambda i: F.pil_to_tensor(drafted.load(i)[0])),
    }  # fmt: skip
    rates = {}
    for name, (items, fn) in cases.items():
        fn(items[0])
        start = time.perf_counter()
        for item in items:
            fn(item)
        rates[name] = len(items) / (time.perf_counter() - start)
    return rates


def _pil(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


def _size(path: Path) -> str:
    with Image.open(path) as image:
        return f"{image.size[0]}x{image.size[1]}"


def _time_pass(loader: DataLoader) -> float:
    start, seen = time.perf_counter(), 0
    for images, *_ in loader:
        seen += len(images.image if hasattr(images, "image") else images)
    return seen / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    """Print img/s per core of each pipeline (min / median / max over rounds) and the decoding rates."""
    parser = argparse.ArgumentParser(prog="python -m glsim_pl.bench data", description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=Path(tempfile.gettempdir()) / "glsim_bench_data",
                        help="folder of JPEGs (searched recursively); generated there with --images")  # fmt: skip
    parser.add_argument("--images", type=int, default=400, help="CUB-size JPEGs to generate (0: use --root as is)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=224, help="crop side S (resize to 1.34 S first)")
    parser.add_argument("--rounds", type=int, default=3, help="timed passes per pipeline, after one warm-up pass")
    parser.add_argument("--only", choices=["all", "sources"], default="all",
                        help="sources: only the folder / parquet / shards rows (and no decoding table)")  # fmt: skip
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    root = args.root
    if args.images:
        root = write_cub_tree(
            args.root / f"cub_{args.images}", args.images, 20, (500, 375), workers=os.cpu_count() or 1
        )
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in _SUFFIXES)
    if not files:
        raise SystemExit(f"error: no .jpg/.jpeg/.png files under {root} (use --images 400 to generate some)")
    loaders: dict[str, Any] = {}
    build_rate = None
    if args.only == "all":
        loaders, build_rate = _pipelines(files, args.image_size, args.batch_size)
    if (root / "classes.txt").is_file():  # a CUB-layout tree: also read as parquet and as shards
        classes = len((root / "classes.txt").read_text().splitlines())
        work = args.root / f"sources_{root.name}"
        loaders.update(source_loaders(root, classes, work, args.batch_size, args.image_size))
    elif args.only == "sources":
        raise SystemExit(f"error: --only sources needs a CUB-layout tree (images.txt, classes.txt) at {root}")
    rates: dict[str, list[float]] = {name: [] for name in loaders}
    for round_ in range(args.rounds + 1):  # round 0 warms caches and lazy imports: not timed
        for name, loader in loaders.items():
            rate = _time_pass(loader)
            if round_:
                rates[name].append(rate)
    decode = {}
    if args.only == "all":
        big_root = write_cub_tree(args.root / "large_40", 40, 4, (1000, 750), workers=os.cpu_count() or 1)
        decode = _decode_rates(files[:100], sorted((big_root / "images").rglob("*.jpg")), int(1.34 * args.image_size))

    cpu = _cpu_model()
    print(f"{len(files)} images ({_size(files[0])}) from {root}; one process, one thread, batch {args.batch_size}, "
          f"crop {args.image_size}; {cpu}, {os.cpu_count()} CPUs, torch {torch.__version__}")  # fmt: skip
    reference = "official (PIL + torchvision v1)" if args.only == "all" else SOURCE_ROWS[0]
    base = statistics.median(rates[reference])
    print(f"\n| pipeline | img/s per core (median) | min | max | vs {reference.split(' (')[0].split(':')[0]} |")
    print("|---|---|---|---|---|")
    for name, values in rates.items():
        med = statistics.median(values)
        print(f"| {name} | {med:.0f} | {min(values):.0f} | {max(values):.0f} | {med / base:.2f}x |")
    if SOURCE_ROWS[0] in rates:  # per round: the rounds alternate, so a round's ratio sees the same machine load
        for name in SOURCE_ROWS[1:]:
            ratios = [b / a for a, b in zip(rates[SOURCE_ROWS[0]], rates[name], strict=True)]
            print(f"{name.split(':')[0]} / folder per round: median {statistics.median(ratios):.2f}x (min "
                  f"{min(ratios):.2f}x, max {max(ratios):.2f}x)")  # fmt: skip
    if build_rate is not None:
        print(f"\ncache=ram build: {build_rate:.0f} img/s per core (decode + resize, once)")
    if decode:
        print("\n| decoding | img/s per core |\n|---|---|")
    for name, rate in decode.items():
        print(f"| {name} | {rate:.0f} |")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


if __name__ == "__main__":
    main()
