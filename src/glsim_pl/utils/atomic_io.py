"""One rule for writing files that readers may open at any moment: write a temporary file beside the target, fsync,
then ``os.replace``; readers see the old file or the whole new one."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch


def atomic_write(path: Path, write: Any, mode: int = 0o644) -> Path:
    """``write(temp_path)``, then chmod ``mode`` and ``os.replace`` onto ``path``: readers see the old file or the
    whole new one, and the file is readable by the group and others (the umask does not apply)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(temp)
        with open(temp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(temp, mode)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return path


__all__ = ["atomic_torch_save", "atomic_write"]


_TEMP_SUFFIX = ".tmp"


def _temp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}{_TEMP_SUFFIX}")


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some platforms cannot open a folder; the rename itself is still atomic
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, flush + fsync, then ``os.replace`` it onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.*{_TEMP_SUFFIX}"):  # left by a process killed mid-write
        stale.unlink(missing_ok=True)
    temp = _temp_path(path)
    try:
        with open(temp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
