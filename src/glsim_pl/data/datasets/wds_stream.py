"""A split's WebDataset shards dealt to ranks x loader workers per epoch, and the train loader that gives every
rank the same number of batches."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from torchvision import tv_tensors
from torchvision.transforms.v2.functional import get_size

from glsim_pl.data.base import FGVCDataModule
from glsim_pl.data.datasets.wds_samples import decode_sample
from glsim_pl.data.datasets.wds_shards import read_shard
from glsim_pl.data.image_io import MAX_PIXELS

__all__ = ["EpochLoader", "ShardStream"]


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
        stream = (s for url in mine for s in read_shard(url, wds))
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


class EpochLoader:
    """The train loader: a fresh DataLoader over the stream each epoch (workers then see the epoch), stopped after
    the epoch's batch count so that every rank takes the same number of steps."""

    def __init__(self, module: FGVCDataModule, stream: ShardStream, counts: list[int] | None, **loader_kw: Any) -> None:
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
