"""Rank-aware logging (under DDP only rank 0 speaks unless asked otherwise) and the tracker helpers that send
figures, images and the run config to every active Lightning logger (TensorBoard, CSV, W&B, MLflow)."""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch.utilities import rank_zero_only

__all__ = ["HeldFileLines", "RankedLogger", "quiet_library_notices"]


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


# -- what the libraries print that says nothing about this run --------------------------------------------------------
_NOTICE_LOGGERS = ("lightning.fabric.utilities.rank_zero", "lightning.pytorch.utilities.rank_zero")
_KNOWN_WARNINGS = (  # (message regex, category): deprecations inside the libraries, not in anything a user calls
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning),  # Lightning's _pytree on torch >= 2.10
    (r"'set_vital' is deprecated", UserWarning),  # torchdata's StatefulDataLoader on torch >= 2.10
)


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("\N{ELECTRIC LIGHT BULB} Tip:")


class quiet_library_notices(contextlib.ContextDecorator):
    """While an entry point runs: no Lightning advertising tips ("💡 Tip: ...") and none of the known library
    deprecation warnings. Filters are installed on entry and removed on exit, so a user's own code around (or after)
    an entry point sees every warning as usual."""

    def __enter__(self) -> quiet_library_notices:
        self._warnings = warnings.catch_warnings()
        self._warnings.__enter__()
        for message, category in _KNOWN_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=category)
        self._filter = _DropTips()
        for name in _NOTICE_LOGGERS:
            logging.getLogger(name).addFilter(self._filter)
        return self

    def __exit__(self, *exc: object) -> None:
        for name in _NOTICE_LOGGERS:
            logging.getLogger(name).removeFilter(self._filter)
        self._warnings.__exit__(*exc)


class HeldFileLines:
    """Holds the records that the root logger's file handlers writing into ``folder`` would write, until
    :meth:`release`: kept (written in order) or dropped. A run refused after its first lines leaves its folder's log
    as it was; a run that goes ahead loses nothing."""

    def __init__(self, folder: str | Path) -> None:
        root, target = logging.getLogger(), Path(folder).resolve()
        self._swaps: list[tuple[logging.Handler, logging.handlers.MemoryHandler]] = []
        for handler in list(root.handlers):
            if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).resolve().parent == target:
                held = logging.handlers.MemoryHandler(10**6, flushLevel=logging.CRITICAL + 1, target=handler,
                                                      flushOnClose=False)  # fmt: skip
                held.setLevel(handler.level)
                root.removeHandler(handler)
                root.addHandler(held)
                self._swaps.append((handler, held))

    def release(self, keep: bool) -> None:
        """Write the held lines (``keep``) or drop them; the file handlers take over again. Idempotent."""
        root = logging.getLogger()
        for handler, held in self._swaps:
            if keep:
                held.flush()
            root.removeHandler(held)
            held.buffer.clear()
            root.addHandler(handler)
        self._swaps = []
