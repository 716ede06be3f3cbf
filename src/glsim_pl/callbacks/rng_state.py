"""Save every rank's RNG states (python, numpy, torch, CUDA) in each checkpoint; put them back on resume.

Lightning saves weights, optimizer, schedule and loop position but no RNG state, so a resumed run would draw
different dropout / stochastic-depth masks than the uninterrupted one. Data randomness does not live here
(it is a function of (seed, epoch, sample), :mod:`glsim_pl.data.sampling`); these are the training
process's own streams. Each rank's states are gathered to the checkpoint (only rank 0 writes it); on resume
each rank takes its own entry. The states are applied at ``on_train_start``, the last hook before the first
resumed batch, so nothing Lightning does while restoring can move them.
"""

from __future__ import annotations

import random
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback

from glsim_pl.utils.logging import RankedLogger

__all__ = ["RNGStateCheckpoint", "capture_rng_states", "restore_rng_states"]

log = RankedLogger(__name__)


def capture_rng_states() -> dict[str, Any]:
    """This process's RNG states as plain values (``torch.load(weights_only=True)`` reads them back)."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, list(internal), gauss],
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },  # fmt: skip
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_states(states: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_states`."""
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    n = states["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        if len(states["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states["cuda"])
        else:
            log.warning("resume: the checkpoint's CUDA RNG states are for a different number of GPUs; not restored")


class RNGStateCheckpoint(Callback):
    """Checkpoint state: ``{"ranks": [states of rank 0, rank 1, ...]}``."""

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    @property
    def state_key(self) -> str:
        return "RNGStateCheckpoint"

    def state_dict(self) -> dict[str, Any]:
        """Called on every rank while a checkpoint is assembled (all ranks save together)."""
        mine = capture_rng_states()
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            ranks: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(ranks, mine)
            return {"ranks": ranks}
        return {"ranks": [mine]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        ranks = state_dict.get("ranks") or []
        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        if len(ranks) != (dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1):
            log.warning(f"resume: the checkpoint holds RNG states of {len(ranks)} ranks; this run has a different "
                        "number, so its random draws will differ from an uninterrupted run")  # fmt: skip
        self._pending = ranks[rank] if rank < len(ranks) else None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._pending is not None:
            restore_rng_states(self._pending)
            self._pending = None
