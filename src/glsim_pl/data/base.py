"""Shared DataModule of every fine-grained benchmark: official splits -> train / val / test loaders.

Protocols:
- ``val`` (default): model selection on a validation split, test once at the end. A dataset that gives a val split
  (``Splits.val``: a folder's ``val_root``, a CSV's ``val_file``) selects on it as given; otherwise it is carved
  from the official train split. Rule: per class, the first ``train_fraction`` of its train rows in official order
  -> train, the rest -> val (at least one image per class stays in train).
- ``paper``: fit on the whole official train split (and a given val split), no validation, test once (the official
  GLSim protocol).
- ``vpt`` / ``vpt_trainval``: the VPT FGVC splits (:mod:`glsim_pl.data.vpt_splits`): train on VPT's train.json and
  select on its val.json, or fit on both without validation; test on its test.json (the official test set).
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar, Literal, NamedTuple

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors
from torchvision.transforms.v2.functional import get_size

from glsim_pl.data.cache import cached_views, check_cache_args, resolve_device_normalize
from glsim_pl.data.image_io import MAX_PIXELS
from glsim_pl.data.sampling import EpochSampler, EvalShardSampler, ResumableLoader, SeededCollate, SeededView
from glsim_pl.data.sources import ImageFileList, describe_left_out
from glsim_pl.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    AugConfig,
    MixUpCutMixCollate,
    UInt8Crop,
    build_eval_transform,
    build_train_transform,
    finish_on_device,
)
from glsim_pl.data.verify import VERIFY_MODES, DataCheck, default_cache_dir, run_data_check
from glsim_pl.data.vpt_splits import VPT_PROTOCOLS, vpt_splits
from glsim_pl.data.workers import resolve_num_workers
from glsim_pl.errors import UserError
from glsim_pl.utils.logging import RankedLogger

__all__ = ["FGVCDataModule", "Splits", "TransformedView", "split_train_val"]

log = RankedLogger(__name__)


class Splits(NamedTuple):
    """What a dataset module reads from its files: the official train and test sources, the class names and, where
    the files give one, the validation source (same kind as ``train``; None: val is carved from train)."""

    train: Dataset
    test: Dataset
    class_names: list[str]
    val: Dataset | None = None


def split_train_val(targets: Sequence[int], train_fraction: float) -> tuple[list[int], list[int]]:
    """Per class, the first ``int(n * train_fraction)`` indices (at least one) -> train, the rest -> val."""
    by_class: dict[int, list[int]] = defaultdict(list)
    for index, label in enumerate(targets):
        by_class[label].append(index)
    train, val = [], []
    for indices in by_class.values():
        cut = max(1, int(len(indices) * train_fraction))
        train += indices[:cut]
        val += indices[cut:]
    return sorted(train), sorted(val)


def _joined(train: Dataset, val: Dataset) -> Dataset:
    """One source of the train samples followed by the val samples (the views, the data check and the cache index
    it); a given val split needs a file list like its train split."""
    if not (isinstance(train, ImageFileList) and isinstance(val, ImageFileList)):
        raise TypeError(f"Splits.val: expected ImageFileList train and val sources, got {type(train).__name__} and "
                        f"{type(val).__name__}")  # fmt: skip
    return ImageFileList([*train.samples, *val.samples], train.draft, train.max_pixels)


def _normalisation(
    normalize: str, mean: Sequence[float] | None, std: Sequence[float] | None, backbone: str | None
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) for ``dataset.normalize``; ImageNet's by default, as the official runs used with every backbone."""
    if normalize == "imagenet":
        return IMAGENET_MEAN, IMAGENET_STD
    if normalize == "custom":
        if mean is None or std is None:
            raise UserError("dataset.normalize=custom needs dataset.mean and dataset.std")
        return tuple(mean), tuple(std)
    if normalize == "timm":
        from timm.models import get_pretrained_cfg

        pretrained = get_pretrained_cfg(backbone) if backbone else None
        if pretrained is None:
            raise UserError(f"dataset.normalize=timm: no timm pretrained config for dataset.backbone={backbone!r} "
                            "(expected a timm model name such as vit_base_patch16_224.orig_in21k)")  # fmt: skip
        return tuple(pretrained.mean), tuple(pretrained.std)
    raise UserError(f"dataset.normalize={normalize!r}: expected 'imagenet', 'timm' or 'custom'")


class TransformedView(Dataset):
    """A subset of a source with a transform; yields (image, label) or (image, label, box (4,)) tensors."""

    def __init__(self, source: Dataset, indices: Sequence[int], transform: Any, return_boxes: bool = False) -> None:
        self.source, self.indices, self.transform = source, list(indices), transform
        self.return_boxes = return_boxes

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int] | tuple[torch.Tensor, int, torch.Tensor]:
        fetch = getattr(self.source, "fast_item", None) or self.source.__getitem__  # data/jpeg.py fast path
        image, label, box = fetch(self.indices[i])  # a bad file is left out by the data check, never replaced
        if not self.return_boxes:
            return self.transform(image), label
        size = tuple(get_size(image))  # a PIL image, or a cached (3, R, R) tensor
        boxes = tv_tensors.BoundingBoxes([box], format="XYXY", canvas_size=size)  # (1, 4)
        image, boxes = self.transform(image, boxes)
        return image, label, boxes[0].as_subclass(torch.Tensor).float()


class FGVCDataModule(L.LightningDataModule):
    """Base of every dataset module. Subclasses implement :meth:`read_splits` (and declare their files).

    Args:
        root: dataset folder, as the official archive extracts.
        num_classes: expected number of classes; checked against the files.
        image_size: crop side S fed to the model.
        batch_size: per device (the paper: 8 on one GPU).
        num_workers: data-loading processes per device, or ``auto`` (the CPUs available per device, minus one).
        pin_memory: page-locked host memory (faster host-to-GPU copies).
        persistent_workers: keep workers alive across epochs.
        resize_factor: resize side R = int(resize_factor * S) before cropping (paper: 1.34).
        protocol: ``val`` (select on val, test at the end), ``paper`` (fit on train+val, test at the end), ``vpt``
            (VPT's train / val / test split files) or ``vpt_trainval`` (fit on VPT's train + val, test).
        train_fraction: share of each class's train rows kept for training under ``val``.
        augs: train augmentation switches (see :class:`AugConfig`).
        normalize: ``imagenet`` (mean/std of the official runs), ``timm`` (mean/std of ``backbone``'s timm
            pretrained config) or ``custom`` (``mean``/``std`` given).
        backbone: timm model name (with weight tag) whose data config ``normalize=timm`` reads.
        mean: normalisation mean when ``normalize=custom``.
        std: normalisation std when ``normalize=custom``.
        skip_corrupt: leave the files the data check finds bad out of their split (listed, counted) instead of
            stopping.
        verify: the data check before training: ``fast``, ``full`` or ``off`` (:mod:`glsim_pl.data.verify`).
        check_cache_dir: where the data check caches its results (default: ``~/.cache/glsim_pl/data_check``).
        max_image_pixels: images with more pixels are refused (decompression bombs); null: no limit.
        fast_decode: decode JPEGs at reduced scale (PIL draft) when they are much larger than needed.
        cache: ``off``, ``ram`` or ``disk``: keep decode + resize output (see :mod:`glsim_pl.data.cache`).
        cache_dir: folder of ``cache=disk`` files (None: ``~/.cache/glsim_pl/prefix``).
        device_normalize: ``auto`` (when training on CUDA), ``true`` or ``false``: train workers return uint8 crops
            and ToDtype + Normalize + RandomErasing run batched on the device (:meth:`on_after_batch_transfer`).
        vpt_split_dir: folder of VPT's ``train.json`` / ``val.json`` / ``test.json`` (None: ``root``).
    """

    name: ClassVar[str] = "dataset"
    source_url: ClassVar[str] = ""  # where the official files come from, for error messages
    required_files: ClassVar[tuple[str, ...]] = ()  # relative to root; checked before parsing
    hflip_preserves_label: ClassVar[bool] = True
    infers_num_classes: ClassVar[bool] = False  # True: num_classes left unset (0 / null) is read from the files
    color_preserves_label: ClassVar[bool] = True
    vpt_image_dir: ClassVar[str | None] = None  # the folder under root VPT's split files' paths start in; None: no VPT

    def __init__(
        self,
        root: str | None = None,
        num_classes: int = 0,
        image_size: int = 224,
        batch_size: int = 8,
        num_workers: int | str = "auto",
        pin_memory: bool = True,
        persistent_workers: bool = True,
        resize_factor: float = 1.34,
        protocol: Literal["val", "paper", "vpt", "vpt_trainval"] = "val",
        train_fraction: float = 0.8,
        augs: dict[str, Any] | None = None,
        normalize: Literal["imagenet", "timm", "custom"] = "imagenet",
        backbone: str | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        skip_corrupt: bool = False,
        fast_decode: bool = False,
        verify: Literal["fast", "full", "off"] = "fast",
        check_cache_dir: str | None = None,
        max_image_pixels: int | None = MAX_PIXELS,
        cache: str = "off",
        cache_dir: str | None = None,
        device_normalize: bool | str = "auto",
        vpt_split_dir: str | None = None,
    ) -> None:
        super().__init__()
        if protocol not in ("val", "paper", *VPT_PROTOCOLS):
            raise UserError(f"dataset.protocol={protocol!r}: expected 'val', 'paper', 'vpt' or 'vpt_trainval'")
        if protocol in VPT_PROTOCOLS and self.vpt_image_dir is None:
            raise UserError(f"dataset.protocol={protocol} with dataset '{self.name}': VPT publishes FGVC splits for "
                            "cub, nabirds, flowers, dogs and cars only")  # fmt: skip
        self.root = Path(root).expanduser().absolute() if root else None
        self.num_classes, self.image_size, self.batch_size = num_classes, image_size, batch_size
        self.num_workers = resolve_num_workers(num_workers)  # "auto": CPUs per device (data/workers.py)
        self.pin_memory, self.persistent_workers = pin_memory, persistent_workers
        self.resize_size = int(resize_factor * image_size)
        self.protocol, self.train_fraction = protocol, train_fraction
        self.vpt_split_dir = Path(vpt_split_dir).expanduser().absolute() if vpt_split_dir else self.root
        known = {f.name for f in dataclasses.fields(AugConfig)}
        unknown = set(augs or {}) - known
        if unknown:
            raise UserError(f"augs: unknown keys {sorted(unknown)}; expected some of {sorted(known)}")
        self.augs = AugConfig(**(augs or {}))
        self._normalize_args = (normalize, mean, std, backbone)  # resolved in check(): errors there print cleanly
        self.skip_corrupt, self.fast_decode = skip_corrupt, fast_decode
        self.cache, self.cache_dir, self.device_normalize = check_cache_args(cache, cache_dir, device_normalize)
        self._finish_batch = False  # train batches arrive as uint8 crops (device_normalize resolved in setup)
        if verify not in VERIFY_MODES:
            raise UserError(f"dataset.verify={verify!r}: expected one of {', '.join(VERIFY_MODES)}")
        if skip_corrupt and verify == "off":
            raise UserError("dataset.skip_corrupt=true needs the data check that finds the bad files: "
                            "set dataset.verify=fast or full")  # fmt: skip
        self.verify, self.max_image_pixels = verify, max_image_pixels
        self.check_cache_dir = Path(check_cache_dir).expanduser() if check_cache_dir else default_cache_dir()
        self.data_check: DataCheck | None = None  # set by setup(): what the data check found and removed
        self.left_out: dict[str, int] = {}  # files a dataset's scan did not take as images, counted by reason
        self.val_split = ""  # set by setup(): where the val split comes from, in words
        self.data_train = self.data_val = self.data_test = None
        self.run_seed = 0  # the run's seed (train.py sets it): training order and augmentations derive from it

    # -- what a subclass provides -------------------------------------------------------------------------------
    def read_splits(self) -> Splits:
        """Parse the official files into train/test sources and class names."""
        raise NotImplementedError

    def train_val_indices(self, train_src: Dataset) -> tuple[list[int], list[int]]:
        """(train, val) indices into the train source under ``protocol=val``: carved by :func:`split_train_val`
        unless the format ships its own validation split."""
        return split_train_val(train_src.targets, self.train_fraction)

    # -- checks ---------------------------------------------------------------------------------------------------
    def missing_files_error(self, missing: Sequence[str]) -> UserError:
        """The one message a user sees when the dataset is not where the config says."""
        return UserError(
            f"dataset '{self.name}': not found at {self.root} (missing: {', '.join(missing)}). "
            f"Expected the official layout with {', '.join(self.required_files)}. "
            f"Get it from {self.source_url} and extract it there, or point to it with dataset.root=/path/to/it "
            "(or set paths.data_dir to the folder that holds it)."
        )

    @cached_property
    def splits(self) -> Splits:
        """Official splits, parsed once after the required files are checked."""
        if self.required_files:
            if self.root is None:
                raise UserError(f"dataset '{self.name}': dataset.root is not set")
            missing = [f for f in self.required_files if not (self.root / f).exists()]
            if missing:
                raise self.missing_files_error(missing)
        splits = self.read_splits()
        if self.protocol in VPT_PROTOCOLS:  # the official files give class names and boxes; VPT's files the splits
            official = [s for s in (splits.train, splits.test, splits.val) if isinstance(s, ImageFileList)]
            draft, images = self.resize_size if self.fast_decode else None, self.root / (self.vpt_image_dir or "")
            train, val, test, names = vpt_splits(self.name, official, splits.class_names, images, self.vpt_split_dir,
                                                 draft)  # fmt: skip
            splits = Splits(train, test, names, val)
        for source in (splits.train, splits.test, splits.val):
            if hasattr(source, "max_pixels"):
                source.max_pixels = self.max_image_pixels
        return splits

    def check(self) -> None:
        """Fail early, with one clear message, on missing files, a wrong ``num_classes`` or normalisation."""
        _ = self.normalisation
        found = len(self.splits.class_names)
        if not self.num_classes and self.infers_num_classes:
            self.num_classes = found
            log.info(f"dataset '{self.name}': {found} classes found at {self.root} (dataset.num_classes)")
        if found != self.num_classes:
            raise UserError(
                f"dataset '{self.name}': dataset.num_classes={self.num_classes} but the files at {self.root} "
                f"define {found} classes. Set dataset.num_classes={found} if that is intended."
            )

    @cached_property
    def normalisation(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(mean, std) the transforms normalise with."""
        return _normalisation(*self._normalize_args)

    @property
    def mean(self) -> tuple[float, ...]:
        """Normalisation mean per RGB channel."""
        return self.normalisation[0]

    @property
    def std(self) -> tuple[float, ...]:
        """Normalisation std per RGB channel."""
        return self.normalisation[1]

    @property
    def class_names(self) -> list[str]:
        """Class names, index = label."""
        return self.splits.class_names

    def effective_augs(self) -> AugConfig:
        """The preset minus the augmentations that would change this dataset's labels."""
        augs = self.augs
        if augs.hflip and not self.hflip_preserves_label:
            log.info(f"dataset '{self.name}': horizontal flip changes labels here; disabled")
            augs = dataclasses.replace(augs, hflip=False)
        if (augs.trivial_aug or augs.rand_aug) and not self.color_preserves_label:
            log.info(f"dataset '{self.name}': colour augmentations change labels here; disabled")
            augs = dataclasses.replace(augs, trivial_aug=False, rand_aug=False)
        return augs

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without its trainer, as a LightningModule is: a spawned process attaches its own, and a finished
        trainer's loaders hold ``torch.Generator`` objects that cannot cross a ``spawn`` (ddp_spawn) boundary."""
        return {**self.__dict__, "trainer": None}

    # -- Lightning hooks ------------------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        """Only checks files; never downloads."""
        self.check()

    def train_val_split(self) -> tuple[Dataset, list[int], list[int]]:
        """(train source, train indices, val indices) under the protocol, and ``val_split`` saying where val comes
        from: a given val split joins the train source after train, else val is the format's own or carved."""
        train_src, val_src = self.splits.train, self.splits.val
        if val_src is not None:  # selection on the given val split; it is never carved from train
            train_idx = list(range(len(train_src)))
            val_idx = list(range(len(train_src), len(train_src) + len(val_src)))
            train_src = _joined(train_src, val_src)
            self.val_split = "VPT val.json" if self.protocol in VPT_PROTOCOLS else "given"
        else:  # a format may hold its own val inside the train source (train_val_indices)
            train_idx, val_idx = self.train_val_indices(train_src)
            own = getattr(self, "has_official_val", False)
            self.val_split = "given" if own else f"carved from train (last {1 - self.train_fraction:.0%} of each class)"
        if self.protocol in ("paper", "vpt_trainval"):
            train_idx, val_idx = list(range(len(train_src))), []  # a given val split is fitted on too
            given = ": the given val split is trained on)" if val_src else ")"
            self.val_split = f"none (protocol={self.protocol}{given}"
        return train_src, train_idx, val_idx

    def setup(self, stage: str | None = None) -> None:
        """Build the three splits once."""
        if self.data_train is not None:
            return
        self.check()
        test_src = self.splits.test
        train_src, train_idx, val_idx = self.train_val_split()
        self._finish_batch = resolve_device_normalize(self.device_normalize, self.trainer, self.augs)
        augs = self.effective_augs()
        train_tf = build_train_transform(self.image_size, self.resize_size, augs, self.mean, self.std,
                                         device_normalize=self._finish_batch)  # fmt: skip
        eval_tf = build_eval_transform(self.image_size, self.resize_size, self.mean, self.std)
        has_boxes = getattr(test_src, "boxes", None) is not None
        self.data_check = run_data_check(
            self.name, self.root, {"train": (train_src, train_idx), "val": (train_src, val_idx),
                                   "test": (test_src, list(range(len(test_src))))},
            self.class_names, self.verify, self.skip_corrupt, self.num_workers, self.max_image_pixels,
            self.check_cache_dir,
        )  # fmt: skip
        train_idx, val_idx, test_idx = (self.data_check.kept[s] for s in ("train", "val", "test"))
        views = cached_views(self, train_src, test_src, train_idx, val_idx, test_idx, train_tf, eval_tf)  # cache.py
        (train_src, train_tf), (val_src, val_tf), (test_src, test_tf) = views
        self.data_train = TransformedView(train_src, train_idx, train_tf)
        self.data_val = TransformedView(val_src, val_idx, val_tf, has_boxes)
        self.data_test = TransformedView(test_src, test_idx, test_tf, has_boxes)
        left_out = describe_left_out(self.left_out)
        log.info(f"dataset '{self.name}': train {len(train_idx)}, val {len(val_idx)}, test {len(test_idx)} images, "
                 f"{self.num_classes} classes, protocol={self.protocol}; val: {self.val_split}"
                 + (f"; left out of the files found: {left_out}" if left_out else ""))  # fmt: skip

    def _check_split_size(self, split: str, data: Dataset, train: bool) -> None:
        """A train split smaller than one batch gives no optimizer step (its last incomplete batch is dropped)."""
        trainer = self.trainer
        ranks = trainer.world_size if trainer is not None else 1
        if train and len(data) < self.batch_size * ranks:
            raise UserError(f"dataset '{self.name}': the train split has {len(data)} images, fewer than one batch "
                            f"(dataset.batch_size={self.batch_size} x {ranks} device(s)); expected "
                            f"dataset.batch_size <= {max(len(data) // ranks, 1)}")  # fmt: skip
        if not len(data):
            raise UserError(f"dataset '{self.name}': the {split} split is empty")

    def _loader(self, data: Dataset, train: bool) -> DataLoader:
        """Train: a resumable loader whose order and augmentations are functions of (seed, epoch, sample)
        (see :mod:`glsim_pl.data.sampling`); eval: in order, one contiguous block of whole batches per rank. Each
        loader draws its worker seeds from its own generator, so creating one never moves the global RNG that
        dropout / stochastic depth use."""
        augs = self.augs
        mixing = train and (augs.mixup_alpha > 0 or augs.cutmix_alpha > 0)
        collate = MixUpCutMixCollate(self.num_classes, augs.mixup_alpha, augs.cutmix_alpha) if mixing else None
        common = dict(
            batch_size=self.batch_size, num_workers=self.num_workers,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            persistent_workers=self.persistent_workers and self.num_workers > 0,
            generator=torch.Generator().manual_seed(self.run_seed),
        )  # fmt: skip
        trainer = self.trainer  # set by Lightning during fit; None when a loader is built by hand
        ranks, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        if not train:
            if ranks == 1:
                return DataLoader(data, shuffle=False, drop_last=False, **common)
            return DataLoader(data, sampler=self._eval_shards(data, ranks, rank), drop_last=False, **common)
        sampler = EpochSampler(data, self.run_seed, self.batch_size, drop_last=True, num_replicas=ranks, rank=rank)
        if trainer is not None:  # the epoch Lightning is about to start (also after a resume): workers prefetch
            sampler.set_epoch(trainer.fit_loop.epoch_progress.current.processed)  # before its set_epoch call
        return ResumableLoader(SeededView(data), sampler=sampler, drop_last=True, collate_fn=SeededCollate(collate),
                               **common)  # fmt: skip

    def _eval_shards(self, data: Dataset, ranks: int, rank: int) -> EvalShardSampler:
        """Each image evaluated once over all ranks (Lightning's own sampler would repeat some to even the ranks), in
        the batches one process would form."""
        if len(data) < ranks:
            raise UserError(f"dataset '{self.name}': an evaluation split has {len(data)} images, fewer than the "
                            f"{ranks} devices evaluating it; evaluate it on at most {len(data)} device(s) "
                            "(trainer.devices)")  # fmt: skip
        return EvalShardSampler(data, num_replicas=ranks, rank=rank, batch_size=self.batch_size)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """``device_normalize``: a train batch of uint8 crops gets ToDtype + Normalize + RandomErasing here, on the
        device, so the model receives the same tensor as from the per-sample CPU pipeline."""
        if self._finish_batch and isinstance(batch[0], UInt8Crop):
            images = finish_on_device(batch[0], self.mean, self.std)
            if self.trainer is not None:  # "-true" precisions cast float inputs; the uint8 crops came through as is
                images = self.trainer.precision_plugin.convert_input(images)
            return (images, *batch[1:])
        return batch

    def train_dataloader(self) -> DataLoader:
        """Shuffled, last incomplete batch dropped (as the official runs)."""
        self._check_split_size("train", self.data_train, train=True)
        return self._loader(self.data_train, train=True)

    def val_dataloader(self) -> DataLoader | list:
        """The validation split; none under the paper protocol."""
        return self._loader(self.data_val, train=False) if len(self.data_val) else []

    def test_dataloader(self) -> DataLoader:
        """The official test split."""
        self._check_split_size("test", self.data_test, train=False)
        return self._loader(self.data_test, train=False)
