"""The ``imports`` config key: the user's modules, imported before anything is built, so what they register
(selectors with :func:`glsim_pl.models.selectors.register_selector`, or anything else) is there by name."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from pathlib import Path

from glsim_pl.errors import UserError

__all__ = ["import_user_modules"]


def import_user_modules(modules: Sequence[str] | None, key: str = "imports") -> None:
    """Import every dotted module name (the working directory is searchable, as for ``python -m``)."""
    if not modules:
        return
    if isinstance(modules, str):
        raise UserError(f"{key}={modules!r}: expected a list of module names, e.g. {key}=[{modules}]")
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.append(cwd)
    for name in modules:
        try:
            importlib.import_module(str(name))
        except ImportError as exc:
            hint = f"expected a module on PYTHONPATH or in {cwd}"
            raise UserError(f"{key}: cannot import {name!r} ({exc}); {hint}") from None
