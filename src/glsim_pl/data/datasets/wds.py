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

import json
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from glsim_pl.data.base import FGVCDataModule, Splits
from glsim_pl.data.datasets.wds_samples import IMAGE_EXTS, decode_sample
from glsim_pl.data.datasets.wds_shards import count_local_samples, expand_urls
from glsim_pl.data.datasets.wds_stream import EpochLoader, ShardStream
from glsim_pl.data.transforms import MixUpCutMixCollate, build_eval_transform, build_train_transform
from glsim_pl.errors import UserError
from glsim_pl.utils.logging import RankedLogger

# expand_urls, ShardStream, decode_sample and IMAGE_EXTS live in wds_shards / wds_stream / wds_samples; they stay
# importable from here, the module other code, tests and run configs name
__all__ = ["FORMAT", "IMAGE_EXTS", "INFO_FILE", "ShardStream", "WDSDataModule", "decode_sample", "expand_urls"]

_EpochLoader = EpochLoader  # its name before the split, which tests import from here

log = RankedLogger(__name__)

INFO_FILE = "info.json"
FORMAT = "glsim_pl-wds-1"
SPLITS = ("train", "val", "test")


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
                counts = [count_local_samples(u) for u in expanded]
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

    def train_dataloader(self) -> EpochLoader:
        """Shards dealt to ranks x workers by a (seed, epoch) order; every rank takes the same number of batches."""
        augs = self.augs
        mixing = augs.mixup_alpha > 0 or augs.cutmix_alpha > 0
        collate = MixUpCutMixCollate(self.num_classes, augs.mixup_alpha, augs.cutmix_alpha) if mixing else None
        stream = self._on_this_rank(self.train_stream, "train")
        loader = EpochLoader(self, stream, self.train_counts, collate_fn=collate, **self._common())
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
