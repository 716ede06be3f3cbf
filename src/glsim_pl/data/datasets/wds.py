"""WebDataset tar shards (local paths, ``pipe:`` commands, ``http(s)`` URLs), read as a stream through ``webdataset``.

A sample is ``<key>.<jpg|png|...>`` (the stored image bytes), ``<key>.cls`` (the 0-based label) and optionally
``<key>.json`` (``{"box": [x1, y1, x2, y2], ...}``, pixels). ``glsim-data convert`` writes them, with ``info.json``
(class names, the shards of each split and their sample counts) beside the split folders.

Splitting: in every epoch the shards are put in an order drawn from (seed, epoch) and dealt to the ranks x loader
workers slots, shard ``order[k]`` to slot ``k % slots``; each slot reads its shards whole, so every sample is read
exactly once per epoch. Samples are shuffled within a slot by a buffer whose RNG is drawn from (seed, epoch, slot).
Epoch length: with the shard sizes known (``info.json``, or counted from local tar headers), every rank stops after
the same number of full batches, the smallest any rank can fill that epoch; equal shards dealt evenly lose nothing,
otherwise the samples past it on the fuller ranks are left out of that epoch (logged).
"""

from __future__ import annotations

import itertools
import json
import random
import re
import tarfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from torchvision import tv_tensors
from torchvision.transforms.v2.functional import get_size

from glsim_pl.data.base import FGVCDataModule, Splits
from glsim_pl.data.datasets.hf import decode_image_bytes
from glsim_pl.data.image_io import MAX_PIXELS
from glsim_pl.data.jpeg import MAX_PIXELS as PLAIN_JPEG_MAX_PIXELS
from glsim_pl.data.jpeg import decode_plain_jpeg
from glsim_pl.data.transforms import MixUpCutMixCollate, build_eval_transform, build_train_transform
from glsim_pl.errors import UserError
from glsim_pl.utils.logging import RankedLogger

__all__ = ["FORMAT", "INFO_FILE", "ShardStream", "WDSDataModule", "expand_urls"]

log = RankedLogger(__name__)

INFO_FILE = "info.json"
FORMAT = "glsim_pl-wds-1"
IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff", "gif", "ppm")
SPLITS = ("train", "val", "test")


def expand_urls(urls: str | Sequence[str]) -> list[str]:
    """Brace patterns (``shard-{000000..000099}.tar``) and lists -> the shard URLs, in order."""
    import braceexpand

    items = [urls] if isinstance(urls, str) else list(urls)
    return [u for item in items for u in braceexpand.braceexpand(str(item))]


_REMOTE = ("pipe:", "http://", "https://", "gs://", "s3://")
_EXIT = re.compile(r": exit (\d+) \(read\)")  # how webdataset reports a pipe or download command that failed


def _count_local(url: str) -> int | None:
    """Samples in a local shard from its tar headers (no image is read); None for a remote URL."""
    if url.startswith(_REMOTE):
        return None
    path = Path(url.removeprefix("file:")).expanduser()
    if not path.is_file():
        raise UserError(f"{url}: no such shard file (check the brace range of the dataset's urls)")
    from webdataset.tariterators import base_plus_ext  # webdataset's own rule for a member's sample key

    keys = set()
    try:
        with tarfile.open(path, "r") as tar:
            for member in tar:
                key = base_plus_ext(member.name)[0] if member.isfile() else None
                if key is not None:
                    keys.add(key)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise UserError(f"{url}: not a readable tar shard ({exc}); the shard may end mid-record (cut short by a copy "
                        "or an interrupted write)") from None  # fmt: skip
    return len(keys)


class ShardStream(IterableDataset):
    """One split's samples as (image, label) or (image, label, box) tensors, split over ranks and loader workers.

    Args:
        urls: the shards, in order.
        transform: the image transform (boxes go through it with ``return_boxes``).
        seed: the run's seed; shard order and the shuffle buffer derive from (seed, epoch, slot).
        shuffle: shuffle shards and samples (train); otherwise shards in order, dealt to slots.
        rank, world_size: this process's rank and the number of ranks.
        buffer: shuffle buffer size (samples held per worker).
        return_boxes: yield the box of each sample (its ``json`` must have one).
        max_pixels: refuse larger images.
        num_classes: refuse labels outside ``0..num_classes - 1`` (None: unchecked).
    """

    def __init__(self, urls: Sequence[str], transform: Any, seed: int = 0, shuffle: bool = False, rank: int = 0,
                 world_size: int = 1, buffer: int = 1000, return_boxes: bool = False,
                 max_pixels: int | None = MAX_PIXELS, num_classes: int | None = None) -> None:  # fmt: skip
        self.urls, self.transform, self.seed, self.shuffle = list(urls), transform, seed, shuffle
        self.num_classes = num_classes
        self.rank, self.world_size, self.buffer = rank, world_size, buffer
        self.return_boxes, self.max_pixels = return_boxes, max_pixels
        self.epoch = 0
        self.caps: list[int] | None = None  # samples each loader worker reads this epoch (None: its shards whole)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def shard_order(self) -> list[int]:
        order = list(range(len(self.urls)))
        if self.shuffle:
            random.Random(f"{self.seed}:{self.epoch}").shuffle(order)
        return order

    def shards_of(self, rank: int, worker: int, num_workers: int) -> list[int]:
        """Indices of the shards slot (rank, worker) reads this epoch."""
        slots, slot = self.world_size * num_workers, rank * num_workers + worker
        return self.shard_order()[slot::slots]

    def __iter__(self) -> Iterator[Any]:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        yield from self.samples(worker, num_workers)

    def raw(self, worker: int = 0, num_workers: int = 1) -> Iterator[dict[str, Any]]:
        """This slot's samples as webdataset dicts, shuffled when training; a bad shard is one UserError."""
        import webdataset as wds

        slot = self.rank * num_workers + worker
        mine = [self.urls[i] for i in self.shards_of(self.rank, worker, num_workers)]
        stream = (s for url in mine for s in _read_shard(url, wds))
        if self.shuffle and self.buffer > 1:
            rng = random.Random(f"{self.seed}:{self.epoch}:{slot}")
            stream = wds.shuffle(bufsize=self.buffer, initial=min(self.buffer, 100), rng=rng)(stream)
        yield from stream

    def samples(self, worker: int = 0, num_workers: int = 1) -> Iterator[Any]:
        """Decoded and transformed samples of slot (rank, worker), at most ``caps[worker]`` of them: samples past the
        epoch's last batch are not decoded only to be dropped."""
        cap = self.caps[worker] if self.caps is not None and len(self.caps) == num_workers else None
        for sample in itertools.islice(self.raw(worker, num_workers), cap):
            image, label, box = decode_sample(sample, self.max_pixels, self.return_boxes, True, self.num_classes)
            if not self.return_boxes:
                yield self.transform(image), label
                continue
            boxes = tv_tensors.BoundingBoxes([box], format="XYXY", canvas_size=tuple(get_size(image)))
            image, boxes = self.transform(image, boxes)
            yield image, label, boxes[0].as_subclass(torch.Tensor).float()


def _read_shard(url: str, wds: Any) -> Iterator[dict[str, Any]]:
    """The samples of one shard; a truncated or unreadable shard is one UserError naming it."""
    source = iter(wds.tarfile_to_samples()(iter([{"url": url}])))
    while True:
        try:
            sample = next(source)
        except StopIteration:
            return
        except UserError:
            raise
        except Exception as exc:  # tarfile / IO / pipe errors, raised by webdataset as they come
            raise UserError(_shard_error(url, exc)) from None
        sample.setdefault("__url__", url)
        yield sample


def _shard_error(url: str, exc: Exception) -> str:
    """One line for a shard that cannot be read: missing, a failed command / download, or cut short."""
    if isinstance(exc, FileNotFoundError):
        return f"{url}: no such shard file"
    text, remote = str(exc), url.startswith(_REMOTE)
    how = "the download" if url.startswith(_REMOTE[1:]) else "the command"
    if remote and (failed := _EXIT.search(text)):
        return f"{url}: {how} failed (exit status {failed[1]}); check the URL or command by hand"
    if remote and "empty file" in text:  # a failed download reaches tarfile as an empty stream before its exit status
        return f"{url}: nothing came back ({how} failed, or the shard is empty); check the URL or command by hand"
    first = exc.args[0] if exc.args and isinstance(exc.args[0], str) else text
    text = first.split(" @ ")[0].splitlines()[0] if first else type(exc).__name__  # webdataset appends the stream
    # object after " @ "; the url is named once, first
    return (f"{url}: cannot read the shard ({type(exc).__name__}: {text}); it may end mid-record (cut short by a "
            "copy or an interrupted write)")  # fmt: skip


def decode_sample(sample: dict[str, Any], max_pixels: int | None, need_box: bool,
                  plain_jpeg_tensor: bool = False,
                  num_classes: int | None = None) -> tuple[Image.Image | torch.Tensor, int, Any]:  # fmt: skip
    """(RGB image, label, box or None) of a webdataset sample; a missing or bad field is one line naming it.
    ``plain_jpeg_tensor``: a plain JPEG comes as a (3, H, W) uint8 tensor, decoded as an image file's fast path
    (:mod:`glsim_pl.data.jpeg`: the same pixels), so shards read no slower than files. ``num_classes``: a label
    outside ``0..num_classes - 1`` is one line naming the sample."""
    url, key = sample.get("__url__", "?"), sample.get("__key__", "?")
    where = f"{url}: sample {key}"
    ext = next((e for e in IMAGE_EXTS if e in sample), None)
    fields = ", ".join(sorted(k for k in sample if not k.startswith("__"))) or "none"
    if ext is None or "cls" not in sample:
        missing = "image (" + "/".join(IMAGE_EXTS[:3]) + ")" if ext is None else "label (cls)"
        raise UserError(f"{where}: has no {missing}; its files are {fields}. The shard may end mid-record, or was "
                        "not written as <key>.jpg|png + <key>.cls (glsim-data convert writes that)")  # fmt: skip
    try:
        label = int(bytes(sample["cls"]).decode().strip())
    except (ValueError, UnicodeDecodeError):
        raise UserError(f"{where}.cls: expected a 0-based integer label, found {bytes(sample['cls'])[:20]!r}") from None
    if num_classes is not None and not 0 <= label < num_classes:
        raise UserError(f"{where}.cls: label {label} is outside the class list (0..{num_classes - 1})")
    data = bytes(sample[ext])
    within_limit = max_pixels is None or max_pixels >= PLAIN_JPEG_MAX_PIXELS
    image = decode_plain_jpeg(data) if plain_jpeg_tensor and ext in ("jpg", "jpeg") and within_limit else None
    if image is None:
        image = decode_image_bytes(data, f"{where}.{ext}", max_pixels)[0]
    box = None
    if need_box:
        meta = json.loads(bytes(sample.get("json", b"{}")).decode() or "{}")
        if not isinstance(meta, dict) or len(meta.get("box") or ()) != 4:
            raise UserError(f"{where}.json: expected a 'box' of 4 numbers (x1, y1, x2, y2)")
        box = tuple(float(v) for v in meta["box"])
    return image, label, box


class _EpochLoader:
    """The train loader: a fresh DataLoader over the stream each epoch (workers then see the epoch), stopped after
    the epoch's batch count so that every rank takes the same number of steps."""

    def __init__(self, module: WDSDataModule, stream: ShardStream, counts: list[int] | None, **loader_kw: Any) -> None:
        self.module, self.stream, self.counts, self.loader_kw = module, stream, counts, loader_kw
        self.epoch = 0

    def _per_worker(self, epoch: int) -> list[list[int]] | None:
        """Full batches each rank's each loader worker can fill in ``epoch`` (None: shard sizes unknown)."""
        if self.counts is None:
            return None
        self.stream.set_epoch(epoch)
        workers, bs = max(1, self.loader_kw["num_workers"]), self.loader_kw["batch_size"]
        return [[sum(self.counts[i] for i in self.stream.shards_of(r, w, workers)) // bs for w in range(workers)]
                for r in range(self.stream.world_size)]  # fmt: skip

    def batches(self, epoch: int) -> int | None:
        """Full batches every rank can fill in ``epoch`` (None: shard sizes unknown)."""
        per_worker = self._per_worker(epoch)
        return None if per_worker is None else min(sum(ranks) for ranks in per_worker)

    def caps(self, epoch: int) -> list[int] | None:
        """Samples each of this rank's workers gives to the epoch's first ``batches`` batches: a DataLoader asks its
        workers for batches in turn, skipping those that have none left."""
        per_worker = self._per_worker(epoch)
        if per_worker is None:
            return None
        limit, mine = min(sum(ranks) for ranks in per_worker), per_worker[self.stream.rank]
        taken = [0] * len(mine)
        while sum(taken) < limit:
            for w, full in enumerate(mine):
                if taken[w] < full and sum(taken) < limit:
                    taken[w] += 1
        return [t * self.loader_kw["batch_size"] for t in taken]

    def __len__(self) -> int:
        n = self.batches(self._current_epoch())
        if n is None:  # Lightning then reads the epoch to its end instead of planning a length
            raise TypeError("the shard sizes are unknown (remote shards): the epoch has no length up front")
        return n

    def _current_epoch(self) -> int:
        trainer = self.module.trainer
        return trainer.current_epoch if trainer is not None else self.epoch

    def __iter__(self) -> Iterator[Any]:
        epoch = self._current_epoch()
        limit = self.batches(epoch)
        self.stream.caps = self.caps(epoch)  # before the workers copy the stream
        self.stream.set_epoch(epoch)
        generator = torch.Generator().manual_seed(self.stream.seed * 100_003 + epoch)
        loader = DataLoader(self.stream, generator=generator, drop_last=True, **self.loader_kw)
        for step, batch in enumerate(loader):
            yield batch
            if limit is not None and step + 1 >= limit:
                break  # the workers stop there too (caps): nothing past the last batch is decoded
        self.epoch = epoch + 1


class _Stream:
    """Stands for the random-access splits (``data_val``, ``data_test``) a stream does not have."""

    def __len__(self) -> int:
        raise UserError("dataset=wds is read as a stream and has no image by index; use the dataset the shards were "
                        "converted from (its dataset=... overrides) for this command")  # fmt: skip

    def __getitem__(self, index: int) -> Any:
        return len(self)


class WDSDataModule(FGVCDataModule):
    """WebDataset shards: ``root`` (a folder ``glsim-data convert`` wrote) or ``urls`` / ``val_urls`` /
    ``test_urls`` (brace patterns, ``pipe:`` commands or ``http(s)`` URLs).

    Args:
        urls: train shards (with ``root``: None, taken from ``info.json``).
        val_urls: validation shards (None: none; with ``root`` the converted val split).
        test_urls: test shards.
        class_names_file: one class name per line, for ``urls`` without ``root`` (else the names are the ids).
        shuffle_buffer: samples held per worker for shuffling.
        **kwargs: :class:`FGVCDataModule` arguments (``cache`` stays ``off``; the data check reads no shards).
    """

    name = "wds"
    source_url = "WebDataset shards (glsim-data convert ... --to wds --out DIR, or your own)"
    infers_num_classes = True

    def __init__(self, urls: Any = None, val_urls: Any = None, test_urls: Any = None,
                 class_names_file: str | None = None, shuffle_buffer: int = 1000, **kwargs) -> None:  # fmt: skip
        super().__init__(**kwargs)
        if self.cache != "off":
            raise UserError(f"dataset=wds: dataset.cache={self.cache} needs random access; shards are read as a "
                            "stream (set dataset.cache=off)")  # fmt: skip
        self.urls, self.val_urls, self.test_urls = urls, val_urls, test_urls
        self.class_names_file, self.shuffle_buffer = class_names_file, shuffle_buffer
        self.train_stream = self.val_stream = self.test_stream = None

    @property
    def shard_info(self) -> dict[str, Any]:
        """Per split: ``urls`` and ``counts`` (None when unknown), plus ``class_names`` and ``has_boxes``."""
        if "_shard_info" not in self.__dict__:
            self.__dict__["_shard_info"] = self._read_info()
        return self.__dict__["_shard_info"]

    def _read_info(self) -> dict[str, Any]:
        info: dict[str, Any] = {"splits": {}}
        if self.root is not None:
            path = self.root / INFO_FILE
            try:
                saved = json.loads(path.read_text())
            except FileNotFoundError:
                raise UserError(f"dataset=wds: no {path} (expected a folder written by glsim-data convert --to wds; "
                                "or give dataset.urls=/path/shard-{000000..000009}.tar)") from None  # fmt: skip
            except (OSError, json.JSONDecodeError) as exc:
                raise UserError(f"{path}: cannot read ({exc})") from None
            if saved.get("format") != FORMAT:
                raise UserError(f"{path}: format {saved.get('format')!r}, expected {FORMAT!r}")
            for split, entry in saved["splits"].items():
                info["splits"][split] = {"urls": [str(self.root / s) for s in entry["shards"]],
                                         "counts": list(entry["counts"])}  # fmt: skip
            info["class_names"], info["has_boxes"] = saved["class_names"], bool(saved.get("has_boxes"))
        given = {"train": self.urls, "val": self.val_urls, "test": self.test_urls}
        for split, urls in given.items():
            if urls:
                expanded = expand_urls(urls)
                counts = [_count_local(u) for u in expanded]
                info["splits"][split] = {"urls": expanded, "counts": None if None in counts else counts}
        for split in ("train", "test"):
            if split not in info["splits"]:
                raise UserError(f"dataset=wds: no {split} shards; set dataset.root=<converted folder> or "
                                f"dataset.{'urls' if split == 'train' else 'test_urls'}=<shards>")  # fmt: skip
        if "class_names" not in info:
            info["class_names"] = self._names_from_file()
            info["has_boxes"] = False
        return info

    def _names_from_file(self) -> list[str]:
        if self.class_names_file:
            path = Path(self.class_names_file).expanduser()
            try:
                return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
            except OSError as exc:
                raise UserError(f"dataset.class_names_file={path}: cannot read ({exc})") from None
        if not self.num_classes:
            raise UserError("dataset=wds with dataset.urls: set dataset.num_classes or dataset.class_names_file")
        return [str(i) for i in range(self.num_classes)]

    @property
    def class_names(self) -> list[str]:
        return self.shard_info["class_names"]

    def check(self) -> None:
        """Shards and class names found; ``num_classes`` matches them."""
        _ = self.normalisation
        found = len(self.class_names)
        if not self.num_classes:
            self.num_classes = found
        if found != self.num_classes:
            raise UserError(f"dataset=wds: dataset.num_classes={self.num_classes} but the shards' class list has "
                            f"{found} names")  # fmt: skip

    def _rank(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def setup(self, stage: str | None = None) -> None:
        if self.train_stream is not None:
            return
        self.check()
        splits = self.shard_info["splits"]
        train_urls = splits["train"]["urls"]
        counts = splits["train"]["counts"]
        if self.protocol == "paper" and "val" in splits:  # fit on train + val, as every dataset's paper protocol
            train_urls = train_urls + splits["val"]["urls"]
            counts = counts + splits["val"]["counts"] if counts is not None and splits["val"]["counts"] else None
        self.train_counts = counts
        augs = self.effective_augs()
        train_tf = build_train_transform(self.image_size, self.resize_size, augs, self.mean, self.std)
        eval_tf = build_eval_transform(self.image_size, self.resize_size, self.mean, self.std)
        boxes = bool(self.shard_info.get("has_boxes"))
        common = dict(max_pixels=self.max_image_pixels, num_classes=self.num_classes)  # rank: when a loader is made
        self.data_train = self.data_val = self.data_test = _Stream()
        self.train_stream = ShardStream(train_urls, train_tf, self.run_seed, True, buffer=self.shuffle_buffer,
                                        **common)  # fmt: skip
        val = splits.get("val") if self.protocol == "val" else None
        self.val_stream = ShardStream(val["urls"], eval_tf, return_boxes=boxes, **common) if val else None
        self.test_stream = ShardStream(splits["test"]["urls"], eval_tf, return_boxes=boxes, **common)
        shards = ", ".join(f"{s} {len(v['urls'])}" for s, v in splits.items())
        sizes = ", ".join(f"{s} {sum(v['counts']) if v['counts'] else '?'}" for s, v in splits.items())
        log.info(f"dataset=wds: shards {shards}; samples {sizes}; {self.num_classes} classes, "
                 f"protocol={self.protocol}")  # fmt: skip

    def _on_this_rank(self, stream: ShardStream, split: str) -> ShardStream:
        """``stream`` dealt to this process's rank. Set when Lightning asks for a loader: the trainer (and with it
        the rank) is attached then, while ``glsim-train`` sets the data up before the trainer exists."""
        stream.rank, stream.world_size = self._rank()
        if len(stream.urls) < stream.world_size:  # a rank without a shard would have nothing to train or score on
            raise UserError(f"dataset=wds: the {split} split has {len(stream.urls)} shard(s), fewer than the "
                            f"{stream.world_size} devices reading it; write at least {stream.world_size} shards "
                            "(glsim-data convert --shard-size) or run on fewer devices")  # fmt: skip
        return stream

    def _common(self) -> dict[str, Any]:
        return dict(batch_size=self.batch_size, num_workers=self.num_workers,
                    pin_memory=self.pin_memory and torch.cuda.is_available())  # fmt: skip

    def train_dataloader(self) -> _EpochLoader:
        """Shards dealt to ranks x workers by a (seed, epoch) order; every rank takes the same number of batches."""
        augs = self.augs
        mixing = augs.mixup_alpha > 0 or augs.cutmix_alpha > 0
        collate = MixUpCutMixCollate(self.num_classes, augs.mixup_alpha, augs.cutmix_alpha) if mixing else None
        stream = self._on_this_rank(self.train_stream, "train")
        loader = _EpochLoader(self, stream, self.train_counts, collate_fn=collate, **self._common())
        if self.train_counts is not None:
            n = len(loader)
            if n == 0:
                raise UserError(f"dataset=wds: the train shards give no full batch of dataset.batch_size="
                                f"{self.batch_size} on every rank and loader worker; lower the batch size or "
                                "dataset.num_workers, or write more shards")  # fmt: skip
            dropped = sum(self.train_counts) - n * self.batch_size * self.train_stream.world_size
            if dropped:
                log.info(
                    f"dataset=wds: {n} batches per rank this epoch; {dropped} train samples wait for a later "
                    "epoch (shards of unequal totals per rank and worker, or the last incomplete batches)"
                )
        return loader

    def _eval_loader(self, stream: ShardStream | None, split: str) -> DataLoader | list:
        if stream is None:
            return []
        return DataLoader(self._on_this_rank(stream, split), shuffle=False, drop_last=False, **self._common())

    def val_dataloader(self) -> DataLoader | list:
        return self._eval_loader(self.val_stream, "val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader(self.test_stream, "test")

    def read_splits(self) -> Splits:
        raise UserError("dataset=wds is read as a stream; it has no random-access splits")
