"""The record a run leaves: ``metrics.json`` (metrics, cost, protocol, device, git commit, config) and
``failed.json``."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from glsim_pl.errors import UserError

RECORD = "metrics.json"


FAILURE = "failed.json"


# -- written by every training job ---------------------------------------------------------------------------------
def git_commit(cwd: str | Path | None = None) -> str:
    """``HEAD``'s sha of the package's checkout (``-dirty`` when tracked files changed), or ``unknown``."""
    cwd = cwd or Path(__file__).resolve().parent
    try:
        run = lambda *a: subprocess.run(["git", *a], cwd=cwd, capture_output=True, text=True, timeout=10)
        sha = run("rev-parse", "HEAD")
        if sha.returncode:
            return "unknown"
        dirty = run("status", "--porcelain", "--untracked-files=no").stdout.strip()
        return sha.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def device_name(trainer: Any) -> str:
    """``cpu x2`` / ``NVIDIA H100 80GB HBM3 x8``: the accelerator of this run and how many processes."""
    root = trainer.strategy.root_device
    name = torch.cuda.get_device_name(root) if root.type == "cuda" else root.type
    return f"{name} x{trainer.world_size}"


_OWN_SPLITS = ("ImageFolderDataModule", "CSVDataModule", "SyntheticDataModule")  # no official test set


def protocol(cfg: DictConfig, world_size: int | None = None) -> dict[str, Any]:
    """The evaluation protocol in words: its name (``dataset.protocol``), which split trains, which selects, TTA,
    epochs, sizes.

    ``world_size``: the processes the trainer runs (``trainer.world_size``); the effective batch counts them. Without
    it, ``trainer.devices`` x ``trainer.num_nodes`` (``auto`` and ``-1`` count as one device: only the trainer knows).
    """
    ds = cfg.dataset
    name = ds.get("protocol", "val")
    paper, vpt = name in ("paper", "vpt_trainval"), name in ("vpt", "vpt_trainval")
    accumulate = int(cfg.trainer.get("accumulate_grad_batches") or 1)
    world = world_size or _configured_devices(cfg.trainer.get("devices", 1)) * int(cfg.trainer.get("num_nodes") or 1)
    given_val = bool(ds.get("val_root") or ds.get("val_file"))  # folder / CSV datasets: selection on the val given
    if vpt:  # the VPT FGVC split files (data/vpt_splits.py)
        train_split = "VPT train.json + val.json" if paper else "VPT train.json"
    elif paper:
        train_split = "official train + given val (all of it)" if given_val else "official train (all of it)"
    else:
        train_split = "train (all of it)" if given_val else f"first {ds.get('train_fraction')} of train/class"
    val = "VPT val.json" if vpt else "given split" if given_val else "rest of train"
    test = "official test" if ds.get("_target_", "").rsplit(".", 1)[-1] not in _OWN_SPLITS else "test split"
    return {
        "name": name,
        "train_split": train_split,
        "selection_split": "none (final weights are tested)" if paper else f"val ({val}), best val/acc1",
        "test_split": f"{test} (VPT test.json)" if vpt else test,
        "tta": "off",  # the run's test pass is a single centre crop (glsim-eval tta=hflip records its own)
        "epochs": int(cfg.trainer.max_epochs),
        "image_size": int(ds.image_size),
        "effective_batch_size": int(ds.batch_size) * accumulate * world,
    }


def _configured_devices(devices: Any) -> int:
    """Devices per node a config names: 4, "4", [0, 1], "0,1"; one for auto, -1 or anything else."""
    if isinstance(devices, str):
        devices = devices.strip()
        if "," in devices:
            return len([d for d in devices.split(",") if d.strip()])
        devices = int(devices) if devices.isdigit() else 1
    if isinstance(devices, Sequence):
        return len(devices)
    return devices if isinstance(devices, int) and devices > 0 else 1


def resolved_config(cfg: DictConfig) -> dict[str, Any]:
    """The run's config as plain containers, interpolations resolved where they can be (``hydra`` node dropped)."""
    plain = {k: v for k, v in cfg.items() if k != "hydra"}
    try:
        return OmegaConf.to_container(OmegaConf.create(plain), resolve=True)
    except Exception:  # an interpolation that only Hydra's runtime resolves: keep it unresolved
        return OmegaConf.to_container(OmegaConf.create(plain), resolve=False)


def _hydra_job() -> tuple[str | None, list[str]]:
    """(experiment choice, task overrides) of the running Hydra job; (None, []) outside Hydra."""
    try:
        from hydra.core.hydra_config import HydraConfig

        hydra_cfg = HydraConfig.get()
        return hydra_cfg.runtime.choices.get("experiment"), list(hydra_cfg.overrides.task)
    except ValueError:
        return None, []


def _config_dir() -> str | None:
    """The ``-cd`` folder of the running Hydra job (relative to its working directory when below it), or None."""
    try:
        from hydra.core.hydra_config import HydraConfig

        runtime = HydraConfig.get().runtime
    except ValueError:
        return None
    folder = next((s.path for s in runtime.config_sources if s.provider == "command-line"), None)
    if not folder:
        return None
    path = Path(folder)
    return str(path.relative_to(runtime.cwd)) if path.is_relative_to(runtime.cwd) else str(path)


def run_cost(cfg: DictConfig, trainer: Any, fit_seconds: float | None, start_step: int = 0) -> dict[str, Any]:
    """Analytic GFLOPs per image of the trained classifier and the fit's measured images per second.

    ``start_step``: the optimizer step the fit resumed at; the steps before it took another process's time."""
    from glsim_pl.analysis.cost import model_gflops

    cost: dict[str, Any] = {}
    net = getattr(trainer.lightning_module, "net", None) if trainer.lightning_module is not None else None
    if net is not None:
        gflops = model_gflops(net, int(cfg.dataset.image_size))
        cost["gflops"] = None if gflops is None else round(gflops, 4)
    if fit_seconds and trainer.global_step > start_step:
        images = (trainer.global_step - start_step) * protocol(cfg, trainer.world_size)["effective_batch_size"]
        cost["fit_img_s"] = round(images / fit_seconds, 2)
    return cost


def write_failure(cfg: DictConfig, exc: BaseException) -> Path | None:
    """``<output_dir>/failed.json``: the job's overrides and its error line, for the aggregation's list of failures."""
    if int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", 0)) or 0) != 0:
        return None
    from glsim_pl.errors import user_message

    text = user_message(exc) if isinstance(exc, UserError) else str(exc)
    lines = [line for line in text.strip().splitlines() if line.strip()]
    error = f"{type(exc).__name__}: {lines[0 if isinstance(exc, UserError) else -1] if lines else ''}".rstrip(": ")
    experiment, overrides = _hydra_job()
    path = Path(cfg.paths.output_dir) / FAILURE
    try:  # never hide the job's own error behind one of writing this file
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"experiment": experiment, "seed": cfg.get("seed"), "overrides": overrides,
                                    "error": error}, indent=2))  # fmt: skip
    except OSError:
        return None
    return path


def write_run_record(
    cfg: DictConfig,
    trainer: Any,
    metrics: dict[str, Any],
    wall_time_s: float,
    fit_seconds: float | None = None,
    start_step: int = 0,
) -> Path | None:
    """Write ``<output_dir>/metrics.json`` for the aggregation (rank 0 only); returns its path. ``start_step``: the
    step a resumed fit started at."""
    if not trainer.is_global_zero:
        return None
    out = Path(cfg.paths.output_dir)
    experiment, overrides = _hydra_job()
    config = resolved_config(cfg)
    record = {
        "experiment": experiment,
        "task_name": cfg.get("task_name"),
        "seed": cfg.get("seed"),
        "overrides": overrides,
        "config_dir": _config_dir(),  # the -cd a rerun of the overrides needs
        "metrics": {k: v for k, v in metrics.items() if isinstance(v, int | float)},
        "tested_checkpoint": metrics.get("tested_ckpt") or None,  # the file test/* belong to (model card)
        "cost": run_cost(cfg, trainer, fit_seconds, start_step),
        "wall_time_s": round(wall_time_s, 2),
        "device": device_name(trainer),
        "git_commit": git_commit(),
        "protocol": protocol(cfg, trainer.world_size),
        "data_source": getattr(getattr(trainer, "datamodule", None), "provenance", None) or None,  # dataset=hf version
        "paper": config.get("paper"),
        "config": config,
    }
    out.mkdir(parents=True, exist_ok=True)
    path = out / RECORD
    path.write_text(json.dumps(record, indent=2, default=str))
    return path


__all__ = [
    "FAILURE",
    "RECORD",
    "device_name",
    "git_commit",
    "protocol",
    "resolved_config",
    "run_cost",
    "write_failure",
    "write_run_record",
]
