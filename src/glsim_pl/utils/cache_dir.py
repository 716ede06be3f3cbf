"""The one folder every cache of the package lives under (data checks, prefix caches, built backbones)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_root"]


def cache_root() -> Path:
    """``$GLSIM_CACHE_DIR``, else ``$XDG_CACHE_HOME/glsim_pl`` (``~/.cache/glsim_pl`` when unset)."""
    base = os.environ.get("GLSIM_CACHE_DIR")
    return Path(base) if base else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "glsim_pl"
