"""Run a function in N CPU processes that form one DDP job (gloo), as torchrun or SLURM tasks would start them."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

import torch


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, world_size: int, port: int, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world_size), RANK=str(rank),
                      LOCAL_RANK=str(rank), NODE_RANK="0")  # fmt: skip
    torch.set_num_threads(1)
    fn(*args)


def run_ranks(world_size: int, fn: Callable[..., Any], *args: Any) -> None:
    """``fn(*args)`` in ``world_size`` fresh processes with the DDP environment of ranks 0..N-1 (Lightning sees the
    processes as started from outside and launches none); ``fn`` must be importable (module level)."""
    torch.multiprocessing.spawn(_rank, args=(world_size, _free_port(), fn, args), nprocs=world_size, join=True)


__all__ = ["run_ranks"]
