"""Training order and augmentation randomness as pure functions of (seed, epoch, sample): exact resume.

A resumed run must draw the same batches and the same augmentations as the uninterrupted run, whatever the
number of loader workers, whether they persist across epochs, and wherever the run was killed. Worker RNG
streams cannot give that (a persistent worker carries its stream across epochs; after a resume it restarts
from its initial seed, and which worker gets which batch depends on timing), so no sample's randomness
comes from them:

- :class:`EpochSampler` yields this rank's share of a permutation seeded by (seed, epoch) -- a
  ``DistributedSampler``, so Lightning keeps it under DDP -- as :class:`SampleKey` (index, sample seed), with
  the sample seed a hash of (seed, epoch, index). Its ``state_dict`` is the position in the epoch, which
  torchdata's ``StatefulDataLoader`` saves with each snapshot and Lightning puts in the checkpoint.
- :class:`SeededView` runs the wrapped dataset (decode + random transforms) with the python, numpy and torch
  RNGs seeded by the key and restores the caller's torch RNG state afterwards (with ``num_workers=0`` that caller
  is the training process, whose torch RNG drives dropout / stochastic depth).
- :class:`SeededCollate` runs the batch collate (MixUp/CutMix draws) seeded by the batch's first sample seed.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterator, Sized
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler, default_collate
from torchdata.stateful_dataloader import StatefulDataLoader

from glsim_pl.utils.logging import RankedLogger

__all__ = [
    "EpochSampler",
    "EvalShardSampler",
    "ResumableLoader",
    "SampleKey",
    "SeededCollate",
    "SeededView",
    "mix_seed",
    "seeded_rngs",
]

log = RankedLogger(__name__)
_MASK64 = (1 << 64) - 1
_COLLATE_STREAM = 0xC011A7E  # separates the collate's seed from the seed of the batch's first sample


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def mix_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from integers (SplitMix64 chain): neighbouring inputs give unrelated seeds."""
    h = 0
    for part in parts:
        h = _splitmix64(h ^ (int(part) & _MASK64))
    return h >> 1


class SampleKey(NamedTuple):
    """What :class:`EpochSampler` yields: a dataset index and the seed of this sample's randomness this epoch."""

    index: int
    seed: int


@contextlib.contextmanager
def seeded_rngs(seed: int) -> Iterator[None]:
    """Seed python's, numpy's and torch's (CPU) global RNGs for the block; torch's previous state is restored after.

    Only torch's state is put back: the training process draws dropout / stochastic-depth masks from it. Restoring
    numpy's costs ~0.2 ms a sample (more than the rest together) and nothing in training draws from python's or
    numpy's global RNG; both are saved in checkpoints anyway, so a resume stays exact.
    """
    saved = torch.default_generator.get_state()
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.default_generator.manual_seed(seed)
    try:
        yield
    finally:
        torch.default_generator.set_state(saved)


class EpochSampler(DistributedSampler):
    """This rank's share of a (seed, epoch) permutation, as :class:`SampleKey` items; resumable mid-epoch.

    Args:
        dataset: the training split.
        seed: the run's seed.
        batch_size: per-device batch size (an epoch is complete after its last full batch when ``drop_last``).
        drop_last: the loader drops the last incomplete batch.
        num_replicas: number of ranks (1 without DDP).
        rank: this rank.
    """

    def __init__(self, dataset: Sized, seed: int, batch_size: int, drop_last: bool = True, num_replicas: int = 1,
                 rank: int = 0) -> None:  # fmt: skip
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=False)
        self.batch_size, self.drop_last_batch = batch_size, drop_last
        self.yielded = 0  # samples handed out by the current pass
        self._pass_epoch = 0  # epoch of the current pass
        self._resume_at: tuple[int, int] | None = None  # (epoch, samples to skip) for the next pass

    def _epoch_samples(self) -> int:
        """Samples the loader consumes in a full epoch on this rank."""
        n = self.num_samples
        return n - n % self.batch_size if self.drop_last_batch else n

    def __iter__(self) -> Iterator[SampleKey]:
        # The position is read at the first next(), not here: torch's worker iterator calls iter() twice and
        # advances only the second one. Loaders prefetch before Lightning's set_epoch, so the loader builder
        # sets the epoch up front (FGVCDataModule._loader) and a restored state carries its own.
        epoch, skip = self._resume_at if self._resume_at is not None else (self.epoch, 0)
        self._resume_at = None
        self._pass_epoch, self.yielded = epoch, skip
        g = torch.Generator().manual_seed(mix_seed(self.seed, epoch))
        order = torch.randperm(len(self.dataset), generator=g).tolist()  # type: ignore[arg-type]
        order += order[: self.total_size - len(order)]  # pad to a multiple of the ranks, as DistributedSampler
        for index in order[self.rank : self.total_size : self.num_replicas][skip:]:
            self.yielded += 1
            yield SampleKey(index, mix_seed(self.seed, epoch, index))

    def set_epoch(self, epoch: int) -> None:
        """Lightning calls this at each epoch start; the next pass uses this epoch."""
        self.epoch = epoch

    def state_dict(self) -> dict[str, int]:
        """Position of the current pass (saved by torchdata's StatefulDataLoader with each batch it yields)."""
        return {"epoch": self._pass_epoch, "yielded": self.yielded, "seed": self.seed,
                "num_replicas": self.num_replicas, "num_samples": self.num_samples}  # fmt: skip

    def load_state_dict(self, state: dict[str, int]) -> None:
        """The next pass continues the saved one; a completed epoch continues with the next epoch's start."""
        epoch, yielded = int(state["epoch"]), int(state["yielded"])
        same = (state.get("seed"), state.get("num_replicas"), state.get("num_samples")) == (
            self.seed, self.num_replicas, self.num_samples)  # fmt: skip
        if not same:
            log.warning("resume: the training order was saved with a different seed, device count or dataset size; "
                        "the run continues but is no longer identical to an uninterrupted one")  # fmt: skip
        if yielded >= self._epoch_samples():
            epoch, yielded = epoch + 1, 0
        self._resume_at = (epoch, min(yielded, self.num_samples))
        self.epoch = epoch


class EvalShardSampler(DistributedSampler):
    """This rank's contiguous block of an evaluation split, in order, with no sample repeated or left out.

    ``DistributedSampler`` pads a split to a multiple of the ranks by repeating samples, which an evaluation would
    count twice. Here the split's batches of ``batch_size`` (those one process would run) are dealt out in blocks:
    rank r takes batches ``[r * b // W, (r + 1) * b // W)`` of the ``b`` batches. Every image then sits in the same
    batch, beside the same images, as in one process, so the model computes the same bits for it (a matrix product
    may round differently in a batch of another size); the ranks' outputs concatenated in rank order are the split in
    its own order. The blocks differ by at most one batch (fine without gradients). A split of fewer batches than
    ranks is dealt out image by image (every rank must take part in the syncs): each image still counted once, its
    numbers equal to one process's up to that rounding. A ``DistributedSampler``, so Lightning keeps it.

    Args:
        dataset: the evaluation split (at least ``num_replicas`` samples: every rank must take part in the syncs).
        num_replicas: number of ranks.
        rank: this rank.
        batch_size: the evaluation loader's batch size (1: blocks of single images).
    """

    def __init__(self, dataset: Sized, num_replicas: int, rank: int, batch_size: int = 1) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)
        n = len(dataset)
        batches = -(-n // batch_size)
        unit = batch_size if batches >= num_replicas else 1
        units = -(-n // unit)
        self.start = min(rank * units // num_replicas * unit, n)
        self.stop = min((rank + 1) * units // num_replicas * unit, n)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.stop))

    def __len__(self) -> int:
        return self.stop - self.start


class SeededView(Dataset):
    """Wraps a dataset so that ``view[SampleKey(i, seed)]`` is ``dataset[i]`` drawn under ``seed``, plus the seed.

    Items come out as ``(*dataset[i], seed)``; :class:`SeededCollate` takes the seed off again.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: SampleKey) -> tuple[Any, ...]:
        index, seed = key
        with seeded_rngs(seed):
            item = self.dataset[index]
        return (*item, seed)


class SeededCollate:
    """Collate of :class:`SeededView` items: drops their seeds, runs ``collate`` under a seed of the batch.

    Args:
        collate: the batch collate (default: torch's ``default_collate``; MixUp/CutMix draw inside it).
    """

    def __init__(self, collate: Callable[[list], Any] | None = None) -> None:
        self.collate = collate or default_collate

    def __call__(self, batch: list[tuple[Any, ...]]) -> Any:
        seed = mix_seed(batch[0][-1], _COLLATE_STREAM)
        with seeded_rngs(seed):
            return self.collate([item[:-1] for item in batch])


class ResumableLoader(StatefulDataLoader):
    """torchdata's ``StatefulDataLoader`` that also resumes a state saved with another ``num_workers``.

    torchdata refuses such a state (an assertion deep in its iterator). Nothing of the saved workers is needed
    here -- sample randomness comes from the keys -- so the sampler's position alone restores the exact order.
    """

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        snapshot = state_dict.get("_snapshot")
        main = snapshot["_main_snapshot"] if snapshot else state_dict
        saved_workers = main.get("_num_workers", 0) if snapshot else 0
        sampler_state = (main.get("_sampler_iter_state") or {}).get("sampler_state")
        if saved_workers == self.num_workers or sampler_state is None or not isinstance(self.sampler, EpochSampler):
            super().load_state_dict(state_dict)
            return
        log.info(f"resume: loader state saved with {saved_workers} workers, now {self.num_workers}; "
                 "continuing from the saved sample position")  # fmt: skip
        steps = int(state_dict.get("_steps_since_snapshot", 0)) * int(self.batch_size or 1)
        self.sampler.load_state_dict({**sampler_state, "yielded": int(sampler_state["yielded"]) + steps})
        super().load_state_dict({})
