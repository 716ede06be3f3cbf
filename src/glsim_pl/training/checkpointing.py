"""Checkpoints that a kill cannot truncate, and a clear way out when a checkpoint is unreadable anyway.

Lightning writes a checkpoint straight to its final name (after serialising it in memory), so a process killed
during the write -- or a full disk -- leaves a truncated ``last.ckpt`` behind and loses the previous one too.
:class:`AtomicCheckpointIO` writes to a temporary file in the same folder, flushes and fsyncs it, then
``os.replace``-s it over the target (atomic on POSIX filesystems) and fsyncs the folder: a reader sees the old
file or the new one, never a part.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO

from glsim_pl.errors import UserError
from glsim_pl.models.weights import read_checkpoint
from glsim_pl.utils.atomic_io import atomic_torch_save

__all__ = [
    "resume_steps",
    "AtomicCheckpointIO",
    "check_checkpoint_readable",
    "newest_loadable_checkpoint",
]


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's ``TorchCheckpointIO`` with :func:`atomic_torch_save` for local paths (remote ones unchanged)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):  # a remote URL: fsspec's own transaction
            super().save_checkpoint(checkpoint, path, storage_options)
        else:
            atomic_torch_save(checkpoint, path)


def _readable(path: Path) -> str | None:
    """None if ``path`` loads as a checkpoint dict (tensors memory-mapped, not read), else why not."""
    try:
        ckpt = read_checkpoint(path, mmap=True)
    except UserError as exc:  # truncated zip, not a torch file, unknown pickle globals
        return str(exc).split(": ", 1)[-1].splitlines()[0]
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        return "not a Lightning checkpoint (no state_dict)"
    return None


def newest_loadable_checkpoint(folders: list[Path], exclude: Path | None = None) -> Path | None:
    """The most recently written readable ``*.ckpt`` in ``folders`` (``exclude`` skipped)."""
    found = [p for folder in folders if folder.is_dir() for p in folder.glob("*.ckpt") if p.is_file()]
    for candidate in sorted(found, key=lambda p: p.stat().st_mtime, reverse=True):
        if exclude is not None and candidate.resolve() == exclude.resolve():
            continue
        if _readable(candidate) is None:
            return candidate
    return None


def check_checkpoint_readable(path: Path, key: str = "ckpt_path") -> None:
    """Raise one :class:`UserError` naming ``path`` and the newest loadable checkpoint beside it if it is unreadable."""
    reason = _readable(path)
    if reason is None:
        return
    folders = [path.parent, path.parent.parent]  # checkpoints/ and the run folder (SLURM's hpc_ckpt_*.ckpt)
    other = newest_loadable_checkpoint(folders, exclude=path)
    hint = (f"the newest loadable checkpoint is {other}: resume with {key}={other}" if other is not None
            else "no other loadable checkpoint was found next to it")  # fmt: skip
    raise UserError(f"{key}: {path} cannot be read as a checkpoint ({reason}); {hint}")


def resume_steps(path: str | Path) -> tuple[int, int]:
    """(logging step, optimizer step) a checkpoint resumes at, from one memory-mapped read (Lightning logs at the
    count of batches that stepped)."""
    ckpt = read_checkpoint(path, mmap=True)
    loop = ckpt.get("loops", {}).get("fit_loop", {}).get("epoch_loop.state_dict", {})
    optimizer_step = int(ckpt.get("global_step", 0))
    return int(loop.get("_batches_that_stepped", optimizer_step)), optimizer_step
