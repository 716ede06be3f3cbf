"""The one place that turns config nodes into objects (``hydra.utils.instantiate`` with ``_convert_="all"``)."""

from __future__ import annotations

from typing import Any

import hydra
from omegaconf import DictConfig

__all__ = ["instantiate", "instantiate_collection"]


def instantiate(node: DictConfig, **kwargs: Any) -> Any:
    """Instantiate one ``_target_`` node with plain Python containers."""
    return hydra.utils.instantiate(node, _convert_="all", **kwargs)


def instantiate_collection(node: DictConfig | None) -> list[Any]:
    """Instantiate every ``_target_`` entry of a mapping (callbacks, loggers); ``None`` gives none."""
    if not node:
        return []
    return [instantiate(entry) for entry in node.values() if isinstance(entry, DictConfig) and "_target_" in entry]
