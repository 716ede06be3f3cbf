"""Dispatch ``python -m glsim_pl.bench <what> [args]`` to ``glsim_pl.bench.<what>.main(args)``."""

from __future__ import annotations

import importlib
import pkgutil
import sys

import glsim_pl.bench as bench_pkg


def main(argv: list[str] | None = None) -> None:
    """Run one benchmark module by name."""
    argv = list(sys.argv[1:] if argv is None else argv)
    available = sorted(m.name for m in pkgutil.iter_modules(bench_pkg.__path__) if not m.name.startswith("_"))
    if not argv or argv[0] not in available:
        raise SystemExit(f"usage: python -m glsim_pl.bench <{'|'.join(available)}> [options]")
    importlib.import_module(f"glsim_pl.bench.{argv[0]}").main(argv[1:])


if __name__ == "__main__":
    main()
