"""Copy installed pure-Python packages, with their ``*.dist-info``, into a folder for ``PYTHONPATH``.

The metadata matters: Lightning asks ``importlib.metadata`` whether hydra-core is installed, and without it a DDP
run would start its child processes in new run folders instead of the parent's.

    python -m glsim_pl.bench.bundle .gpu/site hydra omegaconf antlr4 torchdata
"""

from __future__ import annotations

import shutil
import sys
from importlib import metadata
from pathlib import Path


def bundle(dest: Path, packages: list[str]) -> list[str]:
    """Copy each top-level import package and the dist-info of the distribution that provides it; return the names."""
    owners = metadata.packages_distributions()
    dest.mkdir(parents=True, exist_ok=True)
    copied = []
    for package in packages:
        if package not in owners:
            raise SystemExit(f"error: no installed distribution provides the package {package!r}")
        dist = metadata.distribution(owners[package][0])
        source = Path(dist.locate_file(package))
        info = Path(dist._path)  # the *.dist-info folder itself; no public accessor exists
        shutil.copytree(source, dest / package, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
        shutil.copytree(info, dest / info.name, dirs_exist_ok=True)
        copied += [package, info.name]
    return copied


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 2:
        raise SystemExit("usage: python -m glsim_pl.bench.bundle DEST PACKAGE [PACKAGE ...]")
    for name in bundle(Path(args[0]), args[1:]):
        print(f"bundled {name}")


if __name__ == "__main__":
    main()
