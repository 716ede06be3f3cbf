"""One run per output folder, and a resume that continues the same run (or says by name what differs).

- :func:`claim_output_dir`: ``<output_dir>/.run.lock`` holds the host and pid of the run writing there. A second run
  started in that folder while the first is alive is refused, naming both; a lock left by a run that died is taken
  over. Only the launching process claims it (DDP workers and SLURM requeues of the same job pass). A refused run
  changes nothing in the folder: Hydra saves the run's config to a staging folder (``hydra.output_subdir`` of
  conf/train.yaml), which :func:`keep_saved_config` renames to ``.hydra`` once the run may start and
  :func:`drop_staged_config` removes otherwise; the log file is opened only when a line is written.
- :func:`run_identity` / :func:`check_resume`: the values that change a run's result are stored in each checkpoint
  (:class:`RunIdentityCheckpoint`); resuming with different ones is refused (``resume_mismatch=error``, the default)
  or warned about (``resume_mismatch=warn``), naming each key with its saved and current value.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, OmegaConf

from glsim_pl.errors import UserError
from glsim_pl.models.weights import read_checkpoint
from glsim_pl.utils.logging import RankedLogger

__all__ = [
    "SAVED_CONFIG",
    "FolderRefused",
    "RunIdentityCheckpoint",
    "check_resume",
    "claim_output_dir",
    "drop_staged_config",
    "keep_saved_config",
    "run_identity",
]

log = RankedLogger(__name__)
LOCK = ".run.lock"
SAVED_CONFIG = ".hydra"  # where glsim-eval, the aggregation and DDP ranks read a run's config


class FolderRefused(UserError):
    """The output folder belongs to another run (in use, finished, or resumed with other values): this run writes no
    failed.json and no saved config there; refused before its first log line (in use, finished), it changes nothing."""


CKPT_KEY = "glsim_run_identity"
# what a resume must keep: the learning rate, the batch, the data and the model
RESULT_KEYS = (
    "optim.optimizer", "optim.lr", "optim.weight_decay", "optim.warmup_steps", "optim.min_lr", "optim.layer_decay",
    "dataset._target_", "dataset.num_classes", "dataset.image_size", "dataset.batch_size", "dataset.train_fraction",
    "dataset.protocol", "trainer.accumulate_grad_batches", "model.backbone", "model.backbone_kwargs",
    "method.method", "method.selector", "method.top_o", "method.gate",
)  # fmt: skip
WARN_KEYS = ("dataset.root", "seed")  # may differ legitimately (another mount point; a deliberate new seed)


def _launcher_process() -> bool:
    """False in the processes a DDP launcher or a SLURM requeue starts for a run that already holds the folder."""
    return all(os.environ.get(key, "0") == "0" for key in ("LOCAL_RANK", "NODE_RANK", "RANK", "SLURM_PROCID"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


@contextmanager
def claim_output_dir(output_dir: str | Path, check: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold ``<output_dir>/.run.lock`` for the block; refuse a folder that a live run on this host holds.

    ``check``: further refusals (an earlier run's results), run before the lock is written, so that a refused run
    leaves an old lock as it was."""
    folder = Path(output_dir)
    if not _launcher_process():
        yield
        return
    lock = folder / LOCK
    host, job = socket.gethostname(), os.environ.get("SLURM_JOB_ID")
    foreign: dict[str, Any] = {}
    if lock.is_file():
        try:
            held = json.loads(lock.read_text())
        except (OSError, ValueError):
            held = {}
        same_job = job is not None and held.get("slurm_job") == job  # a requeued job continues its own run
        if held.get("host") == host and isinstance(held.get("pid"), int) and _alive(held["pid"]) and not same_job:
            if held["pid"] != os.getpid():
                raise FolderRefused(f"output folder {folder} is in use by another run (pid {held['pid']} on {host}, "
                                f"started {held.get('started', '?')}); start this one in another folder "
                                "(hydra.run.dir=...) or wait for that run to end")  # fmt: skip
        elif held.get("host") not in (None, host) and not same_job:
            foreign = held
    if check is not None:
        check()
    if foreign:  # said only once this run may start: a refused run writes no line into the folder's log
        log.warning(f"output folder {folder} holds a lock of a run on {foreign['host']} (pid {foreign.get('pid')}); "
                    "taking it over: make sure that run has ended")  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    mine = {"host": host, "pid": os.getpid(), "slurm_job": job, "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    lock.write_text(json.dumps(mine))
    try:
        yield
    finally:
        try:
            if json.loads(lock.read_text()).get("pid") == os.getpid():
                lock.unlink()
        except (OSError, ValueError):
            pass


def _staged(output_dir: str | Path, subdir: str | None) -> Path | None:
    return None if subdir in (None, SAVED_CONFIG) else Path(output_dir) / str(subdir)


def keep_saved_config(output_dir: str | Path, subdir: str | None) -> None:
    """The run may start: its staged Hydra config (``<output_dir>/<subdir>``) becomes ``<output_dir>/.hydra``."""
    staged = _staged(output_dir, subdir)
    if staged is None or not staged.is_dir():
        return
    final = Path(output_dir) / SAVED_CONFIG
    final.mkdir(exist_ok=True)
    for item in staged.iterdir():
        os.replace(item, final / item.name)
    staged.rmdir()


def drop_staged_config(output_dir: str | Path, subdir: str | None, detach_log: bool = True) -> None:
    """The run was refused (or failed before it started): remove its staged config; ``detach_log``: stop logging
    into a folder that belongs to another run."""
    staged = _staged(output_dir, subdir)
    if staged is not None:
        shutil.rmtree(staged, ignore_errors=True)
    if not detach_log:
        return
    folder = Path(output_dir).resolve()
    for handler in list(logging.getLogger().handlers):
        name = getattr(handler, "baseFilename", None)
        if name and Path(name).resolve().parent == folder:
            logging.getLogger().removeHandler(handler)
            handler.close()


def run_identity(cfg: DictConfig) -> dict[str, str]:
    """The result-changing values of ``cfg`` as JSON strings (plain values: checkpoints load with weights_only)."""
    out = {}
    for key in (*RESULT_KEYS, *WARN_KEYS):
        value = OmegaConf.select(cfg, key, default=None)
        if isinstance(value, DictConfig):
            value = OmegaConf.to_container(value, resolve=True)
        out[key] = json.dumps(value, sort_keys=True, default=str)
    return out


def check_resume(cfg: DictConfig, ckpt_path: str | None, upgrade: Callable[[str], str] | None = None) -> None:
    """Refuse (or warn about) a resume whose result-changing config differs from the checkpoint's, by key.

    ``upgrade``: maps a stored value written by an older version to today's spelling (moved ``_target_`` paths)."""
    if ckpt_path is None:
        return
    try:
        checkpoint = read_checkpoint(ckpt_path, mmap=True)
    except UserError:
        checkpoint = {}
    saved = checkpoint.get(CKPT_KEY)
    if not saved:
        log.info(f"ckpt_path={ckpt_path}: no run config stored in it (older checkpoint); the resume is not compared")
        return
    saved = {**_inferred_identity(checkpoint), **saved}
    if upgrade is not None:
        saved = {key: upgrade(value) for key, value in saved.items()}
    now = run_identity(cfg)
    diffs = [(k, saved[k], now[k]) for k in now if k in saved and saved[k] != now[k]]
    if not diffs:
        return
    text = "; ".join(f"{k}: checkpoint {old}, now {new}" for k, old, new in diffs)
    hard = [k for k, _, _ in diffs if k in RESULT_KEYS]
    if hard and cfg.get("resume_mismatch", "error") == "error":
        raise FolderRefused(f"ckpt_path={ckpt_path}: this resume differs from the run that saved it in {text}. "
                        "Resume with the checkpoint's values, start a new run without ckpt_path, or set "
                        "resume_mismatch=warn to continue anyway")  # fmt: skip
    log.warning(f"resume from {ckpt_path} with a different config: {text}")


def _inferred_identity(checkpoint: dict[str, Any]) -> dict[str, str]:
    """Values an older checkpoint did not store but its optimizer state shows. ``optim.layer_decay``: without it the
    optimizer has exactly two parameter groups (decayed, not decayed) at one LR; with it, one pair per layer at
    different LRs (resuming across the two fails inside the optimizer, so it is compared first)."""
    states = checkpoint.get("optimizer_states") or []
    groups = states[0].get("param_groups", []) if states and isinstance(states[0], dict) else []
    if len(groups) == 2 and len({g.get("initial_lr", g.get("lr")) for g in groups}) == 1:
        return {"optim.layer_decay": "null"}
    return {}


class RunIdentityCheckpoint(Callback):
    """Stores :func:`run_identity` of the run in each checkpoint it saves."""

    def __init__(self, identity: dict[str, str]) -> None:
        self.identity = dict(identity)

    def on_save_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        checkpoint[CKPT_KEY] = dict(self.identity)
