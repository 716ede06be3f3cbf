"""The one place that turns config nodes into objects (``hydra.utils.instantiate`` with ``_convert_="all"``)."""

from __future__ import annotations

from typing import Any

import hydra
from hydra.errors import InstantiationException
from omegaconf import DictConfig

from ..errors import UserError

__all__ = ["instantiate", "instantiate_collection"]


def instantiate(node: DictConfig, **kwargs: Any) -> Any:
    """Instantiate one ``_target_`` node with plain Python containers; a :class:`UserError` comes out unwrapped."""
    try:
        return hydra.utils.instantiate(node, _convert_="all", **kwargs)
    except InstantiationException as exc:
        cause = exc.__cause__
        if isinstance(cause, UserError):
            raise cause from None
        if isinstance(cause, TypeError) and "unexpected keyword argument" in str(cause):
            target = node.get("_target_", "?")
            raise UserError(f"config for {target}: {cause} (check the spelling of that key)") from None
        raise


def instantiate_collection(node: DictConfig | None, skip: set[str] | frozenset[str] = frozenset()) -> list[Any]:
    """Instantiate every ``_target_`` entry of a mapping (callbacks, loggers) except the ``skip`` keys."""
    if not node:
        return []
    entries = [entry for key, entry in node.items() if key not in skip]
    return [instantiate(entry) for entry in entries if isinstance(entry, DictConfig) and "_target_" in entry]
