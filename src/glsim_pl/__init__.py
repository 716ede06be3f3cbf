"""glsim_pl."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["load_pretrained"]


def __getattr__(name: str) -> Any:
    """Lazy exports: ``import glsim_pl`` stays light (no torch, Lightning or Hydra until used)."""
    if name == "load_pretrained":
        from .export import load_pretrained

        return load_pretrained
    raise AttributeError(f"module 'glsim_pl' has no attribute {name!r}")
