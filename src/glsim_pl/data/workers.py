"""``dataset.num_workers=auto``: loader processes from the CPUs this process may use, shared by the devices."""

from __future__ import annotations

import os
from typing import Any

import torch

from glsim_pl.errors import UserError

__all__ = ["MAX_AUTO_WORKERS", "auto_num_workers", "resolve_num_workers"]

MAX_AUTO_WORKERS = 16  # beyond this, decode is rarely the limit and each worker holds a copy of the dataset


def _available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))  # respects taskset / cgroup cpusets (SLURM --cpus-per-task)
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _processes_per_node() -> int:
    """Training processes sharing this machine's CPUs: the launcher's local world size, else one per GPU."""
    for key in ("LOCAL_WORLD_SIZE", "SLURM_NTASKS_PER_NODE"):
        value = os.environ.get(key, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return max(torch.cuda.device_count(), 1)


def auto_num_workers(cpus: int | None = None, processes: int | None = None) -> int:
    """One CPU per device stays with the training process; the rest load data, at most ``MAX_AUTO_WORKERS``.

    Never more workers than CPUs, so torch's "suggested max number of worker" warning cannot fire
    (a 2-core machine gets 1 worker).
    """
    cpus = _available_cpus() if cpus is None else cpus
    per_process = max(cpus // max(processes or _processes_per_node(), 1), 1)
    return min(per_process - 1, MAX_AUTO_WORKERS)


def resolve_num_workers(value: Any) -> int:
    """``dataset.num_workers``: ``auto`` or a count >= 0."""
    if isinstance(value, str) and value.lower() == "auto":
        return auto_num_workers()
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UserError(f"dataset.num_workers={value!r}: expected auto or an integer >= 0")
    return value
