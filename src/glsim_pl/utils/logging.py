"""Rank-aware logging: under DDP only rank 0 speaks unless asked otherwise."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from lightning.pytorch.utilities import rank_zero_only

__all__ = ["RankedLogger"]


class RankedLogger(logging.LoggerAdapter):
    """A logger that prefixes the rank and, with ``rank_zero_only``, stays quiet on other ranks."""

    def __init__(self, name: str = __name__, rank_zero_only: bool = True, extra: Mapping[str, Any] | None = None):
        super().__init__(logging.getLogger(name), extra)
        self.rank_zero_only = rank_zero_only

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        """Log on rank 0 only (or on every rank, prefixed, when ``rank_zero_only`` is false)."""
        if not self.isEnabledFor(level):
            return
        rank = getattr(rank_zero_only, "rank", 0) or 0
        if self.rank_zero_only and rank != 0:
            return
        if rank != 0:
            msg = f"[rank {rank}] {msg}"
        self.logger.log(level, msg, *args, **kwargs)
